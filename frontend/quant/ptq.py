"""Post-training quantization: calibrate on FP trajectories, build a plan (uniform or OMQ), set the
ranges, export. `mpqdm quantize` is this module."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from mpqdm.core.bitplan import BitPlan, FloatLayer, LayerPlan
from mpqdm.core.bits import ABITS, check_bits
from mpqdm.core.errors import UserError

from ..device import pick_device
from ..model_io import load_scheduler, load_unet, model_fingerprint
from .calibrate import CalibConfig, CalibData, calibrate
from .export import check_export_dir, export
from .omq import channel_costs, kurtosis, omq_split
from .ranges import METHODS, init_model
from .shapes import check_lowerable
from .swap import LayerPolicy, layer_shapes, quant_layers, quant_targets, quantize_model

PLANS = ("uniform", "omq")


@dataclass(frozen=True)
class PTQConfig:
    plan: str = "uniform"
    wbits: int = 4
    abits: int = 8
    method: str = "mse"
    smoothing: bool = True
    group: int = 8
    omq_fractions: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)   # k / c_out candidates
    calib: CalibConfig = field(default_factory=CalibConfig)
    policy: LayerPolicy = field(default_factory=LayerPolicy)

    def __post_init__(self):
        check_bits(self.wbits, "--wbits")
        check_bits(self.abits, "--abits", ABITS)       # what the kernels take: refused here, not at compile
        if self.plan not in PLANS:
            raise UserError(f"unknown plan {self.plan!r}. Possible solutions: {', '.join(PLANS)}, "
                            "or a BitPlan JSON file")
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}. Possible solutions: {', '.join(METHODS)}")
        if not self.omq_fractions or not all(0 <= f <= 0.5 for f in self.omq_fractions):
            raise UserError(f"OMQ fractions must be in 0..0.5, got {list(self.omq_fractions)}")
        if self.plan == "omq" and not 2 <= self.wbits <= 7:
            raise UserError(f"OMQ splits N into N-1/N/N+1 bits, so N must be in 2..7, got {self.wbits}")


def uniform_plan(unet, sha: str, wbits: int, abits: int, policy: LayerPolicy, smoothing: bool,
                 group: int = 1) -> BitPlan:
    layers = {}
    for name, c_out in layer_shapes(unet).items():
        kind = policy.kind(name)
        layers[name] = (FloatLayer() if kind == "float" else
                        LayerPlan.uniform(c_out, 8, 8) if kind == "w8a8" else
                        LayerPlan.uniform(c_out, wbits, abits))
    return BitPlan(model_sha256=sha, model_class="UNet2DModel", group_size=group, smoothing=smoothing,
                   layers=layers)


def omq_plan(unet, sha: str, calib: CalibData, cfg: PTQConfig, progress: bool = True) -> BitPlan:
    """MPQ-DM's rule on every 'quant' layer: kurtosis order, N-1/N/N+1, k searched on the cost."""
    base = uniform_plan(unet, sha, cfg.wbits, cfg.abits, cfg.policy, cfg.smoothing, cfg.group)
    probe = quantize_model(copy.deepcopy(unet), base, cfg.calib.steps)
    init_model(probe, calib, cfg.method, cfg.smoothing)
    layers = dict(base.layers)
    bits = [cfg.wbits - 1, cfg.wbits, cfg.wbits + 1]
    for name, layer in tqdm(quant_layers(probe).items(), desc="omq", disable=not progress):
        if cfg.policy.kind(name) != "quant":
            continue
        costs = channel_costs(layer, calib.layers[name], bits, cfg.abits, cfg.method)
        layers[name] = omq_split(kurtosis(layer.smoothed_weight()), costs, bits, cfg.wbits, cfg.abits,
                                 cfg.group, cfg.omq_fractions)
    return BitPlan(model_sha256=sha, model_class="UNet2DModel", group_size=cfg.group,
                   smoothing=cfg.smoothing, layers=layers)


def ptq_model(unet, plan: BitPlan, calib: CalibData, method: str):
    q = quantize_model(unet, plan, calib.config.steps)
    init_model(q, calib, method, plan.smoothing)
    return q


@dataclass
class Prepared:
    """A PTQ-initialised fake-quant model and what its export needs."""
    qunet: object
    plan: BitPlan
    calib: CalibData
    scheduler: object
    sha: str


def prepare(model_dir: str | Path, cfg: PTQConfig = PTQConfig(), plan_file: str | Path | None = None,
            device: str = "auto", progress: bool = True) -> Prepared:
    """Calibrate, plan and set the ranges (no export); QAT starts from this too."""
    dev = pick_device(device)
    unet = load_unet(model_dir).to(dev)
    check_lowerable(unet)
    sched = load_scheduler(model_dir)
    sha = model_fingerprint(model_dir)
    plan = None
    if plan_file is not None:  # check the plan before the long calibration
        plan = BitPlan.load(plan_file, layer_shapes=layer_shapes(unet))
        plan.validate_against(layer_shapes(unet), sha)
    calib = calibrate(unet, sched.alphas_cumprod, cfg.calib, progress)
    if plan is None and cfg.plan == "omq":
        plan = omq_plan(unet, sha, calib, cfg, progress)
    elif plan is None:
        plan = uniform_plan(unet, sha, cfg.wbits, cfg.abits, cfg.policy, cfg.smoothing, cfg.group)
    return Prepared(ptq_model(unet, plan, calib, cfg.method), plan, calib, sched, sha)


def summary(q, plan: BitPlan) -> dict:
    wpc = {n: m.weight[0].numel() for n, m in quant_targets(q).items()}
    return {"avg_wbits": round(plan.avg_wbits(wpc), 4), "layers": len(quant_layers(q)),
            "float_layers": sum(isinstance(v, FloatLayer) for v in plan.layers.values())}


def quantize(model_dir: str | Path, out_dir: str | Path, cfg: PTQConfig = PTQConfig(),
             plan_file: str | Path | None = None, device: str = "auto", progress: bool = True) -> dict:
    """Calibrate, plan, set the ranges and export. Returns a short summary."""
    check_export_dir(out_dir, "quantize", reads=[model_dir])
    p = prepare(model_dir, cfg, plan_file, device, progress)
    export(p.qunet, p.plan, out_dir, source_sha256=p.sha, timesteps=p.calib.timesteps, method=cfg.method,
           scheduler=p.scheduler)
    return {"out": str(out_dir), **summary(p.qunet, p.plan)}

"""Channel statistics from calibration (the format: core/stats.py): kurtosis, per-bit costs and
sensitivity of every quantized layer, for the allocator."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict

import torch
from torch import nn
from tqdm import tqdm

from mpqdm.core.bitplan import LayerPlan
from mpqdm.core.io import check_output_file
from mpqdm.core.stats import CANDIDATE_BITS, FORMAT, VERSION, write_stats

from ..device import pick_device
from ..model_io import load_scheduler, load_unet, model_fingerprint
from .calibrate import CalibConfig, CalibData, calibrate
from .e2e import E2EConfig, layer_errors
from .layers import QuantLayer
from .omq import channel_costs, kurtosis
from .plan_error import fp_trajectories
from .quantizer import StepIndex
from .ranges import init_layer
from .shapes import check_lowerable, layer_specs
from .swap import LayerPolicy, quant_targets, set_module


@torch.no_grad()
def macs_per_call(unet: nn.Module) -> dict[str, int]:
    macs, hooks = {}, []
    for name, m in quant_targets(unet).items():
        def fn(mod, args, y, name=name):
            per_out = mod.weight[0].numel()
            n_out = y.numel() // y.shape[0] if isinstance(mod, nn.Conv2d) else y.numel()
            macs[name] = macs.get(name, 0) + int(n_out * per_out)
        hooks.append(m.register_forward_hook(fn))
    c = unet.config
    dev = next(unet.parameters()).device
    unet(torch.zeros(1, c.in_channels, c.sample_size, c.sample_size, device=dev), torch.tensor([500], device=dev))
    for h in hooks:
        h.remove()
    return macs


@torch.no_grad()
def sensitivity(unet: nn.Module, name: str, calib: CalibData, method: str, smoothing: bool) -> float:
    """Gain from this layer's output error to the UNet's output error (W4A8 on this layer alone)."""
    model = copy.deepcopy(unet)
    fp = quant_targets(model)[name]
    idx = StepIndex()
    layer = QuantLayer(fp, torch.full((fp.weight.shape[0],), 4), 8, calib.config.steps, idx)
    init_layer(layer, calib.layers[name], method, smoothing)
    set_module(model, name, layer)
    err_layer = [0.0]

    def hook(mod, args, y):
        err_layer[0] += float((y - mod.op(args[0], mod.fp.weight)).double().pow(2).sum())

    h = layer.register_forward_hook(hook)
    err_out = 0.0
    for step, (x, t) in calib.net_inputs.items():
        idx.value = step
        err_out += float((model(x, t).sample - unet(x, t).sample).double().pow(2).sum())
    h.remove()
    return err_out / max(err_layer[0], 1e-30)


@torch.no_grad()
def channel_stats(unet: nn.Module, sha: str, alphas_cumprod, calib_cfg: CalibConfig = CalibConfig(),
                  method: str = "mse", smoothing: bool = True, policy: LayerPolicy = LayerPolicy(),
                  progress: bool = True, e2e: E2EConfig = E2EConfig()) -> dict:
    unet = unet.eval()
    check_lowerable(unet)
    calib = calibrate(unet, alphas_cumprod, calib_cfg, progress)
    macs = macs_per_call(unet)
    dev = next(unet.parameters()).device
    shapes = {name: spec.shape_key() for name, spec in layer_specs(unet.cpu()).items()}
    unet.to(dev)
    layers = {}
    targets = quant_targets(unet)
    for name, fp in tqdm(targets.items(), desc="stats", disable=not progress):
        c_out = fp.weight.shape[0]
        bits = LayerPlan.uniform(c_out, 8, 8).bits_per_channel()
        layer = QuantLayer(copy.deepcopy(fp), torch.tensor(bits), 8, calib_cfg.steps, StepIndex())
        init_layer(layer, calib.layers[name], method, smoothing)
        entry = {"kind": "conv2d" if layer.is_conv else "linear", "policy": policy.kind(name),
                 "c_out": c_out, "c_in": fp.weight.shape[1],
                 "weights_per_channel": fp.weight[0].numel(), "macs": macs[name], "shape": shapes[name],
                 "kurtosis": [round(float(k), 5) for k in kurtosis(layer.smoothed_weight())],
                 "cost": {str(a): channel_costs(layer, calib.layers[name], list(CANDIDATE_BITS), a,
                                               method).tolist() for a in (4, 8)},
                 "sensitivity": sensitivity(unet, name, calib, method, smoothing)}
        if layer.is_conv:
            entry.update(kernel=list(fp.kernel_size), stride=list(fp.stride), padding=list(fp.padding))
        layers[name] = entry
    t0 = time.perf_counter()
    traj = fp_trajectories(unet, alphas_cumprod, e2e.samples, calib_cfg.steps, e2e.seed)
    kept = [n for n in layers if layers[n]["policy"] != "float"]
    for name, err in layer_errors(unet, calib, traj, list(CANDIDATE_BITS), [4, 8], method, smoothing, kept,
                                  e2e.every, progress).items():
        layers[name]["e2e"] = err
    return {"format": FORMAT, "version": VERSION, "model": {"sha256": sha, "class": "UNet2DModel"},
            "method": method, "smoothing": smoothing, "candidate_bits": list(CANDIDATE_BITS),
            "abits": [4, 8], "calibration": asdict(calib_cfg),
            "e2e": {**asdict(e2e), "seconds": round(time.perf_counter() - t0, 1)}, "layers": layers}


def stats_of_model(model_dir, out, calib_cfg: CalibConfig = CalibConfig(), method: str = "mse",
                   smoothing: bool = True, device: str = "auto", e2e: E2EConfig = E2EConfig()) -> dict:
    """`mpqdm stats`: the statistics of a diffusers model folder, written to `out`."""
    out = check_output_file(out, "stats")
    unet = load_unet(model_dir).to(pick_device(device))
    stats = channel_stats(unet, model_fingerprint(model_dir), load_scheduler(model_dir).alphas_cumprod, calib_cfg,
                          method=method, smoothing=smoothing, e2e=e2e)
    write_stats(stats, out)
    return stats

"""What the benchmark runners share: results files with provenance, Markdown tables, and the models
several of them measure, each built here from the repository into out/bench/ (a cache keyed by
how it was made), so that no benchmark reads another benchmark's output folder."""

from __future__ import annotations

import json
from pathlib import Path

from mpqdm.core.io import write_json
from mpqdm.core.machine import provenance
from mpqdm.core.report import markdown_table  # noqa: F401  (the runners import it from here)
from mpqdm.core.resources import DEFAULT_MODEL


def load_rows(path: Path) -> list[dict]:
    if path.is_file():
        return json.loads(path.read_text()).get("rows", [])
    return []


def save_rows(path: Path, rows: list[dict] | None, **extra) -> None:
    """{machine, commit, command, **extra, rows}; rows None: a file whose lists are named in `extra`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**provenance(), **extra, **({} if rows is None else {"rows": rows})})


# ---- models shared by several benchmarks ------------------------------------------------------------

def random_model(root: Path, name: str) -> Path:
    """A configuration with random weights (seed 0), for sizes and speed only: "ddpm-cifar10" (the DDPM
    CIFAR-10 UNet) or "attention-heavy" (frontend/fp_model.py's ATTENTION_HEAVY)."""
    import torch

    from mpqdm.frontend.fp_model import ATTENTION_HEAVY, ddpm_cifar10_unet, default_scheduler, default_unet

    make = {"ddpm-cifar10": ddpm_cifar10_unet, "attention-heavy": lambda: default_unet(**ATTENTION_HEAVY)}
    path = root / "out" / "bench" / f"{name}-random"
    if not (path / "config.json").is_file():
        torch.manual_seed(0)
        make[name]().save_pretrained(str(path))
    if not (path / "scheduler_config.json").is_file():       # profile lowers a PTQ export of it
        default_scheduler().save_pretrained(str(path))
    return path


def cifar_random(root: Path) -> Path:
    """The DDPM CIFAR-10 configuration with random weights (seed 0): sizes and speed only."""
    return random_model(root, "ddpm-cifar10")


def host_table_with(model: Path, root: Path) -> Path:
    """A host latency table holding `model`'s call kinds: the committed one if it does, else one
    profiled into out/bench/ (minutes)."""
    from mpqdm.backend_tvm.profile import profile
    from mpqdm.boards.registry import latency_path, load_board
    from mpqdm.core.latency import LatencyTable
    from mpqdm.frontend.model_io import model_fingerprint

    committed = latency_path(load_board("host"))
    if model_fingerprint(model)[:16] in LatencyTable.load(committed, "host").models:
        return committed
    path = root / "out" / "bench" / f"latency-{model.name}.json"
    profile(model, "host", table_path=path)
    return path


def cifar_stats(root: Path) -> Path:
    """`mpqdm stats` of cifar_random with a small calibration (2 trajectories of 4 steps; 17 min before
    the end-to-end errors, which take one trajectory at one step)."""
    from mpqdm.frontend.quant.calibrate import CalibConfig
    from mpqdm.frontend.quant.e2e import E2EConfig
    from mpqdm.frontend.quant.stats import stats_of_model

    path = root / "out" / "bench" / "stats" / "ddpm-cifar10-random.json"
    if not path.is_file():
        stats_of_model(cifar_random(root), path, CalibConfig(samples=2, steps=4), e2e=E2EConfig(samples=1, every=4))
    return path


def ptq_w2a4_export(model: Path, path: Path, plan: str = "uniform", policy: str = "default") -> Path:
    """PTQ W2A4 of `model` into `path` (made when missing) with a small calibration: the kernels' sizes
    and speed do not depend on the ranges. plan "omq": the released code's fixed 10% split; policy: a
    name in frontend.quant.swap.POLICIES."""
    from mpqdm.frontend.quant.calibrate import CalibConfig
    from mpqdm.frontend.quant.ptq import PTQConfig, quantize
    from mpqdm.frontend.quant.swap import POLICIES

    if not (path / "quant_export.json").is_file():
        quantize(model, path, PTQConfig(plan=plan, wbits=2, abits=4, omq_fractions=(0.1,), policy=POLICIES[policy],
                                        calib=CalibConfig(samples=2, steps=4, batch=2)))
    return path


def cifar_w2a4_export(root: Path) -> Path:
    """PTQ W2A4 (uniform) of cifar_random."""
    return ptq_w2a4_export(cifar_random(root), root / "out" / "bench" / "ddpm-cifar10-W2A4")


# the QAT ablation's variants: name -> (plan, TRD weight); OMQ uses the released code's fixed 10% split
QAT_VARIANTS = {"baseline": ("uniform", 0.0), "omq": ("omq", 0.0), "trd": ("uniform", 100.0),
                "mpqdm": ("omq", 100.0)}


def qat_export(root: Path, config: str, wbits: int, abits: int, variant: str, iterations: int = 40,
               batch: int = 8, lora_rank: int = 0, ckpt_every: int = 5, device: str = "auto", seed: int = 0,
               trd: dict | None = None, teacher_cache: Path | None = None, progress: bool = True,
               compile_: bool = False, plan_file: Path | None = None, plan_name: str = "") -> Path:
    """A QAT export of the default model (resumable): PTQ initialisation with the variant's plan, then
    `iterations` trajectories of `batch` from QAT seed `seed` (the QAT ablation's rows; the W2A4 MPQ-DM
    one is the default model the compile and runtime benchmarks measure). `trd`: TRD settings other
    than the variant's (trd_weight, window, trd_block); `teacher_cache`: shared teacher trajectories;
    `plan_file`: a written BitPlan instead of the variant's plan (its folder named `plan_name`)."""
    from mpqdm.frontend.qat.config import QATConfig
    from mpqdm.frontend.qat.train import qat, run_dir
    from mpqdm.frontend.quant.ptq import PTQConfig

    plan, trd_weight = QAT_VARIANTS[variant]
    settings = {"trd_weight": trd_weight, **(trd or {})} if trd_weight else {"trd_weight": 0.0}
    # v2: scale-aware activation lr, weight lr scale 4e-4, steps kept positive
    run = f"v2_it{iterations}_b{batch}_r{lora_rank}" + (f"_s{seed}" if seed else "")
    if trd_weight and trd:
        run += "_trd" + "-".join(f"{k}{v}" for k, v in sorted(trd.items()))
    name = f"{config}-{variant}" if plan_file is None else f"{config}-{plan_name}-{variant}"
    path = root / "out" / "bench" / "qat" / run / name / "export"
    if not (run_dir(path) / "summary.json").is_file():
        cfg = QATConfig(iterations=iterations, batch=batch, seed=seed, ckpt_every=ckpt_every,
                        lora_rank=lora_rank, **settings)
        ptq = PTQConfig(plan=plan, wbits=wbits, abits=abits, omq_fractions=(0.1,))
        qat(DEFAULT_MODEL, path, cfg, ptq, plan_file, resume=(run_dir(path) / "checkpoint.pt").is_file(), device=device,
            teacher_cache=teacher_cache, progress=progress, compile_=compile_)
    return path


def default_w2a4_export(root: Path) -> Path:
    """The default model at W2A4, MPQ-DM (OMQ + TRD), 40 QAT iterations of batch 8."""
    return qat_export(root, "W2A4", 2, 4, "mpqdm")

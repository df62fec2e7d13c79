"""The deploy stages that make the model: statistics, allocation, PTQ, QAT, compile, build. Each
takes its stage folder and returns a small JSON-able summary (stages.py records it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mpqdm.allocator.allocate import allocate_to
from mpqdm.backend_tvm.build import build
from mpqdm.backend_tvm.compile import compile_export
from mpqdm.boards.registry import latency_path
from mpqdm.core.bits import CANDIDATE_WBITS
from mpqdm.frontend.qat.config import QATConfig
from mpqdm.frontend.qat.train import qat, run_dir
from mpqdm.frontend.quant.calibrate import CalibConfig
from mpqdm.frontend.quant.ptq import PTQConfig, quantize
from mpqdm.frontend.quant.stats import stats_of_model


def file_digest(path) -> str | None:
    """sha256 of a file's bytes (None: no file): a stage input that is a file."""
    if path is None or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def table_digest(board) -> str | None:
    return file_digest(latency_path(board))


def calib(cfg) -> CalibConfig:
    return CalibConfig(samples=cfg.calib_samples, steps=cfg.steps)


def ptq_config(cfg, plan: str) -> PTQConfig:
    return PTQConfig(plan=plan if plan in ("uniform", "omq") else "uniform", wbits=cfg.wbits, abits=cfg.abits,
                     calib=calib(cfg))


def stats_stage(model: Path, d: Path, shipped: Path | None, cfg) -> dict:
    if shipped is not None:
        return {"path": str(shipped), "shipped": True}
    d.mkdir(parents=True, exist_ok=True)
    stats_of_model(model, d / "stats.json", calib(cfg), "mse", True, cfg.device)
    return {"path": str(d / "stats.json"), "shipped": False}


def allocate_stage(stats: Path, board, cfg, d: Path) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    _, sol, _ = allocate_to(d / "plan.json", stats, board.name, cfg.budgets, cfg.abits, CANDIDATE_WBITS,
                            pareto_points=0)
    return {"plan": str(d / "plan.json"), "cost": sol.cost, "weight_kb": round(sol.weight_bytes / 1024, 2),
            "latency_ms": None if sol.latency_ms is None else round(sol.latency_ms, 4),
            "avg_wbits": round(sol.avg_bits, 4),
            "solve_seconds": round(sol.solve_s, 2), "bits": list(CANDIDATE_WBITS)}


def ptq_stage(model: Path, d: Path, cfg, plan: str, plan_file) -> dict:
    return quantize(model, d, ptq_config(cfg, plan), plan_file=plan_file, device=cfg.device)


def qat_stage(export: Path, d: Path, cfg) -> dict:
    resume = (run_dir(d) / "checkpoint.pt").is_file()      # an interrupted run of the same inputs
    qcfg = QATConfig(iterations=cfg.qat_iterations, batch=cfg.qat_batch, ckpt_every=5)
    info = qat(export, d, qcfg, ptq_config(cfg, "uniform"), resume=resume, device=cfg.device)
    return {k: info[k] for k in ("iterations", "seconds", "device", "avg_wbits") if k in info}


def compile_stage(export: Path, board, d: Path, cfg) -> dict:
    return compile_export(export, board.name, d, cfg.steps)


def build_stage(d: Path, board) -> dict:
    paths = build(d, board.name)
    return {"binaries": {p.name: p.stat().st_size for p in paths}}


"""The deploy pipeline: statistics, allocation (or fixed bits), PTQ, QAT, compile, build, the check of
the built binary against PyTorch, samples and FD, the step time, the report. Each stage is reused
when its inputs are unchanged (stages.py); OUT/deploy.json marks the folder complete, last."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mpqdm.allocator.ilp import Budgets
from mpqdm.allocator.problem import DEFAULT_COST
from mpqdm.backend_tvm import verify
from mpqdm.boards.registry import latency_path, load_board
from mpqdm.core.bits import ABITS, CANDIDATE_WBITS, check_bits
from mpqdm.core.errors import UserError
from mpqdm.core.io import MARKER, check_output_dir, write_json
from mpqdm.core.latency import LatencyTable
from mpqdm.core.resources import DEFAULT_MODEL
from mpqdm.frontend.model_io import model_fingerprint

from . import report, shipped, work
from .stages import Stages

COMMAND = "deploy"
FINAL = ("deploy.json", "report.md", "report.html", "model.mpq", "mpqdm-run", "plan.json", "images")


@dataclass(frozen=True)
class DeployConfig:
    board: str = "host"
    latency_ms: float | None = None        # per UNet call, quantized layers (the board's latency table)
    weight_memory_kb: float | None = None  # packed weights of the quantized layers
    wbits: int = 2                         # fixed bits (no budget given), or the ILP's widest default
    abits: int = 4
    plan: str = "uniform"                  # fixed plan without a budget: uniform, omq, or a BitPlan JSON
    qat_iterations: int = 20
    qat_batch: int = 8
    fd_samples: int = 500
    steps: int = 20
    calib_samples: int = 64
    threads: int | None = None             # runtime threads for samples and timing (default: the board's)
    device: str = "auto"

    def __post_init__(self):
        check_bits(self.wbits, "--wbits")
        check_bits(self.abits, "--abits", ABITS)
        for name in ("latency_ms", "weight_memory_kb"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise UserError(f"--{name.replace('_', '-')} must be > 0, got {v}")
        if self.qat_iterations < 0 or self.qat_batch < 1 or self.fd_samples < 2 or self.steps < 1:
            raise UserError("--qat-iterations must be >= 0, --fd-samples >= 2 and --steps >= 1")
        if self.plan not in ("uniform", "omq") and not self.plan.endswith(".json"):
            raise UserError(f"unknown plan {self.plan!r}. Possible solutions: uniform, omq, or a BitPlan JSON file")
        if self.plan != "uniform" and self.budgets:
            raise UserError(f"--plan {self.plan} and a budget both choose the bits. Possible solutions: give one")

    @property
    def budgets(self) -> Budgets | None:
        if self.latency_ms is None and self.weight_memory_kb is None:
            return None
        return Budgets(self.latency_ms, self.weight_memory_kb, None)


def stage_names(cfg: DeployConfig, cross: bool, fd: bool) -> list[str]:
    names = ["stats", "allocate"] if cfg.budgets else []
    names += ["ptq"] + (["qat"] if cfg.qat_iterations else []) + ["compile", "build"]
    names += ["compile-host", "build-host"] if cross else []
    return names + ["check"] + (["samples", "fp-samples"] if fd else []) + ["bench", "int8-peer", "report"]


def prepare_out(out, model: Path) -> Path:
    """The deploy folder: new, or an earlier deploy's (complete or not); never marked complete
    until the end, so its old deploy.json and final files go first."""
    out = check_output_dir(out, COMMAND, reads=[model])
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MARKER, {"command": COMMAND})
    for name in FINAL:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    return out


def deploy(model_dir: str | Path | None, out: str | Path, cfg: DeployConfig = DeployConfig(),
           progress: bool = True) -> dict:
    t0 = time.perf_counter()
    model = Path(model_dir) if model_dir else DEFAULT_MODEL
    board = load_board(cfg.board)
    if not (model / "config.json").is_file():
        raise UserError(f"stage model: {str(model)!r} is not a diffusers UNet2DModel folder (no config.json). "
                        "Possible solutions: give the folder that holds config.json and the weights")
    table = latency_path(board)
    if cfg.latency_ms is not None and (not table.is_file() or LatencyTable.load(table, board.name).emulated):
        raise UserError(f"stage allocate: board {board.name!r} has no latency table timed on it (an emulated "
                        "board's counts choose kernels, they are no milliseconds): a latency budget "
                        f"needs the board profiled first (mpqdm profile MODEL --board {board.name}, on the board). "
                        "Possible solutions: --weight-memory-kb or fixed bits (--wbits/--abits) instead")
    sha = model_fingerprint(model)
    out = prepare_out(out, model)
    st = Stages(out, stage_names(cfg, board.is_cross, verify.scores_fd(model)), progress)
    ctx = {"model": str(model.resolve()), "sha256": sha}

    plan_file, plan_kind = (cfg.plan, "file") if cfg.plan.endswith(".json") else (None, cfg.plan)
    if cfg.budgets:
        stats_file = shipped.stats_for(sha)
        stats_in = {**ctx, "calib_samples": cfg.calib_samples, "steps": cfg.steps, "shipped": str(stats_file)}
        stats = st.run("stats", stats_in, lambda d: work.stats_stage(model, d, stats_file, cfg),
                       what="shipped statistics" if stats_file else "channel statistics (minutes)")
        alloc_in = {"budgets": asdict(cfg.budgets), "abits": cfg.abits, "bits": CANDIDATE_WBITS,
                    "board": board.name, "table": work.table_digest(board), "cost": DEFAULT_COST}
        st.run("allocate", alloc_in, lambda d: work.allocate_stage(Path(stats["path"]), board, cfg, d),
               needs=("stats",), what="ILP over channel groups")
        plan_file, plan_kind = str(st.path("allocate") / "plan.json"), "ilp"
    ptq_in = {**ctx, "plan": plan_kind, "plan_file": work.file_digest(plan_file), "wbits": cfg.wbits,
              "abits": cfg.abits, "calib_samples": cfg.calib_samples, "steps": cfg.steps}
    needs = ("allocate",) if cfg.budgets else ()
    ptq = st.run("ptq", ptq_in, lambda d: work.ptq_stage(model, d, cfg, plan_kind, plan_file), needs=needs,
                 what=f"calibration on {cfg.calib_samples} FP trajectories, {plan_kind} plan")
    export, last = st.path("ptq"), "ptq"
    if cfg.qat_iterations:
        qat_in = {"iterations": cfg.qat_iterations, "batch": cfg.qat_batch}
        st.run("qat", qat_in, lambda d: work.qat_stage(export, d, cfg), needs=("ptq",),
               what=f"{cfg.qat_iterations} iterations of batch {cfg.qat_batch}")
        export, last = st.path("qat"), "qat"
    builds, compiled = {}, {}
    for suffix, b in ([("", board)] + ([("-host", load_board("host"))] if board.is_cross else [])):
        c, bu = f"compile{suffix}", f"build{suffix}"
        compiled[b.name] = st.run(c, {"board": b.name, "steps": cfg.steps, "table": work.table_digest(b)},
                                  lambda d, b=b: work.compile_stage(export, b, d, cfg),
                                  needs=(last,), what=f"plan and kernels for {b.name}")
        st.run(bu, {"board": b.name}, lambda d, b=b, c=c: work.build_stage(st.path(c), b),
               needs=(c,), what=f"mpqdm-run for {b.name} ({b.cc})")
        builds[b.name] = st.path(c)
    host = builds.get("host", builds[board.name])
    bnames = tuple(n for n in st.names if n.startswith("build"))
    chk = st.run("check", {"board": board.name}, lambda d: verify.binary_check(export, builds, board, cfg, d),
                 needs=bnames, what="the built binary against PyTorch" + (" and the host build (qemu)"
                                                                            if board.is_cross else ""))
    samples = fp = None
    if verify.scores_fd(model):
        samples = st.run("samples", {"n": cfg.fd_samples, "steps": cfg.steps},
                         lambda d: verify.runtime_samples(host, board, cfg, d), needs=bnames,
                         what=f"{cfg.fd_samples} samples by the {'host build' if board.is_cross else 'board binary'}")
        fp = st.run("fp-samples", {**ctx, "n": cfg.fd_samples, "steps": cfg.steps},
                    lambda d: verify.fp_samples(model, cfg, d), what=f"{cfg.fd_samples} FP samples, same noise")
    timing = {"board": board.name, "threads": cfg.threads}
    bench = st.run("bench", timing, lambda d: verify.bench_stage(host, board, cfg, d), needs=bnames,
                   what="step time and memory")
    peer = st.run("int8-peer", {**ctx, **timing}, lambda d: verify.peer_stage(model, board, cfg, d),
                  what="ONNX Runtime int8 of the FP model, for comparison")
    st.say("report", "report.md and report.html")
    info = report.write(out, model, sha, board, cfg, st, {"check": chk, "samples": samples, "fp": fp,
                                                         "bench": bench, "peer": peer, "ptq": ptq, "export": export,
                                                         "compile": compiled[board.name],
                                                         "builds": builds, "table": table})
    info["seconds"] = round(time.perf_counter() - t0, 1)
    info["complete"] = True
    write_json(out / "deploy.json", info)
    return info

"""The `mpqdm` command: one subcommand per stage; bad input prints a message, not a traceback."""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from pathlib import Path

from mpqdm.core.bits import ABITS, CANDIDATE_WBITS, WBITS
from mpqdm.core.errors import UserError
from mpqdm.core.resources import DEFAULT_CLASSIFIER, DEFAULT_MODEL

_MODEL = {"nargs": "?", "default": str(DEFAULT_MODEL)}      # a model argument that may be left out


# ---- option values: each checked where it is parsed (argparse reports the option by name) ----------

def count(least: int = 1):
    """An integer >= least."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < least:
            raise argparse.ArgumentTypeError(f"{v} is below {least}")
        return v
    return parse


def real(positive: bool = True):
    """A finite float, > 0 (positive) or >= 0."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v) or (v <= 0 if positive else v < 0):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number {'> 0' if positive else '>= 0'}")
        return v
    return parse


def int_list(allowed):
    """A comma-separated list of integers from `allowed`."""
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
        bad = [v for v in values if v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad[0]} is not one of {', '.join(map(str, allowed))}")
        return values
    return parse


def fractions(text: str) -> tuple[float, ...] | None:
    """OMQ split fractions: comma-separated numbers in 0..0.5 (empty: the defaults)."""
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not all(0 <= v <= 0.5 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every fraction must be in 0..0.5")
    return values


def threads(text: str) -> int:
    """A thread count on this machine: 1 .. its CPU count."""
    v, cpus = count()(text), os.cpu_count() or 1
    if v > cpus:
        raise argparse.ArgumentTypeError(f"{v} is more than this machine's {cpus} CPUs")
    return v


class Parser(argparse.ArgumentParser):
    """One line on a usage error, naming the command and the option, then exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _train_fp(args) -> None:
    from mpqdm.frontend.train_fp import TrainConfig, train_fp

    cfg = TrainConfig(iters=args.iters, batch=args.batch, lr=args.lr, seed=args.seed)
    info = train_fp(args.out, cfg, device=args.device, extend=args.extend)
    print(f"saved {args.out}: {info['iters']} iterations in {info['train_seconds']:.0f} s "
          f"on {info['train_device']}")


def _train_classifier(args) -> None:
    from mpqdm.frontend.classifier import train_classifier

    info = train_classifier(args.out, epochs=args.epochs, seed=args.seed)
    print(f"saved {args.out}: held-out accuracy {info['heldout_accuracy']:.4f} "
          f"on {info['heldout_images']} images")


def _eval(args) -> None:
    from mpqdm.frontend.evaluate import EvalConfig, evaluate

    out = args.out or str(Path("out") / "eval" / Path(args.model).resolve().name)
    cfg = EvalConfig(samples=args.samples, steps=args.steps, seed=args.seed, batch=args.batch)
    m = evaluate(args.model, out, cfg, device=args.device, classifier_dir=args.classifier)
    print(f"FD {m['fd']:.2f} (real-vs-real floor {m['fd_floor']:.2f}) over {m['samples']} samples, "
          f"{m['ddim_steps']} DDIM steps; wrote {out}/metrics.json and {out}/samples_grid.png")


def _calib(args):
    from mpqdm.frontend.quant.calibrate import CalibConfig

    return CalibConfig(samples=args.calib_samples, steps=args.calib_steps, seed=args.calib_seed)


def _add_farm(p) -> None:
    p.add_argument("--tracker", help="HOST:PORT of a TVM RPC tracker (python -m tvm.exec.rpc_tracker): time on "
                   "the boards it lists under --key (default: here)")
    p.add_argument("--key", help="the boards' RPC key (default: the board name)")
    p.add_argument("--wait", type=real(), default=60.0, help="seconds to wait for a board holding the key")


def _add_calib(p) -> None:
    p.add_argument("--calib-samples", type=count(), default=64, help="FP trajectories from noise")
    p.add_argument("--calib-steps", type=int, default=20, help="DDIM steps of those trajectories")
    p.add_argument("--calib-seed", type=count(0), default=1234)
    p.add_argument("--method", default="mse", help="ranges: minmax, or mse (weights: MSE clip "
                   "search; activations: 0.1/99.9 percentiles)")
    p.add_argument("--no-smoothing", action="store_true", help="turn SmoothQuant smoothing off")
    p.add_argument("--device", default="auto")


def _add_plan(p) -> None:
    p.add_argument("--plan", default="uniform", help="uniform, omq, or a BitPlan JSON file")
    p.add_argument("--wbits", type=int, default=4)
    p.add_argument("--abits", type=int, default=8)
    p.add_argument("--group", type=count(), default=8, help="OMQ split sizes are multiples of this")
    p.add_argument("--omq-fractions", type=fractions, default=None,
                   help="OMQ k/c_out candidates, e.g. 0.1 (default 0,0.1,..,0.5)")


def _quantize(args) -> None:
    from mpqdm.frontend.quant.ptq import quantize

    plan_file = None
    plan = args.plan
    if plan.endswith(".json"):
        plan_file, plan = plan, "uniform"
    cfg = _ptq_config(args, plan)
    name = f"{Path(args.model).resolve().name}-{plan}-W{args.wbits}A{args.abits}"
    out = args.out or str(Path("out") / "quant" / name)
    s = quantize(args.model, out, cfg, plan_file=plan_file, device=args.device)
    print(f"wrote {out}: {s['layers']} quantized layers (average {s['avg_wbits']:.3f} weight bits), "
          f"{s['float_layers']} kept in floating point")


def _ptq_config(args, plan: str):
    from mpqdm.frontend.quant.ptq import PTQConfig

    fr = args.omq_fractions
    return PTQConfig(plan=plan, wbits=args.wbits, abits=args.abits, method=args.method,
                     smoothing=not args.no_smoothing, group=args.group, calib=_calib(args),
                     **({"omq_fractions": fr} if fr else {}))


def _qat(args) -> None:
    from mpqdm.frontend.qat.config import QATConfig
    from mpqdm.frontend.qat.train import qat

    plan_file, plan = (args.plan, "uniform") if args.plan.endswith(".json") else (None, args.plan)
    cfg = QATConfig(iterations=args.iterations, batch=args.batch, window=args.window,
                    trd_weight=args.trd_weight, trd_block=args.trd_block, lora_rank=args.lora_rank,
                    weight_lr_scale=args.weight_lr_scale,
                    seed=args.seed, ckpt_every=args.ckpt_every)
    out = args.out or str(Path("out") / "qat" / f"{Path(args.model).resolve().name}-{plan}-W{args.wbits}A{args.abits}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    info = qat(args.model, out, cfg, _ptq_config(args, plan), plan_file=plan_file, teacher_dir=args.teacher,
               resume=args.resume, device=args.device, fast=not args.plain,
               compile_=args.compile, teacher_cache=args.teacher_cache)
    if "out" in info:
        print(f"wrote {info['out']}: {info['iterations']} iterations in {info['seconds']:.0f} s on "
              f"{info['device']} (average {info['avg_wbits']:.3f} weight bits); loss curve and checkpoint "
              f"in {info['run_dir']}")


def _profile(args) -> None:
    from mpqdm.backend_tvm.profile import profile

    info = profile(args.model, args.board, wbits=args.wbits, abits=args.abits, repeats=args.repeats,
                   table_path=args.table, threads=args.threads, tracker=args.tracker, key=args.key,
                   wait_s=args.wait, fresh=args.fresh, passes=args.passes, flush_kb=args.flush_kb,
                   count=args.count_instructions)
    for w in info["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    where = ", ".join(f"{k}: {v['cpu']}{' (emulated)' if v['emulated'] else ''}" for k, v in info["boards"].items())
    print(f"measured {info['entries']} of {info['jobs']} call kinds ({info['skipped']} already in the table; "
          f"{info['shapes']} layer shapes, {info['threads']} threads, build {info['build_id']}"
          f"{'; on ' + where if where else ''}) into {info['table']}: {info['total_entries']} entries")
    if info["fastest"]:
        print("fastest kernel path per (layer shape, widths): "
              + ", ".join(f"{k} {v}" for k, v in info["fastest"].items()))


def _bench(args) -> None:
    from mpqdm.backend_tvm.board_bench import bench

    r = bench(args.dir, args.board, tracker=args.tracker, key=args.key, threads=args.threads, count=args.count,
              wait_s=args.wait)
    emu = ", emulated: times are not milliseconds" if r["emulated"] else ""
    n = r["threads"]
    print(f"{r['board']} ({r['key']}: {r['cpu']}{emu}): {r['ms_per_step']:.3f} ms per step at {n} "
          f"thread{'s' if n != 1 else ''}; arena {r['arena_kb']:.1f} KB, "
          f"artifact {r['artifact_kb']:.1f} KB, server peak RSS {r['peak_rss_mb']:.1f} MB")
    total = sum(r["ms_by_kind"].values()) or 1.0
    for k, ms in r["ms_by_kind"].items():
        print(f"  {k:12s} {ms:9.4f} ms  {100 * ms / total:5.1f}%")
    print(f"wrote {Path(args.dir) / ('bench-' + r['key'] + '.json')}")


def _compile(args) -> None:
    from mpqdm.backend_tvm.compile import compile_export

    info = compile_export(args.export, args.board, args.out, args.steps, latency=args.latency, kernels=args.kernels)
    paths = ", ".join(f"{k} {v}" for k, v in info["kernel_paths"].items())
    print(f"{args.out}: {info['kernel_calls']} kernel calls, {info['kernels']} kernels ({info['library']}), "
          f"artifact {info['artifact_kb']} KB, peak activations {info['peak_activation_kb']} KB "
          f"(fp32 weights {info['fp32_weights_kb']} KB); quantized groups by kernel path: {paths or 'none'}, "
          f"chosen by {info['kernel_choice']}; report: {args.out}/report.md")


def _build(args) -> None:
    from mpqdm.backend_tvm.build import build

    for path in build(args.dir, args.board, args.sanitize):
        print(f"built {path} ({path.stat().st_size / 1024:.0f} KB)")


def _allocate(args) -> None:
    from mpqdm.allocator.allocate import allocate_to, latency_text
    from mpqdm.allocator.ilp import Budgets

    budgets = Budgets(args.latency_ms, args.weight_memory_kb, args.avg_bits)
    _, sol, report = allocate_to(args.out, args.stats, args.board, budgets, args.abits, args.bits, args.group_size,
                                 args.table, args.threads, args.pareto_points, args.cost, args.time_limit)
    print(f"wrote {args.out} and {report}: cost {sol.cost:.5g}, weight memory "
          f"{sol.weight_bytes / 1024:.2f} KB, latency {latency_text(sol)}, average weight bits "
          f"{sol.avg_bits:.3f}, solved in {sol.solve_s:.2f} s")


def _stats(args) -> None:
    from mpqdm.frontend.quant.e2e import E2EConfig
    from mpqdm.frontend.quant.stats import stats_of_model

    out = args.out or str(Path("out") / "stats" / f"{Path(args.model).resolve().name}.json")
    e2e = E2EConfig(samples=args.e2e_samples, every=args.e2e_every)
    stats = stats_of_model(args.model, out, _calib(args), args.method, not args.no_smoothing, args.device, e2e)
    print(f"wrote {out}: {len(stats['layers'])} layers, bits {stats['candidate_bits']}, abits {stats['abits']}")


def _deploy(args) -> None:
    from mpqdm.deploy.pipeline import DeployConfig, deploy

    cfg = DeployConfig(board=args.board, latency_ms=args.latency_ms, weight_memory_kb=args.weight_memory_kb,
                       wbits=args.wbits, abits=args.abits, plan=args.plan, qat_iterations=args.qat_iterations,
                       fd_samples=args.fd_samples, steps=args.steps, calib_samples=args.calib_samples,
                       threads=args.threads, device=args.device)
    out = args.out or str(Path("out") / "deploy" / f"{Path(args.model).resolve().name}-{cfg.board}")
    info = deploy(args.model, out, cfg)
    met = {None: "no budget given", True: "budgets met", False: "BUDGETS NOT MET"}[info["budgets_met"]]
    fd = f"FD {info['fd']} (FP {info['fd_fp']})" if info["fd"] is not None else "no FD (not a 1x32x32 model)"
    print(f"wrote {out}: model.mpq {info['artifact_kb']} KB, mpqdm-run for {info['board']}, {fd}, {met}; "
          f"report {out}/report.html ({info['seconds']:.0f} s)")


def _export_onnx(args) -> None:
    from mpqdm.frontend.onnx_export import check_onnx, export_onnx

    info = export_onnx(args.export, args.out)
    chk = check_onnx(args.export, args.out)
    print(f"wrote {args.out}: {info['layers']} quantized layers ({info['int4_layers']} int4, {info['int8_layers']} "
          f"int8); ONNX Runtime vs PyTorch fake-quant, one UNet call at each of {len(chk['per_step'])} steps: "
          f"median relative error {chk['median_rel_error']:.2e}, max {chk['max_rel_error']:.2e}")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="mpqdm", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train-fp", help="train the default FP DDPM UNet on MNIST-5k (resumable)")
    t.add_argument("--out", default="models/mnist-default", help="diffusers folder to write")
    t.add_argument("--iters", type=count(), default=3500)
    t.add_argument("--batch", type=count(), default=32)
    t.add_argument("--lr", type=real(), default=1e-3)
    t.add_argument("--seed", type=count(0), default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--extend", action="store_true",
                   help="continue a finished run to --iters with a new cosine phase starting at --lr")
    t.set_defaults(func=_train_fp)

    c = sub.add_parser("train-classifier", help="train the MNIST feature classifier used for FD")
    c.add_argument("--out", default=str(DEFAULT_CLASSIFIER))
    c.add_argument("--epochs", type=count(), default=20)
    c.add_argument("--seed", type=count(0), default=0)
    c.set_defaults(func=_train_classifier)

    e = sub.add_parser("eval", help="sample with DDIM and compute the FD against MNIST-5k (resumable)")
    e.add_argument("model", **_MODEL, help="diffusers UNet2DModel folder, or a quantized export (default: the "
                   "embedded default model)")
    e.add_argument("--out", help="output folder (default out/eval/<model name>)")
    e.add_argument("--samples", type=int, default=1000)
    e.add_argument("--steps", type=count(), default=20, help="DDIM steps (eta 0)")
    e.add_argument("--seed", type=count(0), default=0)
    e.add_argument("--batch", type=count(), default=250)
    e.add_argument("--device", default="auto")
    e.add_argument("--classifier", default=str(DEFAULT_CLASSIFIER))
    e.set_defaults(func=_eval)

    q = sub.add_parser("quantize", help="PTQ: calibrate on FP trajectories, plan, export the quantized model")
    q.add_argument("model", **_MODEL, help="diffusers UNet2DModel folder (default: the embedded default model)")
    _add_plan(q)
    q.add_argument("--out", help="export folder (default out/quant/<model>-<plan>-W<w>A<a>)")
    _add_calib(q)
    q.set_defaults(func=_quantize)

    a = sub.add_parser("qat", help="data-free QAT (output distillation + TRD), resumable; writes an export")
    a.add_argument("model", **_MODEL, help="diffusers UNet2DModel folder (PTQ-initialised with --plan), or a PTQ "
                   "export (default: the embedded default model)")
    _add_plan(a)
    a.add_argument("--out", help="export folder (default out/qat/<model>-<plan>-W<w>A<a>); state in <out>.qat/")
    a.add_argument("--teacher", help="the FP model (default: the model, or a PTQ export's own FP weights)")
    a.add_argument("--iterations", type=count(), default=100, help="one iteration = one DDIM trajectory")
    a.add_argument("--batch", type=count(), default=8, help="trajectories per iteration, over all processes")
    a.add_argument("--window", type=count(), default=2, help="TRD window; one optimiser step per window")
    a.add_argument("--trd-weight", type=real(positive=False), default=100.0, help="0: output distillation only")
    a.add_argument("--trd-block", type=int, default=-1, help="decoder block TRD taps (index into up_blocks)")
    a.add_argument("--lora-rank", type=count(0), default=0, help="0: full QAT of the weights")
    a.add_argument("--weight-lr-scale", type=real(), default=4e-4, help="weight lr = this x mean weight step")
    a.add_argument("--seed", type=count(0), default=0)
    a.add_argument("--ckpt-every", type=count(), default=10)
    a.add_argument("--resume", action="store_true", help="continue the run in <out>.qat/")
    a.add_argument("--plain", action="store_true", help="the plain loop (one step at a time), not the fast "
                   "path: same loss, about twice the time")
    a.add_argument("--compile", action="store_true", help="refused for now: torch.compile leaves most "
                   "layers without a gradient (benchmarks/results/qat_compile_check.md)")
    a.add_argument("--teacher-cache", help="folder keeping the teacher's trajectories, shared by runs of the "
                   "same model and seed (fast path)")
    a.add_argument("--threads", type=count(), help="PyTorch threads (default: PyTorch's)")
    _add_calib(a)
    a.set_defaults(func=_qat)

    pr = sub.add_parser("profile", help="time every kernel choice for a model's layer shapes on a board; "
                        "merge into boards/<board>/latency.json")
    pr.add_argument("model", **_MODEL, help="diffusers UNet2DModel folder (default: the embedded one), quantized "
                    "export, or ddpm-cifar10 (that public "
                    "configuration with random weights)")
    pr.add_argument("--board", default="host")
    pr.add_argument("--wbits", type=int_list(WBITS), default=CANDIDATE_WBITS, help="weight widths to time")
    pr.add_argument("--abits", type=int_list(ABITS), default=ABITS, help="activation widths to time")
    pr.add_argument("--threads", type=threads, help="kernel threads (default: the board profile's)")
    pr.add_argument("--repeats", type=count(), default=10, help="timings per kernel and pass")
    pr.add_argument("--passes", type=count(), default=3, help="passes over all kernels; an entry is the median "
                    "of every pass's timings")
    pr.add_argument("--flush-kb", type=count(0), default=0, help="KB written before each timed call (default 0: "
                    "back-to-back calls, warm caches)")
    pr.add_argument("--table", help="latency table to merge into (default boards/<board>/latency.json)")
    _add_farm(pr)
    pr.add_argument("--fresh", action="store_true", help="measure again what the table already holds")
    pr.add_argument("--count-instructions", action="store_true", help="an emulated board (a Pi) with no board at "
                    "hand: count each quantized kernel's executed instructions under qemu here instead of timing "
                    "it (full width, 1 thread); compile then takes each layer's path with the fewest")
    pr.set_defaults(func=_profile)

    bn = sub.add_parser("bench", help="run a compiled model whole on a board (here, or through the tracker): "
                        "per-step and per-kernel times, memory")
    bn.add_argument("dir", help="folder of mpqdm compile (model.mpq, kernels.o)")
    bn.add_argument("--board", required=True, help="board profile name or board.toml path")
    bn.add_argument("--threads", type=threads, help="runtime threads (default: the board profile's)")
    bn.add_argument("--count", type=count(), default=2, help="samples to run (each a whole sampling loop)")
    _add_farm(bn)
    bn.set_defaults(func=_bench)

    co = sub.add_parser("compile", help="lower a quantized export to a static plan, compile its kernels for a "
                        "board, write the artifact")
    co.add_argument("export", help="quantized export folder (mpqdm quantize / qat)")
    co.add_argument("--board", required=True, help="board profile name or board.toml path")
    co.add_argument("-o", "--out", required=True, help="output folder (replaced only when complete)")
    co.add_argument("--steps", type=count(), help="sampling steps (default: the export's; per-step activation "
                    "parameters are resampled to the nearest trained step)")
    co.add_argument("--kernels", choices=("measured", "rule"), default="measured", help="each quantized layer's "
                    "kernel path (AMX, VNNI, udot, NEON, ...): the one mpqdm profile timed fastest for its shape "
                    "and widths (default; the board's rule where the table has none), or the board's rule")
    co.add_argument("--latency", help="latency table the measured paths come from (default "
                    "boards/<board>/latency.json)")
    co.set_defaults(func=_compile)

    bu = sub.add_parser("build", help="the board binary mpqdm-run from a compiled folder (the board's compiler)")
    bu.add_argument("dir", help="folder written by mpqdm compile")
    bu.add_argument("--board", required=True)
    bu.add_argument("--sanitize", action="store_true", help="host: also an ASan + UBSan build (mpqdm-run-asan)")
    bu.set_defaults(func=_build)

    al = sub.add_parser("allocate", help="ILP: bits per channel group under latency and memory budgets -> BitPlan")
    al.add_argument("--stats", required=True, help="statistics JSON from mpqdm stats")
    al.add_argument("--board", default="host")
    al.add_argument("--latency-ms", type=real(), help="budget per UNet call, quantized layers (board's table)")
    al.add_argument("--weight-memory-kb", type=real(), help="budget for the quantized layers' packed weights")
    al.add_argument("--avg-bits", type=real(), help="bound on the weight-weighted average bits")
    al.add_argument("--abits", type=int, choices=(4, 8), help="fix activation bits (default: chosen per layer)")
    al.add_argument("--bits", type=int_list(WBITS), default=CANDIDATE_WBITS, help="candidate weight bits")
    al.add_argument("--group-size", type=count(), help="channels per group (default: the board profile's)")
    al.add_argument("--table", help="latency table (default boards/<board>/latency.json)")
    al.add_argument("--threads", type=count(), help="the table's thread count to use (default: the board's)")
    al.add_argument("--pareto-points", type=count(0), default=5, help="solves per Pareto curve (0: no plots)")
    al.add_argument("--cost", choices=("e2e", "gain"), default="e2e", help="cost model: the per-layer, per-width "
                    "end-to-end error, or the old per-layer gain at W4A8 x channel errors (allocator/problem.py)")
    al.add_argument("--time-limit", type=real(), default=60.0, help="solver seconds; then the best plan found "
                    "(a note says it is not proven the best)")
    al.add_argument("--out", default="out/plans/plan.json", help="BitPlan JSON; the report and plots go beside it")
    al.set_defaults(func=_allocate)

    st = sub.add_parser("stats", help="channel statistics (kurtosis, per-bit costs, sensitivity) for the allocator")
    st.add_argument("model", **_MODEL, help="diffusers UNet2DModel folder (default: the embedded default model)")
    st.add_argument("--out", help="JSON file (default out/stats/<model>.json)")
    st.add_argument("--e2e-samples", type=count(), default=8, help="FP trajectories of the end-to-end "
                    "sensitivity (one layer at a time at each width)")
    st.add_argument("--e2e-every", type=count(), default=2, help="its evaluated steps: every k-th")
    _add_calib(st)
    st.set_defaults(func=_stats)

    dp = sub.add_parser("deploy", help="one command: statistics, allocation or fixed bits, PTQ, QAT, compile, build, "
                        "the binary checked against PyTorch, samples, FD and report.md/report.html in one folder")
    dp.add_argument("model", **_MODEL, help="diffusers UNet2DModel folder (default: the embedded default model)")
    dp.add_argument("--board", required=True, help="board profile name or board.toml path")
    dp.add_argument("--latency-ms", type=real(), help="budget per UNet call, quantized layers (needs the board's "
                    "measured latency table)")
    dp.add_argument("--weight-memory-kb", type=real(), help="budget for the quantized layers' packed weights")
    dp.add_argument("--wbits", type=int, default=2, help="fixed weight bits when no budget is given")
    dp.add_argument("--abits", type=int, default=4, help="activation bits")
    dp.add_argument("--plan", default="uniform", help="without a budget: uniform, omq, or a BitPlan JSON file")
    dp.add_argument("--qat-iterations", type=count(0), default=20, help="QAT iterations of batch 8 (0: PTQ only)")
    dp.add_argument("--fd-samples", type=count(2), default=500, help="samples for the FD, deployed and FP")
    dp.add_argument("--steps", type=count(), default=20, help="DDIM sampling steps")
    dp.add_argument("--calib-samples", type=count(), default=64, help="FP trajectories for calibration")
    dp.add_argument("--threads", type=threads, help="runtime threads for samples and timing (default: the board's)")
    dp.add_argument("--device", default="auto", help="PyTorch device for calibration, QAT and FP samples")
    dp.add_argument("-o", "--out", help="deploy folder (default out/deploy/<model>-<board>); rerun to resume")
    dp.set_defaults(func=_deploy)

    ox = sub.add_parser("export-onnx", help="a quantized export as ONNX QDQ (int4/int8 weights, per-step activation "
                        "parameters chosen by a step input), checked in ONNX Runtime against PyTorch")
    ox.add_argument("export", help="quantized export folder (mpqdm quantize / qat)")
    ox.add_argument("-o", "--out", required=True, help="the .onnx file to write")
    ox.set_defaults(func=_export_onnx)
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 bad input (one line on stderr saying what and how to fix it), 130
    interrupted, 1 an internal error (a bug: MPQDM_TRACEBACK=1 shows its traceback)."""
    args = build_parser().parse_args(argv)
    where = f"mpqdm {args.cmd}"
    try:
        args.func(args)
    except UserError as exc:
        print(f"{where}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:                     # a file or folder the user named: unreadable, unwritable, full
        name = f" {str(exc.filename)!r}" if exc.filename else ""
        print(f"{where}: error: cannot use{name}: {exc.strerror or exc}. Possible solutions: check the path "
              "and its permissions, and the free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{where}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 (the last resort: a bug must still not print a wall of text)
        if os.environ.get("MPQDM_TRACEBACK"):
            traceback.print_exc()
        print(f"{where}: internal error: {type(exc).__name__}: {exc}. Please report it with the command "
              "line; MPQDM_TRACEBACK=1 prints the traceback", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Host kernel benchmark: our bit-packed quantized conv vs ONNX Runtime int8 (QLinearConv) vs TVM float32.

Run: .venv/bin/python benchmarks/kernels_host.py [--quick] [--models default,ddpm-cifar10] [--threads 1,2]
     [--configs W2A4,W4A4,W4A8,W8A8] [--repeats 15] [--min-repeat-ms 100]
Writes benchmarks/results/kernels_host.json and kernels_host.md, once, at the end (--quick: out/kernels_host_quick.*).
Shapes: every distinct Conv2d of the models (batch 1, NHWC), input sizes recorded by forward pre-hooks.
Each thread count runs in a fresh worker process: TVM reads TVM_NUM_THREADS once, when its thread pool starts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mpqdm.backend_tvm.kernels.qconv_schedule import schedule_qconv
from mpqdm.backend_tvm.tvm_compat import Schedule, build, target, te, tensor, tvm
from mpqdm.boards.registry import load_board
from mpqdm.core.packing import packed_bytes
from mpqdm.core.scheme import ConvSpec, QConvArgs, weight_constants
from mpqdm.testing.bench import markdown_table, save_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

CONFIGS = {"W2A4": (2, 4), "W4A4": (4, 4), "W4A8": (4, 8), "W8A8": (8, 8)}
MODELS = ("default", "ddpm-cifar10")
QUICK_LAYERS = ("down_blocks.1.resnets.0.conv2", "down_blocks.1.resnets.0.conv_shortcut")
TARGET_TEXT = "W4A4 and W2A4 median ratio <= 1.0"
# google/ddpm-cifar10-32's UNet2DModel config (35.7M parameters); random weights, nothing downloaded
FP32_SCHEDULE = ("TVM topi.nn.conv2d_nhwc (HWIO weights), padding inlined; loops n,h,w,co,kh,kw,ci,cv: "
                 "n*h fused and parallel, output channels split by the vector width (cv, vectorized), "
                 "reduction decomposed; no tiling, no tuning")


@dataclass(frozen=True)
class Shape:
    layer: str
    model: str
    h: int
    w: int
    c_in: int
    c_out: int
    k: int
    stride: int
    pad: int

    @property
    def text(self) -> str:
        return f"{self.h}x{self.w}x{self.c_in}->{self.c_out} k{self.k}x{self.k} s{self.stride} p{self.pad}"

    def spec(self, wbits: int, abits: int) -> ConvSpec:
        return ConvSpec(1, self.h, self.w, self.c_in, self.c_out, self.k, self.k, self.stride, self.pad,
                        ((self.c_out, wbits),), abits)


def model_shapes(model: str) -> list[Shape]:
    """Distinct conv shapes in forward order, each named by its first layer (imports torch: parent only)."""
    import torch

    from mpqdm.frontend.fp_model import ddpm_cifar10_unet, default_unet

    torch.manual_seed(0)
    net = default_unet() if model == "default" else ddpm_cifar10_unet()
    seen: dict[tuple, Shape] = {}

    def hook(name):
        def f(m, args):
            m_ok = m.groups == 1 and m.dilation == (1, 1) and m.kernel_size[0] == m.kernel_size[1]
            assert m_ok and len(set(m.stride)) == 1 and len(set(m.padding)) == 1, f"unsupported conv {name}: {m}"
            s = Shape(name, model, args[0].shape[2], args[0].shape[3], m.in_channels, m.out_channels,
                      m.kernel_size[0], m.stride[0], m.padding[0])
            seen.setdefault(tuple(asdict(s).values())[2:], s)
        return f

    hooks = [m.register_forward_pre_hook(hook(n)) for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net(torch.randn(1, net.config.in_channels, 32, 32), torch.tensor([500]))
    for h in hooks:
        h.remove()
    return list(seen.values())


@dataclass
class Layer:
    """Random codes of one quantized conv; weights symmetric (zero point 2^(b-1)) so ORT's int8 has zero point 0."""
    spec: ConvSpec
    x: np.ndarray        # uint8 [1, H, W, Cin] activation codes
    rows: np.ndarray     # uint8 [Cout, K] weight codes, K in (kh, kw, Cin) order
    za: int
    sa: float
    sw: np.ndarray       # float32 [Cout]
    bias_q: np.ndarray   # int32 [Cout], in units of sa * sw

    @property
    def zw(self) -> int:
        return 1 << (self.spec.groups[0][1] - 1)


def make_layer(spec: ConvSpec, rng: np.random.Generator) -> Layer:
    wbits = spec.groups[0][1]
    x = rng.integers(0, 1 << spec.abits, size=(1, spec.h, spec.w, spec.c_in), dtype=np.uint8)
    rows = rng.integers(0, 1 << wbits, size=(spec.c_out, spec.k), dtype=np.uint8)
    sw = rng.uniform(0.01, 0.1, spec.c_out).astype(np.float32)
    bias_q = rng.integers(-100, 100, spec.c_out).astype(np.int32)
    return Layer(spec, x, rows, int(rng.integers(0, 1 << spec.abits)), 0.05, sw, bias_q)


def ours_args(layer: Layer) -> list[np.ndarray]:
    """The kernel's arguments (core/scheme.py), output last; channels in plan order."""
    s = layer.spec
    sw, sa = layer.sw, np.float32(layer.sa)
    wc = weight_constants(s, layer.rows, np.arange(s.c_out), sw, np.full(s.c_out, layer.zw))
    return list(QConvArgs(x=layer.x, **wc, bias=(layer.bias_q * (sa * sw)).astype(np.float32),
                          act=np.array([sa], np.float32), az=np.array([layer.za], np.int32),
                          y=np.zeros((1, s.ho, s.wo, s.c_out), np.float32)).ordered())


def build_ours(spec: ConvSpec, board):
    return tvm.compile(schedule_qconv(spec, board), target=target(board.tvm_target_dict()))


def qlinearconv_model(layer: Layer, y_scale: float, y_zp: int) -> bytes:
    """One QLinearConv node: uint8 NCHW activations, int8 per-channel weights (zero point 0), int32 bias."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    s = layer.spec
    w = (layer.rows.astype(np.int16) - layer.zw).astype(np.int8).reshape(s.c_out, s.kh, s.kw, s.c_in)
    inits = [
        numpy_helper.from_array(np.array(layer.sa, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(layer.za, np.uint8), "x_zp"),
        numpy_helper.from_array(w.transpose(0, 3, 1, 2).copy(), "w"),
        numpy_helper.from_array(layer.sw, "w_scale"),
        numpy_helper.from_array(np.zeros(s.c_out, np.int8), "w_zp"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(y_zp, np.uint8), "y_zp"),
        numpy_helper.from_array(layer.bias_q, "bias"),
    ]
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "bias"],
                            ["y"], kernel_shape=[s.kh, s.kw], strides=[s.stride] * 2, pads=[s.pad] * 4)
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, s.c_in, s.h, s.w])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [1, s.c_out, s.ho, s.wo])
    graph = helper.make_graph([node], "qconv", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def ort_runner(model: bytes, x_nchw: np.ndarray, threads: int):
    """A no-argument callable running the session once on pre-bound input/output (IO binding: no copies)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    binding = sess.io_binding()
    binding.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x_nchw)))
    binding.bind_output("y", "cpu")
    sess.run_with_iobinding(binding)
    out = binding.get_outputs()[0]
    binding.bind_ortvalue_output("y", out)     # reuse the first output's buffer from now on
    return lambda: sess.run_with_iobinding(binding), out


def fp32_func(sh: Shape, lanes: int):
    """TVM float32 NHWC conv with the simple schedule of FP32_SCHEDULE."""
    x = te.placeholder((1, sh.h, sh.w, sh.c_in), "float32", name="X")
    k = te.placeholder((sh.k, sh.k, sh.c_in, sh.c_out), "float32", name="K")
    y = tvm.topi.nn.conv2d_nhwc(x, k, sh.stride, sh.pad, 1)
    sch = Schedule(tvm.IRModule({"main": te.create_prim_func([x, k, y])}))
    sch.compute_inline(sch.get_sblock("pad_temp"))
    conv = sch.get_sblock("conv2d_nhwc")
    n, i, j, c, r, q, ci = sch.get_loops(conv)
    lanes = math.gcd(lanes, sh.c_out)
    co, cv = sch.split(c, [None, lanes])
    sch.reorder(n, i, j, co, r, q, ci, cv)
    sch.parallel(sch.fuse(n, i))
    if lanes > 1:
        sch.vectorize(cv)
    sch.decompose_reduction(conv, r)
    return sch.mod["main"]


def stats(seconds) -> tuple[float, float]:
    """Median in ms and the spread (p90 - p10) / median."""
    t = np.asarray(seconds, np.float64)
    med = float(np.median(t))
    return med * 1e3, float((np.percentile(t, 90) - np.percentile(t, 10)) / med)


def tvm_times(ex, name: str, args, repeats: int, min_repeat_ms: float) -> list[float]:
    f = ex.mod.time_evaluator(name, tvm.cpu(), number=1, repeat=repeats, min_repeat_ms=int(min_repeat_ms))
    return list(f(*args).results)


def py_times(fn, repeats: int, min_repeat_ms: float, warmup: int = 2) -> list[float]:
    """time_evaluator's method for a Python callable: mean of `number` calls per repeat, number >= min_repeat_ms."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    number = max(1, math.ceil(min_repeat_ms / 1e3 / max(time.perf_counter() - t0, 1e-9)))
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        out.append((time.perf_counter() - t0) / number)
    return out


def measure_baselines(sh: Shape, threads: int, board, repeats: int, min_repeat_ms: float) -> dict:
    """ORT int8 and TVM fp32 times: independent of the config (ORT always runs 8-bit data), so once per shape."""
    layer = make_layer(sh.spec(8, 8), np.random.default_rng(0))
    run, _ = ort_runner(qlinearconv_model(layer, 0.5, 128), layer.x.transpose(0, 3, 1, 2), threads)
    ort_ms, ort_spread = stats(py_times(run, repeats, min_repeat_ms))
    lanes = 16 if "+avx512f" in board.tvm_target_dict().get("mattr", []) else 8
    ex = build(fp32_func(sh, lanes), board.tvm_target_dict(), "conv")
    rng = np.random.default_rng(1)
    args = [tensor(rng.normal(size=(1, sh.h, sh.w, sh.c_in)).astype(np.float32)),
            tensor(rng.normal(size=(sh.k, sh.k, sh.c_in, sh.c_out)).astype(np.float32)),
            tensor(np.zeros((1, layer.spec.ho, layer.spec.wo, sh.c_out), np.float32))]
    fp_ms, _ = stats(tvm_times(ex, "conv", args, repeats, min_repeat_ms))
    return {"ort_int8_ms": ort_ms, "ort_spread": ort_spread, "tvm_fp32_ms": fp_ms}


def measure_row(sh: Shape, config: str, threads: int, board, repeats: int, min_repeat_ms: float,
                baselines: dict | None = None) -> dict:
    wbits, abits = CONFIGS[config]
    spec = sh.spec(wbits, abits)
    layer = make_layer(spec, np.random.default_rng(0))
    ex = build_ours(spec, board)
    ours_ms, ours_spread = stats(tvm_times(ex, "qconv", [tensor(a) for a in ours_args(layer)], repeats, min_repeat_ms))
    b = baselines or measure_baselines(sh, threads, board, repeats, min_repeat_ms)
    return {"layer": sh.layer, "model": sh.model, "shape": sh.text, "wbits": wbits, "abits": abits,
            "threads": threads, "ours_ms": round(ours_ms, 4), "ort_int8_ms": round(b["ort_int8_ms"], 4),
            "tvm_fp32_ms": round(b["tvm_fp32_ms"], 4), "ours_spread": round(ours_spread, 4),
            "ort_spread": round(b["ort_spread"], 4),
            "packed_weight_bytes": packed_bytes(spec.k, spec.groups) + 8 * spec.c_out,
            "ratio_ours_over_ort": round(ours_ms / b["ort_int8_ms"], 4)}


def worker() -> None:
    """Reads a job (JSON) on stdin; prints one `ROW {json}` line per measured row."""
    job = json.load(sys.stdin)
    board = load_board("host")
    threads = job["threads"]
    assert tvm.runtime.num_threads() == threads, f"TVM runs {tvm.runtime.num_threads()} threads, wanted {threads}"
    for s in job["shapes"]:
        sh = Shape(**s)
        base = measure_baselines(sh, threads, board, job["repeats"], job["min_repeat_ms"])
        for config in job["configs"]:
            row = measure_row(sh, config, threads, board, job["repeats"], job["min_repeat_ms"], base)
            print("ROW " + json.dumps(row), flush=True)


def run_threads(shapes: list[Shape], configs: list[str], threads: int, repeats: int, min_repeat_ms: float, bar):
    env = {**os.environ, "TVM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    job = {"shapes": [asdict(s) for s in shapes], "configs": configs, "threads": threads, "repeats": repeats,
           "min_repeat_ms": min_repeat_ms}
    proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    proc.stdin.write(json.dumps(job))
    proc.stdin.close()
    rows = []
    for line in proc.stdout:
        if line.startswith("ROW "):
            rows.append(json.loads(line[4:]))
            r = rows[-1]
            bar.set_postfix_str(f"{r['layer']} W{r['wbits']}A{r['abits']} t{threads}")
            bar.update()
    if proc.wait() != 0:
        raise SystemExit(f"worker for {threads} thread(s) failed (exit {proc.returncode})")
    return rows


def summarize(rows: list[dict]) -> dict:
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        key = (r["model"], f"W{r['wbits']}A{r['abits']}", r["threads"])
        groups.setdefault(key, []).append(r["ratio_ours_over_ort"])
    table = [{"model": m, "config": c, "threads": t, "layers": len(v), "median_ratio": round(float(np.median(v)), 4)}
             for (m, c, t), v in groups.items()]
    judged = [e for e in table if e["config"] in ("W4A4", "W2A4")]
    for e in judged:
        e["target"] = "met" if e["median_ratio"] <= 1.0 else "missed"
    status = "not measured" if not judged else ("met" if all(e["target"] == "met" for e in judged) else "missed")
    return {"target": TARGET_TEXT, "status": status, "table": table}


def write_markdown(path: Path, rows: list[dict], summary: dict, machine: str, command: str, notes: dict,
                   load: float | None) -> None:
    cols = ["layer", "model", "shape", "wbits", "abits", "threads", "ours_ms", "ort_int8_ms", "tvm_fp32_ms",
            "ours_spread", "ort_spread", "packed_weight_bytes", "ratio_ours_over_ort"]
    text = ("# Host kernels: our packed quantized conv vs ONNX Runtime int8 vs TVM float32\n\n"
            f"Command: `{command}`; load average at start {'not recorded' if load is None else load}\n\n"
            f"Machine: {machine}\n\n"
            f"Target: {summary['target']} (per model and thread count): **{summary['status']}**\n\n"
            + markdown_table(summary["table"], ["model", "config", "threads", "layers", "median_ratio", "target"])
            + "\n" + "".join(f"- {k}: {v}\n" for k, v in notes.items())
            + "\n## All rows (times in ms)\n\n" + markdown_table([_fmt(r) for r in rows], cols))
    path.write_text(text)


def _fmt(row: dict) -> dict:
    """Three significant digits for the Markdown rows (markdown_table prints floats with 2 decimals)."""
    return {k: f"{v:.3g}" if isinstance(v, float) else v for k, v in row.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 default-model shapes, W2A4 and W8A8, 1 thread, 3 repeats")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--min-repeat-ms", type=int, default=100)
    ap.add_argument("--out", type=Path, help="results JSON (the .md goes beside it); default "
                    "benchmarks/results/kernels_host.json, with --quick out/kernels_host_quick.json")
    ap.add_argument("--report", action="store_true", help="rewrite the tables from the JSON rows (notes edited)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker()
    from tqdm import tqdm

    from mpqdm.core.machine import command, machine

    if args.report:     # rewrite both files from the JSON rows (notes edited), keeping its provenance
        path = args.out or RESULTS / "kernels_host.json"
        old = json.loads(path.read_text())
        rows, summary = old["rows"], summarize(old["rows"])
        notes = run_notes(old["repeats"], old["min_repeat_ms"], old["target"])
        keep = {k: old[k] for k in ("machine", "commit", "command", "tvm_version", "onnxruntime_version", "target",
                                    "repeats", "min_repeat_ms")}
        load = old.get("load_average_at_start")        # absent in files written before it was recorded
        save_rows(path, rows, **keep, notes=notes, summary=summary,   # keep overrides today's provenance
                  **({} if load is None else {"load_average_at_start": load}))
        write_markdown(path.with_suffix(".md"), rows, summary, old["machine"], old["command"], notes, load)
        return None
    models, threads = args.models.split(","), [int(t) for t in args.threads.split(",")]
    configs, repeats, min_ms = args.configs.split(","), args.repeats, args.min_repeat_ms
    if args.quick:
        models, threads, configs, repeats, min_ms = ["default"], [1], ["W2A4", "W8A8"], 3, 10
    bad = [m for m in models if m not in MODELS] + [c for c in configs if c not in CONFIGS]
    if bad:
        raise SystemExit(f"unknown model/config {bad}; models: {', '.join(MODELS)}; configs: {', '.join(CONFIGS)}")
    shapes = [s for m in models for s in model_shapes(m)]
    if args.quick:
        shapes = [s for s in shapes if s.layer in QUICK_LAYERS]
    rows, load = [], round(os.getloadavg()[0], 2)
    with tqdm(total=len(shapes) * len(configs) * len(threads), unit="row") as bar:
        for t in threads:
            rows += run_threads(shapes, configs, t, repeats, min_ms, bar)
    order = {(s.model, s.layer): i for i, s in enumerate(shapes)}
    rows.sort(key=lambda r: (order[(r["model"], r["layer"])], list(CONFIGS).index(f"W{r['wbits']}A{r['abits']}"),
                             r["threads"]))
    summary = summarize(rows)
    out_json = args.out or (ROOT / "out" / "kernels_host_quick.json" if args.quick
                            else RESULTS / "kernels_host.json")
    board = load_board("host")
    notes = run_notes(repeats, min_ms, board.tvm_target_dict())
    save_rows(out_json, rows, tvm_version=tvm.__version__, onnxruntime_version=_ort_version(),
              target=board.tvm_target_dict(), repeats=repeats, min_repeat_ms=min_ms, notes=notes, summary=summary,
              load_average_at_start=load)
    write_markdown(out_json.with_suffix(".md"), rows, summary, machine(), command(), notes, load)
    print(markdown_table(summary["table"], ["model", "config", "threads", "layers", "median_ratio", "target"]))
    print(f"wrote {out_json} and {out_json.with_suffix('.md')}")


# what limits our kernels against ORT's, per kind of host (the rows of the last run of each kind)
LIMITS = ("on the AMD EPYC (AVX2) run the 3x3 convs of 16x16 and more pixels ran at 0.7-1.0x ORT's time; the 1x1 "
          "convs (up to 2x) and the 4x4-pixel layers (1.6x) kept the medians near 1.05: there the per-call work "
          "outside the dot product dominates (the epilogue's pass, each channel tile decoding its weights for "
          "few pixels). W8A8 was 2.3-3.4x ORT: 8-bit codes times 8-bit activations would saturate vpmaddubsw's "
          "int16 pairs, so odd and even k go through it separately")
LIMITS_AMX = ("with AMX the medians are 0.43-0.60x ORT's (which runs its convs on AVX512-VNNI), whatever the "
              "widths: a tile multiplies 8-bit codes, so 2-bit weights cost what 8-bit ones do, and the ratios "
              "come from the instruction, not from the width. Slower than ORT (1.1-1.9x): the stride-2 "
              "downsample convs (no AMX: a tile's rows must be pixels 1 apart, they take VNNI) and the 4x4-pixel "
              "layers (4-row tiles and the weight decode for 16 pixels)")


def run_notes(repeats: int, min_ms: int, tgt: dict) -> dict:
    """How each column was measured (written into both results files)."""
    ort = ("one QLinearConv node (opset 13): uint8 NCHW activations, int8 weights with per-channel scales and zero "
           "point 0, int32 bias; CPU provider, intra_op_num_threads = threads, inter_op 1, sequential. ORT runs "
           "8-bit data whatever the config: measured once per (shape, threads), repeated in each config's row")
    if not {"+avx512vnni", "+avxvnni"} & set(tgt.get("mattr", [])):
        ort += (". This host has no VNNI: ORT's U8S8 kernel (vpmaddubsw) saturates int16 pair sums when 8-bit weights "
                "meet 8-bit activations, so W8A8 rows time ORT's standard path but its results there are not exact "
                "(7-bit weights, ORT's reduce_range, are exact at the same speed)")
    return {
        "timing": f"median of {repeats} repeats, each the mean of enough calls to last >= {min_ms} ms "
                  "(TVM time_evaluator; ORT the same loop in Python over run_with_iobinding, after 2 warm-up runs)",
        "spread": "(p90 - p10) / median over the repeats",
        "ours": "schedule_qconv(spec, host board) compiled for the host target: the tensorised kernel "
                "(kernels/qconv_dot.py). With AMX (amx_int8; kernels/amx_intrin.py): stride-1 layers whose c_in "
                "is a multiple of 16 accumulate 16 pixels x 16-64 channels in int32 tiles over the whole "
                "reduction, tdpbusd on the pixels' codes and the decoded weights; other layers as without it. "
                "With VNNI one vpdpbusd per 4 k (16-channel tiles on AVX512-VNNI); on AVX2 4-deep u8 x s8 dots "
                "by vpmaddubsw + vpmaddwd, 8 pixels x 8 channels accumulated in registers, int16 pair sums of "
                "up to 16 k added before vpmaddwd where they cannot overflow; W7/W8 at A8 split odd and even k "
                "so int16 pair sums cannot saturate, twice the work. One group of all channels at wbits; "
                "random codes, symmetric weights (zero point 2^(wbits-1)), identity channel order",
        "ort_int8": ort,
        "tvm_fp32": FP32_SCHEDULE + "; measured once per (shape, threads)",
        "threads": "each thread count in a fresh worker process with TVM_NUM_THREADS set (TVM's default on x86 is "
                   "half the logical cores)",
        "packed_weight_bytes": "packing.packed_bytes(K, groups) + 8 bytes per output channel (float32 step, int32 "
                               "zero point)",
        "limits": LIMITS_AMX if "+amx-int8" in tgt.get("mattr", []) else LIMITS,
    }


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()

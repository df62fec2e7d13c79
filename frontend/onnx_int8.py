"""The int8 model a user would otherwise take: the FP UNet exported to ONNX (TorchScript exporter, opset
17; inputs sample [1,C,H,W] and timestep [1], float32) and quantized by ONNX Runtime's quantize_static
(QDQ, per-channel S8 weights, U8 activations, reduce_range; Conv, Gemm and the MatMuls with a weight;
the attention QK^T and AV MatMuls stay fp32; MinMax calibration on a few N(0,1) inputs at timesteps
spread over training). Timed in a fresh process: `python -m mpqdm.frontend.onnx_int8 MODEL.onnx
UNET_DIR THREADS` prints {ms, peak_rss_mb} (peak RSS: the process's VmHWM)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mpqdm.core.errors import UserError

OPS_INT8 = ["Conv", "Gemm", "MatMul"]
TIMESTEP = 500.0                     # the timestep of the timed calls


def input_shape(model_dir: Path) -> tuple[int, int, int, int]:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    size = cfg["sample_size"]
    h, w = (size, size) if isinstance(size, int) else size
    return 1, cfg["in_channels"], h, w


def feed(model_dir: Path, seed: int = 0, t: float = TIMESTEP) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal(input_shape(model_dir)).astype(np.float32)
    return {"sample": x, "timestep": np.array([t], dtype=np.float32)}


def eps_module(unet):
    """UNet2DModel as a module of (sample, timestep) -> eps, for the ONNX export."""
    import torch

    class Eps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep):
            return self.unet(sample, timestep).sample

    return Eps().eval()


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def session(path: Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_fp32(model_dir: Path, path: Path) -> float:
    """Write the fp32 ONNX model (atomically); returns its relative error against torch (<= 1e-4)."""
    import torch

    from .model_io import load_unet

    unet = load_unet(model_dir)
    f = feed(model_dir, seed=1)
    args = (torch.from_numpy(f["sample"]), torch.from_numpy(f["timestep"]))
    tmp = path.with_name(f".{path.stem}.tmp.onnx")
    torch.onnx.export(eps_module(unet), args, str(tmp), input_names=["sample", "timestep"], output_names=["eps"],
                      opset_version=17, dynamo=False)
    tmp.replace(path)
    with torch.inference_mode():
        ref = unet(*args).sample.numpy()
    err = rel_err(session(path).run(None, f)[0], ref)
    if err > 1e-4:
        raise UserError(f"{path}: ONNX Runtime's output differs from torch's by {err:.2e} (relative)")
    return err


def int8_exclusions(path: Path) -> tuple[list[str], dict[str, int]]:
    """MatMuls of two activations (attention QK^T and AV) to keep in fp32; counts of the nodes to quantize."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in g.initializer}
    exclude, count = [], {}
    for n in g.node:
        if n.op_type not in OPS_INT8:
            continue
        if n.op_type == "MatMul" and n.input[1] not in weights:
            exclude.append(n.name)
        else:
            count[n.op_type] = count.get(n.op_type, 0) + 1
    return exclude, count


def quantize_int8(model_dir: Path, fp32: Path, path: Path, calib_samples: int = 8) -> str:
    """Static QDQ int8 model of `fp32` at `path`; returns a note of what it quantizes."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    from .model_io import load_scheduler

    pre = path.with_name(f"{path.stem}-pre.onnx")
    quant_pre_process(str(fp32), str(pre))         # shape inference and ORT's basic graph optimizations
    exclude, count = int8_exclusions(pre)
    n_train = int(load_scheduler(model_dir).config.num_train_timesteps)
    steps = np.linspace(0, n_train - 1, calib_samples).round()

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([feed(model_dir, seed=100 + i, t=float(t)) for i, t in enumerate(steps)])

        def get_next(self):
            return next(self.feeds, None)

    tmp = path.with_name(f".{path.stem}.tmp.onnx")
    quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=OPS_INT8,
                    nodes_to_exclude=exclude, per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    tmp.replace(path)
    pre.unlink(missing_ok=True)
    g = onnx.load(str(path), load_external_data=False).graph          # what was quantized: weights from a DQ
    dq = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    done = {}
    for n in g.node:
        if n.op_type in OPS_INT8 and len(n.input) > 1 and n.input[0] in dq and n.input[1] in dq:
            done[n.op_type] = done.get(n.op_type, 0) + 1
    quantized = ", ".join(f"{k} {done.get(k, 0)}/{v}" for k, v in sorted(count.items()))
    f = feed(model_dir, seed=2)
    ref, got = (session(p).run(None, f)[0] for p in (fp32, path))
    return (f"int8 QDQ, U8 activations, S8 per-channel weights, reduce_range: {quantized}; fp32: {len(exclude)} "
            f"attention MatMuls (QK^T, AV); rel. err vs fp32 {rel_err(got, ref):.1e}")


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(float(line.split()[1]) / 1024, 1)
    return float("nan")


def median_ms(call, repeats: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return round(1e3 * statistics.median(times), 3)


def time_in_process(path: Path, model_dir: Path, threads: int, repeats: int = 20) -> dict:
    """One UNet call's median time and the process's peak RSS, in a fresh Python process."""
    cmd = [sys.executable, "-m", "mpqdm.frontend.onnx_int8", str(path), str(model_dir), str(threads), str(repeats)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise UserError(f"timing {path} in ONNX Runtime failed: {r.stderr.strip()[-1500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    path, model_dir, threads, repeats = Path(argv[0]), Path(argv[1]), int(argv[2]), int(argv[3])
    sess, f = session(path, threads), feed(model_dir)
    ms = median_ms(lambda: sess.run(None, f), repeats)
    print(json.dumps({"ms": ms, "peak_rss_mb": vm_hwm_mb(), "threads": threads, "repeats": repeats}))


if __name__ == "__main__":
    main(sys.argv[1:])

"""benchmarks/kernels_host.py on tiny shapes: a row's contents, and the ORT baseline computing the same layer."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from mpqdm.backend_tvm.tvm_compat import tensor
from mpqdm.core.packing import packed_bytes

_SPEC = importlib.util.spec_from_file_location(
    "kernels_host", Path(__file__).resolve().parent.parent / "benchmarks" / "kernels_host.py")
kh = sys.modules["kernels_host"] = importlib.util.module_from_spec(_SPEC)     # its dataclasses need the entry
_SPEC.loader.exec_module(kh)

KEYS = {"layer", "model", "shape", "wbits", "abits", "threads", "ours_ms", "ort_int8_ms", "tvm_fp32_ms",
        "ours_spread", "ort_spread", "packed_weight_bytes", "ratio_ours_over_ort"}
TINY = kh.Shape("tiny", "default", 6, 5, 8, 12, 3, 1, 1)


@pytest.fixture(scope="module")
def board():
    return kh.load_board("host")


def test_row_has_every_key(board):
    row = kh.measure_row(TINY, "W2A4", 1, board, repeats=1, min_repeat_ms=0)
    assert set(row) == KEYS
    assert row["shape"] == "6x5x8->12 k3x3 s1 p1" and (row["wbits"], row["abits"], row["threads"]) == (2, 4, 1)
    assert all(row[k] > 0 for k in ("ours_ms", "ort_int8_ms", "tvm_fp32_ms", "ratio_ours_over_ort"))
    assert row["packed_weight_bytes"] == packed_bytes(3 * 3 * 8, ((12, 2),)) + 8 * 12    # + float32 step, int32 zp


@pytest.mark.parametrize("config", ["W4A4", "W2A4", "W4A8"])
def test_qlinearconv_matches_our_kernel(board, config):
    """Same codes, steps and bias through both: ORT's uint8 output equals ours requantized, within one step."""
    spec = kh.Shape("odd", "default", 7, 6, 16, 10, 3, 2, 1).spec(*kh.CONFIGS[config])
    layer = kh.make_layer(spec, np.random.default_rng(5))
    args = [tensor(a) for a in kh.ours_args(layer)]
    kh.build_ours(spec, board).mod["qconv"](*args)
    ours = args[-1].numpy()                                             # float32 NHWC
    lo, hi = min(float(ours.min()), 0.0), max(float(ours.max()), 0.0)
    y_scale, y_zp = (hi - lo) / 255, int(round(-lo / ((hi - lo) / 255)))
    run, out = kh.ort_runner(kh.qlinearconv_model(layer, y_scale, y_zp), layer.x.transpose(0, 3, 1, 2), 1)
    run()
    got = out.numpy().transpose(0, 2, 3, 1).astype(np.int32)
    want = np.clip(np.round(ours / np.float32(y_scale)) + y_zp, 0, 255).astype(np.int32)
    assert np.abs(got - want).max() <= 1
    assert np.abs((got - y_zp) * y_scale - ours).max() <= y_scale * 1.0001


def test_summary_judges_w4a4_and_w2a4_only():
    def row(w, a, ratio):
        return {"model": "default", "wbits": w, "abits": a, "threads": 1, "ratio_ours_over_ort": ratio}

    s = kh.summarize([row(2, 4, 0.5), row(2, 4, 0.9), row(4, 4, 1.2), row(8, 8, 9.0)])
    by = {e["config"]: e for e in s["table"]}
    assert by["W2A4"]["median_ratio"] == 0.7 and by["W2A4"]["target"] == "met"
    assert by["W4A4"]["target"] == "missed" and "target" not in by["W8A8"] and s["status"] == "missed"

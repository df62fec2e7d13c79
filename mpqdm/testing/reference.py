"""NumPy integer references for the quantized kernels (the kernels must equal these exactly)."""

from __future__ import annotations

import numpy as np


def patches(x_codes: np.ndarray, kh: int, kw: int, stride: int, pad: int, za: int) -> np.ndarray:
    """[N, H, W, C] codes -> [N, Ho, Wo, kh*kw*C] in (kh, kw, C) order; padding reads the zero code."""
    n, h, w, c = x_codes.shape
    xp = np.full((n, h + 2 * pad, w + 2 * pad, c), za, dtype=np.int64)
    xp[:, pad: pad + h, pad: pad + w] = x_codes
    ho, wo = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    cols = [xp[:, r: r + stride * ho: stride, q: q + stride * wo: stride] for r in range(kh) for q in range(kw)]
    return np.concatenate(cols, axis=-1)


def qconv_int(x_codes, rows, order, zw, za, kh=1, kw=1, stride=1, pad=0) -> np.ndarray:
    """sum_k (x - za)(w - zw) per output pixel and channel, channels in ORIGINAL order (int64).

    rows [c_out, K] are the weight codes in plan order, `order[p]` the original channel at plan
    position p, zw the zero points in original order."""
    cols = patches(np.asarray(x_codes), kh, kw, stride, pad, za) - za
    w = np.empty_like(np.asarray(rows, dtype=np.int64))
    w[np.asarray(order)] = rows
    return cols @ (w - np.asarray(zw, dtype=np.int64)[:, None]).T


def quantize_input(x: np.ndarray, smooth: np.ndarray, step: float, zero: int, bits: int) -> np.ndarray:
    """Codes of x / smooth (per input channel, last axis) as the frontend computes them (float32)."""
    xs = np.asarray(x, np.float32) / np.asarray(smooth, np.float32)
    q = np.round(xs / np.float32(step)) + zero
    return np.clip(q, 0, 2 ** bits - 1).astype(np.uint8)

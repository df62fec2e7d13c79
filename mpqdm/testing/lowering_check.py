"""Numerics of a lowered plan against the frontend's integer reference (docs/ARCHITECTURE.md, numerics), shared by the
tests and benchmarks/compile.py."""

from __future__ import annotations

import numpy as np
import torch

from mpqdm.frontend.quant.swap import set_step
from mpqdm.testing.executor import Executor
from mpqdm.testing.intref import IntRefLayer, integer_reference


def check_unet(plan, low, lib, export_dir, step: int, seed: int = 0) -> dict:
    """One UNet call at `step` through the executor and the integer reference.

    - exact: every quantized layer's int32 accumulators, recovered from its float output, equal the
      reference's accumulators on the same input codes (the kernel's own codes);
    - rel_err of the noise prediction, and the activation codes that differ from the reference's
      (flipped by float rounding at a code boundary) out of all codes."""
    ref, _ = integer_reference(export_dir)
    layers = {n: m for n, m in ref.named_modules() if isinstance(m, IntRefLayer)}
    ex = Executor(plan, lib)
    ex.trace = []
    size = ex.tensor("input").shape
    x = torch.randn(1, size[3], size[1], size[2], generator=torch.Generator().manual_seed(seed))
    t = int(low.schedule.timesteps[step])
    ours = torch.from_numpy(ex.run(x.permute(0, 2, 3, 1).numpy(), float(t), step)).permute(0, 3, 1, 2)
    set_step(ref, low.step_of[step])
    with torch.no_grad():
        theirs = ref(x, torch.tensor([t])).sample
    exact, compared, total, flipped, codes = True, 0, 0, 0, 0
    for (c, args) in ex.trace:
        if c.kernel.startswith("mpq_quantize"):
            mine = args[-1]
            ref_codes = layers[c.op].last_codes
            ref_codes = ref_codes.permute(0, 2, 3, 1) if ref_codes.dim() == 4 else ref_codes
            flipped += int((torch.from_numpy(mine.astype(np.int64)).reshape(ref_codes.shape) != ref_codes).sum())
            codes += mine.size
        elif c.kernel.startswith("mpq_qconv"):
            eq, n, m = accumulators_equal(layers[c.op], args)
            exact, compared, total = exact and eq, compared + n, total + m
    rel = float((ours - theirs).norm() / theirs.norm())
    return {"exact": exact, "acc_compared": compared, "acc_total": total, "rel_err": rel,
            "flipped_codes": flipped, "codes": codes}


def accumulators_equal(layer: IntRefLayer, args) -> tuple[bool, int, int]:
    """(all equal, compared, total): the kernel's accumulators, recovered from its float32 output
    y = acc * (sa * sw) + bias, against the reference's on the same codes. An element is compared
    where float32 rounding of y cannot hide a difference of one (4 ulp of |y| < scale / 2)."""
    x, _, _, sw, _, _, bias, act, _, y = args
    qx = torch.from_numpy(x.astype(np.int64))
    conv = layer.meta["kind"] == "conv2d"
    qx = qx.permute(0, 3, 1, 2) if conv else qx.reshape(-1, qx.shape[-1])
    acc = layer.accumulate(qx).numpy()                                # plan order
    acc = np.moveaxis(acc, 1, -1) if conv else acc
    ref = np.empty_like(acc)
    ref[..., layer.order.numpy()] = acc                               # original order
    y = y.astype(np.float64).reshape(ref.shape)
    scale = np.float64(act[0]) * sw.astype(np.float64)
    mine = np.rint((y - bias) / scale)
    ok = 4 * np.spacing(np.abs(y).astype(np.float32)).astype(np.float64) < np.abs(scale) / 2
    return bool(np.array_equal(mine[ok].astype(np.int64), ref[ok])), int(ok.sum()), int(ok.size)

"""The bit widths the toolchain implements, and the one check of them."""

from __future__ import annotations

import numpy as np

from .errors import UserError

WBITS = tuple(range(1, 9))      # weights: any width, per channel group (core/packing.py)
ABITS = (4, 8)                  # activations: what the kernels take
CANDIDATE_WBITS = (1, 2, 3, 4, 8)   # the weight widths the allocator chooses from and profiling times


def check_bits(bits, what: str, allowed=WBITS) -> None:
    """Every width in `bits` (an int, a sequence or an array) is one of `allowed`."""
    values = [int(b) for b in np.atleast_1d(np.asarray(bits)).ravel()]
    bad = sorted({b for b in values if b not in allowed})
    if bad or not values:
        lo, hi = min(allowed), max(allowed)
        span = f"in {lo}..{hi}" if list(allowed) == list(range(lo, hi + 1)) else " or ".join(map(str, allowed))
        raise UserError(f"{what}: bits must be {span}, got {bad or 'none'}")

"""Packed weights (format owner; the artifact's C header restates this layout).

A quantized layer's weights, output channels in plan order, are stored group after group. In a
group of n channels at b bits (1..8) each channel is one row of K codes, K = kh*kw*c_in in
(kh, kw, c_in) order for a conv (NHWC kernels) and c_in for a dense layer. A row is a bit stream
in little-endian 32-bit words: code k holds bits [k*b, (k+1)*b) of the row, least significant bit
first, and the row ends with zero bits up to a whole word (W = ceil(K*b/32) words).
Channels are interleaved in tiles of LANES: word w of the rows of channels t*LANES .. t*LANES+7
are stored side by side, at [t][w][lane], so one vector load gives the same word of LANES
channels (a group whose size is not a multiple of LANES is padded with zero rows). Groups follow
each other, and LANES zero guard words end the layer (a kernel extracting a code through a 64-bit
window also loads the word after it). Codes are never expanded to bytes in memory.

    bytes = 4 * (sum over groups of ceil(n_g / LANES) * LANES * W_g + LANES)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bits import check_bits
from .errors import UserError

WORD_BITS = 32
LANES = 8


def words_per_row(k: int, bits: int) -> int:
    return -(-k * bits // WORD_BITS)


def pack_rows(codes: np.ndarray, bits: int) -> np.ndarray:
    """[n, K] codes in 0..2^bits-1 -> [n, ceil(K*bits/32)] uint32 rows."""
    check_bits(bits, "weight bits")
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise UserError(f"codes must be [channels, K], got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << bits):
        raise UserError(f"codes outside 0..{(1 << bits) - 1} for {bits}-bit weights")
    n, k = codes.shape
    w = words_per_row(k, bits)
    planes = (codes.astype(np.uint32)[..., None] >> np.arange(bits, dtype=np.uint32)) & 1   # [n, K, b]
    stream = np.zeros((n, w * WORD_BITS), dtype=np.uint64)
    stream[:, : k * bits] = planes.reshape(n, k * bits)
    weights = np.uint64(1) << np.arange(WORD_BITS, dtype=np.uint64)
    return (stream.reshape(n, w, WORD_BITS) * weights).sum(-1).astype(np.uint32)


def unpack_rows(words: np.ndarray, bits: int, k: int) -> np.ndarray:
    """Inverse of pack_rows: [n, words] uint32 -> [n, K] uint8 codes."""
    check_bits(bits, "weight bits")
    words = np.asarray(words, dtype=np.uint32)
    n = words.shape[0]
    bitstream = (words[..., None] >> np.arange(WORD_BITS, dtype=np.uint32)) & 1            # [n, w, 32]
    bitstream = bitstream.reshape(n, -1)[:, : k * bits].reshape(n, k, bits)
    return (bitstream << np.arange(bits, dtype=np.uint32)).sum(-1).astype(np.uint8)


def weight_rows(codes: np.ndarray) -> np.ndarray:
    """Export codes [c_out, c_in(, kh, kw)] -> rows [c_out, K] in the kernels' (kh, kw, c_in) order."""
    codes = np.asarray(codes)
    if codes.ndim == 4:
        return codes.transpose(0, 2, 3, 1).reshape(codes.shape[0], -1)
    if codes.ndim == 2:
        return codes
    raise UserError(f"weight codes must be 2-D (dense) or 4-D (conv), got shape {codes.shape}")


def tiles(n: int) -> int:
    return -(-n // LANES)


def interleave(words: np.ndarray) -> np.ndarray:
    """[n, W] rows -> flat [tiles, W, LANES] words (zero rows pad the last tile)."""
    n, w = words.shape
    padded = np.zeros((tiles(n) * LANES, w), dtype=np.uint32)
    padded[:n] = words
    return padded.reshape(-1, LANES, w).transpose(0, 2, 1).ravel()


def deinterleave(flat: np.ndarray, n: int, w: int) -> np.ndarray:
    return flat.reshape(-1, w, LANES).transpose(0, 2, 1).reshape(-1, w)[:n]


def group_words(k: int, n: int, bits: int) -> int:
    return tiles(n) * LANES * words_per_row(k, bits)


@dataclass(frozen=True)
class PackedLayer:
    k: int
    groups: tuple[tuple[int, int], ...]      # (channels, bits) in plan order
    words: np.ndarray                        # uint32: all groups, then LANES guard words

    @property
    def group_offsets(self) -> tuple[int, ...]:
        """Word offset of each group."""
        out, off = [], 0
        for n, b in self.groups:
            out.append(off)
            off += group_words(self.k, n, b)
        return tuple(out)

    @property
    def nbytes(self) -> int:
        return self.words.nbytes

    def unpack(self) -> np.ndarray:
        rows = []
        for (n, b), off in zip(self.groups, self.group_offsets, strict=True):
            w = words_per_row(self.k, b)
            rows.append(unpack_rows(deinterleave(self.words[off: off + group_words(self.k, n, b)], n, w), b, self.k))
        return np.concatenate(rows)


def packed_bytes(k: int, groups) -> int:
    return 4 * (sum(group_words(k, n, b) for n, b in groups) + LANES)


# What the artifact stores per quantized layer beside the packed words: a float32 step and an
# int32 zero point per output channel. The allocator's memory budget counts exactly this.
PER_CHANNEL_BYTES = 8


def group_bytes(k: int, n: int, bits: int) -> int:
    return 4 * group_words(k, n, bits)


def layer_fixed_bytes(c_out: int) -> int:
    """Bytes of a layer that do not depend on its bits: guard words, steps and zero points."""
    return 4 * LANES + PER_CHANNEL_BYTES * c_out


def layer_weight_bytes(k: int, groups) -> int:
    """Everything the artifact stores for a quantized layer's weights (groups: [(channels, bits)])."""
    return packed_bytes(k, groups) + PER_CHANNEL_BYTES * sum(n for n, _ in groups)


def pack_layer(rows: np.ndarray, groups) -> PackedLayer:
    """rows [c_out, K] in plan order; groups [(channels, bits), ...] covering them in order."""
    groups = tuple((int(n), int(b)) for n, b in groups)
    if sum(n for n, _ in groups) != rows.shape[0]:
        raise UserError(f"groups cover {sum(n for n, _ in groups)} channels, the layer has {rows.shape[0]}")
    parts, start = [], 0
    for n, b in groups:
        parts.append(interleave(pack_rows(rows[start: start + n], b)))
        start += n
    words = np.concatenate(parts + [np.zeros(LANES, dtype=np.uint32)])
    return PackedLayer(rows.shape[1], groups, words)

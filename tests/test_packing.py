"""Packed weights: round trips at every width, exact byte sizes, the layer layout."""

import numpy as np
import pytest

from mpqdm.core.packing import (
    PackedLayer,
    pack_layer,
    pack_rows,
    packed_bytes,
    unpack_rows,
    weight_rows,
    words_per_row,
)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("k", [1, 7, 31, 32, 33, 288, 1153])
def test_round_trip_every_width(bits, k):
    rng = np.random.default_rng(bits * 1000 + k)
    codes = rng.integers(0, 1 << bits, size=(5, k), dtype=np.uint8)
    words = pack_rows(codes, bits)
    assert words.dtype == np.uint32 and words.shape == (5, -(-k * bits // 32))
    assert np.array_equal(unpack_rows(words, bits, k), codes)


def test_bit_order_is_lsb_first_within_little_endian_words():
    # 3-bit codes 1..11: code k at bits [3k, 3k+3); code 10 straddles words 0 and 1
    codes = np.arange(1, 12, dtype=np.uint8)[None] % 8
    words = pack_rows(codes, 3)
    stream = sum(int(c) << (3 * i) for i, c in enumerate(codes[0]))
    assert [int(w) for w in words[0]] == [stream & 0xFFFFFFFF, stream >> 32]


def test_bad_codes_and_bits():
    with pytest.raises(ValueError, match="outside 0..3"):
        pack_rows(np.array([[4]]), 2)
    with pytest.raises(ValueError, match="1..8"):
        pack_rows(np.array([[0]]), 9)


def test_layer_layout_and_bytes():
    rng = np.random.default_rng(0)
    conv = rng.integers(0, 4, size=(13, 5, 3, 3), dtype=np.uint8)      # c_out, c_in, kh, kw
    rows = weight_rows(conv)
    assert rows.shape == (13, 45) and rows[2, 3 * 5 + 4] == conv[2, 4, 1, 0]   # (kh, kw, c_in) order
    groups = [(3, 3), (9, 2), (1, 1)]
    rows = rows.copy()
    rows[:3] = rng.integers(0, 8, size=(3, 45))
    rows[12:] &= 1
    layer = pack_layer(rows, groups)
    # tiles of 8 channels: 3 -> 8 rows of 5 words, 9 -> 16 rows of 3 words, 1 -> 8 rows of 2 words; 8 guard words
    assert layer.nbytes == packed_bytes(45, groups) == 4 * (8 * 5 + 16 * 3 + 8 * 2 + 8)
    assert layer.group_offsets == (0, 40, 88)
    assert not layer.words[-8:].any()
    assert np.array_equal(layer.unpack(), rows)
    # interleaving: word w of channel c of a group sits at [c // 8][w][c % 8]
    g1 = pack_rows(rows[3:12], 2)
    assert layer.words[40 + (1 * 3 + 2) * 8 + 0] == g1[8, 2]
    with pytest.raises(ValueError, match="cover 12 channels"):
        pack_layer(rows, [(10, 2), (2, 1)])
    assert isinstance(layer, PackedLayer)


def test_bytes_equal_the_bits_they_hold_when_rows_fill_words():
    # K = 288 (32 input channels x 3x3) and 64 channels: every width fills whole words and tiles,
    # so bytes = bits / 8 + the guard
    for b in range(1, 9):
        assert words_per_row(288, b) * 32 == 288 * b
        assert packed_bytes(288, [(64, b)]) == 64 * 288 * b // 8 + 4 * 8

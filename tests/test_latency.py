"""Latency tables: the format round trip, the latency model, and `profile` on a tiny UNet."""

import json

import pytest

from mpqdm.backend_tvm.profile import profile, work_list
from mpqdm.core.errors import UserError
from mpqdm.core.latency import LatencyTable, partial_width
from mpqdm.frontend.model_io import load_unet
from mpqdm.frontend.quant.shapes import layer_specs
from mpqdm.frontend.quant.swap import LayerPolicy


def entry(shape, w, a, ch, ms, threads=2):
    return {"op": "qconv", "shape": shape, "wbits": w, "abits": a, "threads": threads, "channels": ch,
            "median_ms": ms, "spread": 0.01, "repeats": 5, "build_id": "x", "measured": "t"}


def test_latency_model_and_round_trip(tmp_path):
    t = LatencyTable("host")
    # 2 bits: t(n) = 1 + 0.05 n; 4 bits: t(n) = 1.2 + 0.1 n (64 channels full, 32 partial)
    t.merge([entry("s", 2, 4, 64, 1 + 0.05 * 64), entry("s", 2, 4, 32, 1 + 0.05 * 32),
             entry("s", 4, 4, 64, 1.2 + 0.1 * 64), entry("s", 4, 4, 32, 1.2 + 0.1 * 32)])
    path = tmp_path / "latency.json"
    t.save(path)
    t2 = LatencyTable.load(path, "host")
    assert t2.entries == t.entries
    got = t2.layer_ms("s", 64, 32, [(16, 4), (48, 2)], abits=4, threads=2)
    assert got == pytest.approx(1.2 + 1.0 + 16 * 0.1 + 48 * 0.05)       # one fixed cost per width used
    assert t2.layer_ms("s", 64, 32, [(64, 4)], abits=4, threads=2) == pytest.approx(1.2 + 0.1 * 64)
    with pytest.raises(UserError, match="no entry op=qconv shape=s wbits=3"):
        t2.layer_ms("s", 64, 32, [(64, 3)], abits=4, threads=2)
    with pytest.raises(UserError, match="not 'rpi4'"):
        LatencyTable.load(path, "rpi4")
    d = json.loads(path.read_text())
    d["version"] = 9
    path.write_text(json.dumps(d))
    with pytest.raises(UserError, match="v1 latency table"):
        LatencyTable.load(path)
    # merging replaces the same key and keeps the others
    t.merge([entry("s", 2, 4, 64, 9.0), entry("u", 2, 4, 8, 1.0)])
    assert len(t.entries) == 5 and t.time("qconv", "s", 2, 4, 2, 64) == 9.0


def test_partial_width():
    assert partial_width(64) == 32 and partial_width(24) == 8 and partial_width(12) == 6 and partial_width(1) == 1


def test_profile_tiny_unet(tiny_unet_dir, tmp_path):
    table = tmp_path / "lat.json"
    info = profile(tiny_unet_dir, "host", wbits=(2,), abits=(4,), repeats=1, min_repeat_ms=0, table_path=table,
                   progress=False)
    t = LatencyTable.load(table, "host")
    specs = layer_specs(load_unet(tiny_unet_dir))
    policy = LayerPolicy()
    for name, s in specs.items():
        kind = policy.kind(name)
        if kind == "float":
            continue
        w, a = (8, 8) if kind == "w8a8" else (2, 4)
        for ch in (s.c_out, partial_width(s.c_out)):
            assert t.time("qconv", s.shape_key(), w, a, info["threads"], ch) > 0
    n = len(t.entries)
    assert n == info["entries"] == len(work_list(tiny_unet_dir, (2,), (4,), policy))
    profile(tiny_unet_dir, "host", wbits=(3,), abits=(4,), repeats=1, min_repeat_ms=0, table_path=table,
            progress=False)
    assert len(LatencyTable.load(table).entries) > n          # merged, nothing lost


def test_profile_bad_input(tiny_unet_dir, tmp_path):
    with pytest.raises(UserError, match="RPC tracker"):
        profile(tiny_unet_dir, "rpi4", table_path=tmp_path / "x.json")
    with pytest.raises(UserError, match="known boards|unknown board|Unknown board"):
        profile(tiny_unet_dir, "no-such-board", table_path=tmp_path / "x.json")
    with pytest.raises(UserError, match="1..8"):
        profile(tiny_unet_dir, "host", wbits=(9,), table_path=tmp_path / "x.json")


def test_unsupported_conv_is_named(tiny_unet_dir):
    from torch import nn

    unet = load_unet(tiny_unet_dir)
    unet.conv_in = nn.Conv2d(1, unet.conv_in.out_channels, 3, padding=2, dilation=2)
    with pytest.raises(UserError, match="'conv_in'.*dilation"):
        layer_specs(unet)

"""Latency tables: the format round trip, the latency model, and `profile` on a tiny UNet."""

import json

import pytest

from mpqdm.backend_tvm.compile import kernel_choice
from mpqdm.backend_tvm.kernels.qconv_schedule import dot_intrins, kernel_paths
from mpqdm.backend_tvm.lower import lower_export
from mpqdm.backend_tvm.plan import call_kind
from mpqdm.backend_tvm.profile import conv_jobs, profile
from mpqdm.boards.registry import load_board
from mpqdm.core.errors import UserError
from mpqdm.core.latency import LatencyTable, partial_width
from mpqdm.frontend.model_io import load_unet, model_fingerprint
from mpqdm.frontend.quant.shapes import layer_specs
from mpqdm.frontend.quant.swap import LayerPolicy
from mpqdm.testing.fixtures import host_source, tiny_export


def entry(shape, w, a, ch, ms, threads=2, op="qconv", kernel=""):
    return {"op": op, "shape": shape, "wbits": w, "abits": a, "threads": threads, "channels": ch, "kernel": kernel,
            "median_ms": ms, "spread": 0.01, "repeats": 5, "build_id": "x", "measured": "t", **host_source()}


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
    with pytest.raises(UserError, match="v3 latency table"):
        LatencyTable.load(path)
    # merging replaces the same key and keeps the others
    t.merge([entry("s", 2, 4, 64, 9.0), entry("u", 2, 4, 8, 1.0)])
    assert len(t.entries) == 5 and t.time("qconv", "s", 2, 4, 2, 64) == 9.0


def test_each_shape_takes_its_fastest_kernel_path(tmp_path):
    """kernel_for: the path fastest at full width; the latency model fits that path's own two widths."""
    t = LatencyTable("host")
    t.merge([entry("s", 2, 4, 64, 4.0, kernel="amx"), entry("s", 2, 4, 32, 3.0, kernel="amx"),
             entry("s", 2, 4, 64, 5.0, kernel="vnni"), entry("s", 2, 4, 32, 1.0, kernel="vnni"),
             entry("s", 4, 4, 64, 6.0, kernel="amx"), entry("s", 4, 4, 64, 5.5, kernel="vnni")])
    assert t.kernel_for("s", 2, 4, 2) == "amx" and t.kernel_for("s", 4, 4, 2) == "vnni"
    assert t.kernel_for("s", 3, 4, 2) is None and t.kernel_for("s", 2, 4, 1) is None
    assert t.time("qconv", "s", 2, 4, 2, 32) == 3.0             # amx's partial, not vnni's faster one
    assert t.time("qconv", "s", 2, 4, 2, 32, "vnni") == 1.0
    assert t.fit("s", 64, 32, 2, 4, 2) == pytest.approx((2.0, 1 / 32))
    t.merge([entry("s", 2, 4, 64, 4.5, kernel="vnni")])        # a new timing moves the choice
    assert t.kernel_for("s", 2, 4, 2) == "amx"
    t.merge([entry("s", 2, 4, 64, 3.5, kernel="vnni")])
    assert t.kernel_for("s", 2, 4, 2) == "vnni"
    with pytest.raises(UserError, match="kernel=neon"):
        t.time("qconv", "s", 2, 4, 2, 64, "neon")
    # a version 2 table (no kernel field) reads as the rule's path ("")
    path = tmp_path / "v2.json"
    old = {k: v for k, v in entry("s", 2, 4, 64, 2.0).items() if k != "kernel"}
    path.write_text(json.dumps({"format": "mpqdm.latency", "version": 2, "board": "host", "entries": [old],
                                "models": {}}))
    v2 = LatencyTable.load(path, "host")
    assert v2.kernel_for("s", 2, 4, 2) == "" and v2.time("qconv", "s", 2, 4, 2, 64) == 2.0
    bad = {**entry("s", 2, 4, 64, 2.0), "kernel": 3}
    path.write_text(json.dumps({"format": "mpqdm.latency", "version": 3, "board": "host", "entries": [bad]}))
    with pytest.raises(UserError, match="kernel must be strings"):
        LatencyTable.load(path, "host")


def test_partial_width():
    assert partial_width(64) == 32 and partial_width(24) == 8 and partial_width(12) == 6 and partial_width(1) == 1


def test_whole_step_counts_quantizers_and_float_calls():
    t = LatencyTable("host")
    t.merge([entry("s", 2, 4, 64, 1.0), entry("s", 2, 8, 64, 1.0), entry("s", 0, 4, 0, 0.25, op="quantize"),
             entry("GroupNormSpec(x)", 0, 0, 0, 0.5, op="group_norm"), entry("AddSpec(y)", 0, 0, 0, 0.1, op="add")])
    t.models["m" * 16] = {"name": "m", "calls": [{"op": "group_norm", "shape": "GroupNormSpec(x)", "count": 3},
                                                 {"op": "add", "shape": "AddSpec(y)", "count": 2}]}
    got = t.step_ms("m" * 16, [("a", "s", 64, 64, [(64, 2)], 4), ("b", "s", 64, 64, [(64, 2)], 4)], threads=2)
    assert got == pytest.approx({"qconv": 2.0, "quantize": 0.5, "group_norm": 1.5, "add": 0.2})
    t.models["m" * 16]["fused_quantizers"] = ["b"]         # b's quantizer runs inside a GroupNorm call
    got = t.step_ms("m" * 16, [("a", "s", 64, 64, [(64, 2)], 4), ("b", "s", 64, 64, [(64, 2)], 4)], threads=2)
    assert got["quantize"] == pytest.approx(0.25)
    assert t.fixed_ms("m" * 16, 2) == pytest.approx(1.7)
    with pytest.raises(UserError, match="no whole-step calls of model"):
        t.step_ms("z" * 16, [], 2)
    with pytest.raises(UserError, match=r"no entry op=quantize shape=s wbits=0 abits=8.*host --threads 2 MODEL"):
        t.step_ms("m" * 16, [("a", "s", 64, 64, [(64, 2)], 8)], 2)


def test_a_table_of_another_cpu_is_refused():
    host, rpi5 = load_board("host"), load_board("rpi5")
    t = LatencyTable("rpi5")
    arm = {"key": "rpi5", "cpu": "Cortex-A76", "features": ["neon", "dotprod"], "emulated": False}
    t.merge([{**entry("s", 2, 4, 8, 1.0), **arm}])
    assert t.check_measured_on(rpi5) == []
    t.merge([{**entry("s", 2, 4, 8, 1.0), **arm, "features": ["neon"]}])           # a Pi 4's features
    with pytest.raises(UserError, match=r"features \['neon'\].*describes \['dotprod', 'neon'\]"):
        t.check_measured_on(rpi5)
    t = LatencyTable("rpi5")
    t.merge([{**entry("s", 2, 4, 8, 1.0), **arm, "cpu": "Cortex-A78"}])
    with pytest.raises(UserError, match="'Cortex-A78'.*describes 'Cortex-A76'"):
        t.check_measured_on(rpi5)
    h = LatencyTable("host")
    h.merge([{**entry("s", 2, 4, 8, 1.0), "cpu": "Another x86"}])                   # same features: a warning
    assert any("Another x86" in w for w in h.check_measured_on(host))
    h.merge([{**entry("s", 2, 4, 8, 1.0), "features": []}])
    if host.cpu_features:
        with pytest.raises(UserError, match="measured on a CPU with features"):
            h.check_measured_on(host)


def test_profile_tiny_unet(tiny_unet_dir, tmp_path):
    """Every call kind of the model's UNet call gets an entry; a rerun measures only what is missing."""
    table = tmp_path / "lat.json"
    v2 = json.dumps({"format": "mpqdm.latency", "version": 2, "board": "host", "entries": [], "models": {}})
    table.write_text(v2)            # an older table: a profile that fails leaves it, one that runs keeps it aside
    with pytest.raises(UserError, match="--passes"):
        profile(tiny_unet_dir, "host", wbits=(2,), abits=(4,), table_path=table, progress=False, passes=0)
    assert table.read_text() == v2
    info = profile(tiny_unet_dir, "host", wbits=(2,), abits=(4,), repeats=1, min_repeat_ms=0, table_path=table,
                   progress=False, passes=2)
    assert (tmp_path / "lat.v2.json").read_text() == v2 and any("kept as" in w for w in info["warnings"])
    t = LatencyTable.load(table, "host")
    assert all(e["repeats"] == 2 for e in t.entries.values())          # one timing per pass, both kept
    specs = layer_specs(load_unet(tiny_unet_dir))
    policy = LayerPolicy()
    for name, s in specs.items():
        kind = policy.kind(name)
        if kind == "float":
            continue
        w, a = (8, 8) if kind == "w8a8" else (2, 4)
        for ch in (s.c_out, partial_width(s.c_out)):
            assert t.time("qconv", s.shape_key(), w, a, info["threads"], ch) > 0
        assert t.time("quantize", s.shape_key(), 0, a, info["threads"], 0) > 0
    mid = model_fingerprint(tiny_unet_dir)[:16]
    calls = t.models[mid]["calls"]
    assert {"group_norm", "add", "timestep"} <= {c["op"] for c in calls}
    assert t.fixed_ms(mid, info["threads"]) > 0
    e = next(iter(t.entries.values()))
    assert e["key"] == "local" and e["features"] == list(load_board("host").cpu_features) and not e["emulated"]
    # every call of a compiled plan of this model finds its entry
    plan, _ = lower_export(tiny_export(tiny_unet_dir, tmp_path / "export", plan="uniform"), load_board("host"))
    layers = layer_specs(load_unet(tiny_unet_dir))
    for c in plan.calls:
        op = call_kind(c.kernel)
        w, a = (8, 8) if policy.kind(c.op) == "w8a8" else (2, 4)
        if op == "qconv":
            assert t.time(op, layers[c.op].shape_key(), w, a, info["threads"], layers[c.op].c_out) > 0
        elif op == "quantize":
            assert t.time(op, layers[c.op].shape_key(), 0, a, info["threads"], 0) > 0
        else:
            assert t.time(op, plan.kernel_specs[c.kernel], 0, 0, info["threads"], 0) > 0
    n = len(t.entries)
    jobs = conv_jobs(specs, (2,), (4,), policy, load_board("host"))
    assert n == info["entries"] == len(jobs) + len(calls)
    # every kernel path a shape can take here was timed, and compile builds the fastest
    host = load_board("host")
    for name, s in specs.items():
        if policy.kind(name) == "float":
            continue
        w, a = (8, 8) if policy.kind(name) == "w8a8" else (2, 4)
        paths = kernel_paths(s.with_width(s.c_out, w, a), host)
        assert {k[-1] for k in t.entries if k[:5] == ("qconv", s.shape_key(), w, a, info["threads"])} == set(paths)
        assert t.kernel_for(s.shape_key(), w, a, info["threads"]) in paths
    assert sum(info["fastest"].values()) == len({(j.shape, j.wbits, j.abits) for j in jobs if j.op == "qconv"})
    export = tmp_path / "export"
    choose, how = kernel_choice(host, table)
    assert how.startswith("measured")
    _, low = lower_export(export, host, choose=choose)
    for kind, spec in low.specs:
        if kind == "qconv":
            best = t.kernel_for(spec.shape_key(), spec.groups[0][1], spec.abits, host.threads)
            assert spec.kernels == (best,) * len(spec.groups) or dot_intrins(spec, host) is None
    again = profile(tiny_unet_dir, "host", wbits=(2,), abits=(4,), repeats=1, min_repeat_ms=0, table_path=table,
                    progress=False, passes=1)
    assert again["entries"] == 0 and again["skipped"] == n          # nothing measured twice
    profile(tiny_unet_dir, "host", wbits=(3,), abits=(4,), repeats=1, min_repeat_ms=0, table_path=table,
            progress=False, passes=1)
    assert len(LatencyTable.load(table).entries) > n          # merged, nothing lost


def test_profile_counts_instructions_on_an_emulated_board(tiny_unet_dir, tmp_path):
    """No Pi at hand: each quantized kernel path counted under qemu chooses the Pi 5's paths."""
    table = tmp_path / "rpi5.json"
    info = profile(tiny_unet_dir, "rpi5", wbits=(2,), abits=(4,), table_path=table, progress=False, count=True)
    t = LatencyTable.load(table, "rpi5")
    rpi5 = load_board("rpi5")
    assert t.emulated and t.check_measured_on(rpi5) == [] and info["entries"] == len(t.entries) > 0
    assert all(k[0] == "qconv" and k[4] == 1 and e["instructions"] > 0 for k, e in t.entries.items())
    assert {k[-1] for k in t.entries} == {"udot", "neon"}
    for (_, shape, w, a, _, _, _), e in t.entries.items():
        best = t.kernel_for(shape, w, a, 1)
        assert e["instructions"] >= t.entries[("qconv", shape, w, a, 1, e["channels"], best)]["instructions"]
    choose, how = kernel_choice(rpi5, table)
    assert "counted" in how and choose(shape, w, a) == t.kernel_for(shape, w, a, 1)
    with pytest.raises(UserError, match="give one of them"):
        profile(tiny_unet_dir, "rpi5", table_path=table, count=True, tracker="127.0.0.1:9")
    with pytest.raises(UserError, match="under qemu-user"):
        profile(tiny_unet_dir, "host", table_path=tmp_path / "h.json", count=True)


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

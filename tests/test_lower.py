"""Lowering a quantized export to the static plan, the Python executor, `mpqdm compile`."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
import tvm

from mpqdm.backend_tvm import compile as comp
from mpqdm.backend_tvm.artifact import read_artifact
from mpqdm.backend_tvm.lower import Lowering, lower_export
from mpqdm.backend_tvm.plan import ACT, CONST, check_memory
from mpqdm.boards.registry import load_board
from mpqdm.core.errors import UserError
from mpqdm.core.io import MARKER
from mpqdm.frontend.quant.export import load_export
from mpqdm.testing.lowering_check import check_unet


@pytest.fixture(scope="module")
def compiled(export_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled") / "host"
    info = comp.compile_export(export_dir, "host", out)
    return out, info


def test_lowered_unet_meets_the_numerics_contract(export_dir, compiled):
    out, _ = compiled
    plan, low = lower_export(export_dir, load_board("host"))
    lib = tvm.runtime.load_module(str(out / "kernels.so"))
    for step in (0, 2):
        r = check_unet(plan, low, lib, export_dir, step, seed=step)
        assert r["exact"] and r["acc_compared"] > 0.9 * r["acc_total"], r
        # a random tiny UNet cascades each float-rounding flip through its GroupNorms (see
        # test_export_intref.py): 1-12% of the codes here, by thread count; the default model's
        # numbers are in benchmarks/results/compile.md and its slow test
        assert r["rel_err"] < 5e-2, r


def test_memory_plan_reuses_the_arena(export_dir):
    plan, _ = lower_export(export_dir, load_board("host"))
    check_memory(plan)
    acts = [t for t in plan.tensors.values() if t.kind == ACT and t.alias_of is None]
    assert plan.arena_bytes < 0.5 * sum(t.nbytes for t in acts)
    assert all(t.offset % 64 == 0 for t in plan.tensors.values() if t.kind != CONST)


def test_artifact_round_trips_the_plan(export_dir, compiled):
    out, info = compiled
    plan, low = lower_export(export_dir, load_board("host"))
    art = read_artifact(out / "model.mpq")
    assert art["board"] == "host" and art["n_steps"] == plan.n_steps == 3
    assert art["arena_bytes"] == plan.arena_bytes
    for name, t in plan.tensors.items():
        a = art["tensors"][name]
        assert (a["dtype"], tuple(a["shape"]), a["kind"]) == (t.dtype, t.shape, t.kind)
        if t.kind == CONST and t.alias_of is None:
            assert np.array_equal(a["data"], t.data), name
        elif t.kind != CONST:
            assert a["offset"] == t.offset
    assert [(c["kernel"], c["op"], [tuple(x) for x in c["args"]]) for c in art["calls"]] == \
        [(c.kernel, c.op, [(a.tensor, a.step) for a in c.args]) for c in plan.calls]
    assert art["sampler"]["timesteps"] == [int(t) for t in low.schedule.timesteps]
    report = json.loads((out / "compile.json").read_text())
    assert report["kernel_calls"] == len(plan.calls) and report["artifact_kb"] > 0
    assert report["peak_activation_kb"] == round(plan.arena_bytes / 1024, 1)


def test_steps_resample_the_activation_parameters(export_dir):
    _, _, meta, tensors, _ = load_export(export_dir)
    plan, low = lower_export(export_dir, load_board("host"), steps=5)
    assert plan.n_steps == 5 and len(low.step_of) == 5
    name = next(iter(meta["layers"]))
    want = tensors[f"{name}.astep"].numpy()[low.step_of]
    assert np.array_equal(plan.tensors[f"{name}.astep"].data, want)
    trained = np.asarray(meta["timesteps"])
    for i, t in enumerate(low.schedule.timesteps):
        assert low.step_of[i] == int(np.abs(trained - int(t)).argmin())


@pytest.mark.parametrize("board", ["rpi4", "rpi5"])
def test_cross_compile_for_the_pis(tiny_omq_export, board, tmp_path):
    info = comp.compile_export(tiny_omq_export, board, tmp_path / board)
    obj = tmp_path / board / "kernels.o"
    assert info["library"] == "kernels.o" and obj.is_file() and not (tmp_path / board / "kernels.so").exists()
    syms = subprocess.run(["aarch64-linux-gnu-nm", str(obj)], capture_output=True, text=True, check=True).stdout
    art = read_artifact(tmp_path / board / "model.mpq")
    for k in art["kernels"]:
        assert f" T __tvm_ffi_{k}\n" in syms, k
    asm = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(obj)], capture_output=True, text=True).stdout
    dots = sum(f"\t{i}\t" in asm for i in ("sdot", "udot", "usdot"))
    assert (dots > 0) == (board == "rpi5")
    assert art["features"] == list(load_board(board).cpu_features)


def test_bad_inputs_are_named_and_leave_nothing(export_dir, tiny_unet_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    with pytest.raises(UserError, match="not a quantized export"):
        comp.compile_export(tiny_unet_dir, "host", out)
    with pytest.raises(UserError, match="no-such-board"):
        comp.compile_export(export_dir, "no-such-board", out)
    old = tmp_path / "old"
    shutil.copytree(export_dir, old)
    meta = json.loads((old / "quant_export.json").read_text())
    meta["version"] = 99
    (old / "quant_export.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="v99"):
        comp.compile_export(old, "host", out)
    assert not out.exists()
    # a folder of other files is never replaced
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(UserError, match="files mpqdm did not write"):
        comp.compile_export(export_dir, "host", out)
    # a failure while compiling leaves an existing output (a compile's own) as it was, and no staging folder
    (out / MARKER).write_text(json.dumps({"command": "compile"}))
    monkeypatch.setattr(comp, "compile_library", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        comp.compile_export(export_dir, "host", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old", "out"]
    assert (out / "keep").read_text() == "x"


def test_an_op_we_do_not_lower_is_named(export_dir):
    qunet, bitplan, meta, tensors, sched = load_export(export_dir)
    qunet.down_blocks[0].resnets[0].output_scale_factor = 2.0
    with pytest.raises(UserError, match="down_blocks.0.resnets.0.*output_scale_factor"):
        Lowering(qunet, bitplan, tensors, meta, load_board("host"), 3, sched).lower()
    qunet, bitplan, meta, tensors, sched = load_export(export_dir)
    qunet.mid_block = torch.nn.Identity()
    with pytest.raises(UserError, match="mid_block of type Identity"):
        Lowering(qunet, bitplan, tensors, meta, load_board("host"), 3, sched).lower()

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mpqdm.boards.registry import BOARDS_DIR, list_boards, load_board
from mpqdm.core.board import Board, amx_state_granted, detect_host_features
from mpqdm.core.errors import UserError

AARCH64 = ["rpi4", "rpi5", "jetson-orin-nano"]
CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw {extra} hypervisor\n\nprocessor\t: 1\n"

GOOD = """format = "mpqdm.board"
version = 2
name = "{name}"
description = "test board"
cpu = "Cortex-A53"
arch = "aarch64"
memory_mb = 1024
threads = 2
group_size = 8
cpu_features = ["neon"]

[target]
kind = "llvm"
mtriple = "aarch64-linux-gnu"

[toolchain]
cc = "aarch64-linux-gnu-gcc"
"""


def write_profile(tmp_path, text, name="tb"):
    d = tmp_path / name
    d.mkdir()
    (d / "board.toml").write_text(text.replace("{name}", name))
    return d


def test_committed_profiles_load():
    assert list_boards() == ["host", "jetson-orin-nano", "rpi4", "rpi5"]
    for name in list_boards():
        b = load_board(name)
        assert isinstance(b, Board) and b.name == name and b.path == BOARDS_DIR / name
        json.dumps(b.tvm_target_dict())
        assert load_board(BOARDS_DIR / name) == b == load_board(BOARDS_DIR / name / "board.toml")
    rpi4 = load_board("rpi4")
    assert "dotprod" not in rpi4.cpu_features and "+dotprod" not in rpi4.target["mattr"]
    for name in ("rpi5", "jetson-orin-nano"):
        b = load_board(name)
        assert "dotprod" in b.cpu_features and "+dotprod" in b.target["mattr"]
    assert load_board("jetson-orin-nano").cuda_arch == "sm_87"
    for name in AARCH64:
        b = load_board(name)
        assert b.arch == "aarch64" and b.cc.startswith("aarch64-linux-gnu-") and b.is_cross
        assert b.qemu_command("x")[0] == "qemu-aarch64" and b.qemu_command("x")[-1] == "x"


def test_host_profile():
    b = load_board("host")
    assert b.arch == "x86_64" and b.cc == "gcc" and b.qemu is None
    assert b.cpu_features == detect_host_features()
    amx = "amx_int8" in b.cpu_features          # one feature, two LLVM names (the tiles and their int8 products)
    assert len(b.target["mattr"]) == len(b.cpu_features) + amx
    assert ("+amx-tile" in b.target["mattr"]) == ("+amx-int8" in b.target["mattr"]) == amx
    assert b.qemu_command("a.out") == ["a.out"]
    d = b.tvm_target_dict()
    d["mattr"].append("+x")  # a copy: the board is unchanged
    assert "+x" not in b.target["mattr"]


def test_detect_features_from_fake_cpuinfo():
    assert detect_host_features(CPUINFO.format(extra="")) == ("avx2", "fma", "avx512f", "avx512bw")
    assert detect_host_features(CPUINFO.format(extra="avx512_vnni avx_vnni")) == (
        "avx2", "fma", "avx512f", "avx512bw", "avx512vnni", "avx_vnni")
    assert detect_host_features("processor : 0\n") == ()
    assert detect_host_features(CPUINFO.format(extra="amx_tile amx_int8"))[-1] == "amx_int8"   # a text: flags only


def test_this_machines_amx_counts_only_where_the_os_grants_its_state():
    """A CPU that lists amx_int8 on an OS that refuses the tile state (before Linux 5.16) gets no AMX kernels."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    listed = "amx_int8" in detect_host_features(flags)
    assert ("amx_int8" in detect_host_features()) == (listed and amx_state_granted())


def test_targets_accepted_by_tvm():
    tvm = pytest.importorskip("tvm")
    from tvm.target import codegen

    for name in list_boards():
        d = load_board(name).tvm_target_dict()
        t = tvm.target.Target(d)
        if "mcpu" in d:
            assert codegen.llvm_is_valid_cpu(d["mcpu"], d["mtriple"]), name
        # LLVM only warns on unknown mattr names: check each one is an enabled feature
        enabled = set(codegen.llvm_get_cpu_features(t))
        for attr in d.get("mattr", []):
            assert attr.lstrip("+") in enabled, (name, attr)
    # every x86 feature name the detector can produce maps to an LLVM feature
    mattr = load_board("host").tvm_target_dict()
    mattr["mattr"] = ["+avx2", "+fma", "+avx512f", "+avx512bw", "+avx512vnni", "+avxvnni"]
    enabled = set(codegen.llvm_get_cpu_features(tvm.target.Target(mattr)))
    assert {"avx2", "fma", "avx512f", "avx512bw", "avx512vnni", "avxvnni"} <= enabled


def test_toolchains_installed():
    for name in list_boards():
        b = load_board(name)
        assert shutil.which(b.cc), f"{b.cc} not on PATH (scripts/install.sh installs it)"
        r = subprocess.run([b.cc, *b.cflags, "-x", "c", "-c", "/dev/null", "-o", "/dev/null"], capture_output=True)
        assert r.returncode == 0, (name, r.stderr)
        if b.qemu:
            assert shutil.which(b.qemu), b.qemu
            cpus = subprocess.run([b.qemu, "-cpu", "help"], capture_output=True, text=True).stdout.split()
            assert b.qemu_cpu in cpus, (name, b.qemu_cpu)


def test_good_tmp_profile_and_no_qemu(tmp_path):
    b = load_board(write_profile(tmp_path, GOOD))
    assert b.name == "tb" and b.cflags == () and b.qemu is None and b.cuda_arch is None
    with pytest.raises(UserError, match="no emulator"):
        b.qemu_command("a.out")


@pytest.mark.parametrize("old,new,words", [
    ('description = "test board"\n', "", ["'description'", "board.toml"]),
    ('cc = "aarch64-linux-gnu-gcc"\n', "", ["'toolchain.cc'"]),
    ('kind = "llvm"\n', "", ["'target.kind'"]),
    ('arch = "aarch64"', 'arch = "armv7l"', ["'arch'", "'armv7l'"]),
    ("threads = 2", "threads = 0", ["'threads'", "0"]),
    ("threads = 2", 'threads = "2"', ["'threads'", "'2'"]),
    ("group_size = 8", "group_size = -4", ["'group_size'", "-4"]),
    ("memory_mb = 1024", "memory_mb = 0", ["'memory_mb'", "0"]),
    ('kind = "llvm"', 'kind = "vulkan"', ["'target.kind'", "'vulkan'"]),
    ('name = "{name}"', 'name = "other"', ["'name'", "'other'"]),
    ('cpu_features = ["neon"]', 'cpu_features = ["dotpord"]', ["'cpu_features'", "dotpord"]),
    ('cpu_features = ["neon"]', 'cpu_features = "detect"', ["'cpu_features'", "'detect'"]),
    ("threads = 2", "threads = 2\nthread = 2", ["'thread'"]),
    ("version = 2", "version = 1", ["version 1", "reads format 'mpqdm.board' version 2", "adds the field cpu"]),
    ('cpu = "Cortex-A53"\n', "", ["missing required field 'cpu'"]),
    ('cpu = "Cortex-A53"', 'cpu = "detect"', ["'cpu' has value 'detect'"]),
    ('format = "mpqdm.board"', 'format = "other"', ["'other'", "version 2"]),
    ("threads = 2", "threads = ", ["board.toml", "invalid TOML"]),
])
def test_bad_profiles(tmp_path, old, new, words):
    assert old in GOOD
    d = write_profile(tmp_path, GOOD.replace(old, new))
    with pytest.raises(UserError) as e:
        load_board(d)
    msg = str(e.value)
    assert "Possible solutions:" in msg
    for w in words:
        assert w in msg, (w, msg)


def test_unknown_board_and_missing_path(tmp_path):
    with pytest.raises(UserError) as e:
        load_board("rpi3")
    assert "'rpi3'" in str(e.value) and "rpi4" in str(e.value) and "Possible solutions:" in str(e.value)
    with pytest.raises(UserError, match="does not exist"):
        load_board(tmp_path / "nowhere")

"""The shared objects for TVM's stock RPC server (backend_tvm/modules.py, runtime/src/mpq_remote.c): a
kernel module runs a qconv on our thread pool bit for bit as plain TVM does, loaded here and through
an RPC session, and time_evaluator times it there; mpq_cpu_info on the host and, under qemu, in the
Pi 5 build; a bench module of the tiny model reports its calls and refuses a corrupted artifact."""

import ctypes
import os
import platform
import shutil
import struct
import subprocess

import numpy as np
import pytest
import tvm
import tvm.rpc

from mpqdm.backend_tvm import modules
from mpqdm.backend_tvm.artifact import read_artifact
from mpqdm.backend_tvm.compile import compile_export
from mpqdm.backend_tvm.kernels.qconv_schedule import schedule_qconv
from mpqdm.backend_tvm.tvm_compat import target
from mpqdm.boards.registry import load_board
from mpqdm.core.errors import UserError
from mpqdm.core.resources import RUNTIME
from mpqdm.core.scheme import ConvSpec, random_args

SPEC = ConvSpec(1, 16, 16, 32, 32, 3, 3, 1, 1, ((32, 2),), 4)    # big enough for parallel launches (qconv_dot.serial)


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory):
    """(the kernel module of one qconv, its arguments, plain TVM's output on them)."""
    board = load_board("host")
    so = modules.kernel_module(schedule_qconv(SPEC, board), board, tmp_path_factory.mktemp("km") / "qconv.so")
    args = random_args(SPEC, np.random.default_rng(0)).ordered()
    ex = tvm.compile(schedule_qconv(SPEC, board), target=target(board.tvm_target_dict()))
    want = run_qconv(ex.mod, tvm.cpu(), args)[-1].numpy()
    assert np.abs(want).sum() > 0
    return so, args, want


def run_qconv(mod, dev, args):
    tensors = [tvm.runtime.tensor(a, dev) for a in args]
    mod["qconv"](*tensors)
    return tensors


def test_kernel_module_runs_on_our_pool_as_tvm_does(host_kernel):
    so, args, want = host_kernel
    m = tvm.runtime.load_module(str(so))
    slot = ctypes.c_void_p.in_dll(ctypes.CDLL(str(so)), "__TVMBackendParallelLaunch")    # the same handle
    tvm_launch = ctypes.cast(ctypes.CDLL(None).TVMBackendParallelLaunch, ctypes.c_void_p).value
    assert slot.value == tvm_launch                 # TVM's loader filled the slot with its pool
    assert modules.start_threads(m, 2) == 2
    assert slot.value not in (None, tvm_launch)     # now ours
    for _ in range(2):                              # a restarted pool runs no earlier launch
        tensors = run_qconv(m, tvm.cpu(), args)
        assert np.array_equal(tensors[-1].numpy(), want)
        assert modules.start_threads(m, 2) == 2
    t = m.time_evaluator("qconv", tvm.cpu(), number=1, repeat=3)(*tensors).results
    assert len(t) == 3 and min(t) > 0
    with pytest.raises(TypeError, match="Expected 10 arguments"):      # a kernel's error is TVM's, no crash
        m["qconv"](tensors[0])
    with pytest.raises(ValueError, match="mpq_threads"):
        m["mpq_threads"]("two")
    assert modules.start_threads(m, 1) == 1


def test_kernel_module_through_an_rpc_session(host_kernel):
    so, args, want = host_kernel
    sess = tvm.rpc.LocalSession()
    sess.upload(str(so))
    m = sess.load_module(so.name)
    dev = sess.cpu()
    assert modules.start_threads(m, 2) == 2
    tensors = run_qconv(m, dev, args)
    assert np.array_equal(tensors[-1].numpy(), want)
    t = m.time_evaluator("qconv", dev, number=1, repeat=3)(*tensors).results
    assert len(t) == 3 and min(t) > 0
    assert modules.cpu_info(m) == modules.cpu_info(m, dev)                  # the session's CPU found
    assert modules.start_threads(m, 1) == 1


def test_cpu_info_on_the_host(host_kernel):
    info = modules.cpu_info(tvm.runtime.load_module(str(host_kernel[0])))
    fields = [line.partition(":") for line in open("/proc/cpuinfo")]
    assert info["model"] == next(v.strip() for k, _, v in fields if k.strip() == "model name")
    assert "avx2" in info["features"]
    assert info["cpus"] == os.sysconf("SC_NPROCESSORS_ONLN")
    assert info["machine"] == platform.machine() and info["emulated"] is False


@pytest.fixture(scope="module")
def tiny_host(tiny_omq_export, tmp_path_factory):
    d = tmp_path_factory.mktemp("bm") / "host"
    compile_export(tiny_omq_export, "host", d, progress=False)
    return d


def test_bench_module_of_the_tiny_model(tiny_host):
    m = tvm.runtime.load_module(str(modules.bench_module(tiny_host, load_board("host"))))
    art = (tiny_host / "model.mpq").read_bytes()
    meta = read_artifact(tiny_host / "model.mpq")
    r = modules.bench(m, tvm.cpu(), art, threads=2, count=2, seed=1)
    assert len(r["ms_per_call"]) == len(meta["calls"])
    assert r["ms_per_step"] > 0 and min(r["ms_per_call"]) > 0
    assert abs(sum(r["ms_per_call"]) - r["ms_per_step"]) <= 0.3 * r["ms_per_step"]
    assert r["arena_kb"] == meta["arena_bytes"] / 1024 and r["artifact_kb"] == len(art) / 1024
    assert r["peak_rss_mb"] > 0
    bad = bytearray(art)
    bad[len(art) // 2] ^= 0xFF
    with pytest.raises(UserError, match="checksum mismatch: the file is corrupted"):
        modules.bench(m, tvm.cpu(), bytes(bad), threads=2, count=1)
    assert len(modules.bench(m, tvm.cpu(), art, threads=1, count=1)["ms_per_call"]) == len(meta["calls"])


# Calls the Pi build's mpq_threads and mpq_cpu_info from C (no TVM there): DLTensor pointer arguments.
PROBE = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "mpq_ffi.h"
int main(int argc, char **argv) {
    void *h = argc > 1 ? dlopen(argv[1], RTLD_NOW | RTLD_LOCAL) : NULL, *p, *q;
    if (!h || !(p = dlsym(h, "__tvm_ffi_mpq_threads")) || !(q = dlsym(h, "__tvm_ffi_mpq_cpu_info"))) return 1;
    mpq_kernel_fn threads, info;
    memcpy(&threads, &p, sizeof p);
    memcpy(&info, &q, sizeof q);
    static char buf[8192];
    int64_t shape[1] = {sizeof buf};
    mpq_dltensor t = {buf, {MPQ_DL_CPU, 0}, 1, {MPQ_DL_UINT, 8, 1}, shape, NULL, 0};
    mpq_ffi_any a = {MPQ_FFI_INT, 0, {.v_int64 = 2}}, r = {0, 0, {0}};
    if (threads(NULL, &a, 1, &r) || r.v.v_int64 != 2) return 2;
    a.type_index = MPQ_FFI_TENSOR_PTR;
    a.v.v_ptr = &t;
    if (info(NULL, &a, 1, &r) || r.v.v_int64 <= 0) return 3;
    fputs(buf, stdout);
    return 0;
}
"""


def test_kernel_module_cross_builds_for_the_pi5(tmp_path):
    board = load_board("rpi5")
    so = modules.kernel_module(schedule_qconv(SPEC, board), board, tmp_path / "qconv.so")
    head = so.read_bytes()[:20]
    assert head[:6] == b"\x7fELF\x02\x01"                                    # 64-bit little-endian
    assert struct.unpack("<HH", head[16:20]) == (3, 183)                     # ET_DYN, EM_AARCH64
    if not shutil.which(board.qemu):
        pytest.skip(f"{board.qemu} is not installed")
    (tmp_path / "probe.c").write_text(PROBE)
    subprocess.run([board.cc, "-std=c99", "-O2", "-Wall", "-Werror", f"-I{RUNTIME}/include", str(tmp_path / "probe.c"),
                    "-o", str(tmp_path / "probe"), "-ldl"], check=True)
    r = subprocess.run([*board.qemu_command(tmp_path / "probe"), str(so)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = dict(line.split("=", 1) for line in r.stdout.splitlines())
    # qemu-user shows the host's /proc/cpuinfo: the model is MIDR_EL1's, the features the hwcaps
    assert info["model"] == "Cortex-A76" and info["machine"] == "aarch64" and info["emulated"] == "1"
    assert {"asimd", "asimddp"} <= set(info["features"].split())

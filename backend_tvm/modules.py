"""Shared objects for TVM's stock RPC server (python -m tvm.exec.rpc_server), which can only load a
module and call its packed functions (runtime/src/mpq_remote.c, runtime/Makefile):

kernel module   kernels + the C runtime's thread pool: `mpq_threads` puts our pool in the kernels'
                slots, so TVM's time_evaluator times a kernel the way mpqdm-run runs it
bench module    a whole compiled model in the C runtime: `mpq_bench` is `mpqdm-run --bench` in the
                server's process
Both export `mpq_cpu_info`. A module is what tvm.runtime.load_module or an RPC session's
load_module returns; tensors are made on the device given (the session's cpu()), or on the
module's own: its RPC session's CPU, else this machine's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpqdm.boards.registry import load_board
from mpqdm.core.errors import UserError

from .artifact import CALL, HEADER
from .build import board_cc, kernel_table, make, read_compiled
from .tvm_compat import target, tensor, tvm

CPU_INFO_BYTES = 8192
ERR_BYTES = 2048


def _board(board):
    return load_board(board) if isinstance(board, str) else board


def _toolchain(board) -> dict:
    return {"cc": board_cc(board), "board_cflags": " ".join(board.cflags)}


def kernel_module(mod: tvm.IRModule, board, out_so: Path) -> Path:
    """The kernels of `mod` for the board's target (OUT.o beside it) linked with our thread pool into out_so."""
    board = _board(board)
    out_so = Path(out_so).resolve()
    obj = out_so.with_suffix(".o")
    tvm.compile(mod, target=target(board.tvm_target_dict())).mod.write_to_file(str(obj))
    make("kernel-module", "the kernel module", **_toolchain(board), build=out_so.parent / ".build", kernels=obj,
         out=out_so)
    return out_so


def bench_module(compiled_dir: Path, board) -> Path:
    """compiled_dir/mpqdm-bench.so from a `mpqdm compile` folder (model.mpq, kernels.o) for its board."""
    board = _board(board)
    d = Path(compiled_dir).resolve()
    art = read_compiled(d, board)
    table = d / "kernel_table.c"
    table.write_text(kernel_table(art["kernels"]))
    out = d / "mpqdm-bench.so"
    make("bench-module", "the bench module", **_toolchain(board), build=d / ".build", board=board.name,
         board_memory_mb=board.memory_mb, kernels=d / "kernels.o", kernel_table=table, out=out)
    return out


def module_device(module):
    """The CPU of the module's RPC session, or this machine's."""
    if getattr(module, "kind", None) == "rpc":
        index = tvm.get_global_func("rpc.SessTableIndex")(module)
        return tvm.runtime.device(tvm.cpu().dlpack_device_type() + (index + 1) * tvm.rpc.base.RPC_SESS_MASK, 0)
    return tvm.cpu()


def start_threads(module, n: int) -> int:
    """Our pool of n threads in the module's kernel slots (1: no workers); the threads started."""
    return int(module["mpq_threads"](int(n)))


def cpu_info(module, device=None) -> dict:
    """{"model", "features" (named as /proc/cpuinfo names them; aarch64 without them there: the hwcaps),
    "cpus", "machine", "emulated" (qemu-user: /proc/cpuinfo was the host's)} where the module runs."""
    out = tensor(np.zeros(CPU_INFO_BYTES, np.uint8), device or module_device(module))
    n = int(module["mpq_cpu_info"](out))
    fields = dict(line.partition("=")[::2] for line in bytes(out.numpy()[:n]).decode(errors="replace").splitlines())
    return {"model": fields.get("model", ""), "features": fields.get("features", "").split(),
            "cpus": int(fields.get("cpus") or 0), "machine": fields.get("machine", ""),
            "emulated": fields.get("emulated") == "1"}


def _calls_bound(artifact: bytes) -> int:
    """The header's call count, at most what the file can hold (a corrupted one is refused by the module)."""
    if len(artifact) < HEADER.size:
        return 0
    n = HEADER.unpack(artifact)["n_calls"]
    return n if n <= len(artifact) // CALL.size else 0


def bench(module, device, artifact: bytes, threads: int, count: int, seed: int = 0) -> dict:
    """`mpqdm-run --bench` of a bench module: the mean ms per step and of each call, arena, artifact, peak RSS."""
    calls = _calls_bound(artifact)
    out = tensor(np.zeros(5 + calls, np.float64), device)
    err = tensor(np.zeros(ERR_BYTES, np.uint8), device)
    blob = tensor(np.frombuffer(artifact, np.uint8), device)
    rc = int(module["mpq_bench"](blob, out, err, int(threads), int(count), int(seed)))
    if rc != 0:
        msg = bytes(err.numpy()).split(b"\0", 1)[0].decode(errors="replace")
        raise UserError(f"mpqdm-bench: {msg}")
    v = out.numpy()
    n = int(v[4])
    return {"ms_per_step": float(v[0]), "arena_kb": float(v[1]) / 1024, "artifact_kb": float(v[2]) / 1024,
            "peak_rss_mb": float(v[3]) / 1024, "ms_per_call": [float(x) for x in v[5: 5 + n]], "threads": int(threads),
            "count": int(count)}

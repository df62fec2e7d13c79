"""A board farm on 127.0.0.1 for tests and benchmarks: TVM's own tracker and RPC servers as
subprocesses (the same commands a user runs on the build machine and on each board)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import tvm.rpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    # its own process group: stop() takes the server's forked workers with it
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **(env or {})})


def start_tracker(port: int | None = None) -> tuple[subprocess.Popen, int]:
    """`python -m tvm.exec.rpc_tracker` on 127.0.0.1; returns (process, port) once it answers."""
    port = port or free_port()
    proc = _spawn([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                   "--port-end", str(port + 1), "--silent"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            tvm.rpc.connect_tracker("127.0.0.1", port).summary()
            return proc, port
        except (OSError, RuntimeError, ConnectionError):
            if proc.poll() is not None:
                raise RuntimeError(f"the tracker exited with {proc.returncode}") from None
            time.sleep(0.2)
    stop(proc)
    raise RuntimeError("the tracker did not answer within 60 s")


def server_command(tracker_port: int, key: str, python: list[str] | None = None) -> list[str]:
    port = free_port()
    return [*(python or [sys.executable]), "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
            "--port-end", str(port + 1), "--tracker", f"127.0.0.1:{tracker_port}", "--key", key]


def start_server(tracker_port: int, key: str, python: list[str] | None = None, env: dict | None = None,
                 timeout: float = 60) -> subprocess.Popen:
    """`python -m tvm.exec.rpc_server --tracker 127.0.0.1:PORT --key KEY`; returns once the tracker lists it.
    `python` replaces the interpreter (an emulated board: qemu running an aarch64 Python)."""
    before = free_servers(tracker_port, key)
    proc = _spawn(server_command(tracker_port, key, python), env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if free_servers(tracker_port, key) > before:
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"the RPC server of key {key!r} exited with {proc.returncode}")
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"the RPC server of key {key!r} did not register within {timeout:g} s")


def free_servers(tracker_port: int, key: str) -> int:
    """Servers of `key` the tracker lists as free."""
    summary = tvm.rpc.connect_tracker("127.0.0.1", tracker_port).summary()
    return int(summary.get("queue_info", {}).get(key, {}).get("free", 0))


def stop(proc: subprocess.Popen) -> None:
    """Kill a process started here with its whole group (the RPC server's workers)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)

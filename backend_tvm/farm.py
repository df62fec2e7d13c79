"""The board farm: TVM's RPC tracker and the stock RPC server on each board, nothing else there.

A `Farm` hands out sessions: this process (no tracker; an RPC LocalSession) or every board a
tracker lists under a key. `run` times batches of kernels on all of them in parallel (one worker
thread per board); `bench_artifact` runs a whole compiled model on one. Each session first reports
its CPU (mpq_cpu_info in the uploaded module), which must match the board profile.
"""

from __future__ import annotations

import gc
import itertools
import logging
import queue
import socket
import threading
import time
from pathlib import Path

import numpy as np

from mpqdm.core.board import known_features, same_kernel_features
from mpqdm.core.errors import UserError

from . import modules
from .tvm_compat import tvm

# a dropped board: TVM raises InternalError or RPCError (RuntimeErrors), sockets OSError
RPC_ERRORS = (tvm.error.RPCError, ConnectionError, OSError, RuntimeError, TimeoutError)


def parse_tracker(text: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--tracker {text!r} is not HOST:PORT. Possible solutions: --tracker 127.0.0.1:9190")
    return host, int(port)


class Farm:
    def __init__(self, board, tracker: str | None, key: str, wait_s: float = 60.0):
        self.board, self.key, self.wait_s = board, key, wait_s
        self.addr = parse_tracker(tracker) if tracker else None
        self.warnings: list[str] = []
        self.sources: dict[str, dict] = {}

    @classmethod
    def local(cls, board) -> Farm:
        return cls(board, None, "local")

    # -- sessions --------------------------------------------------------------------------------------
    def _tracker(self):
        host, port = self.addr
        try:
            socket.create_connection((host, port), timeout=10).close()    # TVM's own connect retries for a minute
            return tvm.rpc.connect_tracker(host, port)
        except RPC_ERRORS as exc:
            raise UserError(f"cannot reach the RPC tracker at {host}:{port} ({exc}). Possible solutions: start "
                            f"python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port {port} on that machine, or "
                            "check --tracker") from None

    def servers(self) -> int:
        """Boards the tracker lists under the key (free or busy)."""
        summary = self._tracker().summary()
        return sum(1 for s in summary.get("server_info", []) if s.get("key", "").split(":", 1)[-1] == self.key)

    def check_reachable(self) -> int:
        """How many boards hold the key, after waiting up to wait_s for one (1 for the local session)."""
        if self.addr is None:
            return 1
        deadline = time.monotonic() + self.wait_s
        while True:
            n = self.servers()
            if n or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        if not n:
            host, port = self.addr
            raise UserError(f"no board holds key {self.key!r} at the tracker {host}:{port} (waited {self.wait_s:g} "
                            f"s). Possible solutions: on the board run python -m tvm.exec.rpc_server --tracker "
                            f"{host}:{port} --key {self.key}, or give the key it holds with --key")
        return n

    def session(self):
        if self.addr is None:
            logging.getLogger("RPCServer").setLevel(logging.WARNING)     # its "load_module" line per batch
            return tvm.rpc.LocalSession()
        try:
            return self._tracker().request(self.key, priority=1, session_timeout=0)
        except RPC_ERRORS as exc:
            raise UserError(f"the tracker gave no session of key {self.key!r} ({exc}). Possible solutions: check "
                            "that the board's rpc_server is running") from None

    def check_cpu(self, info: dict, where: str) -> dict:
        """The source fields of an entry timed there; refuses a CPU the profile does not describe."""
        b = self.board
        feats = known_features(b.arch, info["features"])
        emulated = bool(info.get("emulated"))
        if info["machine"] != b.arch or not same_kernel_features(b.arch, feats, b.cpu_features):
            raise UserError(f"{where} reports {info['model']!r} ({info['machine']}, features {list(feats) or 'none'}), "
                            f"but profile {b.name!r} describes {b.cpu!r} ({b.arch}, {list(b.cpu_features)}). "
                            f"Possible solutions: use the key of a {b.name} board, or fix {b.path}/board.toml")
        if info["model"] != b.cpu and not emulated:
            msg = f"{where} reports CPU {info['model']!r}, profile {b.name!r} describes {b.cpu!r}"
            if b.name != "host":
                raise UserError(f"{msg}. Possible solutions: use the key of a {b.name} board, or fix cpu in "
                                f"{b.path}/board.toml")
            self.warnings.append(msg + " (same features: timed)")
        return {"key": self.key, "cpu": info["model"], "features": list(feats), "emulated": emulated}

    # -- timing kernels ----------------------------------------------------------------------------------
    def run(self, batches: list, build_id: str, threads: int, repeats: int, min_repeat_ms: int, done,
            passes: int = 1, flush_bytes: int = 0) -> dict:
        """Time every job of `batches` on every board holding the key; `done(entries, first_pass)` after
        each batch. With passes > 1 each board times its batches again, once all are taken, and an
        entry is the median of every pass's samples (a burst of noise on the board then moves one
        pass, not the entry). Returns the boards used. A board that drops gives its batch back;
        when none is left, the error names it (what was measured is kept)."""
        if not batches:
            return {}
        work: queue.Queue = queue.Queue()
        for b in batches:
            work.put(b)
        lock, errors, crashes = threading.Lock(), [], []
        n = min(self.check_reachable(), len(batches))

        def worker(i: int) -> None:
            where = f"board {i} of key {self.key!r}" if self.addr else "this machine"
            try:
                sess = self.session()
                tmp = Path(tempfile_dir()) / f"w{i}"
                tmp.mkdir(parents=True, exist_ok=True)
                source, loaded = None, []

                def timed(batch, mod, funcs, samples, first: bool) -> None:
                    try:
                        entries = time_batch(mod, sess.cpu(), batch, funcs, threads, repeats, min_repeat_ms,
                                             samples, flush_bytes)
                    except RPC_ERRORS as exc:
                        if first:
                            work.put(batch)
                        raise _Dropped(f"{where} dropped ({str(exc).strip().splitlines()[-1][:300]})") from None
                    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                    with lock:
                        done([{**e, "build_id": build_id, "measured": stamp, **source} for e in entries], first)

                while True:
                    try:
                        batch = work.get_nowait()
                    except queue.Empty:
                        break
                    irmod = batch_module(batch)
                    so = modules.kernel_module(irmod, self.board, tmp / f"k{next(_SERIAL)}.so")
                    try:
                        mod = _load(sess, so)
                        if source is None:
                            with lock:
                                source = self.check_cpu(modules.cpu_info(mod), where)
                                self.sources[where] = source
                    except RPC_ERRORS as exc:
                        work.put(batch)
                        raise _Dropped(f"{where} dropped ({str(exc).strip().splitlines()[-1][:300]})") from None
                    loaded.append((batch, mod, [irmod[f"k{i}"] for i in range(len(batch))], {}))
                    timed(*loaded[-1], first=True)
                for _ in range(passes - 1):
                    for batch, mod, funcs, samples in loaded:
                        timed(batch, mod, funcs, samples, first=False)
            except (UserError, _Dropped) as exc:
                with lock:
                    errors.append(str(exc))
            except Exception as exc:               # a bug: raised again in the calling thread
                with lock:
                    crashes.append(exc)

        pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        # a remote session ends (and its board goes back to the tracker) when its last reference goes;
        # the workers' closures and loaded modules can keep one in a reference cycle until the next
        # garbage collection, and a command that follows would wait for that board
        gc.collect()
        if crashes:
            raise crashes[0]
        if not work.empty():
            left = sum(len(b) for b in list(work.queue))
            raise UserError(f"{'; '.join(errors) or 'no board took the work'}; {left} kernels not measured, the "
                            "rest are saved in the table. Possible solutions: restart the board's rpc_server and "
                            "run the same command again: it measures only what is missing")
        if errors and any("dropped" not in e for e in errors):
            raise UserError("; ".join(errors))
        return self.sources

    # -- whole models --------------------------------------------------------------------------------------
    def bench_artifact(self, so: Path, artifact: bytes, threads: int, count: int) -> dict:
        sess = self.session()
        where = f"a board of key {self.key!r}" if self.addr else "this machine"
        try:
            mod = _load(sess, so)
            source = self.check_cpu(modules.cpu_info(mod), where)
            out = modules.bench(mod, sess.cpu(), artifact, threads, count)
        except RPC_ERRORS as exc:
            raise UserError(f"{where} dropped during the bench ({str(exc).strip().splitlines()[-1][:300]}). "
                            "Possible solutions: restart its rpc_server and run again") from None
        return {**out, **source}


class _Dropped(Exception):
    pass


_SERIAL = itertools.count()         # module file names: a session never loads one name twice


_TMP = None


def tempfile_dir() -> str:
    """One scratch folder per process for compiled batches (removed at exit)."""
    global _TMP
    if _TMP is None:
        import tempfile

        _TMP = tempfile.TemporaryDirectory(prefix="mpqdm-farm-")
    return _TMP.name


def _load(sess, so: Path):
    sess.upload(str(so))
    return sess.load_module(so.name)


def batch_module(batch) -> tvm.IRModule:
    """The batch's kernels as one module, kernel i named k<i>."""
    funcs = {}
    for i, job in enumerate(batch):
        mod = job.build(f"k{i}")
        (gv,) = mod.get_global_vars()
        funcs[f"k{i}"] = mod[gv].with_attr("global_symbol", f"k{i}")
    return tvm.IRModule(funcs)


def random_inputs(func, rng) -> list[np.ndarray]:
    """Random arrays for a kernel's buffer parameters (floats in [0.5, 1.5): no NaN in norms or exps)."""
    out = []
    for p in func.params:                       # TVM 0.27: a parameter is its buffer
        shape, dt = tuple(int(d) for d in p.shape), str(p.dtype)
        if dt.startswith("float"):
            out.append(rng.uniform(0.5, 1.5, shape).astype(dt))
        else:
            out.append(np.zeros(shape, dt))
    return out


def time_batch(mod, dev, batch, funcs, threads: int, repeats: int, min_repeat_ms: int, samples: dict,
               flush_bytes: int = 0) -> list[dict]:
    """Each job's kernel (funcs[i], compiled into `mod` as k<i>) timed on the runtime's own pool of
    `threads` threads; a job without its own args gets random buffers of its kernel's parameters.
    `samples` (job index -> ms, kept across passes) gets this pass's; an entry's median and spread
    are over all of them.
    With flush_bytes, every timed call runs alone after the board wrote that many bytes (TVM's
    cache_flush_bytes): its data out of the near caches."""
    modules.start_threads(mod, threads)
    rng = np.random.default_rng(0)
    out = []
    for i, job in enumerate(batch):
        arrays = job.args(rng) if job.args else random_inputs(funcs[i], rng)
        args = [tvm.runtime.tensor(a, dev) for a in arrays]
        f = mod.time_evaluator(f"k{i}", dev, number=1, repeat=repeats, cache_flush_bytes=flush_bytes,
                               min_repeat_ms=0 if flush_bytes else min_repeat_ms)
        samples.setdefault(i, []).extend(np.asarray(f(*args).results) * 1e3)
        t = np.asarray(samples[i])
        med = float(np.median(t))
        out.append({**job.entry(threads), "median_ms": round(med, 5), "repeats": len(t),
                    "spread": round(float((np.percentile(t, 90) - np.percentile(t, 10)) / med), 4) if med else 0.0})
    modules.start_threads(mod, 1)           # stop the module's workers
    return out

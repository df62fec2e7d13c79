"""Emulated Raspberry Pis for TVM's RPC farm: Debian 12's aarch64 python3.11 with the TVM wheel (a sysroot
built by scripts/arm_sysroot.sh) under qemu-aarch64 -cpu cortex-a76 (Pi 5) or cortex-a72 (Pi 4), running
`python -m tvm.exec.rpc_server --tracker ... --key ...` like a board.

The catch: the server starts its workers through sys.executable, and qemu-user cannot exec an aarch64 binary
(no binfmt_misc). So the emulated python is a host shell script that runs qemu (python_wrapper), and qemu's
-0 makes that script the guest's argv[0], hence its sys.executable: every worker is emulated the same way."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from . import farm

REPO = Path(__file__).resolve().parents[2]
SYSROOT = REPO / "out" / "arm-sysroot"
SCRIPT = REPO / "scripts" / "arm_sysroot.sh"
PYTHON = "usr/bin/python3.11"      # the guest interpreter, inside the sysroot
REGISTER_TIMEOUT = 300             # seconds: two TVM imports under qemu, ~10 s each on an idle machine
# what a Pi's kernel prints in /proc/cpuinfo (one core): qemu-user 7.2 passes the host's x86 one through, on
# which onnxruntime's CPU detection crashes. Instruction-set features reach the guest through qemu's HWCAP.
CPUINFO = {"cortex-a72": ("0x0", "0xd08", "3", "fp asimd evtstrm crc32 cpuid"),
           "cortex-a76": ("0x4", "0xd0b", "1", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp "
                                            "cpuid asimdrdm lrcpc dcpop asimddp")}


def build_sysroot(sysroot: str | Path = SYSROOT) -> Path:
    """Run scripts/arm_sysroot.sh (a no-op when built); returns the sysroot."""
    r = subprocess.run(["bash", str(SCRIPT), str(sysroot)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"scripts/arm_sysroot.sh {sysroot} failed ({r.returncode}): {(r.stdout + r.stderr)[-3000:]}")
    return Path(sysroot).resolve()


def _checked(sysroot: str | Path) -> tuple[Path, str]:
    sysroot = Path(sysroot).resolve()
    if not (sysroot / ".stamp").is_file() or not (sysroot / PYTHON).is_file():
        raise FileNotFoundError(f"no aarch64 sysroot at {sysroot}; Possible solutions: bash scripts/arm_sysroot.sh "
                                f"{sysroot}")
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        raise FileNotFoundError("qemu-aarch64 is not installed; Possible solutions: bash scripts/install.sh")
    return sysroot, qemu


def cpu_root(sysroot: str | Path, cpu: str) -> Path:
    """The guest's root for one emulated CPU (qemu -L): the sysroot's folders linked in, and that CPU's
    /proc/cpuinfo (qemu looks for an absolute path under -L first). Made in the sysroot (cpu/NAME)."""
    sysroot = Path(sysroot).resolve()
    if cpu not in CPUINFO:
        raise ValueError(f"no /proc/cpuinfo known for qemu -cpu {cpu!r}; known: {sorted(CPUINFO)}")
    root = sysroot / "cpu" / cpu
    (root / "proc").mkdir(parents=True, exist_ok=True)
    for entry in sysroot.iterdir():
        link = root / entry.name
        if entry.name not in {"cpu", "proc", "emu", ".stamp"} and not link.is_symlink():
            try:
                link.symlink_to(entry)
            except FileExistsError:       # another process made it meanwhile
                pass
    variant, part, rev, features = CPUINFO[cpu]
    text = (f"processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
            f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {rev}\n\n")
    info = root / "proc" / "cpuinfo"
    if not info.is_file() or info.read_text() != text:
        tmp = info.with_name(f".cpuinfo.{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(info)
    return root


def emulated_python(sysroot: str | Path, cpu: str, argv0: str | None = None) -> list[str]:
    """The command prefix running the sysroot's aarch64 python3.11 under qemu-aarch64 -cpu `cpu`.
    The guest's environment is set here (qemu -E), so the host's PYTHONPATH or venv never leaks in."""
    sysroot, qemu = _checked(sysroot)
    env = {"PYTHONHOME": sysroot / "usr", "PYTHONPATH": sysroot / "site", "PYTHONNOUSERSITE": "1",
           "TVM_USE_RUNTIME_LIB": "1"}     # a board runs kernels: TVM's runtime library only
    cmd = [qemu, "-L", str(cpu_root(sysroot, cpu)), "-cpu", cpu]
    if argv0:
        cmd += ["-0", argv0]
    for k, v in env.items():
        cmd += ["-E", f"{k}={v}"]
    cmd += ["-U", "LD_PRELOAD", "-U", "LD_LIBRARY_PATH"]   # the host's, meaningless to the guest's loader
    return [*cmd, str(sysroot / PYTHON)]


def python_wrapper(sysroot: str | Path, cpu: str) -> Path:
    """A host shell script that runs the emulated python with its arguments; it is also the guest's
    sys.executable, so the processes the guest starts are emulated too. Written into the sysroot (emu/)."""
    sysroot, _ = _checked(sysroot)
    path = sysroot / "emu" / f"python3.11-{cpu}"
    text = ("#!/bin/sh\n# the sysroot's aarch64 python3.11 under qemu (mpqdm/testing/emulated.py)\n"
            f'exec {shlex.join(emulated_python(sysroot, cpu, argv0=str(path)))} "$@"\n')
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(path)
    return path


def start_emulated_server(tracker_port: int, key: str, cpu: str, sysroot: str | Path = SYSROOT,
                          timeout: float = REGISTER_TIMEOUT):
    """`python -m tvm.exec.rpc_server --tracker 127.0.0.1:PORT --key KEY` on an emulated aarch64 board;
    returns the process once the tracker lists the key as free (farm.stop ends it with its workers)."""
    return farm.start_server(tracker_port, key, python=[str(python_wrapper(sysroot, cpu))], timeout=timeout)


def main(argv=None) -> None:
    """python -m mpqdm.testing.emulated --tracker HOST:PORT --key rpi5-emu [--cpu cortex-a76]: an emulated
    board in the foreground (Ctrl-C ends it); builds the sysroot first if needed."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mpqdm.testing.emulated", description=main.__doc__)
    ap.add_argument("--tracker", required=True, help="HOST:PORT of the tracker")
    ap.add_argument("--key", required=True, help="the key to register under, e.g. rpi5-emu")
    ap.add_argument("--cpu", default="cortex-a76", help="qemu -cpu: cortex-a76 (Pi 5) or cortex-a72 (Pi 4)")
    ap.add_argument("--sysroot", default=str(SYSROOT))
    args = ap.parse_args(argv)
    wrapper = python_wrapper(build_sysroot(args.sysroot), args.cpu)
    os.execv(str(wrapper), [str(wrapper), "-m", "tvm.exec.rpc_server", "--tracker", args.tracker, "--key", args.key])


if __name__ == "__main__":
    main()

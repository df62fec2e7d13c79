"""The facts every results file carries: machine, commit, command."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from .board import cpu_model, detect_host_features


def cpu_name() -> str:
    return cpu_model() or platform.processor() or platform.machine()


def machine() -> str:
    """CPU model, architecture and the vector features our kernels choose by (one EPYC name covers CPUs
    with and without AVX-512 VNNI), cores, OS."""
    feats = detect_host_features() if platform.machine() == "x86_64" else ()
    arch = " ".join((platform.machine(), *feats))
    return f"{cpu_name()} ({arch}), {os.cpu_count()} cores, {platform.system()}"


def commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def command() -> str:
    """The command line as typed from the repository root (a script is shown with python)."""
    prog = Path(sys.argv[0])
    if prog.suffix == ".py":
        try:
            prog = prog.resolve().relative_to(Path(__file__).resolve().parent.parent)
        except ValueError:
            pass
        head = [".venv/bin/python", str(prog)]
    else:
        head = [prog.name]
    return " ".join(head + [shlex.quote(a) for a in sys.argv[1:]])


def provenance() -> dict:
    return {"machine": machine(), "commit": commit(), "command": command()}

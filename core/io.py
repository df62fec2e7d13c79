"""Small file helpers: atomic writes and writable-folder checks."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError


def ensure_writable_dir(path: str | Path) -> Path:
    """Create `path` if needed and check that files can be written in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(
            f"output folder {str(path)!r} is not writable ({exc.strerror}). "
            "Possible solutions: choose another folder with --out, or fix its permissions."
        ) from None
    return path


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def atomic_torch_save(obj, path: str | Path) -> None:
    import torch

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def replace_dir(staging: Path, final: Path) -> None:
    """Move a fully written staging folder into place, replacing an older one."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


def read_versioned_json(path: str | Path, fmt: str, version: int, remake: str) -> dict:
    """Read a versioned JSON file; a wrong format or version says what was found and how to remake it."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {str(path)!r} as {fmt!r} JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt or doc.get("version") != version:
        found = (doc.get("format"), doc.get("version")) if isinstance(doc, dict) else (type(doc).__name__, None)
        raise UserError(f"{str(path)!r} is {found[0]!r} v{found[1]}; this mpqdm reads {fmt!r} v{version}. "
                        f"Possible solutions: {remake}")
    return doc

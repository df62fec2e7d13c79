"""Small file helpers: atomic writes, writable-folder checks, and output folders that are replaced
only when they hold a previous output of the same command (nothing else is ever deleted)."""

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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file(path: Path) -> tuple[int, str]:
    """A temporary file beside `path` with an ordinary file's mode (mkstemp's is 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    fd, tmp = _new_file(path)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy a file (with its mode) through a temporary file beside `dst`, then rename."""
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def atomic_torch_save(obj, path: str | Path) -> None:
    import torch

    path = Path(path)
    fd, tmp = _new_file(path)
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


MARKER = ".mpqdm-output"      # in every output folder a command writes: {"command": ...}


def _written_by(path: Path) -> str | None:
    """The command whose output folder `path` is, by its marker (None: no marker)."""
    try:
        doc = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return doc.get("command") if isinstance(doc, dict) else None


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_output_dir(out: str | Path, command: str, reads=(), legacy: str | None = None) -> Path:
    """Refuse an output folder that `command` must not replace: an existing file, the cwd or a folder
    above it, a folder it reads from (`reads`) or one holding or inside it, and an existing non-empty
    folder not written by the same command (its marker; `legacy`: a file that the command's outputs
    of earlier versions, without a marker, always hold). Returns the folder, resolved."""
    path = Path(out).resolve()
    fix = "Possible solutions: give a new or empty folder, or delete that folder yourself"
    if path.exists() and not path.is_dir():
        raise UserError(f"output {str(out)!r} is a file, not a folder; mpqdm {command} writes a folder. {fix}")
    cwd = Path.cwd().resolve()
    if path == cwd or path in cwd.parents:
        raise UserError(f"output folder {str(out)!r} is the current folder or one above it: mpqdm {command} "
                        f"replaces its output folder as a whole. {fix}")
    for src in reads:
        if src is not None and _overlaps(path, Path(src).resolve()):
            raise UserError(f"output folder {str(out)!r} is, holds or lies inside {str(src)!r}, which mpqdm "
                            f"{command} reads; writing it would destroy the input. {fix}")
    if path.is_dir() and any(path.iterdir()):
        by = _written_by(path)
        if by != command and not (by is None and legacy and (path / legacy).is_file()):
            what = f"an output of mpqdm {by}" if by else "files mpqdm did not write"
            raise UserError(f"output folder {str(out)!r} already holds {what}; mpqdm {command} replaces only "
                            f"its own earlier output. {fix}")
    return path


def check_output_file(out: str | Path, command: str) -> Path:
    """A file `command` may write (replacing an older one): not a folder, in a writable folder."""
    path = Path(out)
    if path.is_dir():
        raise UserError(f"output {str(out)!r} is a folder; mpqdm {command} writes a file there. Possible "
                        "solutions: give a file name, e.g. " + str(path / "out.json"))
    ensure_writable_dir(path.parent)
    return path


def staging_dir(final: Path) -> Path:
    """A fresh, empty staging folder beside `final` (same file system: the rename is atomic)."""
    staging = final.with_name(f".{final.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def replace_dir(staging: Path, final: Path, command: str) -> None:
    """Move a fully written staging folder into place (marked as `command`'s output), replacing an
    older one (check_output_dir has said that it may)."""
    write_json(staging / MARKER, {"command": command})
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

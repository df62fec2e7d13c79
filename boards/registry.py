"""The boards this toolchain ships: one folder per board in this package, holding its board.toml
(core/board.py) and, once profiled, its latency.json (core/latency.py)."""

from __future__ import annotations

from pathlib import Path

from mpqdm.core.board import Board, read_board
from mpqdm.core.errors import UserError

BOARDS_DIR = Path(__file__).resolve().parent


def list_boards() -> list[str]:
    return sorted(p.parent.name for p in BOARDS_DIR.glob("*/board.toml"))


def profile_path(name_or_path: str | Path) -> Path:
    """The board.toml of a board name (a folder of this package), a board folder, or a board.toml path."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith(".toml") or text in (".", ".."):
        p = Path(name_or_path)
        p = p / "board.toml" if p.is_dir() else p
        if not p.is_file():
            raise UserError(f"board profile {p} does not exist. Possible solutions: give a folder holding a "
                            f"board.toml, a board.toml file, or a board name ({', '.join(list_boards())}).")
        return p
    p = BOARDS_DIR / text / "board.toml"
    if not p.is_file():
        raise UserError(f"unknown board {text!r}. Possible solutions: use one of the known boards "
                        f"({', '.join(list_boards())}), or give the path of a board folder or board.toml.")
    return p


def load_board(name_or_path: str | Path) -> Board:
    """Read and validate a profile given as a board name, a folder, or a board.toml path."""
    return read_board(profile_path(name_or_path))


def latency_path(board: Board) -> Path:
    """Where a board's latency table lives: beside its profile."""
    return board.path / "latency.json"

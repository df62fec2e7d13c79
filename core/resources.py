"""Where the package data lives: the embedded default model, the classifier, the board profiles and
the C runtime's sources. Each is a data package of `mpqdm` (setuptools' package-dir maps the
repository's top-level folders onto them), so a checkout and a `pip install .` find them alike."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_dir(name: str) -> Path:
    """The folder of the data package `mpqdm.<name>` on disk."""
    return Path(str(resources.files(f"mpqdm.{name}")))


MODELS = package_dir("models")
DEFAULT_MODEL = MODELS / "mnist-default"
DEFAULT_CLASSIFIER = MODELS / "classifier"
BOARDS = package_dir("boards")
RUNTIME = package_dir("runtime")

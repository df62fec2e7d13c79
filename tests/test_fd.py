import numpy as np
import pytest
import scipy.linalg

from mpqdm.frontend.fd import fd_of_features, frechet_distance, gaussian


def test_hand_computed_diagonal_case():
    # |mu1-mu2|^2 = 1 + 4; traces 5 + 13; Tr sqrt(S1 S2) = sqrt(1*4) + sqrt(4*9) = 8  ->  5 + 18 - 16 = 7
    fd = frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.array([1.0, 2.0]), np.diag([4.0, 9.0]))
    assert fd == pytest.approx(7.0, abs=1e-12)


def test_matches_scipy_sqrtm_on_random_covariances():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    m1, s1 = gaussian(a)
    m2, s2 = gaussian(b)
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-8)


def test_identical_sets_give_zero_and_order_does_not_matter():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(200, 5)), rng.normal(size=(200, 5)) * 2
    assert abs(fd_of_features(a, a)) < 1e-8
    assert fd_of_features(a, b) == pytest.approx(fd_of_features(b, a), rel=1e-9)
    assert fd_of_features(a, b) > 1.0


def test_rejects_single_sample():
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian(np.zeros((1, 4)))

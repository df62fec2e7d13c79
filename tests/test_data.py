import numpy as np

from mpqdm.frontend.data import load_mnist5k, mnist32, split_indices


def test_mnist5k_shapes_and_labels():
    images, labels = load_mnist5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    counts = np.bincount(labels, minlength=10)
    assert counts.sum() == 5000 and (counts > 400).all()
    assert images.max() == 255 and images.min() == 0
    # the file is sorted by label
    assert (np.diff(labels) >= 0).all()


def test_model_range_and_padding():
    x, labels = mnist32()
    assert x.shape == (5000, 1, 32, 32) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    # padding rows and columns are background
    assert (x[:, :, :2] == -1).all() and (x[:, :, -2:] == -1).all()
    assert (x[:, :, :, :2] == -1).all() and (x[:, :, :, -2:] == -1).all()
    images, _ = load_mnist5k()
    np.testing.assert_allclose(x[7, 0, 2:30, 2:30], images[7] / 127.5 - 1, atol=1e-6)


def test_split_is_stratified_and_disjoint():
    tr, te = split_indices()
    _, labels = load_mnist5k()
    assert len(te) == 1000 and len(tr) == 4000 and not set(tr) & set(te)
    frac = np.bincount(labels[te], minlength=10) / np.bincount(labels, minlength=10)
    assert np.allclose(frac, 0.2, atol=0.01)

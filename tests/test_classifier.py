from mpqdm.core.resources import DEFAULT_CLASSIFIER
from mpqdm.frontend.classifier import accuracy, features, load_classifier
from mpqdm.frontend.data import mnist32, split_indices


def test_committed_classifier_accuracy_on_held_out_images():
    model, info = load_classifier(DEFAULT_CLASSIFIER)
    x, y = mnist32()
    _, te = split_indices()
    acc = accuracy(model, x[te], y[te])
    assert acc >= 0.97
    assert abs(acc - info["heldout_accuracy"]) < 1e-9


def test_features_shape():
    model, info = load_classifier(DEFAULT_CLASSIFIER)
    x, _ = mnist32()
    f = features(model, x[:10])
    assert f.shape == (10, info["feature_dim"]) and (f >= 0).all() and f.std() > 0

import numpy as np
import pytest
from scipy.special import expit

from cgru import losses, metrics


def test_binary_crossentropy_value_and_clipping():
    bce = losses.get("binary_crossentropy")
    y = np.array([[1.0], [0.0]])
    p = np.array([[0.8], [0.4]])
    assert bce(y, p) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    # p = 0 for a positive label: clipped at 1e-7, not infinite
    assert bce(np.array([[1.0]]), np.array([[0.0]])) == pytest.approx(-np.log(1e-7))
    # (N,) labels against (N, 1) outputs
    assert bce(np.array([1.0, 0.0]), p) == pytest.approx(bce(y, p))


def _fd(f, p, eps=1e-6):
    g = np.zeros_like(p)
    for i in np.ndindex(p.shape):
        d = np.zeros_like(p)
        d[i] = eps
        g[i] = (f(p + d) - f(p - d)) / (2 * eps)
    return g


@pytest.mark.parametrize("name", ["binary_crossentropy", "categorical_crossentropy",
                                  "sparse_categorical_crossentropy", "mse"])
def test_gradients_match_finite_differences(name):
    rng = np.random.default_rng(0)
    loss = losses.get(name)
    if name == "binary_crossentropy":
        p = rng.uniform(0.1, 0.9, (4, 3, 1))
        y = (rng.random((4, 3, 1)) > 0.5).astype(float)
    elif name == "mse":
        p, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    else:
        p = rng.uniform(0.1, 1.0, (4, 3, 5))
        p /= p.sum(-1, keepdims=True)
        labels = rng.integers(0, 5, (4, 3))
        y = labels if name.startswith("sparse") else np.eye(5)[labels]
    np.testing.assert_allclose(loss.gradient(y, p), _fd(lambda q: loss(y, q), p),
                               rtol=1e-6, atol=1e-9)
    if loss.logits_activation == "sigmoid":
        z = rng.standard_normal(p.shape)
        np.testing.assert_allclose(loss.logits_gradient(y, expit(z)),
                                   _fd(lambda q: loss(y, expit(q)), z), rtol=1e-6, atol=1e-9)
    elif loss.logits_activation == "softmax":
        z = rng.standard_normal(p.shape)

        def softmax(v):
            e = np.exp(v - v.max(-1, keepdims=True))
            return e / e.sum(-1, keepdims=True)
        np.testing.assert_allclose(loss.logits_gradient(y, softmax(z)),
                                   _fd(lambda q: loss(y, softmax(q)), z),
                                   rtol=1e-6, atol=1e-9)


def test_crossentropy_values():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    expected = -(np.log(0.7) + np.log(0.8)) / 2
    assert losses.get("sparse_categorical_crossentropy")(np.array([0, 2]), p) == \
        pytest.approx(expected)
    assert losses.get("categorical_crossentropy")(np.eye(3)[[0, 2]], p) == \
        pytest.approx(expected)
    assert losses.get("mse")(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]])) == 2.5


def test_label_shape_checks():
    with pytest.raises(ValueError, match=r"\(8, 3\)"):
        losses.get("binary_crossentropy").check_shapes((8, 2), (8, 3))
    losses.get("binary_crossentropy").check_shapes((8,), (8, 1))
    with pytest.raises(ValueError, match=r"\(8,\)"):
        losses.get("sparse_categorical_crossentropy").check_shapes((8, 3), (8, 3))
    with pytest.raises(ValueError, match="Unknown loss"):
        losses.get("no_such_loss")


def test_accuracy_resolves_by_shapes_like_keras():
    assert isinstance(metrics.get("accuracy", (8,), (8, 1)), metrics.BinaryAccuracy)
    assert isinstance(metrics.get("accuracy", (8, 1), (8, 1)), metrics.BinaryAccuracy)
    assert isinstance(metrics.get("accuracy", (8,), (8, 4)),
                      metrics.SparseCategoricalAccuracy)
    assert isinstance(metrics.get("accuracy", (8, 1), (8, 4)),
                      metrics.SparseCategoricalAccuracy)
    assert isinstance(metrics.get("acc", (8, 4), (8, 4)), metrics.CategoricalAccuracy)


def test_accuracy_values_accumulate():
    m = metrics.get("accuracy", (4,), (4, 1))
    m.update_state(np.array([1, 0, 1, 0]), np.array([[0.9], [0.6], [0.5], [0.1]]))
    m.update_state(np.array([1, 1]), np.array([[0.7], [0.8]]))
    assert m.result() == pytest.approx(4 / 6)
    s = metrics.get("accuracy", (3,), (3, 3))
    s.update_state(np.array([0, 2, 1]), np.array([[.5, .3, .2], [.1, .1, .8], [.6, .3, .1]]))
    assert s.result() == pytest.approx(2 / 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((32, 1), -1), ((7, 5, 3), (1, 2)), ((64, 10), -1),
                                        ((5,), 0), ((1000, 37), -1), ((3, 4, 5), 1),
                                        ((2, 0, 3), -1)])
def test_the_steps_mean_is_numpys_to_the_bit(dtype, shape, axis):
    """losses._mean replaces np.mean on the training step's small arrays: the same bits."""
    a = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    with np.errstate(invalid="ignore"):
        want = np.mean(a, axis=axis)
        got = losses._mean(a, axis)
    assert np.asarray(got).dtype == np.asarray(want).dtype
    np.testing.assert_array_equal(got, want)

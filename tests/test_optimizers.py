"""Optimizer rules checked against hand-derived float64 steps (Keras 3's formulas)."""
import numpy as np
import pytest

from cgru import optimizers as opt


def _run(optimizer, grads, w0=1.0):
    w = np.array([w0], dtype=np.float64)
    for g in grads:
        optimizer.apply([w], [np.array([g])])
    return w[0]


def test_sgd_plain_momentum_nesterov():
    assert _run(opt.SGD(0.1), [0.5, -1.0]) == pytest.approx(1 - 0.05 + 0.1)
    # m1 = -0.05 ; m2 = 0.9 * -0.05 + 0.1 = 0.055 ; w = 1 - 0.05 + 0.055
    assert _run(opt.SGD(0.1, momentum=0.9), [0.5, -1.0]) == pytest.approx(1.005)
    # nesterov: w += momentum * m - lr * g  ->  1 + (0.9*-0.05 - 0.05) + (0.9*0.055 + 0.1)
    assert _run(opt.SGD(0.1, momentum=0.9, nesterov=True), [0.5, -1.0]) == \
        pytest.approx(1 - 0.095 + 0.1495)


def test_adam_bias_corrected_step_and_epsilon_outside_sqrt():
    a = opt.Adam(learning_rate=0.1, epsilon=1e-3)
    w = _run(a, [0.2, 0.2])
    m1, v1 = 0.1 * 0.2, 0.001 * 0.04
    w1 = 1 - m1 * (0.1 * np.sqrt(1 - 0.999) / (1 - 0.9)) / (np.sqrt(v1) + 1e-3)
    m2, v2 = m1 + (0.2 - m1) * 0.1, v1 + (0.04 - v1) * 0.001
    w2 = w1 - m2 * (0.1 * np.sqrt(1 - 0.999**2) / (1 - 0.9**2)) / (np.sqrt(v2) + 1e-3)
    assert w == pytest.approx(w2, rel=1e-12)
    assert a.iterations == 2


def test_rmsprop_epsilon_inside_sqrt():
    g, eps, lr = 1e-4, 1e-7, 0.01
    w = _run(opt.RMSprop(learning_rate=lr, epsilon=eps), [g])
    v = 0.1 * g * g
    assert w == pytest.approx(1 - lr * g / np.sqrt(v + eps), rel=1e-12)
    assert abs((1 - w) - lr * g / (np.sqrt(v) + eps)) > 1e-4  # epsilon outside differs


def test_rmsprop_momentum_and_centered():
    w = _run(opt.RMSprop(0.01, momentum=0.5, centered=True), [1.0, 1.0])
    v1, a1 = 0.1, 0.1
    inc1 = 0.01 / np.sqrt(v1 - a1**2 + 1e-7)
    v2, a2 = 0.9 * v1 + 0.1, 0.9 * a1 + 0.1
    inc2 = 0.01 / np.sqrt(v2 - a2**2 + 1e-7)
    assert w == pytest.approx(1 - inc1 - (0.5 * inc1 + inc2), rel=1e-12)


def test_clipnorm_is_per_weight():
    w1, w2 = np.zeros(2), np.zeros(2)
    opt.SGD(1.0, clipnorm=1.0).apply([w1, w2], [np.array([3.0, 4.0]), np.array([0.3, 0.4])])
    np.testing.assert_allclose(w1, [-0.6, -0.8])
    np.testing.assert_allclose(w2, [-0.3, -0.4])


def test_float32_weights_stay_float32():
    w = np.ones(3, dtype=np.float32)
    opt.Adam().apply([w], [np.ones(3, dtype=np.float64)])
    assert w.dtype == np.float32


def test_get_and_validation():
    assert isinstance(opt.get("adam"), opt.Adam)
    assert isinstance(opt.get("SGD"), opt.SGD)
    assert isinstance(opt.get("rmsprop"), opt.RMSprop)
    assert opt.Adam().epsilon == 1e-7 and opt.RMSprop().rho == 0.9
    assert opt.SGD().learning_rate == 0.01 and opt.Adam().learning_rate == 0.001
    with pytest.raises(ValueError, match="adafactor"):  # a Keras optimizer cgru lacks
        opt.get("adafactor")
    with pytest.raises(ValueError, match="learning_rate"):
        opt.Adam(learning_rate=-1)
    with pytest.raises(ValueError, match="clipnorm"):
        opt.SGD(clipnorm=0)

"""Gradient checks: float64, central differences, every element of every input and weight."""
import numpy as np
import pytest

import cgru
from cgru import _reference
from conftest import make_gru_inputs

EPS = 1e-6
NAMES = ["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"]


def numerical_gradients(forward, args, dy, dh_n, **kwargs):
    """d/d(args) of L = sum(y * dy) + sum(h_n * dh_n) by central differences."""
    def loss(values):
        y, h_n, _ = forward(*values, training=False, **kwargs)
        return np.sum(y * dy) + np.sum(h_n * dh_n)

    return central_differences(loss, args)


def central_differences(loss, args, eps=EPS):
    """d loss(args) / d args, element by element, by central differences."""
    grads = []
    for k, arg in enumerate(args):
        grad = np.zeros_like(arg)
        for index in np.ndindex(arg.shape):
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[k][index] += eps
            minus[k][index] -= eps
            grad[index] = (loss(plus) - loss(minus)) / (2 * eps)
        grads.append(grad)
    return grads


@pytest.mark.parametrize("implementation", ["cgru", "reference"])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("lengths", [None, [4, 0, 2], [1, 4, 3]])
def test_gradients_match_central_differences(implementation, reset_after, lengths, rng):
    forward, backward = ((cgru.gru_forward, cgru.gru_backward) if implementation == "cgru"
                         else (_reference.gru_forward, _reference.gru_backward))
    T, B, I, H = 4, 3, 2, 3
    args = make_gru_inputs(rng, T, B, I, H, np.float64, scale=0.8)
    dy = rng.standard_normal((T, B, H))
    dh_n = rng.standard_normal((B, H))
    kwargs = dict(reset_after=reset_after, lengths=lengths)

    _, _, cache = forward(*args, **kwargs)
    analytic = backward(dy, dh_n, cache)
    numeric = numerical_gradients(forward, args, dy, dh_n, **kwargs)
    for name, got, want in zip(NAMES, analytic, numeric):
        assert np.abs(want).max() > 0 or name == "h0", name   # the check is not vacuous
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8, err_msg=name)


def test_h0_none_gradient_is_the_zero_state_gradient(rng):
    T, B, I, H = 3, 2, 2, 3
    x, _, *weights = make_gru_inputs(rng, T, B, I, H, np.float64)
    dy = rng.standard_normal((T, B, H))
    _, _, cache = cgru.gru_forward(x, None, *weights)
    dh0 = cgru.gru_backward(dy, None, cache).dh0
    zeros = np.zeros((B, H))
    numeric = numerical_gradients(cgru.gru_forward, [x, zeros] + weights, dy,
                                  np.zeros((B, H)))[1]
    np.testing.assert_allclose(dh0, numeric, rtol=1e-6, atol=1e-8)

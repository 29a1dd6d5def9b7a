"""The functional GRU's `mask=` and `recurrent_dropout_mask=`: semantics against the NumPy
reference (cgru/_reference.py, one step at a time) and gradients by central differences in
float64, on BLAS and on the small GEMM (one part and the batch cut in two)."""
import numpy as np
import pytest

import cgru
from cgru import _reference, functional
from cgru._native import _loops
from conftest import make_gru_inputs
from test_gradients import NAMES, numerical_gradients

LEVEL = _loops.SMALL_GEMM_LEVEL
PLANS = [(False, 1)] + ([(True, 1), (True, 2)] if LEVEL > 0 else [])


@pytest.fixture(params=PLANS, ids=lambda p: f"small_gemm={p[0]},parts={p[1]}")
def plan(request, monkeypatch):
    monkeypatch.setattr(functional, "_PLAN_OVERRIDE", request.param)
    return request.param


def mask_patterns(rng, T, B):
    """Holes, left padding, a row masked entirely, a row valid throughout, right padding."""
    mask = rng.random((T, B)) < 0.6
    mask[:, 0] = False                      # masked entirely (length 0)
    mask[:, 1] = True
    mask[: T // 2, 2] = False               # left padding
    mask[T // 2:, 2] = True
    mask[:, 3] = np.arange(T) < T - 2       # right padding
    return mask


def dropout_masks(rng, B, H, dtype, rate=0.4):
    return ((rng.random((3, B, H)) >= rate) / (1 - rate)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("zero_output", [False, True])
@pytest.mark.parametrize("dropped", [False, True])
def test_forward_matches_reference(plan, dtype, reset_after, zero_output, dropped, rng):
    T, B, I, H = 9, 10, 5, 6
    args = make_gru_inputs(rng, T, B, I, H, dtype)
    mask = mask_patterns(rng, T, B)
    kwargs = dict(reset_after=reset_after, mask=mask, zero_output_for_mask=zero_output,
                  recurrent_dropout_mask=dropout_masks(rng, B, H, dtype) if dropped else None)
    want_y, want_h, _ = _reference.gru_forward(*args, **kwargs)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for training in (True, False):
        y, h_n, _ = cgru.gru_forward(*args, training=training, **kwargs)
        np.testing.assert_allclose(y, want_y, atol=tol, rtol=0)
        np.testing.assert_allclose(h_n, want_h, atol=tol, rtol=0)
    # what the semantics say, read off the result: a row masked entirely gives 0 and h0
    np.testing.assert_array_equal(y[:, 0], 0)
    np.testing.assert_array_equal(h_n[0], args[1][0])
    # left padding: 0 before the first valid step even with an initial state
    np.testing.assert_array_equal(y[: T // 2, 2], 0)
    # a masked step after a valid one: the previous output, or 0
    t = T - 1
    assert not mask[t, 3]
    np.testing.assert_array_equal(y[t, 3], 0 if zero_output else y[t - 2, 3])


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("zero_output", [False, True])
@pytest.mark.parametrize("dropped", [False, True])
def test_gradients_match_central_differences(plan, reset_after, zero_output, dropped, rng):
    T, B, I, H = 6, 9, 2, 3
    args = make_gru_inputs(rng, T, B, I, H, np.float64, scale=0.8)
    mask = mask_patterns(rng, T, B)
    rec_mask = dropout_masks(rng, B, H, np.float64) if dropped else None
    if dropped:
        assert (rec_mask == 0).any()
    dy = rng.standard_normal((T, B, H))
    dh_n = rng.standard_normal((B, H))
    kwargs = dict(reset_after=reset_after, mask=mask, zero_output_for_mask=zero_output,
                  recurrent_dropout_mask=rec_mask)
    _, _, cache = cgru.gru_forward(*args, **kwargs)
    analytic = cgru.gru_backward(dy, dh_n, cache)
    again = cgru.gru_backward(dy, dh_n, cache)
    numeric = numerical_gradients(cgru.gru_forward, args, dy, dh_n, **kwargs)
    for name, got, want, got_again in zip(NAMES, analytic, numeric, again):
        assert np.abs(want).max() > 0, name
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8, err_msg=name)
        np.testing.assert_array_equal(got, got_again)


def test_all_true_mask_and_unit_dropout_masks_change_nothing(rng):
    T, B, I, H = 5, 4, 3, 4
    args = make_gru_inputs(rng, T, B, I, H, np.float64)
    y, h_n, _ = cgru.gru_forward(*args)
    y2, h2, _ = cgru.gru_forward(*args, mask=np.ones((T, B), bool),
                                 recurrent_dropout_mask=np.ones((3, B, H)))
    np.testing.assert_allclose(y2, y, atol=1e-14)
    np.testing.assert_allclose(h2, h_n, atol=1e-14)


def test_zero_output_mask_of_right_padding_equals_lengths(rng):
    T, B, I, H = 6, 4, 3, 4
    args = make_gru_inputs(rng, T, B, I, H, np.float64)
    lengths = np.array([6, 0, 3, 1])
    mask = np.arange(T)[:, None] < lengths[None, :]
    y, h_n, _ = cgru.gru_forward(*args, lengths=lengths)
    y2, h2, _ = cgru.gru_forward(*args, mask=mask, zero_output_for_mask=True)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(h2, h_n)


def test_bad_masks_are_named(rng):
    T, B, I, H = 4, 3, 2, 5
    args = make_gru_inputs(rng, T, B, I, H, np.float32)
    with pytest.raises(ValueError, match=r"`mask` must have shape \(T, B\) = \(4, 3\)"):
        cgru.gru_forward(*args, mask=np.ones((B, T), bool))
    with pytest.raises(TypeError, match="`mask` must be booleans"):
        cgru.gru_forward(*args, mask=np.ones((T, B), np.float32))
    with pytest.raises(ValueError, match="`lengths` or `mask`, not both"):
        cgru.gru_forward(*args, mask=np.ones((T, B), bool), lengths=[1, 2, 3])
    with pytest.raises(ValueError, match=r"`recurrent_dropout_mask` must have shape \(3, B, H\)"):
        cgru.gru_forward(*args, recurrent_dropout_mask=np.ones((3, H, B), np.float32))
    with pytest.raises(TypeError, match="`recurrent_dropout_mask` has dtype float64"):
        cgru.gru_forward(*args, recurrent_dropout_mask=np.ones((3, B, H)))


def test_empty_sequences_with_a_mask(rng):
    args = make_gru_inputs(rng, 0, 3, 2, 4, np.float64)
    y, h_n, cache = cgru.gru_forward(*args, mask=np.zeros((0, 3), bool),
                                     recurrent_dropout_mask=np.ones((3, 3, 4)))
    assert y.shape == (0, 3, 4)
    np.testing.assert_array_equal(h_n, args[1])
    grads = cgru.gru_backward(None, np.ones((3, 4)), cache)
    np.testing.assert_array_equal(grads.dh0, np.ones((3, 4)))


def test_a_mask_in_any_memory_order(rng):
    T, B, I, H = 5, 4, 3, 4
    args = make_gru_inputs(rng, T, B, I, H, np.float64)
    mask = mask_patterns(rng, T, B)
    y, h_n, _ = cgru.gru_forward(*args, mask=mask)
    for other in (np.asfortranarray(mask), np.ascontiguousarray(mask.T).T,
                  np.repeat(mask, 2, axis=1)[:, ::2]):
        y2, h2, _ = cgru.gru_forward(*args, mask=other)
        np.testing.assert_array_equal(y2, y)
        np.testing.assert_array_equal(h2, h_n)


@pytest.mark.parametrize("reset_after", [True, False])
def test_layer_entry_input_mask_per_gate(plan, reset_after, rng):
    """The layers' entry with one input dropout mask per gate (Keras 3's GRUCell with
    recurrent_dropout and dropout): gate g's input product reads x * masks[g]; checked
    against the same call with x * masks[g] in a copy of the weights whose other gates'
    input rows are cut, and by central differences in float64."""
    T, B, I, H = 5, 9, 3, 4
    x, h0, w_ih, w_hh, b_ih, b_hh = make_gru_inputs(rng, T, B, I, H, np.float64, scale=0.8)
    keep = ((rng.random((3, B, I)) >= 0.3) / 0.7)
    rec = dropout_masks(rng, B, H, np.float64)
    mask = mask_patterns(rng, T, B)
    kernel, recurrent = np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T)

    def run(x, h0, kernel, recurrent, b_ih, b_hh, training=True):
        return functional._layer_forward(x, h0, kernel, recurrent, b_ih, b_hh, reset_after,
                                         training, mask, False, rec, keep)

    y, h_n, cache = run(x, h0, kernel, recurrent, b_ih, b_hh)
    # the same call as one input x3 = [x * keep[r], x * keep[z], x * keep[n]] (T, B, 3I)
    # and a block-diagonal w_ih (3H, 3I), in the reference
    x3 = np.concatenate([x * keep[g] for g in range(3)], axis=2)        # (T, B, 3I)
    w3 = np.zeros((3 * H, 3 * I))
    for g in range(3):
        w3[g * H:(g + 1) * H, g * I:(g + 1) * I] = w_ih[g * H:(g + 1) * H]
    want_y, want_h, _ = _reference.gru_forward(x3, h0, w3, w_hh, b_ih, b_hh,
                                               reset_after=reset_after, mask=mask,
                                               recurrent_dropout_mask=rec)
    np.testing.assert_allclose(y, want_y, atol=1e-12)
    np.testing.assert_allclose(h_n, want_h, atol=1e-12)

    dy, dh_n = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    analytic = functional._layer_backward(dy, dh_n, cache)
    args = [x, h0, kernel, recurrent, b_ih, b_hh]
    numeric = numerical_gradients(run, args, dy, dh_n)
    for name, got, want in zip(NAMES, analytic, numeric):
        assert np.abs(want).max() > 0, name
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8, err_msg=name)


# Non-default activations through the masked and dropped loops: recurrent dropout runs its
# own step (one recurrent product per gate), which must pass the activation codes and keep
# the pre-activations that gelu and silu need, as the plain step does (activations smooth
# enough for central differences, gates bounded so that h stays small: relu's kink and
# unbounded gates are left to the tests without masks).
ACTIVATION_PAIRS = [("gelu", "hard_sigmoid"), ("silu", "sigmoid"), ("elu", "softsign")]


@pytest.mark.parametrize("pair", ACTIVATION_PAIRS, ids=lambda p: "/".join(p))
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dropped", [False, True])
def test_activations_with_masks_and_recurrent_dropout(plan, pair, reset_after, dropped, rng):
    T, B, I, H = 6, 9, 3, 4
    args = make_gru_inputs(rng, T, B, I, H, np.float64, scale=0.8)
    kwargs = dict(reset_after=reset_after, mask=mask_patterns(rng, T, B),
                  recurrent_dropout_mask=dropout_masks(rng, B, H, np.float64) if dropped
                  else None, activation=pair[0], recurrent_activation=pair[1])
    want_y, want_h, _ = _reference.gru_forward(*args, **kwargs)
    y, h_n, cache = cgru.gru_forward(*args, **kwargs)
    np.testing.assert_allclose(y, want_y, atol=1e-12, rtol=1e-12)
    np.testing.assert_allclose(h_n, want_h, atol=1e-12, rtol=1e-12)
    dy, dh_n = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    analytic = cgru.gru_backward(dy, dh_n, cache)
    numeric = numerical_gradients(cgru.gru_forward, args, dy, dh_n, **kwargs)
    for name, got, want in zip(NAMES, analytic, numeric):
        assert np.abs(want).max() > 0, name
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8, err_msg=name)

"""The compiled kernels against the plain NumPy reference, and the functional API's promises."""
import numpy as np
from scipy.special import expit
import pytest

import cgru
from cgru import _reference
from cgru._native import _twins as _gru
from conftest import assert_concurrent_calls_match_sequential, make_gru_inputs

SHAPES = [  # (T, B, I, H): each size 1 somewhere, and one larger shape
    (1, 1, 1, 1), (1, 3, 4, 5), (4, 1, 3, 2), (5, 2, 1, 3), (3, 4, 2, 1), (17, 9, 13, 24),
]
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def _lengths_for(T, B, rng):
    """Lengths in any order, with 0 and T present when B allows."""
    lengths = rng.integers(0, T + 1, size=B)
    lengths[0] = T
    if B > 1:
        lengths[1] = 0
    return rng.permutation(lengths)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_matches_reference(dtype, reset_after, shape, with_lengths, rng):
    T, B, I, H = shape
    args = make_gru_inputs(rng, T, B, I, H, dtype)
    lengths = _lengths_for(T, B, rng) if with_lengths else None
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh_n = rng.standard_normal((B, H)).astype(dtype)

    y, h_n, cache = cgru.gru_forward(*args, reset_after=reset_after, lengths=lengths)
    y_ref, h_n_ref, cache_ref = _reference.gru_forward(*args, reset_after=reset_after,
                                                       lengths=lengths)
    assert y.dtype == dtype and h_n.dtype == dtype
    np.testing.assert_allclose(y, y_ref, **TOL[dtype])
    np.testing.assert_allclose(h_n, h_n_ref, **TOL[dtype])

    grads = cgru.gru_backward(dy, dh_n, cache)
    grads_ref = _reference.gru_backward(dy, dh_n, cache_ref)
    for name in cgru.GRUGrads._fields:
        got, want = getattr(grads, name), getattr(grads_ref, name)
        assert got.shape == want.shape and got.dtype == dtype, name
        np.testing.assert_allclose(got, want, err_msg=name, **TOL[dtype])


def test_lengths_semantics(rng):
    """Past its length a row's y is zero and its state frozen; length 0 gives h_n == h0."""
    T, B, I, H = 6, 4, 3, 5
    args = make_gru_inputs(rng, T, B, I, H, np.float64)
    lengths = np.array([2, 6, 0, 4])
    y, h_n, _ = cgru.gru_forward(*args, lengths=lengths)
    for b, length in enumerate(lengths):
        assert np.all(y[length:, b] == 0)
        # the same row run alone for exactly `length` steps gives the same state
        alone = [args[0][:length, b:b + 1], args[1][b:b + 1]] + args[2:]
        y_alone, h_alone, _ = cgru.gru_forward(*alone)
        np.testing.assert_allclose(y[:length, b], y_alone[:, 0], rtol=1e-12)
        np.testing.assert_allclose(h_n[b], h_alone[0], rtol=1e-12)
    np.testing.assert_array_equal(h_n[2], args[1][2])


def test_lengths_all_full_equals_no_lengths(rng):
    args = make_gru_inputs(rng, 5, 3, 2, 4, np.float64)
    y1, h1, c1 = cgru.gru_forward(*args)
    y2, h2, c2 = cgru.gru_forward(*args, lengths=[5, 5, 5])
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(h1, h2)
    dy = np.ones_like(y1)
    for a, b in zip(cgru.gru_backward(dy, None, c1), cgru.gru_backward(dy, None, c2)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("reset_after", [True, False])
def test_h0_none_is_zeros_and_dh0_returned(reset_after, rng):
    x, h0, *weights = make_gru_inputs(rng, 4, 3, 2, 5, np.float64)
    y1, h1, c1 = cgru.gru_forward(x, None, *weights, reset_after=reset_after)
    y2, h2, c2 = cgru.gru_forward(x, np.zeros_like(h0), *weights, reset_after=reset_after)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(h1, h2)
    g1 = cgru.gru_backward(np.ones_like(y1), None, c1)
    g2 = cgru.gru_backward(np.ones_like(y2), None, c2)
    assert g1.dh0.shape == (3, 5) and np.abs(g1.dh0).max() > 0
    np.testing.assert_array_equal(g1.dh0, g2.dh0)


def test_backward_twice_same_result_and_none_cotangents(rng):
    args = make_gru_inputs(rng, 5, 3, 4, 6)
    y, h_n, cache = cgru.gru_forward(*args)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    first = cgru.gru_backward(dy, None, cache)
    second = cgru.gru_backward(dy, None, cache)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    zeros = cgru.gru_backward(None, None, cache)
    assert all(np.all(g == 0) for g in zeros)
    only_h = cgru.gru_backward(None, np.ones_like(h_n), cache)
    with_zero_dy = cgru.gru_backward(np.zeros_like(y), np.ones_like(h_n), cache)
    for a, b in zip(only_h, with_zero_dy):
        np.testing.assert_array_equal(a, b)


def test_inference_matches_training_forward(rng):
    args = make_gru_inputs(rng, 7, 3, 4, 5)
    for reset_after in (True, False):
        y1, h1, cache = cgru.gru_forward(*args, reset_after=reset_after, training=False,
                                         lengths=[7, 2, 0])
        y2, h2, _ = cgru.gru_forward(*args, reset_after=reset_after, lengths=[7, 2, 0])
        assert cache is None
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(h1, h2)


@pytest.mark.parametrize("reset_after", [True, False])
def test_inference_projects_in_chunks_with_the_same_result(reset_after, monkeypatch, rng):
    """Inference projects the input a chunk of steps at a time; 3 rows a chunk here gives
    chunks of 3 steps, the last one partial (T = 11)."""
    from cgru import functional
    monkeypatch.setattr(functional, "_CHUNK_ROWS", 3)
    assert functional._inference_chunk(11, 1) == 3
    args = make_gru_inputs(rng, 11, 1, 4, 5, np.float64)
    y_ref, h_ref, _ = _reference.gru_forward(*args, reset_after=reset_after)
    y, h_n, _ = cgru.gru_forward(*args, reset_after=reset_after, training=False)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_n, h_ref, rtol=1e-12, atol=1e-14)
    args = make_gru_inputs(rng, 11, 3, 4, 5, np.float64)         # chunks of 1 step
    lengths = [11, 0, 5]
    y_ref, h_ref, _ = _reference.gru_forward(*args, reset_after=reset_after, lengths=lengths)
    y, h_n, _ = cgru.gru_forward(*args, reset_after=reset_after, training=False,
                                 lengths=lengths)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_n, h_ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("T,B", [(0, 3), (4, 0), (0, 0)])
def test_empty_time_or_batch(T, B, rng):
    x, h0, *weights = make_gru_inputs(rng, T, B, 2, 3)
    y, h_n, cache = cgru.gru_forward(x, h0, *weights)
    assert y.shape == (T, B, 3) and h_n.shape == (B, 3)
    np.testing.assert_array_equal(h_n, h0)
    grads = cgru.gru_backward(np.zeros_like(y), np.ones_like(h_n), cache)
    assert grads.dx.shape == x.shape and grads.dw_ih.shape == weights[0].shape
    np.testing.assert_array_equal(grads.dh0, np.ones_like(h0))
    assert not np.any(grads.dw_ih) and not np.any(grads.db_hh)


def test_non_contiguous_fortran_readonly_broadcast_inputs(rng):
    T, B, I, H = 5, 3, 4, 6
    args = make_gru_inputs(rng, T, B, I, H, np.float64)
    y_ref, h_ref, c_ref = cgru.gru_forward(*args)
    g_ref = cgru.gru_backward(np.ones_like(y_ref), None, c_ref)

    x, h0, w_ih, w_hh, b_ih, b_hh = args
    wide = np.zeros((T, B, 2 * I))
    wide[:, :, ::2] = x
    odd = [wide[:, :, ::2],                       # strided
           np.asfortranarray(h0),                 # Fortran order
           np.asfortranarray(w_ih), w_hh.copy(), b_ih.copy(), b_hh.copy()]
    odd[3].flags.writeable = False                # read-only
    odd[4] = np.broadcast_to(b_ih[None], (2, 3 * H))[1]   # a broadcast view (read-only)
    y, h, cache = cgru.gru_forward(*odd)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(h, h_ref)
    dy = np.broadcast_to(np.ones(H), y.shape)      # read-only, zero strides
    for a, b in zip(cgru.gru_backward(dy, None, cache), g_ref):
        np.testing.assert_array_equal(a, b)


def test_inputs_never_modified_results_never_overwritten(rng):
    args = make_gru_inputs(rng, 4, 2, 3, 5)
    copies = [a.copy() for a in args]
    y, h_n, cache = cgru.gru_forward(*args, lengths=[4, 1])
    y_copy, h_copy = y.copy(), h_n.copy()
    dy, dh_n = np.ones_like(y), np.ones_like(h_n)
    grads = cgru.gru_backward(dy, dh_n, cache)
    grads_copy = [g.copy() for g in grads]
    cgru.gru_forward(*[a * 2 for a in args])       # later calls
    cgru.gru_backward(dy * 3, dh_n, cache)
    for a, b in zip(args, copies):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(y, y_copy)
    np.testing.assert_array_equal(h_n, h_copy)
    assert np.all(dy == 1) and np.all(dh_n == 1)
    for g, g_copy in zip(grads, grads_copy):
        np.testing.assert_array_equal(g, g_copy)


def test_threads_give_sequential_results(rng):
    """Calls from several threads at once (GIL released in the loops) match sequential ones."""
    jobs = [make_gru_inputs(np.random.default_rng(seed), 30, 8, 16, 32) for seed in range(8)]
    assert_concurrent_calls_match_sequential(jobs, repeats=3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m", [1, 5])        # one row goes through GEMV
def test_gemm_shim_matches_numpy(dtype, trans_a, trans_b, m, rng):
    n, k = 7, 3
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    want = 0.5 * (a.T if trans_a else a) @ (b.T if trans_b else b) + 2.0 * c
    _gru.gemm_for_tests(a, b, c, trans_a, trans_b, 0.5, 2.0)
    np.testing.assert_allclose(c, want, rtol=1e-5)


def test_extreme_preactivations_stay_finite(rng):
    """Huge gate inputs saturate sigmoid and tanh instead of giving inf or nan."""
    args = make_gru_inputs(rng, 3, 2, 2, 3, np.float32, scale=1e3)
    y, h_n, cache = cgru.gru_forward(*args)
    grads = cgru.gru_backward(np.ones_like(y), None, cache)
    # h' = (1 - z) n + z h is a convex combination of n in [-1, 1] and h
    bound = max(1.0, float(np.abs(args[1]).max()))
    assert np.all(np.isfinite(y)) and np.all(np.abs(y) <= bound * (1 + 1e-6))
    assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cell_math_accuracy(dtype):
    """The cell's exp, sigmoid and tanh against float64 NumPy over the whole useful range."""
    v = np.concatenate([np.linspace(-100, 100, 200001), [0.0, -0.0, 1e-30, -1e-30, 1e4, -1e4]])
    v = v.astype(dtype)
    exp_v, sigmoid_v, tanh_v = _gru.cell_math_for_tests(v)
    v64 = v.astype(np.float64)
    eps = np.finfo(dtype).eps
    inside = (v64 > -87) & (v64 < 88)
    rel = np.abs(exp_v[inside] / np.exp(v64[inside]) - 1)
    assert rel.max() <= 2 * eps, rel.max()
    if dtype == np.float32:   # the clamped float32 exp stays finite and positive at both ends
        assert np.all(np.isfinite(exp_v)) and np.all(exp_v > 0)
    np.testing.assert_allclose(sigmoid_v, expit(v64), rtol=4 * eps, atol=eps / 8)
    np.testing.assert_allclose(tanh_v, np.tanh(v64), rtol=0, atol=2 * eps)
    assert sigmoid_v.min() >= 0 and sigmoid_v.max() <= 1 and np.abs(tanh_v).max() <= 1
    special = np.array([np.nan, np.inf, -np.inf], dtype)
    exp_s, sigmoid_s, tanh_s = _gru.cell_math_for_tests(special)
    assert np.isnan(exp_s[0]) and np.isnan(sigmoid_s[0]) and np.isnan(tanh_s[0])
    assert sigmoid_s[1] == 1 and 0 <= sigmoid_s[2] < 1e-37
    np.testing.assert_array_equal(tanh_s[1:], [1, -1])


def test_nan_in_input_gives_nan_not_a_number(rng):
    """NaN is never silently turned into a finite result."""
    args = make_gru_inputs(rng, 3, 2, 2, 4)
    args[0][1, 0, 1] = np.nan
    y, h_n, _ = cgru.gru_forward(*args)
    assert np.all(np.isnan(y[1:, 0])) and np.all(np.isfinite(y[:, 1]))
    assert np.all(np.isnan(h_n[0])) and np.all(np.isfinite(h_n[1]))

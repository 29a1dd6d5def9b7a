"""The layers' private entry (functional._layer_forward/_layer_backward): weights in the layers'
layout (I, 3H), (H, 3H) read as they are, equal to gru_forward/gru_backward on the transposed
weights, under every plan; and the public functions given weights in either layout."""
import numpy as np
import pytest

import cgru
from cgru import functional
from cgru._native import _twins
from conftest import make_gru_inputs

PLANS = [(False, 1), (True, 1), (True, 2), (True, 3)]
LEVELS = [level for level in (2, 1) if level <= _twins.SMALL_GEMM_LEVEL] or [0]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


@pytest.fixture(params=LEVELS, ids=lambda level: {2: "avx512", 1: "avx2", 0: "blas"}[level])
def gemm_level(request):
    before = functional._set_small_gemm_level(request.param)
    yield request.param
    functional._set_small_gemm_level(before)


@pytest.fixture(params=PLANS, ids=lambda plan: f"small{int(plan[0])}-parts{plan[1]}")
def plan(request, monkeypatch):
    monkeypatch.setattr(functional, "_PLAN_OVERRIDE", request.param)
    return request.param


def layer_weights(args):
    """x, h0 and the layers' (I, 3H), (H, 3H) weights (contiguous, as a layer holds them)."""
    x, h0, w_ih, w_hh, b_ih, b_hh = args
    return x, h0, np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T), b_ih, b_hh


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 3, 4), (6, 17, 5, 13), (5, 40, 20, 32)])
def test_layer_entry_equals_the_public_functions(plan, gemm_level, dtype, reset_after, shape,
                                                 rng):
    T, B, I, H = shape
    args = make_gru_inputs(rng, T, B, I, H, dtype)
    x, h0, kernel, recurrent_kernel, b_ih, b_hh = layer_weights(args)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh_n = rng.standard_normal((B, H)).astype(dtype)
    y, h_n, cache = cgru.gru_forward(*args, reset_after=reset_after)
    grads = cgru.gru_backward(dy, dh_n, cache)
    # x with other strides: a batch-first array seen time-major, as a layer passes it
    x_strided = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)
    y_l, h_n_l, cache_l = functional._layer_forward(x_strided, h0, kernel, recurrent_kernel,
                                                    b_ih, b_hh, reset_after, True)
    np.testing.assert_allclose(y_l, y, **TOL[dtype])
    np.testing.assert_allclose(h_n_l, h_n, **TOL[dtype])
    dx, dh0, d_kernel, d_recurrent, db_ih, db_hh = functional._layer_backward(dy, dh_n, cache_l)
    assert d_kernel.shape == (I, 3 * H) and d_recurrent.shape == (H, 3 * H)
    np.testing.assert_allclose(dx, grads.dx, **TOL[dtype])
    np.testing.assert_allclose(dh0, grads.dh0, **TOL[dtype])
    np.testing.assert_allclose(d_kernel, grads.dw_ih.T, **TOL[dtype])
    np.testing.assert_allclose(d_recurrent, grads.dw_hh.T, **TOL[dtype])
    np.testing.assert_allclose(db_ih, grads.db_ih, **TOL[dtype])
    np.testing.assert_allclose(db_hh, grads.db_hh, **TOL[dtype])
    # the first layer of a model: no dx at all, the rest unchanged
    no_dx = functional._layer_backward(dy, dh_n, cache_l, need_dx=False)
    assert no_dx[0] is None
    for a, b in zip(no_dx[1:], (dh0, d_kernel, d_recurrent, db_ih, db_hh)):
        np.testing.assert_array_equal(a, b)
    y_i, h_n_i, cache_i = functional._layer_forward(x, h0, kernel, recurrent_kernel, b_ih, b_hh,
                                                    reset_after, False)
    assert cache_i is None
    np.testing.assert_allclose(y_i, y, **TOL[dtype])
    np.testing.assert_allclose(h_n_i, h_n, **TOL[dtype])


def test_layer_entry_takes_no_copies_of_the_weights(rng, monkeypatch):
    """The cache holds the layer's own weight arrays, not copies; the plan is made once."""
    x, h0, kernel, recurrent_kernel, b_ih, b_hh = layer_weights(make_gru_inputs(rng, 4, 8, 3, 5))
    calls = []
    plan = functional._plan
    monkeypatch.setattr(functional, "_plan", lambda *a, **k: calls.append(a) or plan(*a, **k))
    _, _, cache = functional._layer_forward(x, None, kernel, recurrent_kernel, b_ih, b_hh,
                                            True, True)
    functional._layer_backward(np.ones((4, 8, 5), np.float32), None, cache)
    assert cache.w_ih is kernel and cache.w_hh is recurrent_kernel
    assert len(calls) == 1


@pytest.mark.parametrize("reset_after", [True, False])
def test_public_functions_take_transposed_views_of_weights(plan, reset_after, rng):
    """w_ih, w_hh given as transposed views (Fortran order): read in place, same results,
    gradients in PyTorch's shapes."""
    args = make_gru_inputs(rng, 5, 9, 4, 6, np.float64)
    views = list(args)
    views[2] = np.ascontiguousarray(args[2].T).T
    views[3] = np.ascontiguousarray(args[3].T).T
    y, h_n, cache = cgru.gru_forward(*args, reset_after=reset_after)
    y_v, h_n_v, cache_v = cgru.gru_forward(*views, reset_after=reset_after)
    np.testing.assert_allclose(y_v, y, **TOL[np.float64])
    grads = cgru.gru_backward(np.ones_like(y), h_n, cache)
    grads_v = cgru.gru_backward(np.ones_like(y), h_n, cache_v)
    for name in cgru.GRUGrads._fields:
        assert getattr(grads_v, name).shape == getattr(grads, name).shape, name
        np.testing.assert_allclose(getattr(grads_v, name), getattr(grads, name), err_msg=name,
                                   **TOL[np.float64])


@pytest.mark.skipif(not _twins.SMALL_GEMM_AVAILABLE, reason="no small GEMM on this CPU")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_gemm_reads_a_transposed_operand(gemm_level, dtype, rng):
    for m, n, k in [(1, 1, 1), (2, 33, 7), (9, 17, 40), (16, 96, 32)]:
        a = rng.standard_normal((m, k)).astype(dtype)
        b_t = rng.standard_normal((n, k)).astype(dtype)
        c = rng.standard_normal((m, n)).astype(dtype)
        want = a.astype(np.float64) @ b_t.T + 0.5 * c
        _twins.small_gemm_for_tests(a, b_t, c, 0.5, trans_b=True, level=gemm_level)
        np.testing.assert_allclose(c, want, err_msg=f"{m}, {n}, {k}", rtol=2e-4, atol=2e-5)

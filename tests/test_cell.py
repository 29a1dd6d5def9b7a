"""GRUCell: one step with prepared weights equals a one-step gru_forward; bad input raises."""
import threading

import numpy as np
import pytest

import cgru
from cgru.functional import GRUCell
from conftest import make_gru_inputs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("B", [1, 5])
def test_steps_match_gru_forward(dtype, reset_after, B, rng):
    T, I, H = 6, 7, 9
    x, h0, *weights = make_gru_inputs(rng, T, B, I, H, dtype)
    y, h_n, _ = cgru.gru_forward(x, h0, *weights, reset_after=reset_after, training=False)
    cell = GRUCell(*weights, reset_after=reset_after)
    h = h0
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)
    for t in range(T):
        _, one_step, _ = cgru.gru_forward(x[t][None], h, *weights, reset_after=reset_after,
                                          training=False)
        h = cell(x[t], h)
        assert h.dtype == dtype and h.shape == (B, H)
        np.testing.assert_array_equal(h, one_step)
        # the whole-sequence forward projects all steps in one GEMM: rounding may differ
        np.testing.assert_allclose(h, y[t], **tol)
    np.testing.assert_allclose(h, h_n, **tol)


def test_h_none_is_zeros_and_weights_are_copied(rng):
    x, h0, *weights = make_gru_inputs(rng, 1, 3, 4, 5)
    cell = GRUCell(*weights)
    first = cell(x[0])
    np.testing.assert_array_equal(first, cell(x[0], np.zeros_like(h0)))
    for w in weights:
        w *= 2                                   # the cell keeps its own copies
    np.testing.assert_array_equal(cell(x[0]), first)
    assert not np.shares_memory(cell(x[0]), cell(x[0]))


def test_non_contiguous_inputs_and_empty_batch(rng):
    x, h0, *weights = make_gru_inputs(rng, 1, 4, 3, 5, np.float64)
    cell = GRUCell(*[np.asfortranarray(w) if w.ndim == 2 else w for w in weights])
    want = cell(x[0], h0)
    np.testing.assert_array_equal(cell(np.asfortranarray(x[0]), h0[:, ::1]), want)
    wide = np.zeros((4, 6))
    wide[:, ::2] = x[0]
    np.testing.assert_array_equal(cell(wide[:, ::2], h0), want)
    assert cell(np.zeros((0, 3))).shape == (0, 5)


@pytest.mark.parametrize("call,error,words", [
    (lambda c: c(np.zeros((2, 4), np.float32)), ValueError, ["`x`", "(B, 3)", "(2, 4)"]),
    (lambda c: c(np.zeros(3, np.float32)), ValueError, ["`x`", "(3,)"]),
    (lambda c: c(np.zeros((2, 3))), TypeError, ["`x`", "float64", "float32"]),
    (lambda c: c(np.zeros((2, 3), np.int32)), TypeError, ["`x`", "int32"]),
    (lambda c: c(np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32)), ValueError,
     ["`h`", "(2, 5)", "(2, 4)"]),
    (lambda c: c(np.zeros((2, 3), np.float32), np.zeros((2, 5))), TypeError, ["`h`", "float64"]),
])
def test_bad_step_arguments(call, error, words, rng):
    _, _, *weights = make_gru_inputs(rng, 1, 1, 3, 5)
    with pytest.raises(error) as info:
        call(GRUCell(*weights))
    for word in words:
        assert word in str(info.value)


def test_bad_weights(rng):
    _, _, w_ih, w_hh, b_ih, b_hh = make_gru_inputs(rng, 1, 1, 3, 5)
    with pytest.raises(ValueError, match="`w_hh`"):
        GRUCell(w_ih, w_hh[:, :4], b_ih, b_hh)
    with pytest.raises(ValueError, match="`b_ih`"):
        GRUCell(w_ih, w_hh, b_ih[:-1], b_hh)
    with pytest.raises(TypeError, match="`b_hh`"):
        GRUCell(w_ih, w_hh, b_ih, b_hh.astype(np.float64))
    with pytest.raises(ValueError, match="`w_ih`"):
        GRUCell(w_ih[0], w_hh, b_ih, b_hh)


def test_threads_give_sequential_results(rng):
    x, h0, *weights = make_gru_inputs(rng, 50, 4, 8, 16)
    cell = GRUCell(*weights)

    def run():
        h = h0
        for t in range(len(x)):
            h = cell(x[t], h)
        return h

    want = run()
    results = [None] * 6

    def worker(i):
        results[i] = run()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got in results:
        np.testing.assert_array_equal(got, want)

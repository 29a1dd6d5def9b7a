"""Bad input raises a clear ValueError/TypeError naming the argument, before native code runs."""
import numpy as np
import pytest

import cgru
from conftest import make_gru_inputs

T, B, I, H = 4, 3, 2, 5


@pytest.fixture
def args(rng):
    return make_gru_inputs(rng, T, B, I, H)


def _with(args, index, value):
    changed = list(args)
    changed[index] = value
    return changed


@pytest.mark.parametrize("index,value,error,words", [
    (0, np.zeros((T, I), np.float32), ValueError, ["`x`", "rank 3", f"({T}, {I})"]),
    (0, np.zeros((T, B, I + 1), np.float32), ValueError, ["`w_ih`", "(3H, I)",
                                                          f"({3 * H}, {I + 1})"]),
    (0, np.zeros((T, B, 0), np.float32), ValueError, ["(3H, I)"]),
    (0, np.zeros((T, B, I), np.int64), TypeError, ["`x`", "int64"]),
    (0, np.zeros((T, B, I), np.float16), TypeError, ["`x`", "float16"]),
    (0, np.zeros((T, B, I), np.complex64), TypeError, ["`x`", "complex64"]),
    (0, None, TypeError, ["`x`", "None"]),
    (1, np.zeros((B + 1, H), np.float32), ValueError, ["`h0`", "(B, H)", f"({B + 1}, {H})"]),
    (1, np.zeros((B, H), np.float64), TypeError, ["`h0`", "float64", "float32"]),
    (1, np.zeros((B, H), np.int32), TypeError, ["`h0`", "int32"]),
    (2, np.zeros((3 * H, I + 1), np.float32), ValueError, ["`w_ih`", f"({3 * H}, {I + 1})"]),
    (2, np.zeros((3 * H, I), np.float64), TypeError, ["`w_ih`", "float64"]),
    (3, np.zeros((3 * H, H + 1), np.float32), ValueError, ["`w_hh`", "(3H, H)"]),
    (3, np.zeros((0, 0), np.float32), ValueError, ["`w_hh`", "H >= 1"]),
    (3, np.zeros((3 * H,), np.float32), ValueError, ["`w_hh`"]),
    (4, np.zeros((3 * H + 1,), np.float32), ValueError, ["`b_ih`", f"({3 * H + 1},)"]),
    (4, np.zeros((1, 3 * H), np.float32), ValueError, ["`b_ih`"]),
    (5, np.zeros((3 * H,), np.float64), TypeError, ["`b_hh`", "float64"]),
    (5, np.zeros((2, 3 * H), np.float32), ValueError, ["`b_hh`", f"(2, {3 * H})"]),
])
def test_bad_forward_arguments(args, index, value, error, words):
    with pytest.raises(error) as info:
        cgru.gru_forward(*_with(args, index, value))
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("lengths,error,words", [
    ([1, 2], ValueError, ["`lengths`", "(3,)", "(2,)"]),
    ([[1, 2, 3]], ValueError, ["`lengths`", "(1, 3)"]),
    ([1, 2, T + 1], ValueError, ["`lengths`", f"0..{T}", str(T + 1)]),
    ([1, -1, 2], ValueError, ["`lengths`", "-1"]),
    (np.array([1.0, 2.0, 3.0]), TypeError, ["`lengths`", "float64"]),
    (np.array([True, False, True]), TypeError, ["`lengths`", "bool"]),
])
def test_bad_lengths(args, lengths, error, words):
    with pytest.raises(error) as info:
        cgru.gru_forward(*args, lengths=lengths)
    for word in words:
        assert word in str(info.value)


def test_integer_lengths_of_any_integer_dtype_work(args):
    y1, _, _ = cgru.gru_forward(*args, lengths=np.array([4, 0, 2], np.int8))
    y2, _, _ = cgru.gru_forward(*args, lengths=np.array([4, 0, 2], np.uint64))
    np.testing.assert_array_equal(y1, y2)


def test_bad_backward_arguments(args):
    y, h_n, cache = cgru.gru_forward(*args)
    cases = [
        ((np.zeros((T, B, H + 1), np.float32), None, cache), ValueError, ["`dy`", "(T, B, H)"]),
        ((np.zeros((T - 1, B, H), np.float32), None, cache), ValueError, ["`dy`"]),
        ((None, np.zeros((B, H + 1), np.float32), cache), ValueError, ["`dh_n`", "(B, H)"]),
        ((np.zeros((T, B, H)), None, cache), TypeError, ["`dy`", "float64", "float32"]),
        ((None, np.zeros((B, H), np.int64), cache), TypeError, ["`dh_n`", "int64"]),
        ((np.zeros((T, B, H), np.float32), None, None), ValueError, ["`cache`", "training=True"]),
        ((None, None, {"x": 1}), TypeError, ["`cache`", "dict"]),
    ]
    for call_args, error, words in cases:
        with pytest.raises(error) as info:
            cgru.gru_backward(*call_args)
        for word in words:
            assert word in str(info.value), (word, str(info.value))


def test_inference_cache_is_none_and_backward_says_why(args):
    _, _, cache = cgru.gru_forward(*args, training=False)
    assert cache is None
    with pytest.raises(ValueError, match="training=True"):
        cgru.gru_backward(None, None, cache)


def test_sizes_beyond_32_bit_blas_raise_before_allocating(rng):
    """T * B rows past 2**31 - 1 would wrap around in a 32-bit BLAS index."""
    _, _, w_ih, w_hh, b_ih, b_hh = make_gru_inputs(rng, 1, 1, 1, 2)
    x = np.broadcast_to(np.float32(0), (2**16, 2**15 + 1, 1))   # no memory behind it
    with pytest.raises(ValueError, match="32-bit BLAS"):
        cgru.gru_forward(x, None, w_ih, w_hh, b_ih, b_hh)


def test_allocation_too_large_raises_memory_error(rng):
    _, _, w_ih, w_hh, b_ih, b_hh = make_gru_inputs(rng, 1, 1, 1, 4096)
    x = np.broadcast_to(np.float32(0), (2**15, 2**15, 1))        # y alone would be 16 TiB
    with pytest.raises(MemoryError):
        cgru.gru_forward(x, None, w_ih, w_hh, b_ih, b_hh)

"""The buffer pool (cgru/_pool.py): reuse only of memory nothing refers to, and its bounds."""
import gc

import numpy as np
import pytest

import cgru
from cgru import functional
from cgru._pool import BufferPool
from conftest import assert_concurrent_calls_match_sequential, make_gru_inputs

MIB = 1 << 20


def overlaps(a, b):
    return np.shares_memory(a, b)


def test_arrays_have_the_asked_shape_dtype_and_alignment():
    pool = BufferPool()
    for dtype in (np.float32, np.float64):
        a = pool.empty((3, 256, 1000), dtype)
        assert a.shape == (3, 256, 1000) and a.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % 64 == 0
        a[...] = 1.5                              # the whole range is writable memory
        assert float(a.sum()) == 1.5 * a.size


def test_memory_in_use_is_never_handed_out_again():
    pool = BufferPool()
    a = pool.empty((MIB,), np.float32)
    b = pool.empty((MIB,), np.float32)
    assert not overlaps(a, b)


@pytest.mark.parametrize("keep", ["view", "view_of_view", "memoryview", "reshaped"])
def test_a_view_keeps_the_memory_from_reuse(keep):
    pool = BufferPool()
    a = pool.empty((4, MIB // 4), np.float32)
    a[...] = 7
    held = {"view": lambda: a[1:],
            "view_of_view": lambda: a[1:][:, 3:].T,
            "memoryview": lambda: memoryview(a),
            "reshaped": lambda: a.reshape(-1)}[keep]()
    del a
    gc.collect()
    b = pool.empty((4, MIB // 4), np.float32)
    b[...] = 0
    assert np.all(np.asarray(held) == 7)


def test_memory_nothing_refers_to_is_reused():
    pool = BufferPool()
    a = pool.empty((MIB,), np.float32)
    address = a.ctypes.data
    del a
    b = pool.empty((MIB,), np.float32)
    assert b.ctypes.data == address
    assert pool.held_bytes >= b.nbytes and pool.idle_bytes == 0
    del b
    assert pool.idle_bytes >= 4 * MIB


def test_small_and_huge_arrays_bypass_the_pool():
    pool = BufferPool(max_idle_bytes=64 * MIB, min_bytes=MIB)
    small = pool.empty((1000,), np.float32)
    huge = pool.empty((5 * MIB,), np.float32)        # 20 MiB > a quarter of the limit
    assert small.shape == (1000,) and huge.shape == (5 * MIB,)
    assert pool.held_bytes == 0


def test_idle_memory_is_bounded_and_clear_lets_it_go():
    pool = BufferPool(max_idle_bytes=40 * MIB)
    arrays = [pool.empty((MIB,), np.float64) for _ in range(20)]     # 20 x 8 MiB in use
    assert pool.held_bytes >= 160 * MIB
    del arrays
    latest = pool.empty((MIB,), np.float64)     # a call trims the idle buffers
    assert pool.idle_bytes <= 40 * MIB
    assert pool.held_bytes <= 40 * MIB + 2 * latest.nbytes
    pool.clear()
    assert pool.held_bytes == 0


def test_limit_zero_turns_the_pool_off():
    pool = BufferPool(max_idle_bytes=0)
    a = pool.empty((MIB,), np.float32)
    assert a.shape == (MIB,) and pool.held_bytes == 0


def test_a_smaller_request_reuses_a_buffer_at_most_twice_its_size():
    pool = BufferPool()
    a = pool.empty((MIB,), np.float32)
    address = a.ctypes.data
    del a
    far_smaller = pool.empty((MIB // 4,), np.float32)
    assert far_smaller.ctypes.data != address
    a_bit_smaller = pool.empty((MIB * 3 // 4,), np.float32)
    assert a_bit_smaller.ctypes.data == address


@pytest.fixture
def pool_for_every_array(monkeypatch):
    """The kernels' pool with no lower size bound, so that small test shapes use it."""
    monkeypatch.setattr(functional.POOL, "min_bytes", 0)
    functional.POOL.clear()
    yield functional.POOL
    functional.POOL.clear()


@pytest.mark.parametrize("reset_after", [True, False])
def test_results_and_caches_survive_later_calls(pool_for_every_array, reset_after, rng):
    args = make_gru_inputs(rng, 6, 3, 4, 5)
    y, h_n, cache = cgru.gru_forward(*args, reset_after=reset_after)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    grads = cgru.gru_backward(dy, None, cache)
    expected = [y.copy(), h_n.copy()] + [g.copy() for g in grads]
    for _ in range(3):                              # later calls take pooled arrays
        other = [a * 2 for a in make_gru_inputs(rng, 6, 3, 4, 5)]
        y2, _, cache2 = cgru.gru_forward(*other, reset_after=reset_after)
        cgru.gru_backward(np.ones_like(y2), None, cache2)
        del y2, cache2
    for a, b in zip([y, h_n] + list(grads), expected):
        np.testing.assert_array_equal(a, b)
    # the old cache still gives the same gradients
    for a, b in zip(cgru.gru_backward(dy, None, cache), expected[2:]):
        np.testing.assert_array_equal(a, b)
    assert pool_for_every_array.held_bytes > 0     # the pool was in use


def test_arrays_are_reused_once_dropped(pool_for_every_array, rng):
    args = make_gru_inputs(rng, 6, 3, 4, 5)
    y, _, cache = cgru.gru_forward(*args)
    address = y.ctypes.data
    del y, cache
    y_again, _, _ = cgru.gru_forward(*args)
    assert y_again.ctypes.data == address


def test_threads_with_the_pool_give_sequential_results(pool_for_every_array):
    jobs = [make_gru_inputs(np.random.default_rng(seed), 20, 4, 8, 16) for seed in range(6)]
    assert_concurrent_calls_match_sequential(jobs, repeats=5)

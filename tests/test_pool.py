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


# -- release exactly when the last view dies (the lease as every array's base) ---------------

def buffer_size(shape, dtype, min_bytes=0):
    """Bytes a pool holds for one array of shape and dtype (its buffer, in use)."""
    pool = BufferPool(min_bytes=min_bytes)
    probe = pool.empty(shape, dtype)
    assert probe.shape == tuple(np.atleast_1d(shape)) or probe.shape == shape
    return pool.held_bytes


@pytest.mark.parametrize("keep", ["slice", "view_of_view", "reshaped", "memoryview",
                                  "array_of_memoryview", "transposed_copyless"])
def test_the_buffer_returns_when_the_last_view_dies_not_before(keep):
    pool = BufferPool()
    a = pool.empty((4, MIB // 4), np.float32)
    address = a.ctypes.data
    a[...] = 3
    held = {"slice": lambda: a[2:, 5:9],
            "view_of_view": lambda: a[1:][::2, 7:][:, ::3],
            "reshaped": lambda: a.reshape(2, 2, -1),
            "memoryview": lambda: memoryview(a)[1:],
            "array_of_memoryview": lambda: np.asarray(memoryview(a)),
            "transposed_copyless": lambda: a.T[::3]}[keep]()
    del a                                   # the parent dies; the view alone keeps it
    gc.collect()
    assert pool.idle_bytes == 0
    other = pool.empty((4, MIB // 4), np.float32)
    assert other.ctypes.data != address
    other[...] = -1
    assert np.all(np.asarray(held) == 3)
    del other
    idle_before = pool.idle_bytes
    del held                                # the last view dies: the buffer is free at once
    assert pool.idle_bytes > idle_before
    again = [pool.empty((4, MIB // 4), np.float32) for _ in range(2)]
    assert address in [array.ctypes.data for array in again]


def test_a_slice_outlives_its_parent_and_its_siblings():
    pool = BufferPool()
    a = pool.empty((MIB,), np.float32)
    a[:] = np.arange(MIB, dtype=np.float32)
    tail = a[-10:]
    head = a[:10]
    del a, head
    for _ in range(3):
        pool.empty((MIB,), np.float32)[:] = -5      # taken and dropped at once
    np.testing.assert_array_equal(tail, np.arange(MIB - 10, MIB, dtype=np.float32))


def test_an_array_sent_to_another_thread_stays_its_own_until_that_thread_drops_it():
    import queue
    import threading
    pool = BufferPool()
    to_worker, from_worker = queue.Queue(), queue.Queue()

    def worker():
        received = to_worker.get()
        from_worker.put("holding")
        to_worker.get()                     # wait while the main thread takes more arrays
        from_worker.put(bool(np.all(received == 11)))
        del received
        from_worker.put("dropped")

    thread = threading.Thread(target=worker)
    thread.start()
    a = pool.empty((MIB,), np.float32)
    a[:] = 11
    address = a.ctypes.data
    to_worker.put(a)
    del a
    assert from_worker.get(timeout=30) == "holding"
    others = [pool.empty((MIB,), np.float32) for _ in range(3)]
    assert address not in [o.ctypes.data for o in others]
    for other in others:
        other[:] = -1
    to_worker.put("check")
    assert from_worker.get(timeout=30) is True
    assert from_worker.get(timeout=30) == "dropped"
    thread.join()
    del others
    assert address in [pool.empty((MIB,), np.float32).ctypes.data for _ in range(4)]


def test_many_threads_taking_and_dropping_never_share_a_live_buffer():
    import threading
    pool = BufferPool(max_idle_bytes=64 * MIB, min_bytes=64 * 1024, max_buffers=8)
    sizes = [16 * 1024, 20 * 1024, 24 * 1024, 32 * 1024]      # float64 elements: 128-256 KiB
    errors = []
    start = threading.Barrier(8)

    def worker(index):
        rng = np.random.default_rng(index)
        alive = []                          # (array, the value written into it)
        start.wait()
        for step in range(300):
            array = pool.empty((int(rng.choice(sizes)),), np.float64)
            value = float(index * 100000 + step)
            array.fill(value)
            alive.append((array, value))
            if len(alive) > 3 or rng.random() < 0.3:
                alive.pop(int(rng.integers(len(alive))))
            for kept, kept_value in alive:
                if not (kept[0] == kept_value and kept[-1] == kept_value
                        and np.all(kept == kept_value)):
                    errors.append((index, step))
                    return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert 0 < pool.idle_bytes <= 64 * MIB
    assert pool.held_bytes == pool.idle_bytes      # every array died: nothing is in use


def test_arrays_that_die_in_the_garbage_collector_come_back():
    """Arrays in reference cycles die when the collector runs, at any allocation."""
    pool = BufferPool(min_bytes=1024)
    thresholds = gc.get_threshold()
    gc.set_threshold(1, 1, 1)                       # collect at almost every allocation
    try:
        for _ in range(200):
            cycle = [pool.empty((4096,), np.float32)]
            cycle.append(cycle)
            del cycle
            pool.empty((4096,), np.float32)
    finally:
        gc.set_threshold(*thresholds)
    gc.collect()
    pool.empty((4096,), np.float32)                # files whatever a collection returned
    assert pool.held_bytes == pool.idle_bytes
    assert 0 < pool.held_bytes <= 4 * buffer_size((4096,), np.float32)


def test_a_release_while_the_pool_holds_its_lock_does_not_wait_for_it():
    """The garbage collector may run a lease's release inside the pool's own locked section
    (in the same thread): the release must not wait for the lock, or it waits forever."""
    import threading
    pool = BufferPool()
    a = pool.empty((MIB,), np.float32)
    done = threading.Event()

    def drop_while_locked(array_list):
        with pool._lock:                # what a collection inside a pool call looks like
            array_list.clear()          # the last view dies here
        done.set()

    thread = threading.Thread(target=drop_while_locked, args=([a],), daemon=True)
    del a
    thread.start()
    thread.join(timeout=20)
    assert done.is_set(), "releasing an array under the pool's lock deadlocked"
    assert pool.idle_bytes >= 4 * MIB         # filed once the lock was let go


# -- bounds -------------------------------------------------------------------------------

def test_idle_bytes_stay_bounded_at_every_release_oldest_released_going_first():
    pool = BufferPool(max_idle_bytes=20 * MIB)
    size = buffer_size((MIB,), np.float32)
    arrays = [pool.empty((MIB,), np.float32) for _ in range(10)]
    addresses = [a.ctypes.data for a in arrays]
    while arrays:
        arrays.pop(0)                       # released in order 0, 1, ..., 9
        assert pool.idle_bytes <= 20 * MIB  # bounded right away, not at the next call
    kept = 20 * MIB // size
    assert pool.idle_bytes == kept * size
    again = [pool.empty((MIB,), np.float32) for _ in range(kept)]
    assert sorted(a.ctypes.data for a in again) == sorted(addresses[-kept:])


def test_lowering_the_limit_lets_idle_buffers_go_and_zero_turns_the_pool_off():
    pool = BufferPool(max_idle_bytes=64 * MIB)
    arrays = [pool.empty((MIB,), np.float32) for _ in range(6)]
    del arrays
    assert pool.idle_bytes >= 24 * MIB
    pool.max_idle_bytes = 10 * MIB
    assert pool.idle_bytes <= 10 * MIB
    pool.max_idle_bytes = 0
    assert pool.held_bytes == 0
    a = pool.empty((MIB,), np.float32)
    assert a.shape == (MIB,) and pool.held_bytes == 0
    with pytest.raises(ValueError, match="max_idle_bytes"):
        pool.max_idle_bytes = -1


def test_idle_buffers_number_at_most_max_buffers():
    pool = BufferPool(max_buffers=3)
    arrays = [pool.empty((MIB,), np.float32) for _ in range(6)]
    size = arrays[0].nbytes
    del arrays
    assert 3 * size <= pool.idle_bytes < 4 * size


def test_arrays_in_use_at_clear_do_not_come_back():
    pool = BufferPool()
    a = pool.empty((MIB,), np.float32)
    pool.clear()
    assert pool.held_bytes == 0
    del a
    assert pool.held_bytes == 0 and pool.idle_bytes == 0


def test_bad_shapes_raise_before_anything_is_taken():
    pool = BufferPool(min_bytes=0)
    with pytest.raises(ValueError, match=r"shape=\(-2, -3\)"):
        pool.empty((-2, -3), np.float32)
    with pytest.raises(TypeError):
        pool.empty((2.5, 4), np.float32)
    assert pool.held_bytes == 0


def test_other_dtypes_and_shapes_come_out_as_np_empty_would():
    pool = BufferPool(min_bytes=0)
    for shape, dtype in [((), np.float64), (7, np.int16), ((3, 0, 2), np.float32),
                         ((5,), np.complex128), ((4,), object), ((2,), "U3"),
                         ((3,), [("a", "f4"), ("b", "i8")]), ((300, 3), np.bool_)]:
        array = pool.empty(shape, dtype)
        expected = np.empty(shape, dtype)
        assert array.shape == expected.shape and array.dtype == expected.dtype
        assert array.flags.c_contiguous and array.flags.writeable

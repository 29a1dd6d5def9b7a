"""A pool of large work arrays, recycled exactly when the last view of one dies.

Why: a training step of the (T, B, I, H) = (100, 64, 128, 256) benchmark case allocates about
70 MB (gates, states, gradients). glibc gives memory that large back to the system when it is
freed, so every step took it anew and paid a page fault for each 4 KiB page it touched: the
step took 1.3-1.5x as long as the same kernels on reused arrays (measured, 2 threads). Keeping
the arrays of the previous call and handing them out again removes that cost, as the buffer
caches of PyTorch (on GPUs) and XLA do.

How an array is known to be free: every array the pool hands out has a lease object as its
base, and the lease holds the buffer. NumPy keeps a view's base alive (a view of a view, a
reshape, a slice, a memoryview or an array made from that memoryview all lead back to the
lease), so the lease dies exactly when the last of them dies; its ``__del__`` then puts the
buffer on a free list. Its contents are old numbers, exactly as with ``np.empty``. Arrays are
never reused while a result, a cache or a user's view still refers to them. Nothing reads
reference counts, so the pool works the same on free-threaded Python.

How a buffer is found: buffers have size classes, four per doubling (a new buffer is at most
25% larger than the array it was made for), and the idle buffers of each class sit in a list
of their own. A request looks at its class and the few above it, up to twice its size (so
that a small request does not hold a big buffer), and takes the buffer released longest ago
there (so a repeated call gets back the arrays of the previous one, in the order it made
them); a release appends to one list. Both are constant time, under a short lock. A dying
lease never waits for that lock (the garbage collector can run it inside a locked section of
the same thread): it queues its buffer, and whoever holds the lock files the queue before
letting go.

Cost of one ``empty()`` and the release of its array, with N other pooled arrays in use
(microseconds, the range of the best-of-60 figures over four runs on a loaded 2-core machine,
the versions taking turns within each run; ``python benchmarks/pool_cost.py --pool A --pool
B``). The earlier pool scanned every buffer it held and read its reference count, so its cost
grew with N; this one does not. Releasing through a ``weakref.finalize`` callback instead of
``__del__`` cost 0.7-8 us more, so the lease uses ``__del__``.

    N arrays in use                    10          30
    earlier pool (reference counts)    10.6-18.6   20.0-30.9
    this pool (leases, __del__)        12.9-18.2    9.7-18.6
    this pool with weakref.finalize    13.7-22.8   12.1-23.6

Bounds: arrays under ``min_bytes`` come from ``np.empty`` (malloc keeps them, no faults to save);
one larger than a quarter of ``max_idle_bytes`` is not pooled either; idle buffers are let go,
oldest released first, as soon as together they exceed ``max_idle_bytes`` or number more than
``max_buffers``. ``max_idle_bytes = 0`` turns the pool off.
"""
import collections
import math
import operator
import threading

import numpy as np

__all__ = ["BufferPool", "POOL"]

_ALIGN = 64                 # bytes: a cache line, and an AVX-512 register
_POOLED_KINDS = "biufc"     # numbers; other dtypes (objects, records, strings) use np.empty


def _size_class(nbytes):
    """The smallest size of the form m * 2**k, m in {5, 6, 7, 8}, that holds nbytes >= 1."""
    step = 1 << max(0, (nbytes - 1).bit_length() - 3)
    return -(-nbytes // step) * step


class _Lease:
    """The base of one array the pool handed out; gives the buffer back when it dies.

    NumPy reads ``__array_interface__`` once to make the array (``data`` is the aligned
    address inside ``buffer``) and keeps the lease as the array's base.
    """
    __slots__ = ("__array_interface__", "pool", "buffer", "address", "generation")

    def __del__(self):
        self.pool._release(self.buffer, self.address, self.generation)


class BufferPool:
    """Hands out uninitialised arrays (like ``np.empty``), reusing buffers nothing refers to.

    ``empty(shape, dtype)`` is the one call; ``clear()`` lets every buffer go;
    ``max_idle_bytes`` (settable) bounds the memory kept for later calls and ``max_buffers``
    the number of idle buffers; arrays under ``min_bytes`` are not pooled; ``held_bytes`` and
    ``idle_bytes`` tell how much the pool keeps now. Thread-safe.
    """

    def __init__(self, max_idle_bytes=256 << 20, min_bytes=1 << 20, max_buffers=32):
        # A dying lease never waits for the lock: the garbage collector may run its __del__
        # inside a locked section of the same thread. It queues its buffer in _returned, and
        # whoever holds the lock files the queue before letting go (_file_returned).
        self._lock = threading.Lock()
        self._returned = collections.deque()
        # size class -> {id: (buffer, address)}, oldest release first
        self._free = collections.defaultdict(collections.OrderedDict)
        self._idle_order = collections.OrderedDict()  # id -> size class, oldest release first
        self._idle_bytes = 0
        self._in_use_bytes = 0
        self._generation = 0        # clear() starts a new one; older leases are not taken back
        self.min_bytes = int(min_bytes)
        self.max_buffers = int(max_buffers)
        self.max_idle_bytes = max_idle_bytes

    def __repr__(self):
        return (f"BufferPool(max_idle_bytes={self.max_idle_bytes}, "
                f"idle_buffers={len(self._idle_order)}, held_bytes={self.held_bytes}, "
                f"idle_bytes={self.idle_bytes})")

    @property
    def max_idle_bytes(self):
        """Bytes of idle buffers kept for later calls at most; 0 turns the pool off."""
        return self._max_idle_bytes

    @max_idle_bytes.setter
    def max_idle_bytes(self, value):
        value = int(value)
        if value < 0:
            raise ValueError(f"`max_idle_bytes` must be >= 0, got max_idle_bytes={value}")
        self._max_idle_bytes = value
        self._locked(self._trim)

    @property
    def held_bytes(self):
        """Bytes of every buffer the pool holds, in use or not."""
        return self._locked(lambda: self._in_use_bytes + self._idle_bytes)

    @property
    def idle_bytes(self):
        """Bytes of the held buffers that nothing refers to."""
        return self._locked(lambda: self._idle_bytes)

    def clear(self):
        """Lets every buffer go (those in use live on as long as their arrays do)."""
        self._locked(self._forget_all)

    def empty(self, shape, dtype):
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``, 64-byte aligned when
        it comes from the pool."""
        dtype = np.dtype(dtype)
        shape = (tuple(map(operator.index, shape)) if isinstance(shape, (tuple, list))
                 else tuple(map(operator.index, np.atleast_1d(shape))))
        if shape and min(shape) < 0:
            raise ValueError(f"`shape` must not have negative sizes, got shape={shape}")
        nbytes = dtype.itemsize * math.prod(shape)
        if (nbytes == 0 or nbytes < self.min_bytes or 4 * nbytes > self._max_idle_bytes
                or dtype.kind not in _POOLED_KINDS):
            return np.empty(shape, dtype)
        with self._lock:
            taken = self._take(nbytes)
        if taken is None:
            buffer = np.empty(_size_class(nbytes) + _ALIGN, np.uint8)
            address = buffer.ctypes.data
            address += -address % _ALIGN
            generation = self._locked(self._count_new, buffer.nbytes)
        else:
            buffer, address, generation = taken
            self._file_returned()
        lease = _Lease()
        lease.__array_interface__ = {"shape": shape, "typestr": dtype.str,
                                     "data": (address, False), "version": 3}
        lease.pool, lease.buffer, lease.address, lease.generation = (
            self, buffer, address, generation)
        return np.asarray(lease)

    # -- bookkeeping: the methods below run under the lock, through _locked ------------------

    def _locked(self, operation, *args):
        """operation(*args) under the lock, between filings of what was returned."""
        self._file_returned()
        with self._lock:
            result = operation(*args)
        self._file_returned()
        return result

    def _release(self, buffer, address, generation):
        """Called by a dying lease: its buffer is free again."""
        self._returned.append((buffer, address, generation))
        self._file_returned()

    def _file_returned(self):
        """Files the returned buffers, unless another section holds the lock (it will file
        them before it ends: it checks the queue again after letting go)."""
        while self._returned and self._lock.acquire(blocking=False):
            try:
                while self._returned:
                    self._put(*self._returned.popleft())
                self._trim()
            finally:
                self._lock.release()

    def _take(self, nbytes):
        """Removes an idle buffer of the smallest size class that holds nbytes and is at most
        twice nbytes; returns (buffer, address, generation), or None."""
        size_class = _size_class(nbytes)
        while size_class <= 2 * nbytes:
            free = self._free.get(size_class)
            if free:
                key, (buffer, address) = free.popitem(last=False)     # released longest ago
                del self._idle_order[key]
                self._idle_bytes -= buffer.nbytes
                self._in_use_bytes += buffer.nbytes
                return buffer, address, self._generation
            size_class = _size_class(size_class + 1)
        return None

    def _count_new(self, nbytes):
        """Counts a newly made buffer as in use; returns the generation it belongs to."""
        self._in_use_bytes += nbytes
        return self._generation

    def _put(self, buffer, address, generation):
        """Files a released buffer under its size class (if it was made since clear())."""
        if generation != self._generation:
            return
        self._in_use_bytes -= buffer.nbytes
        size_class = buffer.nbytes - _ALIGN
        self._free[size_class][id(buffer)] = (buffer, address)
        self._idle_order[id(buffer)] = size_class
        self._idle_bytes += buffer.nbytes

    def _trim(self):
        """Lets idle buffers go, oldest released first, while they exceed max_idle_bytes or
        number more than max_buffers."""
        while self._idle_order and (self._idle_bytes > self._max_idle_bytes
                                    or len(self._idle_order) > self.max_buffers):
            key, size_class = self._idle_order.popitem(last=False)
            buffer, _ = self._free[size_class].pop(key)
            self._idle_bytes -= buffer.nbytes

    def _forget_all(self):
        """Drops every idle buffer and the count of those in use, which will not come back."""
        self._free.clear()
        self._idle_order.clear()
        self._idle_bytes = 0
        self._in_use_bytes = 0
        self._generation += 1


# The pool the kernels' arrays come from (cgru.functional).
POOL = BufferPool()

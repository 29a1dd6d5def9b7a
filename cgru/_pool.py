"""A pool of large work arrays, recycled once nothing refers to them any more.

Why: a training step of the (T, B, I, H) = (100, 64, 128, 256) benchmark case allocates about
70 MB (gates, states, gradients). glibc gives memory that large back to the system when it is
freed, so every step took it anew and paid a page fault for each 4 KiB page it touched: the
step took 1.3-1.5x as long as the same kernels on reused arrays (measured, 2 threads). Keeping
the arrays of the previous call and handing them out again removes that cost, as the buffer
caches of PyTorch (on GPUs) and XLA do.

How an array is known to be free: the pool holds each large buffer it made; every array it
hands out is a view of one, and a view (or any view of a view, or a memoryview of it) keeps a
reference to that buffer. When the only reference left is the pool's own, nothing can reach the
memory any more and the buffer is handed out again. Its contents are then old numbers, exactly
as with ``np.empty``. Arrays are never reused while a result, a cache or a user's view still
refers to them.

Bounds: arrays under ``min_bytes`` come from ``np.empty`` (malloc keeps them, no faults to save);
one larger than a quarter of ``max_idle_bytes`` is not pooled either; buffers that nothing uses
are let go, oldest first, once together they exceed ``max_idle_bytes``. ``max_idle_bytes = 0``
turns the pool off. Free-threaded Python builds have no exact reference count: there the pool
is off.
"""
import sys
import threading

import numpy as np

__all__ = ["BufferPool", "POOL"]

_ALIGN = 64                 # bytes: a cache line, and an AVX-512 register


def _refcounts_exact():
    """Does sys.getrefcount tell exactly who holds an object (CPython with the GIL)?"""
    gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)
    return sys.implementation.name == "cpython" and gil_enabled()


class BufferPool:
    """Hands out uninitialised arrays (like ``np.empty``), reusing buffers nothing refers to.

    ``empty(shape, dtype)`` is the one call; ``clear()`` lets every buffer go;
    ``max_idle_bytes`` (settable) bounds the memory kept for later calls; ``held_bytes`` and
    ``idle_bytes`` tell how much the pool keeps now. Thread-safe.
    """

    def __init__(self, max_idle_bytes=256 << 20, min_bytes=1 << 20, max_buffers=32):
        self.max_idle_bytes = int(max_idle_bytes)
        self.min_bytes = int(min_bytes)
        self.max_buffers = int(max_buffers)
        self._buffers = []          # uint8 arrays, least recently handed out first
        self._lock = threading.Lock()
        self._enabled = _refcounts_exact()

    def __repr__(self):
        return (f"BufferPool(max_idle_bytes={self.max_idle_bytes}, buffers={len(self._buffers)}, "
                f"held_bytes={self.held_bytes}, idle_bytes={self.idle_bytes})")

    def _is_idle(self, i):
        # References to self._buffers[i]: the list's and getrefcount's own argument. Anything
        # more is an array (or memoryview) somebody may still read or write.
        return sys.getrefcount(self._buffers[i]) <= 2

    @property
    def held_bytes(self):
        """Bytes of every buffer the pool holds, in use or not."""
        with self._lock:
            return sum(buffer.nbytes for buffer in self._buffers)

    @property
    def idle_bytes(self):
        """Bytes of the held buffers that nothing refers to."""
        with self._lock:
            return sum(self._buffers[i].nbytes for i in range(len(self._buffers))
                       if self._is_idle(i))

    def clear(self):
        """Lets every buffer go (those in use live on as long as their arrays do)."""
        with self._lock:
            self._buffers.clear()

    def empty(self, shape, dtype):
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``, 64-byte aligned when
        it comes from the pool."""
        dtype = np.dtype(dtype)
        nbytes = dtype.itemsize
        for size in shape:
            nbytes *= size
        if (not self._enabled or nbytes < self.min_bytes
                or 4 * nbytes > self.max_idle_bytes):
            return np.empty(shape, dtype)
        with self._lock:
            buffer = self._take(nbytes + _ALIGN)
            if buffer is None:
                buffer = np.empty(nbytes + _ALIGN, np.uint8)
            self._buffers.append(buffer)
            self._trim()
        offset = -buffer.ctypes.data % _ALIGN
        return buffer[offset:offset + nbytes].view(dtype).reshape(shape)

    def _take(self, nbytes):
        """Removes and returns the smallest idle buffer of at least nbytes (and at most twice
        that, so that a small request does not hold a big buffer), or None."""
        best = None
        for i in range(len(self._buffers)):
            size = self._buffers[i].nbytes
            if (nbytes <= size <= 2 * nbytes and self._is_idle(i)
                    and (best is None or size < self._buffers[best].nbytes)):
                best = i
        return None if best is None else self._buffers.pop(best)

    def _trim(self):
        """Lets idle buffers go, oldest first, while they exceed max_idle_bytes; stops
        tracking the oldest buffers beyond max_buffers (their arrays live on)."""
        idle = sum(self._buffers[i].nbytes for i in range(len(self._buffers))
                   if self._is_idle(i))
        i = 0
        while idle > self.max_idle_bytes and i < len(self._buffers):
            if self._is_idle(i):
                idle -= self._buffers.pop(i).nbytes
            else:
                i += 1
        del self._buffers[:max(0, len(self._buffers) - self.max_buffers)]


# The pool the kernels' arrays come from (cgru.functional).
POOL = BufferPool()

"""How many threads the BLAS that the kernels call is set to use.

The kernels follow SciPy's OpenBLAS (the one ``scipy.linalg.cython_blas`` calls): its thread
count is what ``threadpoolctl.threadpool_limits`` or ``OPENBLAS_NUM_THREADS`` set. It is read
through OpenBLAS's own ``openblas_get_num_threads``, found in the library SciPy ships. With a
SciPy built against another BLAS that count cannot be read: then ``OPENBLAS_NUM_THREADS`` or
``OMP_NUM_THREADS`` when set, else the CPUs this process may run on, as the BLAS libraries
themselves default to.
"""
import ctypes
import glob
import os

import threading

__all__ = ["blas_threads", "blas_on_one_thread"]


def _find_thread_functions():
    """(get, set) of the thread count of SciPy's OpenBLAS, or (None, None)."""
    try:
        import scipy
    except ImportError:
        return None, None
    libs = os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("openblas_", "scipy_openblas_"):
            get = getattr(lib, prefix + "get_num_threads", None)
            set_ = getattr(lib, prefix + "set_num_threads", None)
            if get is not None and set_ is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                return get, set_
    return None, None


_get_num_threads, _set_num_threads = _find_thread_functions()


def _threads_from_environment():
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def blas_threads():
    """Threads SciPy's OpenBLAS uses now (see the module's notes when it cannot be read)."""
    if _get_num_threads is not None:
        return max(1, _get_num_threads())
    return _threads_from_environment()


class _OneThread:
    """``with blas_on_one_thread:`` runs the block with SciPy's OpenBLAS on one thread, then
    gives it back its count. For calls too small to share among threads: at the seed shape
    (T, B, I, H) = (10, 32, 20, 32) with 2 threads, a forward and backward took 1.3-1.5x
    longer with OpenBLAS's second thread than without it on a quiet machine, and 5-12x longer
    on a loaded one (benchmarks/README.md); setting the count costs about 1 us each way.
    Nested and concurrent blocks (inference from several Python threads) share one count of
    blocks in flight: the first sets one thread, the last restores what it found."""

    def __init__(self):
        self._lock = threading.Lock()
        self._inside = 0
        self._saved = None

    def __enter__(self):
        if _set_num_threads is None:
            return self
        with self._lock:
            if self._inside == 0:
                self._saved = _get_num_threads()
                if self._saved > 1:
                    _set_num_threads(1)
            self._inside += 1
        return self

    def __exit__(self, *exc):
        if _set_num_threads is None:
            return False
        with self._lock:
            self._inside -= 1
            if self._inside == 0 and self._saved > 1:
                _set_num_threads(self._saved)
        return False


blas_on_one_thread = _OneThread()

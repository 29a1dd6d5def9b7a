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

__all__ = ["blas_threads"]


def _find_get_num_threads():
    try:
        import scipy
    except ImportError:
        return None
    libs = os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("openblas_get_num_threads", "scipy_openblas_get_num_threads"):
            function = getattr(lib, name, None)
            if function is not None:
                function.restype = ctypes.c_int
                function.argtypes = []
                return function
    return None


_get_num_threads = _find_get_num_threads()


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

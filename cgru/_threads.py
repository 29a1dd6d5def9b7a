"""How many threads the BLAS that the kernels call is set to use.

The kernels follow SciPy's OpenBLAS (the one ``scipy.linalg.cython_blas`` calls): its thread
count is what ``threadpoolctl.threadpool_limits`` or ``OPENBLAS_NUM_THREADS`` set. It is read
through OpenBLAS's own ``openblas_get_num_threads``, found in the library SciPy ships; with a
SciPy built against another BLAS the count is unknown and taken as 1.
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


def blas_threads():
    """Threads SciPy's OpenBLAS uses now (1 when that cannot be known)."""
    return max(1, _get_num_threads()) if _get_num_threads is not None else 1

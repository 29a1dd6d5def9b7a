"""Test twins: `def` wrappers of the native `cdef` routines, so that pytest can reach them
(as scikit-learn does). Nothing in the package calls these."""
from libc.math cimport exp
from libc.stdlib cimport free
from cython cimport floating
from cython.parallel cimport prange
cimport openmp

import numpy as np

from cgru._native._blas cimport gemm
from cgru._native._cell cimport (
    CGRU_ACT_COUNT, activate_f32, activate_f64, cgru_expf, cgru_sigmoid, cgru_sigmoidf,
    cgru_tanh, cgru_tanhf, derivative_f32, derivative_f64)
from cgru._native._gemm cimport cgru_cpu_gemm_level, packed_copy, product, product_ta
from cgru._native._parts cimport part_start

# The small GEMM's best form on this CPU: 2 AVX-512, 1 AVX2 with FMA, 0 none.
SMALL_GEMM_LEVEL = cgru_cpu_gemm_level()
SMALL_GEMM_AVAILABLE = SMALL_GEMM_LEVEL > 0


def gemm_for_tests(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
                   bint trans_a, bint trans_b, double alpha, double beta):
    """c := alpha * op(a) @ op(b) + beta * c through the BLAS shim."""
    cdef int m = c.shape[0], n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    gemm(trans_a, trans_b, m, n, k, <floating> alpha, &a[0, 0], a.shape[1], &b[0, 0],
         b.shape[1], <floating> beta, &c[0, 0], n)


def cell_math_for_tests(const floating[::1] v):
    """(exp(v), sigmoid(v), tanh(v)) as the cell computes them."""
    cdef Py_ssize_t i, n = v.shape[0]
    dtype = np.float32 if floating is float else np.float64
    exp_v, sigmoid_v, tanh_v = np.empty(n, dtype), np.empty(n, dtype), np.empty(n, dtype)
    cdef floating[::1] exp_out = exp_v, sigmoid_out = sigmoid_v, tanh_out = tanh_v
    for i in range(n):
        if floating is float:
            exp_out[i] = cgru_expf(v[i])
            sigmoid_out[i] = cgru_sigmoidf(v[i])
            tanh_out[i] = cgru_tanhf(v[i])
        else:
            exp_out[i] = exp(v[i])
            sigmoid_out[i] = cgru_sigmoid(v[i])
            tanh_out[i] = cgru_tanh(v[i])
    return exp_v, sigmoid_v, tanh_v


def activation_for_tests(int code, const floating[::1] v):
    """(f(v), f'(v)) for the cell's activation `code`, as the cell computes them: f'(v) from
    the output, or from v for the activations whose derivative needs their input."""
    if not 0 <= code < CGRU_ACT_COUNT:
        raise ValueError(f"no activation code {code}")
    cdef Py_ssize_t n = v.shape[0]
    dtype = np.float32 if floating is float else np.float64
    out, kept, deriv = np.array(v, dtype), np.empty(n, dtype), np.empty(n, dtype)
    cdef floating[::1] out_v = out, kept_v = kept, deriv_v = deriv
    if n == 0:
        return out, deriv
    if floating is float:
        activate_f32(code, n, &out_v[0], &kept_v[0])
        derivative_f32(code, n, &out_v[0], &kept_v[0], &deriv_v[0])
    else:
        activate_f64(code, n, &out_v[0], &kept_v[0])
        derivative_f64(code, n, &out_v[0], &kept_v[0], &deriv_v[0])
    return out, deriv


def small_gemm_for_tests(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
                         double beta, bint trans_a=False, bint trans_b=False, int level=-1):
    """c := op(a) @ op(b) + beta * c by the small GEMM at `level` (-1: the CPU's): op(a) = a,
    or a^T (a stored (K, M)) when trans_a, the weight gradients' form; op(b) = b, or b^T
    (b stored (N, K)) when trans_b, a weight read in the other layout."""
    if level < 0:
        level = SMALL_GEMM_LEVEL
    if not 1 <= level <= SMALL_GEMM_LEVEL:
        raise ValueError(f"`level` must be a small GEMM form this CPU runs (1..{SMALL_GEMM_LEVEL}),"
                         f" got {level}")
    cdef Py_ssize_t M = c.shape[0], N = c.shape[1], lda = a.shape[1]
    cdef Py_ssize_t K = b.shape[1] if trans_b else b.shape[0]
    cdef floating* packed = packed_copy(level, K, N, &b[0, 0], b.shape[1], trans_b)
    if packed == NULL:
        raise MemoryError("no memory for the packed operand")
    if trans_a:
        product_ta(level, M, N, K, &a[0, 0], lda, packed, <floating> beta, &c[0, 0], N)
    elif M == 1:        # `product` sends one row to BLAS: call the small GEMM's tile directly
        product_ta(level, M, N, K, &a[0, 0], 1, packed, <floating> beta, &c[0, 0], N)
    else:
        product(level, M, N, K, &a[0, 0], lda, &b[0, 0], b.shape[1], trans_b, packed,
                <floating> beta, &c[0, 0], N)
    free(packed)


def threads_for_tests(int parts, Py_ssize_t rows):
    """Runs `parts` parts of `rows` rows as the loops do (an OpenMP prange, one part a
    thread); returns, for each row, the OpenMP thread number that ran it."""
    owner = np.full(rows, -1, dtype=np.intp)
    cdef Py_ssize_t[::1] owner_v = owner
    cdef int part
    cdef Py_ssize_t row
    with nogil:
        for part in prange(parts, num_threads=parts, schedule="static", chunksize=1):
            for row in range(part_start(rows, parts, part), part_start(rows, parts, part + 1)):
                owner_v[row] = openmp.omp_get_thread_num()
    return owner


def part_starts_for_tests(Py_ssize_t rows, int parts):
    """The first row of every part and `rows`: how the batch is cut."""
    return [part_start(rows, parts, i) for i in range(parts + 1)]

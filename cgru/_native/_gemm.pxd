# The per-step products behind one interface: the small GEMM on packed weights
# (_gemm_template.h, AVX-512 or AVX2) when the plan chose a level for it, else BLAS (_blas.pxd).
#
# A product reads its right operand op(W) (K, N) in either layout: W stored (K, N), or W stored
# (N, K) and read transposed (w_trans), with leading dimension ldw. BLAS gets the transpose
# flag; packing reads either layout into the same panels, so the small GEMM never sees it.
# `level` is the plan's: 2 AVX-512, 1 AVX2 with FMA, 0 BLAS only (no packed copies).
from libc.stdlib cimport malloc
from cython cimport floating

from cgru._native._blas cimport gemm

cdef extern from "_gemm.h":
    int cgru_cpu_gemm_level() noexcept nogil
    Py_ssize_t packed_size(int level, Py_ssize_t K, Py_ssize_t N,
                           size_t itemsize) noexcept nogil
    void pack_b_f32(int level, Py_ssize_t K, Py_ssize_t N, const float* B, Py_ssize_t b_row,
                    Py_ssize_t b_col, float* Bp) noexcept nogil
    void pack_b_f64(int level, Py_ssize_t K, Py_ssize_t N, const double* B, Py_ssize_t b_row,
                    Py_ssize_t b_col, double* Bp) noexcept nogil
    void small_gemm_f32(int level, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A,
                        Py_ssize_t lda, const float* Bp, float beta, float* C,
                        Py_ssize_t ldc) noexcept nogil
    void small_gemm_f64(int level, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* A,
                        Py_ssize_t lda, const double* Bp, double beta, double* C,
                        Py_ssize_t ldc) noexcept nogil
    void small_gemm_ta_f32(int level, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A,
                           Py_ssize_t lda, const float* Bp, float beta, float* C,
                           Py_ssize_t ldc) noexcept nogil
    void small_gemm_ta_f64(int level, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                           const double* A, Py_ssize_t lda, const double* Bp, double beta,
                           double* C, Py_ssize_t ldc) noexcept nogil


cdef inline void pack(int level, Py_ssize_t K, Py_ssize_t N, const floating* w, Py_ssize_t ldw,
                      bint w_trans, floating* packed) noexcept nogil:
    """packed := op(w) (K, N) in the small GEMM's panels; w is (K, N), or (N, K) when w_trans."""
    cdef Py_ssize_t w_row = 1 if w_trans else ldw, w_col = ldw if w_trans else 1
    if floating is float:
        pack_b_f32(level, K, N, w, w_row, w_col, packed)
    else:
        pack_b_f64(level, K, N, w, w_row, w_col, packed)


cdef inline floating* packed_copy(int level, Py_ssize_t K, Py_ssize_t N, const floating* w,
                                  Py_ssize_t ldw, bint w_trans) noexcept nogil:
    """A packed copy of op(w) (K, N) for `product`, to free() after use; NULL (`product` then
    calls BLAS) when level is 0 or out of memory."""
    if level <= 0:
        return NULL
    cdef Py_ssize_t size = packed_size(level, K, N, sizeof(floating))
    cdef floating* packed = <floating*> malloc(size * sizeof(floating))
    if packed != NULL:
        pack(level, K, N, w, ldw, w_trans, packed)
    return packed


cdef inline void product(int level, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* a,
                         Py_ssize_t lda, const floating* w, Py_ssize_t ldw, bint w_trans,
                         const floating* w_packed, floating beta, floating* c,
                         Py_ssize_t ldc) noexcept nogil:
    """c (M, N) := a (M, K) @ op(w) (K, N) + beta * c; w_packed is packed_copy(op(w)) or NULL.
    One row goes to BLAS's GEMV, faster there than the small GEMM's register tile."""
    if w_packed == NULL or M == 1:
        gemm(False, w_trans, M, N, K, 1, a, lda, w, ldw, beta, c, ldc)
    elif floating is float:
        small_gemm_f32(level, M, N, K, a, lda, w_packed, beta, c, ldc)
    else:
        small_gemm_f64(level, M, N, K, a, lda, w_packed, beta, c, ldc)


cdef inline void product_ta(int level, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                            const floating* a, Py_ssize_t lda, const floating* b_packed,
                            floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """c (M, N) := a^T @ b + beta * c by the small GEMM (level >= 1): a stored (K, M) with
    leading dimension lda, b (K, N) packed by `pack`."""
    if floating is float:
        small_gemm_ta_f32(level, M, N, K, a, lda, b_packed, beta, c, ldc)
    else:
        small_gemm_ta_f64(level, M, N, K, a, lda, b_packed, beta, c, ldc)

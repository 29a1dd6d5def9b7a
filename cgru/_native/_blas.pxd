# Row-major GEMM over scipy.linalg.cython_blas (SciPy's OpenBLAS; nothing to link at build time).
#
# BLAS is column-major; a row-major (m, n) array with leading dimension ld is the same memory as
# a column-major (n, m) one. So row-major C = op(A) @ op(B) is column-major C^T = op(B)^T op(A)^T:
# call ?gemm with the operands swapped (B before A, n before m), as scikit-learn does.
# Callers guarantee every size and leading dimension fits a 32-bit int (checked in Python).
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """C (m, n) := alpha * op(A) @ op(B) + beta * C, row-major; op(A) is (m, k), op(B) (k, n)."""
    cdef char op_a = b'T' if trans_a else b'N'
    cdef char op_b = b'T' if trans_b else b'N'
    cdef int one = 1
    if m == 1 and not trans_a:
        # a single row: c (1, n) = a (1, k) @ op(B) is the column-major GEMV c = op(B)^T a,
        # cheaper than GEMM at batch 1 (PERF-NOTES: 2.5 against 2.8 us for a GRU step's pair).
        # B row-major (k, n) is column-major (n, k): c = B_cm a; transposed, (k, n): B_cm^T a.
        if floating is float:
            sgemv(&op_b, &n if not trans_b else &k, &k if not trans_b else &n, &alpha,
                  <float*> b, &ldb, <float*> a, &one, &beta, c, &one)
        else:
            dgemv(&op_b, &n if not trans_b else &k, &k if not trans_b else &n, &alpha,
                  <double*> b, &ldb, <double*> a, &one, &beta, c, &one)
        return
    if floating is float:
        sgemm(&op_b, &op_a, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&op_b, &op_a, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda,
              &beta, c, &ldc)

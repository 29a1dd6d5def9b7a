/* The small GEMM of the per-step products, for one float type and one vector width.
 *
 * A template: _gemm.h includes it four times, for real = float and double and for
 * VBYTES = 64 (AVX-512: MR = 8 rows) and 32 (AVX2: MR = 6), with CGRU_NAME adding the
 * suffix (_f32_512, _f64_256, ...), so that every dtype and machine runs one code path.
 *
 *   C (M, N) = A (M, K) @ B (K, N) + beta * C          row-major, A and C with leading
 *                                                        dimensions lda and ldc
 * B comes packed by pack_b: panels of NR = 2 VL columns (VL numbers a vector), each K rows of
 * NR numbers stored one after the other, the last panel padded with zeros. A GRU's right
 * operands are its weights, the same for all T steps, so they are packed once per call and
 * every step reads them as one contiguous stream. The kernel keeps an MR x NR tile of C in
 * 2 MR vector registers (16 of AVX-512's 32, 12 of AVX2's 16) and adds one rank-1 update a
 * k: two loads of B, MR broadcasts of A, 2 MR fused multiply-adds. Measured on the
 * benchmark's per-step shapes (Zen 4, 1 thread, float32): 110 GFLOP/s for the AVX-512 form,
 * the core's peak, 94-111 for the AVX2 form, where OpenBLAS's sgemm gave 57-87 for
 * M = 32-64 and K, N = 128-1536 (its call costs the same at M = 16, K <= 64).
 * Each C element is a sum over k in order from 0, as in a plain loop.
 */

typedef real CGRU_NAME(vec) __attribute__((vector_size(VBYTES)));
#define VL ((Py_ssize_t) (VBYTES / sizeof(real)))
#define NR (2 * VL)

/* Bp := B (K, N) in panels of NR columns, zero-padded; element (k, j) of B is
 * B[k * b_row + j * b_col], so that B is read in either layout: (K, N) row-major (b_col = 1)
 * or the transpose of an (N, K) row-major array (b_row = 1). */
static void CGRU_NAME(pack_b)(Py_ssize_t K, Py_ssize_t N, const real *restrict B,
                              Py_ssize_t b_row, Py_ssize_t b_col, real *restrict Bp)
{
    for (Py_ssize_t j0 = 0; j0 < N; j0 += NR) {
        Py_ssize_t cols = N - j0 < NR ? N - j0 : NR;
        for (Py_ssize_t k = 0; k < K; k++) {
            real *restrict dst = Bp + j0 * K + k * NR;
            const real *restrict src = B + k * b_row + j0 * b_col;
            for (Py_ssize_t j = 0; j < cols; j++)
                dst[j] = src[j * b_col];
            for (Py_ssize_t j = cols; j < NR; j++)
                dst[j] = 0;
        }
    }
}

/* C (M, N) = op(A) @ B + beta * C with B (K, N) packed by pack_b; M, N, K >= 1. op(A) is
 * A (M, K; row stride lda) or, when trans_a, A^T for A stored (K, M; row stride lda): element
 * (i, k) of op(A) is a[i * a_row + k * a_col]. A row block shorter than MR (the last, when MR
 * does not divide M) reads its last row again in the missing places and does not store them;
 * a panel narrower than NR stores only its columns. Inlined into two callers, one per layout
 * of A, so that the strides are constants there. */
static inline __attribute__((always_inline)) void CGRU_NAME(gemm_tiles)(
    Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const real *restrict A, Py_ssize_t a_row,
    Py_ssize_t a_col, const real *restrict Bp, real beta, real *restrict C, Py_ssize_t ldc)
{
    for (Py_ssize_t j0 = 0; j0 < N; j0 += NR) {
        const real *restrict panel = Bp + j0 * K;
        const Py_ssize_t cols = N - j0 < NR ? N - j0 : NR;
        for (Py_ssize_t i0 = 0; i0 < M; i0 += MR) {
            const Py_ssize_t rows = M - i0 < MR ? M - i0 : MR;
            const real *a[MR];
            for (Py_ssize_t r = 0; r < MR; r++)
                a[r] = A + (i0 + (r < rows ? r : rows - 1)) * a_row;
            CGRU_NAME(vec) acc[MR][2];
            for (Py_ssize_t r = 0; r < MR; r++)
                acc[r][0] = acc[r][1] = (CGRU_NAME(vec)) {0};
            for (Py_ssize_t k = 0; k < K; k++) {
                CGRU_NAME(vec) b0, b1;
                memcpy(&b0, panel + k * NR, sizeof b0);
                memcpy(&b1, panel + k * NR + VL, sizeof b1);
                for (Py_ssize_t r = 0; r < MR; r++) {
                    const real a_rk = a[r][k * a_col];
                    acc[r][0] += a_rk * b0;
                    acc[r][1] += a_rk * b1;
                }
            }
            for (Py_ssize_t r = 0; r < rows; r++) {
                real *restrict c = C + (i0 + r) * ldc + j0;
                if (cols == NR) {
                    CGRU_NAME(vec) c0 = acc[r][0], c1 = acc[r][1], old;
                    if (beta != 0) {
                        memcpy(&old, c, sizeof old);
                        c0 += beta * old;
                        memcpy(&old, c + VL, sizeof old);
                        c1 += beta * old;
                    }
                    memcpy(c, &c0, sizeof c0);
                    memcpy(c + VL, &c1, sizeof c1);
                } else {
                    real tile[NR];
                    memcpy(tile, &acc[r][0], sizeof acc[r][0]);
                    memcpy(tile + VL, &acc[r][1], sizeof acc[r][1]);
                    for (Py_ssize_t j = 0; j < cols; j++)
                        c[j] = beta != 0 ? tile[j] + beta * c[j] : tile[j];
                }
            }
        }
    }
}

/* C (M, N) = A (M, K; lda) @ B + beta * C, B packed by pack_b. */
CGRU_GEMM_TARGET static void CGRU_NAME(small_gemm)(
    Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const real *restrict A, Py_ssize_t lda,
    const real *restrict Bp, real beta, real *restrict C, Py_ssize_t ldc)
{
    CGRU_NAME(gemm_tiles)(M, N, K, A, lda, 1, Bp, beta, C, ldc);
}

/* C (M, N) = A^T @ B + beta * C for A stored (K, M; lda), B packed by pack_b. */
CGRU_GEMM_TARGET static void CGRU_NAME(small_gemm_ta)(
    Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const real *restrict A, Py_ssize_t lda,
    const real *restrict Bp, real beta, real *restrict C, Py_ssize_t ldc)
{
    CGRU_NAME(gemm_tiles)(M, N, K, A, 1, lda, Bp, beta, C, ldc);
}

#undef VL
#undef NR

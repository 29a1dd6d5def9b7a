/* The small GEMM of the per-step products for float32 (_f32) and float64 (_f64), from one
 * template (_gemm_template.h) compiled twice per dtype: for AVX-512 (64-byte vectors,
 * 8-row tiles; level 2) and for AVX2 with FMA (32-byte vectors, 6-row tiles; level 1). Every
 * entry point takes the level to run as its first argument: the plan (cgru.functional) picks
 * it, at most cgru_cpu_gemm_level(); level 0 means BLAS does every product and these are not
 * called. The packed layout depends on the level: pack and multiply under one level. */
#ifndef CGRU_GEMM_H
#define CGRU_GEMM_H
#include <Python.h>
#include <string.h>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define CGRU_GEMM_X86 1
#else
#define CGRU_GEMM_X86 0
#endif

/* 2: AVX-512, 1: AVX2 + FMA, 0: neither. */
static inline int cgru_cpu_gemm_level(void)
{
#if CGRU_GEMM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 1;
#endif
    return 0;
}

#if CGRU_GEMM_X86
#define GEMM_TARGET_512 __attribute__((target("avx512f,fma")))
#define GEMM_TARGET_256 __attribute__((target("avx2,fma")))
#else
#define GEMM_TARGET_512
#define GEMM_TARGET_256
#endif

#define VBYTES 64
#define MR 8
#define CGRU_GEMM_TARGET GEMM_TARGET_512
#define real float
#define CGRU_NAME(name) name##_f32_512
#include "_gemm_template.h"
#undef real
#undef CGRU_NAME
#define real double
#define CGRU_NAME(name) name##_f64_512
#include "_gemm_template.h"
#undef real
#undef CGRU_NAME
#undef VBYTES
#undef MR
#undef CGRU_GEMM_TARGET

#define VBYTES 32
#define MR 6
#define CGRU_GEMM_TARGET GEMM_TARGET_256
#define real float
#define CGRU_NAME(name) name##_f32_256
#include "_gemm_template.h"
#undef real
#undef CGRU_NAME
#define real double
#define CGRU_NAME(name) name##_f64_256
#include "_gemm_template.h"
#undef real
#undef CGRU_NAME
#undef VBYTES
#undef MR
#undef CGRU_GEMM_TARGET

/* Numbers in the packed copy of a (K, N) operand of numbers of `itemsize` bytes: panels of
 * NR = two vectors of columns, zero-padded (as _gemm_template.h's packed_size). */
static inline Py_ssize_t packed_size(int level, Py_ssize_t K, Py_ssize_t N, size_t itemsize)
{
    const Py_ssize_t nr = 2 * (level == 2 ? 64 : 32) / (Py_ssize_t) itemsize;
    return (N + nr - 1) / nr * nr * K;
}

/* The entry points, one per dtype and function; `level` (2 or 1, at most the CPU's, as the
 * caller's plan chose) picks the form. */
#define CGRU_GEMM_DISPATCH(type, sfx)                                                         \
static void pack_b_##sfx(int level, Py_ssize_t K, Py_ssize_t N, const type *B,                \
                         Py_ssize_t b_row, Py_ssize_t b_col, type *Bp)                        \
{                                                                                             \
    if (level == 2)                                                                           \
        pack_b_##sfx##_512(K, N, B, b_row, b_col, Bp);                                        \
    else                                                                                      \
        pack_b_##sfx##_256(K, N, B, b_row, b_col, Bp);                                        \
}                                                                                             \
static void small_gemm_##sfx(int level, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,             \
                             const type *A, Py_ssize_t lda, const type *Bp, type beta,        \
                             type *C, Py_ssize_t ldc)                                         \
{                                                                                             \
    if (level == 2)                                                                           \
        small_gemm_##sfx##_512(M, N, K, A, lda, Bp, beta, C, ldc);                            \
    else                                                                                      \
        small_gemm_##sfx##_256(M, N, K, A, lda, Bp, beta, C, ldc);                            \
}                                                                                             \
static void small_gemm_ta_##sfx(int level, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,          \
                                const type *A, Py_ssize_t lda, const type *Bp, type beta,     \
                                type *C, Py_ssize_t ldc)                                      \
{                                                                                             \
    if (level == 2)                                                                           \
        small_gemm_ta_##sfx##_512(M, N, K, A, lda, Bp, beta, C, ldc);                         \
    else                                                                                      \
        small_gemm_ta_##sfx##_256(M, N, K, A, lda, Bp, beta, C, ldc);                         \
}

CGRU_GEMM_DISPATCH(float, f32)
CGRU_GEMM_DISPATCH(double, f64)
#undef CGRU_GEMM_DISPATCH

#endif

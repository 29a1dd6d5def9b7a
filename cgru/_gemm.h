/* The small GEMM of the per-step products for float32 (_f32) and float64 (_f64), from one
 * template (cgru/_gemm_template.h) compiled twice per dtype: for AVX-512 (64-byte vectors,
 * 8-row tiles) and for AVX2 with FMA (32-byte vectors, 6-row tiles). The entry points below
 * pick the form the CPU runs, once; a CPU with neither (or another architecture) has level 0,
 * and the kernels then call BLAS for every product, as cgru_small_gemm_available() tells.
 * The packed layout depends on the form: pack and multiply under one level. */
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
static int cgru_cpu_gemm_level(void)
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

/* The level in use: the CPU's, or lower when set so (tests). -1: not read yet. */
static int cgru_gemm_level_now = -1;

static int cgru_small_gemm_level(void)
{
    if (cgru_gemm_level_now < 0)
        cgru_gemm_level_now = cgru_cpu_gemm_level();
    return cgru_gemm_level_now;
}

static int cgru_small_gemm_available(void) { return cgru_small_gemm_level() > 0; }

/* Sets the level (at most the CPU's), returns the one before. Only between kernel calls. */
static int cgru_set_small_gemm_level(int level)
{
    int before = cgru_small_gemm_level(), cpu = cgru_cpu_gemm_level();
    cgru_gemm_level_now = level < 0 ? 0 : (level > cpu ? cpu : level);
    return before;
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

/* The entry points, one per dtype and function, for the level in use. */
#define CGRU_GEMM_DISPATCH(type, sfx)                                                         \
static inline Py_ssize_t packed_size_##sfx(Py_ssize_t K, Py_ssize_t N)                        \
{                                                                                             \
    return cgru_small_gemm_level() == 2 ? packed_size_##sfx##_512(K, N)                       \
                                        : packed_size_##sfx##_256(K, N);                      \
}                                                                                             \
static void pack_b_##sfx(Py_ssize_t K, Py_ssize_t N, const type *B, Py_ssize_t ldb, type *Bp) \
{                                                                                             \
    if (cgru_small_gemm_level() == 2)                                                         \
        pack_b_##sfx##_512(K, N, B, ldb, Bp);                                                 \
    else                                                                                      \
        pack_b_##sfx##_256(K, N, B, ldb, Bp);                                                 \
}                                                                                             \
static void small_gemm_##sfx(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const type *A,         \
                             Py_ssize_t lda, const type *Bp, type beta, type *C,              \
                             Py_ssize_t ldc)                                                  \
{                                                                                             \
    if (cgru_small_gemm_level() == 2)                                                         \
        small_gemm_##sfx##_512(M, N, K, A, lda, Bp, beta, C, ldc);                            \
    else                                                                                      \
        small_gemm_##sfx##_256(M, N, K, A, lda, Bp, beta, C, ldc);                            \
}                                                                                             \
static void small_gemm_ta_##sfx(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const type *A,      \
                                Py_ssize_t lda, const type *Bp, type beta, type *C,           \
                                Py_ssize_t ldc)                                               \
{                                                                                             \
    if (cgru_small_gemm_level() == 2)                                                         \
        small_gemm_ta_##sfx##_512(M, N, K, A, lda, Bp, beta, C, ldc);                         \
    else                                                                                      \
        small_gemm_ta_##sfx##_256(M, N, K, A, lda, Bp, beta, C, ldc);                         \
}

CGRU_GEMM_DISPATCH(float, f32)
CGRU_GEMM_DISPATCH(double, f64)
#undef CGRU_GEMM_DISPATCH

#endif

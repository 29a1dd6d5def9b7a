/* The small GEMM of the per-step products for float32 (suffix _f32) and float64 (_f64), from
 * one template (cgru/_gemm_template.h), and the check that the CPU can run it.
 *
 * It is compiled for AVX-512 only (its register tile is sized for 32 vector registers) and
 * used only where cgru_small_gemm_available() says the CPU has AVX-512; everywhere else the
 * kernels call BLAS for these products, as before. */
#ifndef CGRU_GEMM_H
#define CGRU_GEMM_H
#include <Python.h>
#include <string.h>

#define MR 8            /* rows of C per register tile */

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define CGRU_GEMM_TARGET __attribute__((target("avx512f,fma")))
static int cgru_small_gemm_available(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
}
#else
#define CGRU_GEMM_TARGET
static int cgru_small_gemm_available(void) { return 0; }
#endif

#define real float
#define CGRU_NAME(name) name##_f32
#include "_gemm_template.h"
#undef real
#undef CGRU_NAME

#define real double
#define CGRU_NAME(name) name##_f64
#include "_gemm_template.h"
#undef real
#undef CGRU_NAME

#undef MR
#endif

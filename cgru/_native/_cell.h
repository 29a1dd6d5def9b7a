/* The cell kernels for float32 (suffix _f32) and float64 (_f64), from one template. */
#ifndef CGRU_CELL_H
#define CGRU_CELL_H
#include <Python.h>
#include "_cell_math.h"

/* Function multiversioning: each kernel is compiled for AVX-512, AVX2+FMA and baseline x86-64,
 * and the loader picks the best the CPU has, so the default build runs on any x86-64 machine.
 * Elsewhere (other compilers or CPUs) the kernels are compiled once, for the build's flags. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(CGRU_NO_CLONES)
#define CGRU_TARGETS __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CGRU_TARGETS
#endif

/* The activation loops are inlined into each clone, so that they are compiled for its
 * instruction set: left to gcc they stayed one baseline (SSE2) function, and gelu/silu
 * inference took 2.2x the default pair's at the benchmark's medium shape (one thread);
 * inlined, 0.97x (benchmarks/README.md, "GRU activations"). */
#if defined(__GNUC__)
#define CGRU_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define CGRU_ALWAYS_INLINE static inline
#endif

#define real float
#define CGRU_NAME(name) name##_f32
#define CGRU_SIGMOID cgru_sigmoidf
#define CGRU_TANH cgru_tanhf
#define CGRU_EXP cgru_expf
#define CGRU_EXPM1(v) (cgru_expf(v) - 1.0f)
#define CGRU_ERFC cgru_erfcf
#define CGRU_FABS fabsf
#include "_cell_template.h"
#undef real
#undef CGRU_NAME
#undef CGRU_SIGMOID
#undef CGRU_TANH
#undef CGRU_EXP
#undef CGRU_EXPM1
#undef CGRU_ERFC
#undef CGRU_FABS

#define real double
#define CGRU_NAME(name) name##_f64
#define CGRU_SIGMOID cgru_sigmoid
#define CGRU_TANH cgru_tanh
#define CGRU_EXP exp
#define CGRU_EXPM1 expm1
#define CGRU_ERFC erfc
#define CGRU_FABS fabs
#include "_cell_template.h"
#undef real
#undef CGRU_NAME
#undef CGRU_SIGMOID
#undef CGRU_TANH
#undef CGRU_EXP
#undef CGRU_EXPM1
#undef CGRU_ERFC
#undef CGRU_FABS

#endif

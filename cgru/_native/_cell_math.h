/* exp for float32 as plain arithmetic, so that gcc can vectorize the cell loops around it
 * (a call to libm's expf cannot be). Cephes' expf: e^x = 2^n e^r with n = round(x / ln 2),
 * |r| <= ln(2) / 2, e^r by a degree-7 polynomial; relative error within 2 float32 ulp on
 * [-87, 88] (tested against NumPy in tests/test_functional.py). Inputs below -87.3 give
 * 2^-126 (instead of a denormal or 0), above 88.3 clamp to e^88.3; sigmoid and tanh built on
 * it saturate correctly, and NaN stays NaN. No -ffast-math needed: the rounding trick below is exact IEEE
 * arithmetic in the default rounding mode. */
#ifndef CGRU_CELL_MATH_H
#define CGRU_CELL_MATH_H
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float cgru_expf(float x)
{
    const float round_magic = 12582912.0f;           /* 1.5 * 2^23: adding it rounds to int */
    float n, r, p, scale;
    int32_t bits;
    /* clamp, written so that NaN passes through (every comparison with NaN is false) */
    x = x > 88.3f ? 88.3f : x;                        /* keeps n <= 127 */
    x = x < -87.3f ? -87.3f : x;
    n = (x * 1.44269504088896341f + round_magic) - round_magic;
    r = x - n * 0.693359375f;                          /* ln 2 in two parts (Cody-Waite) */
    r = r - n * -2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    bits = ((int32_t)n + 127) << 23;                   /* 2^n */
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* The cell's nonlinearities. float32: tanh(v) = sign(v) (1 - e) / (1 + e), e = exp(-2|v|),
 * within 2e-7 of tanh in absolute terms; glibc's tanhf goes through expm1f and took a quarter
 * of the forward time (perf, (T, B, I, H) = (100, 64, 128, 256)). float64: libm, exactly. */
static inline float cgru_sigmoidf(float v) { return 1.0f / (1.0f + cgru_expf(-v)); }

static inline float cgru_tanhf(float v)
{
    const float e = cgru_expf(-2.0f * fabsf(v));
    return copysignf((1.0f - e) / (1.0f + e), v);
}

static inline double cgru_sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

static inline double cgru_tanh(double v) { return tanh(v); }

/* The activations the cell computes for `activation` (the candidate n) and
 * `recurrent_activation` (the gates r, z), by code: Keras 3's names, with its definitions.
 * The codes are the cell's interface (cgru.functional maps names to them). */
enum {
    CGRU_ACT_TANH = 0,
    CGRU_ACT_SIGMOID = 1,
    CGRU_ACT_HARD_SIGMOID = 2,      /* relu6(x + 3) / 6 */
    CGRU_ACT_RELU = 3,
    CGRU_ACT_LINEAR = 4,
    CGRU_ACT_SOFTSIGN = 5,          /* x / (1 + |x|) */
    CGRU_ACT_ELU = 6,               /* x > 0 ? x : exp(x) - 1 */
    CGRU_ACT_SELU = 7,              /* scale (x > 0 ? x : alpha (exp(x) - 1)) */
    CGRU_ACT_GELU = 8,              /* x Phi(x), the exact form (erf), Keras's default */
    CGRU_ACT_SILU = 9,              /* x sigmoid(x) ("swish") */
    CGRU_ACT_COUNT = 10
};
/* Does the backward need the activation's input (it cannot be recovered from the output)? */
#define CGRU_ACT_KEEPS_INPUT(code) ((code) == CGRU_ACT_GELU || (code) == CGRU_ACT_SILU)
/* Numbers per batch row that training keeps of the pre-activations: r and z's (2H) when the
 * recurrent activation needs them, then n's (H) when the activation does. */
#define CGRU_PRE_WIDTH(H, act, rec) \
    ((CGRU_ACT_KEEPS_INPUT(rec) ? 2 * (H) : 0) + (CGRU_ACT_KEEPS_INPUT(act) ? (H) : 0))

/* gelu(x) = x Phi(x) = x erfc(-c x) / 2 with c = 1 / sqrt(2) as TensorFlow computes it: rounded
 * to float32 in float64 too (tf.nn.gelu casts the Python float through float32), which moves
 * float64 results by up to 5e-9; Keras 3's numbers are these. */
#define CGRU_GELU_C ((double)0.70710678118654752440f)
#define CGRU_SELU_ALPHA 1.6732632423543772848170429916717
#define CGRU_SELU_SCALE 1.0507009873554804934193349852946

/* erfc for float32 as plain arithmetic (vectorizable, like cgru_expf): Abramowitz and Stegun
 * 7.1.26, erfc(a) = t (a1 + t (a2 + ... + t a5)) exp(-a^2) for a >= 0, t = 1 / (1 + p a), and
 * erfc(-a) = 2 - erfc(a); absolute error within 1.5e-7 in exact arithmetic (gelu tested
 * against SciPy in tests/test_gru_activations.py). float64 uses libm's erfc. */
static inline float cgru_erfcf(float y)
{
    const float a = fabsf(y), t = 1.0f / (1.0f + 0.3275911f * a);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    p = p * t * cgru_expf(-a * a);
    return y < 0 ? 2.0f - p : p;
}
#endif

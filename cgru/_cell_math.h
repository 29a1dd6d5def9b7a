/* exp for float32 as plain arithmetic, so that gcc can vectorize the cell loops around it
 * (a call to libm's expf cannot be). Cephes' expf: e^x = 2^n e^r with n = round(x / ln 2),
 * |r| <= ln(2) / 2, e^r by a degree-7 polynomial; relative error within 2 float32 ulp on
 * [-87, 88] (tested against NumPy in tests/test_functional.py). Inputs below -87.3 give
 * 2^-126 (instead of a denormal or 0), above 88.3 clamp to e^88.3; sigmoid and tanh built on
 * it saturate correctly. No -ffast-math needed: the rounding trick below is exact IEEE
 * arithmetic in the default rounding mode. */
#ifndef CGRU_CELL_MATH_H
#define CGRU_CELL_MATH_H
#include <stdint.h>
#include <string.h>

static inline float cgru_expf(float x)
{
    const float round_magic = 12582912.0f;           /* 1.5 * 2^23: adding it rounds to int */
    float n, r, p, scale;
    int32_t bits;
    x = x < 88.3f ? x : 88.3f;                        /* keeps n <= 127 */
    x = x > -87.3f ? x : -87.3f;
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
#endif

/* The GRU cell's elementwise work for one time step: forward and backward side by side.
 *
 * A template: _cell.h includes this file once with real = float (suffix _f32) and once
 * with real = double (_f64), so both dtypes run the same code. It holds no loop over time and
 * no product: _loops.pyx runs the time loops and the GEMMs and calls these in between.
 * Each function is compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time
 * (CGRU_TARGETS), and its pointers are restrict: measured 1.3-1.7x faster inference than the
 * same loops in Cython, which gcc could only vectorize for SSE2 behind runtime overlap checks.
 *
 * Sizes: B rows, H units, G = 3H gate columns in PyTorch's order (r, z, n). All arrays are
 * row-major and contiguous per row. lengths is NULL (every step valid) or (B,): step t of row b
 * is valid when t < lengths[b]; invalid rows keep h (h' = h), write y = 0, and in backward
 * pass their gradient straight through with zero gate gradients.
 *
 * The cell (reset_after=True):            reset_after=False:
 *   r  = sigmoid(gx_r + b_ir + gh_r + b_hr)  (same r, z)
 *   z  = sigmoid(gx_z + b_iz + gh_z + b_hz)
 *   n  = tanh(gx_n + b_in + r * hn)          n = tanh(gx_n + b_in + gh_n + b_hn)
 *        hn := gh_n + b_hn                       where gh_n = W_hn (r * h), rh := r * h
 *   h' = (1 - z) * n + z * h
 * gx = W_i x (the input projection), gh = W_h h (the recurrent product), both without bias.
 *
 * Activations: `act` replaces tanh and `rec` sigmoid above (codes in _cell_math.h). The default
 * pair (tanh, sigmoid) runs the fused loops as they were; any other pair runs the same lines in
 * passes over a row (the sums, then one activation loop per block, each vectorized with its
 * switch outside the loop). Backward takes each derivative from the stored output (r, z, n),
 * except for gelu and silu, whose input training keeps in `pre` (B, P), P = CGRU_PRE_WIDTH:
 * r and z's pre-activations (2H, when rec keeps its input), then n's (H, when act does);
 * `pre` is NULL in inference and when neither does.
 */

#define CELL_VALID(b) (lengths == NULL || t < lengths[b])

/* v[:count] := f(v[:count]) for the activation `code`; keep[:count] (unless NULL) gets the
 * values before, the input that gelu's and silu's derivatives need. */
CGRU_ALWAYS_INLINE void CGRU_NAME(activate)(int code, Py_ssize_t count, real *restrict v,
                                            real *restrict keep)
{
    Py_ssize_t j;
    if (keep != NULL)
        for (j = 0; j < count; j++)
            keep[j] = v[j];
    switch (code) {
    case CGRU_ACT_TANH:
        for (j = 0; j < count; j++)
            v[j] = CGRU_TANH(v[j]);
        break;
    case CGRU_ACT_SIGMOID:
        for (j = 0; j < count; j++)
            v[j] = CGRU_SIGMOID(v[j]);
        break;
    case CGRU_ACT_HARD_SIGMOID:             /* relu6(x + 3) / 6; NaN stays NaN */
        for (j = 0; j < count; j++) {
            real a = v[j] + 3;
            a = a < 0 ? 0 : a;
            a = a > 6 ? 6 : a;
            v[j] = a / 6;
        }
        break;
    case CGRU_ACT_RELU:
        for (j = 0; j < count; j++)
            v[j] = v[j] < 0 ? 0 : v[j];
        break;
    case CGRU_ACT_SOFTSIGN:
        for (j = 0; j < count; j++)
            v[j] = v[j] / (1 + CGRU_FABS(v[j]));
        break;
    case CGRU_ACT_ELU:
        for (j = 0; j < count; j++)
            v[j] = v[j] > 0 ? v[j] : CGRU_EXPM1(v[j]);
        break;
    case CGRU_ACT_SELU:
        for (j = 0; j < count; j++)
            v[j] = (real)CGRU_SELU_SCALE * (v[j] > 0 ? v[j]
                                            : (real)CGRU_SELU_ALPHA * CGRU_EXPM1(v[j]));
        break;
    case CGRU_ACT_GELU:                     /* x erfc(-c x) / 2, c = CGRU_GELU_C */
        for (j = 0; j < count; j++)
            v[j] = (real)0.5 * v[j] * CGRU_ERFC(-v[j] * (real)CGRU_GELU_C);
        break;
    case CGRU_ACT_SILU:
        for (j = 0; j < count; j++)
            v[j] = v[j] * CGRU_SIGMOID(v[j]);
        break;
    default:                                /* CGRU_ACT_LINEAR */
        break;
    }
}

/* d[:count] := f'(x) for the activation `code`, from its output out = f(x), or from its input
 * x = in (gelu, silu: the values `activate` kept). The derivatives of elu and selu at x <= 0
 * are written in their outputs, as TensorFlow's are. */
CGRU_ALWAYS_INLINE void CGRU_NAME(derivative)(int code, Py_ssize_t count,
                                              const real *restrict out,
                                              const real *restrict in, real *restrict d)
{
    Py_ssize_t j;
    switch (code) {
    case CGRU_ACT_TANH:
        for (j = 0; j < count; j++)
            d[j] = 1 - out[j] * out[j];
        break;
    case CGRU_ACT_SIGMOID:
        for (j = 0; j < count; j++)
            d[j] = out[j] * (1 - out[j]);
        break;
    case CGRU_ACT_HARD_SIGMOID:             /* 1/6 where 0 < x + 3 < 6, i.e. 0 < out < 1 */
        for (j = 0; j < count; j++)
            d[j] = out[j] > 0 && out[j] < 1 ? (real)(1.0 / 6.0) : 0;
        break;
    case CGRU_ACT_RELU:
        for (j = 0; j < count; j++)
            d[j] = out[j] > 0 ? 1 : 0;
        break;
    case CGRU_ACT_SOFTSIGN:                 /* 1 / (1 + |x|)^2 = (1 - |out|)^2 */
        for (j = 0; j < count; j++) {
            const real a = 1 - CGRU_FABS(out[j]);
            d[j] = a * a;
        }
        break;
    case CGRU_ACT_ELU:                      /* exp(x) = out + 1 where x < 0 */
        for (j = 0; j < count; j++)
            d[j] = out[j] < 0 ? out[j] + 1 : 1;
        break;
    case CGRU_ACT_SELU:                     /* scale alpha exp(x) = out + scale alpha */
        for (j = 0; j < count; j++)
            d[j] = out[j] < 0 ? out[j] + (real)(CGRU_SELU_SCALE * CGRU_SELU_ALPHA)
                              : (real)CGRU_SELU_SCALE;
        break;
    case CGRU_ACT_GELU:                     /* erfc(-u) / 2 + x c exp(-u^2) / sqrt(pi), u = c x */
        for (j = 0; j < count; j++) {
            const real x = in[j], u = x * (real)CGRU_GELU_C;
            d[j] = (real)0.5 * CGRU_ERFC(-u)
                   + x * (real)(CGRU_GELU_C * 0.56418958354775628695) * CGRU_EXP(-u * u);
        }
        break;
    case CGRU_ACT_SILU:                     /* s (1 + x (1 - s)), s = sigmoid(x) */
        for (j = 0; j < count; j++) {
            const real sx = CGRU_SIGMOID(in[j]);
            d[j] = sx * (1 + in[j] * (1 - sx));
        }
        break;
    default:                                /* CGRU_ACT_LINEAR */
        for (j = 0; j < count; j++)
            d[j] = 1;
        break;
    }
}

/* The default pair, which the fused loops compute. */
#define CELL_DEFAULT(act, rec) ((act) == CGRU_ACT_TANH && (rec) == CGRU_ACT_SIGMOID)
/* Row b's kept pre-activations of r, z (2H) and of n (H), or NULL. */
#define CELL_PRE_RZ(pre, b) ((pre) != NULL && CGRU_ACT_KEEPS_INPUT(rec) \
                             ? (pre) + (b) * CGRU_PRE_WIDTH(H, act, rec) : NULL)
#define CELL_PRE_N(pre, b) ((pre) != NULL && CGRU_ACT_KEEPS_INPUT(act) \
                            ? (pre) + (b) * CGRU_PRE_WIDTH(H, act, rec) \
                              + (CGRU_ACT_KEEPS_INPUT(rec) ? 2 * H : 0) : NULL)

/* One row's new state, shared by both forward cells: h' = (1 - z) n + z h and y = h' on a
 * valid step; h' = h and y = 0 past the row's length. Inlined into each caller's clone. */
static inline void CGRU_NAME(new_state)(
    Py_ssize_t H, const real *restrict z, const real *restrict n, const real *restrict hp,
    real *restrict hx, real *restrict yb, int valid)
{
    if (valid) {
        for (Py_ssize_t j = 0; j < H; j++) {
            hx[j] = n[j] + z[j] * (hp[j] - n[j]);
            yb[j] = hx[j];
        }
    } else {
        for (Py_ssize_t j = 0; j < H; j++) {
            hx[j] = hp[j];
            yb[j] = 0;
        }
    }
}

/* reset_after=True, forward.
 * gates (B, G): in gx, out r, z, n; gates_h (B, G): gh; hidden_n (B, H): out hn;
 * h_prev, h_next, y (B, H). */
CGRU_TARGETS static void CGRU_NAME(cell_forward_reset_after)(
    Py_ssize_t B, Py_ssize_t H, real *restrict gates, const real *restrict gates_h,
    const real *restrict b_ih, const real *restrict b_hh, const real *restrict h_prev,
    real *restrict hidden_n, real *restrict h_next, real *restrict y,
    const Py_ssize_t *lengths, Py_ssize_t t, int act, int rec, real *restrict pre)
{
    const Py_ssize_t G = 3 * H;
    for (Py_ssize_t b = 0; b < B; b++) {
        real *restrict r = gates + b * G, *restrict z = r + H, *restrict n = r + 2 * H;
        const real *restrict gh = gates_h + b * G;
        real *restrict hn = hidden_n + b * H;
        const real *restrict hp = h_prev + b * H;
        real *restrict hx = h_next + b * H, *restrict yb = y + b * H;
        if (CELL_DEFAULT(act, rec)) {
            for (Py_ssize_t j = 0; j < H; j++) {
                r[j] = CGRU_SIGMOID(r[j] + b_ih[j] + gh[j] + b_hh[j]);
                z[j] = CGRU_SIGMOID(z[j] + b_ih[H + j] + gh[H + j] + b_hh[H + j]);
                hn[j] = gh[2 * H + j] + b_hh[2 * H + j];
                n[j] = CGRU_TANH(n[j] + b_ih[2 * H + j] + r[j] * hn[j]);
            }
        } else {
            for (Py_ssize_t j = 0; j < 2 * H; j++)      /* r and z, side by side */
                r[j] = r[j] + b_ih[j] + gh[j] + b_hh[j];
            CGRU_NAME(activate)(rec, 2 * H, r, CELL_PRE_RZ(pre, b));
            for (Py_ssize_t j = 0; j < H; j++) {
                hn[j] = gh[2 * H + j] + b_hh[2 * H + j];
                n[j] = n[j] + b_ih[2 * H + j] + r[j] * hn[j];
            }
            CGRU_NAME(activate)(act, H, n, CELL_PRE_N(pre, b));
        }
        CGRU_NAME(new_state)(H, z, n, hp, hx, yb, CELL_VALID(b));
    }
}

/* reset_after=True, backward.
 * d_gates_h (B, G): out, gradient wrt gh + b_h: (dr_pre, dz_pre, dn_pre * r);
 * d_gates_x_n (B, H): out, gradient wrt gx_n + b_in: dn_pre (the r, z blocks equal d_gates_h's);
 * dh_prev (B, H): out, the part of dL/dh that does not pass through W_h (the caller adds
 * d_gates_h @ W_hh); dh (B, H): dL/dh' (from step t + 1 and y_t). */
CGRU_TARGETS static void CGRU_NAME(cell_backward_reset_after)(
    Py_ssize_t B, Py_ssize_t H, real *restrict d_gates_h, real *restrict d_gates_x_n,
    real *restrict dh_prev, const real *restrict dh, const real *restrict gates,
    const real *restrict hidden_n, const real *restrict h_prev,
    const Py_ssize_t *lengths, Py_ssize_t t, int act, int rec, const real *restrict pre)
{
    const Py_ssize_t G = 3 * H;
    for (Py_ssize_t b = 0; b < B; b++) {
        const real *restrict r = gates + b * G, *restrict z = r + H, *restrict n = r + 2 * H;
        real *restrict dr = d_gates_h + b * G, *restrict dz = dr + H, *restrict dhn = dr + 2 * H;
        real *restrict dxn = d_gates_x_n + b * H, *restrict dhp = dh_prev + b * H;
        const real *restrict d_out = dh + b * H, *restrict hn = hidden_n + b * H;
        const real *restrict hp = h_prev + b * H;
        if (!CELL_VALID(b)) {
            for (Py_ssize_t j = 0; j < H; j++) {
                dhp[j] = d_out[j];
                dr[j] = dz[j] = dhn[j] = dxn[j] = 0;
            }
            continue;
        }
        if (CELL_DEFAULT(act, rec)) {
            for (Py_ssize_t j = 0; j < H; j++) {
                /* h' = (1 - z) n + z h;  n = tanh(gx_n + b_in + r hn) */
                const real dn_pre = d_out[j] * (1 - z[j]) * (1 - n[j] * n[j]);
                dhp[j] = d_out[j] * z[j];
                dr[j] = dn_pre * hn[j] * r[j] * (1 - r[j]);
                dz[j] = d_out[j] * (hp[j] - n[j]) * z[j] * (1 - z[j]);
                dhn[j] = dn_pre * r[j];
                dxn[j] = dn_pre;
            }
            continue;
        }
        /* the derivatives first, into the gradients' own places: rec'(.) of r, z into dr, dz
         * (side by side), act'(.) of n into dxn */
        CGRU_NAME(derivative)(rec, 2 * H, r, CELL_PRE_RZ(pre, b), dr);
        CGRU_NAME(derivative)(act, H, n, CELL_PRE_N(pre, b), dxn);
        for (Py_ssize_t j = 0; j < H; j++) {
            /* h' = (1 - z) n + z h;  n = act(gx_n + b_in + r hn);  r, z = rec(...) */
            const real dn_pre = d_out[j] * (1 - z[j]) * dxn[j];
            dhp[j] = d_out[j] * z[j];
            dr[j] = dn_pre * hn[j] * dr[j];
            dz[j] = d_out[j] * (hp[j] - n[j]) * dz[j];
            dhn[j] = dn_pre * r[j];
            dxn[j] = dn_pre;
        }
    }
}

/* reset_after=False, forward, first half (before the product W_hn (r * h)):
 * gates_h[:, :2H] holds gh_r, gh_z; writes r, z into gates and rh = r * h into hidden_n. */
CGRU_TARGETS static void CGRU_NAME(cell_forward_rz)(
    Py_ssize_t B, Py_ssize_t H, real *restrict gates, const real *restrict gates_h,
    const real *restrict b_ih, const real *restrict b_hh, const real *restrict h_prev,
    real *restrict hidden_n, int act, int rec, real *restrict pre)
{
    const Py_ssize_t G = 3 * H;
    for (Py_ssize_t b = 0; b < B; b++) {
        real *restrict rz = gates + b * G;
        const real *restrict gh = gates_h + b * G, *restrict hp = h_prev + b * H;
        real *restrict rh = hidden_n + b * H;
        if (CELL_DEFAULT(act, rec)) {
            for (Py_ssize_t j = 0; j < 2 * H; j++)
                rz[j] = CGRU_SIGMOID(rz[j] + b_ih[j] + gh[j] + b_hh[j]);
        } else {
            for (Py_ssize_t j = 0; j < 2 * H; j++)
                rz[j] = rz[j] + b_ih[j] + gh[j] + b_hh[j];
            CGRU_NAME(activate)(rec, 2 * H, rz, CELL_PRE_RZ(pre, b));
        }
        for (Py_ssize_t j = 0; j < H; j++)
            rh[j] = rz[j] * hp[j];
    }
}

/* reset_after=False, forward, second half: gates_h[:, 2H:] holds gh_n = W_hn (r * h);
 * writes n into gates, then h_next and y. */
CGRU_TARGETS static void CGRU_NAME(cell_forward_n)(
    Py_ssize_t B, Py_ssize_t H, real *restrict gates, const real *restrict gates_h,
    const real *restrict b_ih, const real *restrict b_hh, const real *restrict h_prev,
    real *restrict h_next, real *restrict y, const Py_ssize_t *lengths, Py_ssize_t t,
    int act, int rec, real *restrict pre)
{
    const Py_ssize_t G = 3 * H;
    for (Py_ssize_t b = 0; b < B; b++) {
        const real *restrict z = gates + b * G + H;
        real *restrict n = gates + b * G + 2 * H;
        const real *restrict gh_n = gates_h + b * G + 2 * H, *restrict hp = h_prev + b * H;
        real *restrict hx = h_next + b * H, *restrict yb = y + b * H;
        if (CELL_DEFAULT(act, rec)) {
            for (Py_ssize_t j = 0; j < H; j++)
                n[j] = CGRU_TANH(n[j] + b_ih[2 * H + j] + gh_n[j] + b_hh[2 * H + j]);
        } else {
            for (Py_ssize_t j = 0; j < H; j++)
                n[j] = n[j] + b_ih[2 * H + j] + gh_n[j] + b_hh[2 * H + j];
            CGRU_NAME(activate)(act, H, n, CELL_PRE_N(pre, b));
        }
        CGRU_NAME(new_state)(H, z, n, hp, hx, yb, CELL_VALID(b));
    }
}

/* reset_after=False, backward, first half: dz_pre and dn_pre into d_gates[:, H:] (the gradient
 * wrt gx + b_i and wrt gh + b_h: equal in this variant), dL/dh_prev's direct part d_out * z. */
CGRU_TARGETS static void CGRU_NAME(cell_backward_zn)(
    Py_ssize_t B, Py_ssize_t H, real *restrict d_gates, real *restrict dh_prev,
    const real *restrict dh, const real *restrict gates, const real *restrict h_prev,
    const Py_ssize_t *lengths, Py_ssize_t t, int act, int rec, const real *restrict pre)
{
    const Py_ssize_t G = 3 * H;
    for (Py_ssize_t b = 0; b < B; b++) {
        const real *restrict z = gates + b * G + H, *restrict n = gates + b * G + 2 * H;
        real *restrict dz = d_gates + b * G + H, *restrict dn = d_gates + b * G + 2 * H;
        real *restrict dhp = dh_prev + b * H;
        const real *restrict d_out = dh + b * H, *restrict hp = h_prev + b * H;
        const real *restrict pre_rz = CELL_PRE_RZ(pre, b);
        if (!CELL_VALID(b)) {
            for (Py_ssize_t j = 0; j < H; j++) {
                dhp[j] = d_out[j];
                dz[j] = dn[j] = 0;
            }
            continue;
        }
        if (CELL_DEFAULT(act, rec)) {
            for (Py_ssize_t j = 0; j < H; j++) {
                /* h' = (1 - z) n + z h;  n = tanh(gx_n + b_in + W_hn (r h) + b_hn) */
                dhp[j] = d_out[j] * z[j];
                dz[j] = d_out[j] * (hp[j] - n[j]) * z[j] * (1 - z[j]);
                dn[j] = d_out[j] * (1 - z[j]) * (1 - n[j] * n[j]);
            }
            continue;
        }
        /* rec'(.) of z into dz, act'(.) of n into dn, then as above with act and rec */
        CGRU_NAME(derivative)(rec, H, z, pre_rz == NULL ? NULL : pre_rz + H, dz);
        CGRU_NAME(derivative)(act, H, n, CELL_PRE_N(pre, b), dn);
        for (Py_ssize_t j = 0; j < H; j++) {
            dhp[j] = d_out[j] * z[j];
            dz[j] = d_out[j] * (hp[j] - n[j]) * dz[j];
            dn[j] = d_out[j] * (1 - z[j]) * dn[j];
        }
    }
}

/* reset_after=False, backward, second half: given d_rh = dn_pre @ W_hn (the gradient wrt
 * rh = r * h), dr_pre into d_gates[:, :H] and d_rh * r added to dh_prev. */
CGRU_TARGETS static void CGRU_NAME(cell_backward_r)(
    Py_ssize_t B, Py_ssize_t H, real *restrict d_gates, real *restrict dh_prev,
    const real *restrict d_rh, const real *restrict gates, const real *restrict h_prev,
    const Py_ssize_t *lengths, Py_ssize_t t, int act, int rec, const real *restrict pre)
{
    const Py_ssize_t G = 3 * H;
    for (Py_ssize_t b = 0; b < B; b++) {
        const real *restrict r = gates + b * G, *restrict drh = d_rh + b * H;
        const real *restrict hp = h_prev + b * H;
        real *restrict dr = d_gates + b * G, *restrict dhp = dh_prev + b * H;
        if (!CELL_VALID(b)) {
            for (Py_ssize_t j = 0; j < H; j++)
                dr[j] = 0;
            continue;
        }
        if (CELL_DEFAULT(act, rec)) {
            for (Py_ssize_t j = 0; j < H; j++) {
                dr[j] = drh[j] * hp[j] * r[j] * (1 - r[j]);
                dhp[j] += drh[j] * r[j];
            }
            continue;
        }
        CGRU_NAME(derivative)(rec, H, r, CELL_PRE_RZ(pre, b), dr);     /* rec'(.) of r */
        for (Py_ssize_t j = 0; j < H; j++) {
            dr[j] = drh[j] * hp[j] * dr[j];
            dhp[j] += drh[j] * r[j];
        }
    }
}

#undef CELL_VALID
#undef CELL_DEFAULT
#undef CELL_PRE_RZ
#undef CELL_PRE_N

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
 */

#define CELL_VALID(b) (lengths == NULL || t < lengths[b])

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
    const Py_ssize_t *lengths, Py_ssize_t t)
{
    const Py_ssize_t G = 3 * H;
    for (Py_ssize_t b = 0; b < B; b++) {
        real *restrict r = gates + b * G, *restrict z = r + H, *restrict n = r + 2 * H;
        const real *restrict gh = gates_h + b * G;
        real *restrict hn = hidden_n + b * H;
        const real *restrict hp = h_prev + b * H;
        real *restrict hx = h_next + b * H, *restrict yb = y + b * H;
        for (Py_ssize_t j = 0; j < H; j++) {
            r[j] = CGRU_SIGMOID(r[j] + b_ih[j] + gh[j] + b_hh[j]);
            z[j] = CGRU_SIGMOID(z[j] + b_ih[H + j] + gh[H + j] + b_hh[H + j]);
            hn[j] = gh[2 * H + j] + b_hh[2 * H + j];
            n[j] = CGRU_TANH(n[j] + b_ih[2 * H + j] + r[j] * hn[j]);
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
    const Py_ssize_t *lengths, Py_ssize_t t)
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
        for (Py_ssize_t j = 0; j < H; j++) {
            /* h' = (1 - z) n + z h;  n = tanh(gx_n + b_in + r hn) */
            const real dn_pre = d_out[j] * (1 - z[j]) * (1 - n[j] * n[j]);
            dhp[j] = d_out[j] * z[j];
            dr[j] = dn_pre * hn[j] * r[j] * (1 - r[j]);
            dz[j] = d_out[j] * (hp[j] - n[j]) * z[j] * (1 - z[j]);
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
    real *restrict hidden_n)
{
    const Py_ssize_t G = 3 * H;
    for (Py_ssize_t b = 0; b < B; b++) {
        real *restrict rz = gates + b * G;
        const real *restrict gh = gates_h + b * G, *restrict hp = h_prev + b * H;
        real *restrict rh = hidden_n + b * H;
        for (Py_ssize_t j = 0; j < 2 * H; j++)
            rz[j] = CGRU_SIGMOID(rz[j] + b_ih[j] + gh[j] + b_hh[j]);
        for (Py_ssize_t j = 0; j < H; j++)
            rh[j] = rz[j] * hp[j];
    }
}

/* reset_after=False, forward, second half: gates_h[:, 2H:] holds gh_n = W_hn (r * h);
 * writes n into gates, then h_next and y. */
CGRU_TARGETS static void CGRU_NAME(cell_forward_n)(
    Py_ssize_t B, Py_ssize_t H, real *restrict gates, const real *restrict gates_h,
    const real *restrict b_ih, const real *restrict b_hh, const real *restrict h_prev,
    real *restrict h_next, real *restrict y, const Py_ssize_t *lengths, Py_ssize_t t)
{
    const Py_ssize_t G = 3 * H;
    for (Py_ssize_t b = 0; b < B; b++) {
        const real *restrict z = gates + b * G + H;
        real *restrict n = gates + b * G + 2 * H;
        const real *restrict gh_n = gates_h + b * G + 2 * H, *restrict hp = h_prev + b * H;
        real *restrict hx = h_next + b * H, *restrict yb = y + b * H;
        for (Py_ssize_t j = 0; j < H; j++)
            n[j] = CGRU_TANH(n[j] + b_ih[2 * H + j] + gh_n[j] + b_hh[2 * H + j]);
        CGRU_NAME(new_state)(H, z, n, hp, hx, yb, CELL_VALID(b));
    }
}

/* reset_after=False, backward, first half: dz_pre and dn_pre into d_gates[:, H:] (the gradient
 * wrt gx + b_i and wrt gh + b_h: equal in this variant), dL/dh_prev's direct part d_out * z. */
CGRU_TARGETS static void CGRU_NAME(cell_backward_zn)(
    Py_ssize_t B, Py_ssize_t H, real *restrict d_gates, real *restrict dh_prev,
    const real *restrict dh, const real *restrict gates, const real *restrict h_prev,
    const Py_ssize_t *lengths, Py_ssize_t t)
{
    const Py_ssize_t G = 3 * H;
    for (Py_ssize_t b = 0; b < B; b++) {
        const real *restrict z = gates + b * G + H, *restrict n = gates + b * G + 2 * H;
        real *restrict dz = d_gates + b * G + H, *restrict dn = d_gates + b * G + 2 * H;
        real *restrict dhp = dh_prev + b * H;
        const real *restrict d_out = dh + b * H, *restrict hp = h_prev + b * H;
        if (!CELL_VALID(b)) {
            for (Py_ssize_t j = 0; j < H; j++) {
                dhp[j] = d_out[j];
                dz[j] = dn[j] = 0;
            }
            continue;
        }
        for (Py_ssize_t j = 0; j < H; j++) {
            /* h' = (1 - z) n + z h;  n = tanh(gx_n + b_in + W_hn (r h) + b_hn) */
            dhp[j] = d_out[j] * z[j];
            dz[j] = d_out[j] * (hp[j] - n[j]) * z[j] * (1 - z[j]);
            dn[j] = d_out[j] * (1 - z[j]) * (1 - n[j] * n[j]);
        }
    }
}

/* reset_after=False, backward, second half: given d_rh = dn_pre @ W_hn (the gradient wrt
 * rh = r * h), dr_pre into d_gates[:, :H] and d_rh * r added to dh_prev. */
CGRU_TARGETS static void CGRU_NAME(cell_backward_r)(
    Py_ssize_t B, Py_ssize_t H, real *restrict d_gates, real *restrict dh_prev,
    const real *restrict d_rh, const real *restrict gates, const real *restrict h_prev,
    const Py_ssize_t *lengths, Py_ssize_t t)
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
        for (Py_ssize_t j = 0; j < H; j++) {
            dr[j] = drh[j] * hp[j] * r[j] * (1 - r[j]);
            dhp[j] += drh[j] * r[j];
        }
    }
}

#undef CELL_VALID

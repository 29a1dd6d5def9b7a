"""GRU forward and backward through time: typed loops over BLAS GEMMs.

Layering (scikit-learn style): the cell functions below do one time step's elementwise work on
raw pointers (no allocation, no Python); `forward` and `backward` loop over time, calling BLAS
for every product and the cell functions in between; `cgru/functional.py` validates the inputs,
allocates every array and calls these two entry points. Nothing here checks shapes.

Notation: T steps, B batch rows, I input features, H hidden units, G = 3H gate columns in
PyTorch's order (r, z, n), M = T * B rows of the whole sequence. All arrays are C-contiguous
and time-major. `*_pre` means a gradient with respect to a gate's pre-activation.

The cell (reset_after=True; PyTorch, cuDNN, Keras default):
    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))        hidden_n := W_hn h + b_hn
    h' = (1 - z) * n + z * h
reset_after=False (Cho et al. 2014):
    n  = tanh(W_in x + b_in + W_hn (r * h) + b_hn)         hidden_n := r * h

Lengths: rows with t >= lengths[b] keep h (h' = h) and write y = 0; backward passes their
gradient straight through and gives their gates zero gradient.

Saved by forward for backward (the cache): gates (T, B, 3H) holding r, z, n (written over the
input projection, which is dead once its step is done), hidden_n (T, B, H) and the hidden
states hs (T + 1, B, H), hs[0] = h0. In inference the same loop runs with hs and hidden_n as
ring buffers of 2 and 1 slots (slot = t % slots), so nothing per step is kept.
"""
from libc.math cimport copysignf, exp, fabsf, tanh
from libc.string cimport memcpy
from cython cimport floating

from cgru._blas cimport gemm

cdef extern from "_cell_math.h":
    float cgru_expf(float x) noexcept nogil

cdef extern from *:
    """
    #ifndef CGRU_DEBUG_CHECKS
    #define CGRU_DEBUG_CHECKS 0
    #endif
    """
    int CGRU_DEBUG_CHECKS

# True when built with CGRU_DEBUG=1 (bounds and initialisation checks in the loops).
DEBUG_CHECKS = bool(CGRU_DEBUG_CHECKS)


cdef inline floating sigmoid(floating v) noexcept nogil:
    if floating is float:
        return 1.0 / (1.0 + cgru_expf(-v))
    else:
        return 1.0 / (1.0 + exp(-v))


cdef inline floating tanh_(floating v) noexcept nogil:
    # float32: tanh(v) = sign(v) (1 - e) / (1 + e), e = exp(-2|v|). glibc's tanhf goes through
    # expm1f and took a quarter of the forward time (perf, (T, B, I, H) = (100, 64, 128, 256));
    # this form costs one expf and is within 2e-7 of tanh in absolute terms.
    cdef float e
    if floating is float:
        e = cgru_expf(-2.0 * fabsf(v))
        return copysignf((1.0 - e) / (1.0 + e), v)
    else:
        return tanh(v)


cdef inline bint is_valid(const Py_ssize_t* lengths, Py_ssize_t b, Py_ssize_t t) noexcept nogil:
    """Is step t inside sequence b (always, without lengths)?"""
    return lengths == NULL or t < lengths[b]


# ---------------------------------------------------------------------------------------------
# One step of the cell, reset_after=True. Forward and backward side by side.
#
# gates (B, G): in, the input projection W_i x (no bias); out, r, z, n
# gates_h (B, G): W_h h_prev (no bias); hidden_n (B, H): out, W_hn h_prev + b_hn
# ---------------------------------------------------------------------------------------------
cdef void cell_forward_reset_after(
        Py_ssize_t B, Py_ssize_t H, floating* gates, const floating* gates_h,
        const floating* b_ih, const floating* b_hh, const floating* h_prev,
        floating* hidden_n, floating* h_next, floating* y,
        const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t b, j, G = 3 * H
    cdef floating r, z, n, hn
    cdef floating* g
    cdef const floating* gh
    for b in range(B):
        g = gates + b * G
        gh = gates_h + b * G
        for j in range(H):
            r = sigmoid(g[j] + b_ih[j] + gh[j] + b_hh[j])
            z = sigmoid(g[H + j] + b_ih[H + j] + gh[H + j] + b_hh[H + j])
            hn = gh[2 * H + j] + b_hh[2 * H + j]
            n = tanh_(g[2 * H + j] + b_ih[2 * H + j] + r * hn)
            g[j] = r
            g[H + j] = z
            g[2 * H + j] = n
            hidden_n[b * H + j] = hn
        if is_valid(lengths, b, t):
            for j in range(H):
                # h' = (1 - z) * n + z * h
                h_next[b * H + j] = g[2 * H + j] + g[H + j] * (h_prev[b * H + j] - g[2 * H + j])
                y[b * H + j] = h_next[b * H + j]
        else:
            for j in range(H):
                h_next[b * H + j] = h_prev[b * H + j]
                y[b * H + j] = 0


# d_gates_h (B, G): out, gradient wrt W_h h_prev + b_h: (dr_pre, dz_pre, dn_pre * r)
# d_gates_x_n (B, H): out, gradient wrt W_in x + b_in: dn_pre (r and z blocks equal d_gates_h's)
# dh_prev (B, H): out, the part of dL/dh_prev that does not go through W_h (the caller adds
#     d_gates_h @ W_hh); dh (B, H): dL/dh' carried from step t + 1; dy_t (B, H) or NULL
cdef void cell_backward_reset_after(
        Py_ssize_t B, Py_ssize_t H, floating* d_gates_h, floating* d_gates_x_n,
        floating* dh_prev, const floating* dh, const floating* dy_t,
        const floating* gates, const floating* hidden_n, const floating* h_prev,
        const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t b, j, G = 3 * H
    cdef floating r, z, n, d_out, dn_pre
    cdef const floating* g
    cdef floating* dg
    for b in range(B):
        g = gates + b * G
        dg = d_gates_h + b * G
        if not is_valid(lengths, b, t):
            # forward was h' = h, y = 0: the gradient passes through, the gates get none
            for j in range(H):
                dh_prev[b * H + j] = dh[b * H + j]
                dg[j] = 0
                dg[H + j] = 0
                dg[2 * H + j] = 0
                d_gates_x_n[b * H + j] = 0
            continue
        for j in range(H):
            r = g[j]
            z = g[H + j]
            n = g[2 * H + j]
            d_out = dh[b * H + j]
            if dy_t != NULL:
                d_out = d_out + dy_t[b * H + j]
            # h' = (1 - z) * n + z * h_prev
            dh_prev[b * H + j] = d_out * z
            dn_pre = d_out * (1 - z) * (1 - n * n)
            # n = tanh(gx_n + b_in + r * hidden_n)
            dg[j] = dn_pre * hidden_n[b * H + j] * r * (1 - r)
            dg[H + j] = d_out * (h_prev[b * H + j] - n) * z * (1 - z)
            dg[2 * H + j] = dn_pre * r
            d_gates_x_n[b * H + j] = dn_pre


# ---------------------------------------------------------------------------------------------
# One step of the cell, reset_after=False, in two halves around the product W_hn (r * h_prev).
# First half: r and z from gates_h[:, :2H] = W_hr,hz h_prev; writes r, z and hidden_n = r * h.
# Second half: n from gates_h[:, 2H:] = W_hn (r * h_prev); writes n, h_next, y.
# ---------------------------------------------------------------------------------------------
cdef void cell_forward_rz(
        Py_ssize_t B, Py_ssize_t H, floating* gates, const floating* gates_h,
        const floating* b_ih, const floating* b_hh, const floating* h_prev,
        floating* hidden_n) noexcept nogil:
    cdef Py_ssize_t b, j, G = 3 * H
    cdef floating* g
    cdef const floating* gh
    for b in range(B):
        g = gates + b * G
        gh = gates_h + b * G
        for j in range(2 * H):
            g[j] = sigmoid(g[j] + b_ih[j] + gh[j] + b_hh[j])
        for j in range(H):
            hidden_n[b * H + j] = g[j] * h_prev[b * H + j]


cdef void cell_forward_n(
        Py_ssize_t B, Py_ssize_t H, floating* gates, const floating* gates_h,
        const floating* b_ih, const floating* b_hh, const floating* h_prev,
        floating* h_next, floating* y, const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t b, j, G = 3 * H
    cdef floating* g
    cdef const floating* gh
    for b in range(B):
        g = gates + b * G
        gh = gates_h + b * G
        for j in range(H):
            g[2 * H + j] = tanh_(g[2 * H + j] + b_ih[2 * H + j] + gh[2 * H + j] + b_hh[2 * H + j])
        if is_valid(lengths, b, t):
            for j in range(H):
                h_next[b * H + j] = g[2 * H + j] + g[H + j] * (h_prev[b * H + j] - g[2 * H + j])
                y[b * H + j] = h_next[b * H + j]
        else:
            for j in range(H):
                h_next[b * H + j] = h_prev[b * H + j]
                y[b * H + j] = 0


# Backward, first half: dz_pre and dn_pre into d_gates[:, H:], the direct part of dh_prev.
# (d_gates is the gradient wrt both W_i x + b_i and W_h(.) + b_h: they are equal here.)
cdef void cell_backward_zn(
        Py_ssize_t B, Py_ssize_t H, floating* d_gates, floating* dh_prev,
        const floating* dh, const floating* dy_t, const floating* gates,
        const floating* h_prev, const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t b, j, G = 3 * H
    cdef floating z, n, d_out
    cdef const floating* g
    cdef floating* dg
    for b in range(B):
        g = gates + b * G
        dg = d_gates + b * G
        if not is_valid(lengths, b, t):
            for j in range(H):
                dh_prev[b * H + j] = dh[b * H + j]
                dg[H + j] = 0
                dg[2 * H + j] = 0
            continue
        for j in range(H):
            z = g[H + j]
            n = g[2 * H + j]
            d_out = dh[b * H + j]
            if dy_t != NULL:
                d_out = d_out + dy_t[b * H + j]
            # h' = (1 - z) * n + z * h_prev
            dh_prev[b * H + j] = d_out * z
            dg[H + j] = d_out * (h_prev[b * H + j] - n) * z * (1 - z)
            dg[2 * H + j] = d_out * (1 - z) * (1 - n * n)


# Backward, second half: given d_rh = dn_pre @ W_hn (the gradient wrt r * h_prev),
# dr_pre into d_gates[:, :H] and d_rh * r added to dh_prev.
cdef void cell_backward_r(
        Py_ssize_t B, Py_ssize_t H, floating* d_gates, floating* dh_prev,
        const floating* d_rh, const floating* gates, const floating* h_prev,
        const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t b, j, G = 3 * H
    cdef floating r
    cdef const floating* g
    cdef floating* dg
    for b in range(B):
        g = gates + b * G
        dg = d_gates + b * G
        if not is_valid(lengths, b, t):
            for j in range(H):
                dg[j] = 0
            continue
        for j in range(H):
            r = g[j]
            # hidden_n = r * h_prev
            dg[j] = d_rh[b * H + j] * h_prev[b * H + j] * r * (1 - r)
            dh_prev[b * H + j] += d_rh[b * H + j] * r


cdef void column_sums(Py_ssize_t rows, Py_ssize_t cols, const floating* a, Py_ssize_t lda,
                      floating* out) noexcept nogil:
    """out (cols,) := a (rows, cols; leading dimension lda) summed over its rows."""
    cdef Py_ssize_t i, j
    for j in range(cols):
        out[j] = 0
    for i in range(rows):
        for j in range(cols):
            out[j] += a[i * lda + j]


# ---------------------------------------------------------------------------------------------
# The loops over time.
# ---------------------------------------------------------------------------------------------
def forward(const floating[:, :, ::1] x, const floating[:, ::1] w_ih_t,
            const floating[:, ::1] w_hh_t, const floating[::1] b_ih, const floating[::1] b_hh,
            const Py_ssize_t[::1] lengths, bint reset_after,
            floating[:, :, ::1] gates, floating[:, :, ::1] hidden_n, floating[:, :, ::1] hs,
            floating[:, ::1] gates_h, floating[:, :, ::1] y):
    """Runs the GRU over all T steps of x (T, B, I), T >= 1 and B >= 1.

    w_ih_t (I, 3H) and w_hh_t (H, 3H) are the transposed PyTorch weights (contiguous, the layout
    OpenBLAS is fastest with for h @ W^T). lengths is (B,) or empty for "all T".
    Outputs: gates (T, B, 3H) r, z, n; hidden_n (S_n, B, H); hs (S_h, B, H) with hs[0] = h0
    filled in by the caller; y (T, B, H). S_h = T + 1 and S_n = T keep every step (training);
    S_h = 2 and S_n = 1 keep only the current one (inference). gates_h (B, 3H) is scratch.
    The final state is hs[T % S_h].
    """
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], I = x.shape[2]
    cdef Py_ssize_t H = w_hh_t.shape[0], G = 3 * H
    cdef Py_ssize_t slots_h = hs.shape[0], slots_n = hidden_n.shape[0], t
    cdef const Py_ssize_t* lengths_p = &lengths[0] if lengths.shape[0] > 0 else NULL
    cdef floating* gates_p = &gates[0, 0, 0]
    cdef floating* gates_h_p = &gates_h[0, 0]
    cdef const floating* w_hh_t_p = &w_hh_t[0, 0]
    cdef floating* h_prev
    cdef floating* h_next
    cdef floating* hidden_n_t
    cdef floating* g
    with nogil:
        # gates = x @ w_ih_t: the input projection of every step in one GEMM, (M, I) @ (I, G)
        gemm(False, False, T * B, G, I, 1, &x[0, 0, 0], I, &w_ih_t[0, 0], G, 0, gates_p, G)
        for t in range(T):
            h_prev = &hs[t % slots_h, 0, 0]
            h_next = &hs[(t + 1) % slots_h, 0, 0]
            hidden_n_t = &hidden_n[t % slots_n, 0, 0]
            g = gates_p + t * B * G
            if reset_after:
                # gates_h = h_prev @ w_hh_t, (B, H) @ (H, G)
                gemm(False, False, B, G, H, 1, h_prev, H, w_hh_t_p, G, 0, gates_h_p, G)
                cell_forward_reset_after(B, H, g, gates_h_p, &b_ih[0], &b_hh[0], h_prev,
                                         hidden_n_t, h_next, &y[t, 0, 0], lengths_p, t)
            else:
                # gates_h[:, :2H] = h_prev @ w_hh_t[:, :2H], (B, H) @ (H, 2H)
                gemm(False, False, B, 2 * H, H, 1, h_prev, H, w_hh_t_p, G, 0, gates_h_p, G)
                cell_forward_rz(B, H, g, gates_h_p, &b_ih[0], &b_hh[0], h_prev, hidden_n_t)
                # gates_h[:, 2H:] = (r * h_prev) @ w_hh_t[:, 2H:], (B, H) @ (H, H)
                gemm(False, False, B, H, H, 1, hidden_n_t, H, w_hh_t_p + 2 * H, G, 0,
                     gates_h_p + 2 * H, G)
                cell_forward_n(B, H, g, gates_h_p, &b_ih[0], &b_hh[0], h_prev, h_next,
                               &y[t, 0, 0], lengths_p, t)


def backward(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
             const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
             const floating[:, :, ::1] gates, const floating[:, :, ::1] hidden_n,
             const floating[:, :, ::1] hs, const Py_ssize_t[::1] lengths, bint reset_after,
             floating[:, :, ::1] dh, floating[:, :, ::1] d_gates, floating[:, :, ::1] d_aux,
             floating[:, :, ::1] dx, floating[:, ::1] dw_ih, floating[:, ::1] dw_hh,
             floating[::1] db_ih, floating[::1] db_hh):
    """Backward through time of `forward` run with training slots (S_h = T + 1, S_n = T).

    dy (T, B, H), or (0, B, H) for "no gradient from y". w_ih (3H, I) and w_hh (3H, H) in
    PyTorch's layout (the fast one for dG @ W). dh (2, B, H): dh[0] = dL/dh_n filled in by the
    caller, dh[1] scratch; on return dh[T % 2] = dL/dh0.
    Scratch kept until the whole-sequence GEMMs after the loop: d_gates (T, B, 3H), the gate
    gradients wrt W_h h + b_h; d_aux: reset_after=True, (T, B, H), dn_pre (the n block of the
    gradient wrt W_i x + b_i); reset_after=False, (1, B, H), d_rh of the current step.
    Outputs dx, dw_ih, dw_hh, db_ih, db_hh are overwritten.
    """
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], I = x.shape[2]
    cdef Py_ssize_t H = w_hh.shape[1], G = 3 * H, M = T * B, t
    cdef const Py_ssize_t* lengths_p = &lengths[0] if lengths.shape[0] > 0 else NULL
    cdef const floating* dy_t
    cdef const floating* w_ih_p = &w_ih[0, 0]
    cdef const floating* w_hh_p = &w_hh[0, 0]
    cdef const floating* x_p = &x[0, 0, 0]
    cdef const floating* hs_p = &hs[0, 0, 0]
    cdef floating* d_gates_p = &d_gates[0, 0, 0]
    cdef floating* d_aux_p = &d_aux[0, 0, 0]
    cdef floating* dh_next = &dh[0, 0, 0]
    cdef floating* dh_prev = &dh[1, 0, 0]
    cdef floating* swap
    cdef floating* dg_t
    with nogil:
        for t in range(T - 1, -1, -1):
            dy_t = &dy[t, 0, 0] if dy.shape[0] > 0 else NULL
            dg_t = d_gates_p + t * B * G
            if reset_after:
                cell_backward_reset_after(B, H, dg_t, d_aux_p + t * B * H, dh_prev, dh_next,
                                          dy_t, &gates[t, 0, 0], &hidden_n[t, 0, 0],
                                          &hs[t, 0, 0], lengths_p, t)
                # dh_prev += d_gates[t] @ w_hh, (B, G) @ (G, H)
                gemm(False, False, B, H, G, 1, dg_t, G, w_hh_p, H, 1, dh_prev, H)
            else:
                cell_backward_zn(B, H, dg_t, dh_prev, dh_next, dy_t, &gates[t, 0, 0],
                                 &hs[t, 0, 0], lengths_p, t)
                # d_rh = dn_pre @ w_hh[2H:], (B, H) @ (H, H)
                gemm(False, False, B, H, H, 1, dg_t + 2 * H, G, w_hh_p + 2 * H * H, H, 0,
                     d_aux_p, H)
                cell_backward_r(B, H, dg_t, dh_prev, d_aux_p, &gates[t, 0, 0], &hs[t, 0, 0],
                                lengths_p, t)
                # dh_prev += d_gates[t][:, :2H] @ w_hh[:2H], (B, 2H) @ (2H, H)
                gemm(False, False, B, H, 2 * H, 1, dg_t, G, w_hh_p, H, 1, dh_prev, H)
            swap = dh_next
            dh_next = dh_prev
            dh_prev = swap

        # The weight and input gradients of all steps at once: X = x as (M, I), H_prev = hs[:T]
        # as (M, H), D = d_gates as (M, G).
        if reset_after:
            # dw_hh = D^T @ H_prev, (G, M) @ (M, H)
            gemm(True, False, G, H, M, 1, d_gates_p, G, hs_p, H, 0, &dw_hh[0, 0], H)
            # dw_ih[:2H] = D[:, :2H]^T @ X and dw_ih[2H:] = d_aux^T @ X, (., M) @ (M, I)
            gemm(True, False, 2 * H, I, M, 1, d_gates_p, G, x_p, I, 0, &dw_ih[0, 0], I)
            gemm(True, False, H, I, M, 1, d_aux_p, H, x_p, I, 0, &dw_ih[2 * H, 0], I)
            # dx = D[:, :2H] @ w_ih[:2H] + d_aux @ w_ih[2H:], (M, .) @ (., I)
            gemm(False, False, M, I, 2 * H, 1, d_gates_p, G, w_ih_p, I, 0, &dx[0, 0, 0], I)
            gemm(False, False, M, I, H, 1, d_aux_p, H, w_ih_p + 2 * H * I, I, 1,
                 &dx[0, 0, 0], I)
            column_sums(M, G, d_gates_p, G, &db_hh[0])
            column_sums(M, 2 * H, d_gates_p, G, &db_ih[0])
            column_sums(M, H, d_aux_p, H, &db_ih[2 * H])
        else:
            # dw_hh[:2H] = D[:, :2H]^T @ H_prev; dw_hh[2H:] = D[:, 2H:]^T @ (r * H_prev)
            gemm(True, False, 2 * H, H, M, 1, d_gates_p, G, hs_p, H, 0, &dw_hh[0, 0], H)
            gemm(True, False, H, H, M, 1, d_gates_p + 2 * H, G, &hidden_n[0, 0, 0], H, 0,
                 &dw_hh[2 * H, 0], H)
            # dw_ih = D^T @ X, (G, M) @ (M, I); dx = D @ w_ih, (M, G) @ (G, I)
            gemm(True, False, G, I, M, 1, d_gates_p, G, x_p, I, 0, &dw_ih[0, 0], I)
            gemm(False, False, M, I, G, 1, d_gates_p, G, w_ih_p, I, 0, &dx[0, 0, 0], I)
            column_sums(M, G, d_gates_p, G, &db_ih[0])
            memcpy(&db_hh[0], &db_ih[0], G * sizeof(floating))


def gemm_for_tests(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
                   bint trans_a, bint trans_b, double alpha, double beta):
    """c := alpha * op(a) @ op(b) + beta * c through the BLAS shim (for the tests only)."""
    cdef int m = c.shape[0], n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    gemm(trans_a, trans_b, m, n, k, <floating> alpha, &a[0, 0], a.shape[1], &b[0, 0],
         b.shape[1], <floating> beta, &c[0, 0], n)


def cell_math_for_tests(const floating[::1] v):
    """(exp(v), sigmoid(v), tanh(v)) as the cell computes them (for the tests only)."""
    import numpy as np
    cdef Py_ssize_t i, n = v.shape[0]
    dtype = np.float32 if floating is float else np.float64
    exp_v, sigmoid_v, tanh_v = np.empty(n, dtype), np.empty(n, dtype), np.empty(n, dtype)
    cdef floating[::1] exp_out = exp_v, sigmoid_out = sigmoid_v, tanh_out = tanh_v
    for i in range(n):
        if floating is float:
            exp_out[i] = cgru_expf(v[i])
        else:
            exp_out[i] = exp(v[i])
        sigmoid_out[i] = sigmoid(v[i])
        tanh_out[i] = tanh_(v[i])
    return exp_v, sigmoid_v, tanh_v

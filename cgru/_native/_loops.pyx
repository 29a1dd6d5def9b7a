"""GRU forward and backward through time: typed loops over the per-step products and cells.

Layering (scikit-learn style): the cell (_cell.pxd over _cell_template.h) does one step's
elementwise work on raw pointers; the products go through one interface (_gemm.pxd: the small
GEMM at the plan's level, or BLAS); the batch is cut over OpenMP threads (_parts.pxd); these
loops run the steps. `cgru.functional` validates, allocates every array and chooses the plan
(level, parts, weight layout); nothing here checks shapes or allocates arrays.

Notation: T steps, B batch rows, I input features, H hidden units, G = 3H gate columns in
PyTorch's order (r, z, n), M = T * B rows of the whole sequence. Activations are C-contiguous
and time-major. `*_pre` means a gradient with respect to a gate's pre-activation.
Weights: W_ih (G, I) and W_hh (G, H) in PyTorch's layout, or both stored transposed,
(I, G) and (H, G), the layers' layout (`weights_t`); every product reads either (a transpose
flag for BLAS, strides for the small GEMM's packing), and the weight gradients come out in
the layout the weights came in.

The cell (reset_after=True; PyTorch, cuDNN, Keras default):
    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))        hidden_n := W_hn h + b_hn
    h' = (1 - z) * n + z * h
reset_after=False (Cho et al. 2014):
    n  = tanh(W_in x + b_in + W_hn (r * h) + b_hn)         hidden_n := r * h
Lengths: rows with t >= lengths[b] keep h (h' = h) and write y = 0; backward passes their
gradient straight through and gives their gates zero gradient.

Saved by forward for backward: gates (T, B, G) holding r, z, n (written over the input
projection, dead once its step is done), hidden_n (T, B, H), hs (T + 1, B, H), hs[0] = h0.
In inference the same loop runs with hs, hidden_n and gates as rings of 2, 1 and a few steps
(slot = t % slots), and the input is projected a chunk of steps at a time.
"""
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cython cimport floating
from cython.parallel cimport prange

from cgru._native._blas cimport gemm
from cgru._native._cell cimport (
    cell_backward_r, cell_backward_reset_after, cell_backward_zn, recurrent_step)
from cgru._native._gemm cimport cgru_cpu_gemm_level, pack, packed_copy, packed_size, product, product_ta
from cgru._native._parts cimport part_start

cdef extern from *:
    """
    #ifndef CGRU_DEBUG_CHECKS
    #define CGRU_DEBUG_CHECKS 0
    #endif
    """
    int CGRU_DEBUG_CHECKS

# True when built with CGRU_DEBUG=1 (bounds and initialisation checks in the loops).
DEBUG_CHECKS = bool(CGRU_DEBUG_CHECKS)
# The small GEMM's best form on this CPU: 2 AVX-512, 1 AVX2 with FMA, 0 none (BLAS only).
SMALL_GEMM_LEVEL = cgru_cpu_gemm_level()


cdef struct Sizes:
    # One call's sizes and choices; n_in is I (a C macro), slots_* the rings' lengths.
    Py_ssize_t T, B, n_in, H, slots_g, slots_h, slots_n
    bint reset_after, weights_t
    int level


cdef inline Py_ssize_t row_step(const Sizes* s, Py_ssize_t K) noexcept nogil:
    """How far apart W's gate rows are in memory, W (G, K): K as itself, 1 transposed."""
    return 1 if s.weights_t else K


cdef inline Py_ssize_t ld_of(const Sizes* s, Py_ssize_t K) noexcept nogil:
    """W (G, K)'s leading dimension: K as itself, G transposed."""
    return 3 * s.H if s.weights_t else K


cdef inline floating* packed_rows_t(const Sizes* s, Py_ssize_t g0, Py_ssize_t n, Py_ssize_t K,
                                    const floating* w) noexcept nogil:
    """Packed W[g0:g0 + n]^T (K, n), the forward's operand; NULL for BLAS."""
    return packed_copy(s.level, K, n, w + g0 * row_step(s, K), ld_of(s, K), not s.weights_t)


cdef inline floating* packed_rows(const Sizes* s, Py_ssize_t g0, Py_ssize_t n, Py_ssize_t K,
                                  const floating* w) noexcept nogil:
    """Packed W[g0:g0 + n] (n, K), the backward's operand; NULL for BLAS."""
    return packed_copy(s.level, n, K, w + g0 * row_step(s, K), ld_of(s, K), s.weights_t)


cdef inline void times_rows(const Sizes* s, Py_ssize_t M, Py_ssize_t g0, Py_ssize_t n,
                            Py_ssize_t K, const floating* a, Py_ssize_t lda, const floating* w,
                            const floating* packed, floating beta, floating* c,
                            Py_ssize_t ldc) noexcept nogil:
    """c (M, K) := a (M, n) @ W[g0:g0 + n] + beta * c, W (G, K) in the call's layout."""
    product(s.level, M, K, n, a, lda, w + g0 * row_step(s, K), ld_of(s, K), s.weights_t,
            packed, beta, c, ldc)


cdef void free_packed(floating** packed, int count) noexcept nogil:
    """Frees packed[:count] and sets them NULL."""
    cdef int i
    for i in range(count):
        free(packed[i])
        packed[i] = NULL


cdef void add_valid_rows(Py_ssize_t B, Py_ssize_t H, floating* a, const floating* b,
                         const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil:
    """a (B, H) += b (B, H) in the rows whose step t is valid."""
    cdef Py_ssize_t i, j
    for i in range(B):
        if lengths == NULL or t < lengths[i]:
            for j in range(H):
                a[i * H + j] += b[i * H + j]


cdef void column_sums(Py_ssize_t rows, Py_ssize_t cols, const floating* a, Py_ssize_t lda,
                      floating* out, bint add) noexcept nogil:
    """out (cols,) := a (rows, cols; leading dimension lda) summed over its rows (+ out when
    `add`)."""
    cdef Py_ssize_t i, j
    if not add:
        for j in range(cols):
            out[j] = 0
    for i in range(rows):
        for j in range(cols):
            out[j] += a[i * lda + j]


# ---------------------------------------------------------------------------------------------
# Forward: the loop over T steps for batch rows b0:b1.
# ---------------------------------------------------------------------------------------------
cdef void forward_rows(const Sizes* s, Py_ssize_t b0, Py_ssize_t b1, const floating* x,
                       const floating* w_ih, const floating* w_hh, floating** packed,
                       const floating* b_ih, const floating* b_hh, const Py_ssize_t* lengths,
                       floating* gates, floating* gates_h, floating* hidden_n, floating* hs,
                       floating* y) noexcept nogil:
    """packed: W_ih^T, W_hh^T's first and second column block (recurrent_step), or NULLs."""
    cdef Py_ssize_t T = s.T, B = s.B, I = s.n_in, H = s.H, G = 3 * H, rows = b1 - b0
    cdef Py_ssize_t t, k, steps, ld_ih = ld_of(s, I)
    if lengths != NULL:
        lengths = lengths + b0
    for t in range(T):
        if t % s.slots_g == 0:
            steps = min(s.slots_g, T - t)
            if rows == B:
                # gates[:steps] = x[t:t + steps] @ W_ih^T: the input projection of the next
                # `steps` steps (all T in training) in one product, (steps B, I) @ (I, G)
                product(s.level, steps * B, G, I, x + t * B * I, I, w_ih, ld_ih,
                        not s.weights_t, packed[0], 0, gates, G)
            else:
                # a part's rows are not contiguous across steps: one product a step
                for k in range(steps):
                    product(s.level, rows, G, I, x + ((t + k) * B + b0) * I, I, w_ih, ld_ih,
                            not s.weights_t, packed[0], 0, gates + (k * B + b0) * G, G)
        recurrent_step(s.level, rows, H, s.reset_after, gates + ((t % s.slots_g) * B + b0) * G,
                       gates_h + b0 * G, w_hh, s.weights_t, packed[1], packed[2], b_ih, b_hh,
                       hs + ((t % s.slots_h) * B + b0) * H,
                       hidden_n + ((t % s.slots_n) * B + b0) * H,
                       hs + (((t + 1) % s.slots_h) * B + b0) * H, y + (t * B + b0) * H,
                       lengths, t)


def forward(const floating[:, :, ::1] x, const floating[:, ::1] w_ih,
            const floating[:, ::1] w_hh, bint weights_t, const floating[::1] b_ih,
            const floating[::1] b_hh, const Py_ssize_t[::1] lengths, bint reset_after,
            floating[:, :, ::1] gates, floating[:, :, ::1] hidden_n, floating[:, :, ::1] hs,
            floating[:, ::1] gates_h, floating[:, :, ::1] y, int level=0, int parts=1):
    """Runs the GRU over all T steps of x (T, B, I), T >= 1 and B >= 1.

    w_ih, w_hh: (G, I), (G, H), or (I, G), (H, G) when weights_t. lengths is (B,) or empty.
    Outputs: gates (S_g, B, G) r, z, n; hidden_n (S_n, B, H); hs (S_h, B, H) with hs[0] = h0
    filled in by the caller; y (T, B, H). Each is a ring of slots, step t in slot t % S:
    S_g = S_n = T, S_h = T + 1 keep every step (training); in inference S_h = 2, S_n = 1 and
    the input projection runs S_g steps at a time. gates_h (B, G) is scratch. The final state
    is hs[T % S_h]. level: the small GEMM's form (0: BLAS); parts > 1 (with level > 0): the
    batch cut into that many parts, one OpenMP thread each.
    """
    cdef Sizes s
    s.T, s.B, s.n_in, s.H = x.shape[0], x.shape[1], x.shape[2], hs.shape[2]
    s.slots_g, s.slots_h, s.slots_n = gates.shape[0], hs.shape[0], hidden_n.shape[0]
    s.reset_after, s.weights_t, s.level = reset_after, weights_t, level
    cdef Py_ssize_t H = s.H, G = 3 * H
    cdef const floating* w_hh_p = &w_hh[0, 0]
    cdef floating* packed[3]
    cdef int part
    packed[0] = packed_rows_t(&s, 0, G, s.n_in, &w_ih[0, 0])
    packed[1] = packed_rows_t(&s, 0, G if reset_after else 2 * H, H, w_hh_p)
    packed[2] = packed_rows_t(&s, 2 * H, H, H, w_hh_p) if not reset_after else NULL
    if packed[0] == NULL or packed[1] == NULL or (not reset_after and packed[2] == NULL):
        free_packed(packed, 3)
        s.level, parts = 0, 1       # BLAS, which threads itself (or out of memory)
    parts = max(1, min(parts, <int> s.B))
    cdef const Py_ssize_t* lengths_p = &lengths[0] if lengths.shape[0] > 0 else NULL
    with nogil:
        if parts == 1:
            forward_rows(&s, 0, s.B, &x[0, 0, 0], &w_ih[0, 0], w_hh_p, packed, &b_ih[0],
                         &b_hh[0], lengths_p, &gates[0, 0, 0], &gates_h[0, 0],
                         &hidden_n[0, 0, 0], &hs[0, 0, 0], &y[0, 0, 0])
        else:
            for part in prange(parts, num_threads=parts, schedule="static", chunksize=1):
                forward_rows(&s, part_start(s.B, parts, part), part_start(s.B, parts, part + 1),
                             &x[0, 0, 0], &w_ih[0, 0], w_hh_p, packed, &b_ih[0], &b_hh[0],
                             lengths_p, &gates[0, 0, 0], &gates_h[0, 0], &hidden_n[0, 0, 0],
                             &hs[0, 0, 0], &y[0, 0, 0])
        free_packed(packed, 3)


# ---------------------------------------------------------------------------------------------
# Backward: the loop over T steps in reverse for batch rows b0:b1, each step differentiating
# recurrent_step (the cell's lines are quoted in _cell_template.h's backward functions).
# ---------------------------------------------------------------------------------------------
cdef void backward_rows(const Sizes* s, Py_ssize_t b0, Py_ssize_t b1, const floating* dy,
                        const floating* w_ih, const floating* w_hh, floating** packed,
                        const floating* gates, const floating* hidden_n, const floating* hs,
                        const Py_ssize_t* lengths, floating* dh, floating* d_gates,
                        floating* d_aux, floating* dx) noexcept nogil:
    """packed: W_hh's rows [:G] or [:2H], its rows [2H:], W_ih's rows [:2H] or all, its rows
    [2H:], or NULLs. dx (T, B, I) is written here, a step at a time, when not NULL."""
    cdef Py_ssize_t T = s.T, B = s.B, I = s.n_in, H = s.H, G = 3 * H, rows = b1 - b0, t
    cdef floating* dh_next = dh + b0 * H
    cdef floating* dh_prev = dh + (B + b0) * H
    cdef floating* swap
    cdef floating* dg_t
    cdef floating* d_aux_t
    cdef floating* dx_t
    cdef const floating* gates_t
    cdef const floating* h_prev
    if lengths != NULL:
        lengths = lengths + b0
    for t in range(T - 1, -1, -1):
        if dy != NULL:
            # dh_next += dy[t] where step t is valid (y is 0, a constant, past the length)
            add_valid_rows(rows, H, dh_next, dy + (t * B + b0) * H, lengths, t)
        dg_t = d_gates + (t * B + b0) * G
        gates_t = gates + (t * B + b0) * G
        h_prev = hs + (t * B + b0) * H
        d_aux_t = d_aux + (t * B + b0) * H if s.reset_after else d_aux + b0 * H
        if s.reset_after:
            cell_backward_reset_after(rows, H, dg_t, d_aux_t, dh_prev, dh_next, gates_t,
                                      hidden_n + (t * B + b0) * H, h_prev, lengths, t)
            # forward: gates_h = h_prev @ W_hh^T, so dh_prev += d_gates[t] @ W_hh, (B, G) @ (G, H)
            times_rows(s, rows, 0, G, H, dg_t, G, w_hh, packed[0], 1, dh_prev, H)
        else:
            cell_backward_zn(rows, H, dg_t, dh_prev, dh_next, gates_t, h_prev, lengths, t)
            # forward: gates_h[:, 2H:] = (r * h_prev) @ W_hh[2H:]^T, so
            # d_rh = dn_pre @ W_hh[2H:], (B, H) @ (H, H)
            times_rows(s, rows, 2 * H, H, H, dg_t + 2 * H, G, w_hh, packed[1], 0, d_aux_t, H)
            cell_backward_r(rows, H, dg_t, dh_prev, d_aux_t, gates_t, h_prev, lengths, t)
            # forward: gates_h[:, :2H] = h_prev @ W_hh[:2H]^T, so
            # dh_prev += d_gates[t][:, :2H] @ W_hh[:2H], (B, 2H) @ (2H, H)
            times_rows(s, rows, 0, 2 * H, H, dg_t, G, w_hh, packed[0], 1, dh_prev, H)
        if dx != NULL:
            dx_t = dx + (t * B + b0) * I
            if s.reset_after:
                # forward: gates = x @ W_ih^T, with the n block's gradient in d_aux, so
                # dx[t] = d_gates[t][:, :2H] @ W_ih[:2H] + d_aux[t] @ W_ih[2H:]
                times_rows(s, rows, 0, 2 * H, I, dg_t, G, w_ih, packed[2], 0, dx_t, I)
                times_rows(s, rows, 2 * H, H, I, d_aux_t, H, w_ih, packed[3], 1, dx_t, I)
            else:
                # dx[t] = d_gates[t] @ W_ih, (B, G) @ (G, I)
                times_rows(s, rows, 0, G, I, dg_t, G, w_ih, packed[2], 0, dx_t, I)
        swap = dh_next
        dh_next = dh_prev
        dh_prev = swap


# ---------------------------------------------------------------------------------------------
# The weight gradients, after the backward loop, as whole-sequence products:
#   forward gates = x @ W_ih^T + b_ih, gates_h = h_prev @ W_hh^T + b_hh (per gate block), so
#   dW = D^T @ X (PyTorch's layout) or dW^T = X^T @ D (transposed), db = D's column sums,
# for each (D, X, rows of W) in `weight_jobs`. With the small GEMM (level > 0) each part of
# the threads takes its share of every job's output rows, in blocks of WEIGHT_KB rows of M,
# packing each block of the right operand into scratch of its own; else BLAS, threaded as it
# is set.
# ---------------------------------------------------------------------------------------------
cdef enum:
    WEIGHT_KB = 512         # rows of M a block: measured 100 GFLOP/s (256-1024 within 3%)


cdef void weight_job(const Sizes* s, int part, int parts, Py_ssize_t g0, Py_ssize_t n,
                     Py_ssize_t K, const floating* d, Py_ssize_t ldd, const floating* src,
                     floating* dw, floating* bias, floating* scratch) noexcept nogil:
    """dW[g0:g0 + n] (n, K) = d^T @ src, d (M, n; leading dimension ldd), src (M, K), in the
    weights' layout, and bias (n,) = d's column sums unless NULL: part `part` of `parts`
    (BLAS: part 0 of 1, scratch unused)."""
    cdef Py_ssize_t M = s.T * s.B, ld = ld_of(s, K), block, k0, kb, c0, c1, out_rows
    cdef floating* out = dw + g0 * row_step(s, K)
    cdef floating beta
    if s.level == 0:
        if s.weights_t:     # dW^T[:, g0:g0 + n] = src^T @ d, (K, M) @ (M, n)
            gemm(True, False, K, n, M, 1, src, K, d, ldd, 0, out, ld)
        else:               # dW[g0:g0 + n] = d^T @ src, (n, M) @ (M, K)
            gemm(True, False, n, K, M, 1, d, ldd, src, K, 0, out, ld)
        if bias != NULL:
            column_sums(M, n, d, ldd, bias, False)
        return
    out_rows = K if s.weights_t else n
    c0, c1 = part_start(out_rows, parts, part), part_start(out_rows, parts, part + 1)
    for block in range((M + WEIGHT_KB - 1) // WEIGHT_KB):
        k0 = block * WEIGHT_KB
        kb = min(<Py_ssize_t> WEIGHT_KB, M - k0)
        beta = 0 if k0 == 0 else 1
        if c1 > c0 and s.weights_t:
            # dW^T[c0:c1, g0:g0 + n] (+)= src[k0:k0 + kb, c0:c1]^T @ d[k0:k0 + kb]
            pack(s.level, kb, n, d + k0 * ldd, ldd, False, scratch)
            product_ta(s.level, c1 - c0, n, kb, src + k0 * K + c0, K, scratch, beta,
                       out + c0 * ld, ld)
        elif c1 > c0:
            # dW[g0 + c0:g0 + c1] (+)= d[k0:k0 + kb, c0:c1]^T @ src[k0:k0 + kb]
            pack(s.level, kb, K, src + k0 * K, K, False, scratch)
            product_ta(s.level, c1 - c0, K, kb, d + k0 * ldd + c0, ldd, scratch, beta,
                       out + c0 * ld, ld)
        c0, c1 = part_start(n, parts, part), part_start(n, parts, part + 1)
        if bias != NULL and c1 > c0:
            column_sums(kb, c1 - c0, d + k0 * ldd + c0, ldd, bias + c0, k0 > 0)
        c0, c1 = part_start(out_rows, parts, part), part_start(out_rows, parts, part + 1)


cdef void weight_jobs(const Sizes* s, int part, int parts, const floating* x,
                      const floating* hs, const floating* hidden_n, const floating* d_gates,
                      const floating* d_aux, floating* dw_ih, floating* dw_hh, floating* db_ih,
                      floating* db_hh, floating* scratch) noexcept nogil:
    """Every weight gradient of `backward` (part `part` of `parts`): X = x as (M, I),
    H_prev = hs[:T] as (M, H), D = d_gates as (M, G)."""
    cdef Py_ssize_t I = s.n_in, H = s.H, G = 3 * H
    if s.reset_after:
        # dW_hh = D^T @ H_prev; dW_ih[:2H] = D[:, :2H]^T @ X; dW_ih[2H:] = d_aux^T @ X
        weight_job(s, part, parts, 0, G, H, d_gates, G, hs, dw_hh, db_hh, scratch)
        weight_job(s, part, parts, 0, 2 * H, I, d_gates, G, x, dw_ih, db_ih, scratch)
        weight_job(s, part, parts, 2 * H, H, I, d_aux, H, x, dw_ih, db_ih + 2 * H, scratch)
    else:
        # dW_hh[:2H] = D[:, :2H]^T @ H_prev; dW_hh[2H:] = D[:, 2H:]^T @ (r * H_prev);
        # dW_ih = D^T @ X; db_hh = db_ih (both biases add to the same pre-activations)
        weight_job(s, part, parts, 0, 2 * H, H, d_gates, G, hs, dw_hh, NULL, scratch)
        weight_job(s, part, parts, 2 * H, H, H, d_gates + 2 * H, G, hidden_n, dw_hh, NULL,
                   scratch)
        weight_job(s, part, parts, 0, G, I, d_gates, G, x, dw_ih, db_ih, scratch)


cdef void weight_gradients(Sizes* s, int parts, const floating* x, const floating* hs,
                           const floating* hidden_n, const floating* d_gates,
                           const floating* d_aux, floating* dw_ih, floating* dw_hh,
                           floating* db_ih, floating* db_hh) noexcept nogil:
    """weight_jobs on `parts` threads with the small GEMM (s.level > 0), else on BLAS."""
    cdef Py_ssize_t per_part = packed_size(s.level, WEIGHT_KB, max(s.n_in, 3 * s.H),
                                           sizeof(floating)) if s.level > 0 else 0
    cdef floating* scratch = NULL
    cdef int part
    if s.level > 0:
        scratch = <floating*> malloc(parts * per_part * sizeof(floating))
        if scratch == NULL:
            s.level = 0                 # out of memory: BLAS
    if s.level == 0 or parts == 1:
        weight_jobs(s, 0, 1, x, hs, hidden_n, d_gates, d_aux, dw_ih, dw_hh, db_ih, db_hh,
                    scratch)
    else:
        for part in prange(parts, num_threads=parts, schedule="static", chunksize=1):
            weight_jobs(s, part, parts, x, hs, hidden_n, d_gates, d_aux, dw_ih, dw_hh, db_ih,
                        db_hh, scratch + part * per_part)
    free(scratch)
    if not s.reset_after:
        memcpy(db_hh, db_ih, 3 * s.H * sizeof(floating))


def backward(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
             const floating[:, ::1] w_ih, const floating[:, ::1] w_hh, bint weights_t,
             const floating[:, :, ::1] gates, const floating[:, :, ::1] hidden_n,
             const floating[:, :, ::1] hs, const Py_ssize_t[::1] lengths, bint reset_after,
             floating[:, :, ::1] dh, floating[:, :, ::1] d_gates, floating[:, :, ::1] d_aux,
             floating[:, :, ::1] dx, floating[:, ::1] dw_ih, floating[:, ::1] dw_hh,
             floating[::1] db_ih, floating[::1] db_hh, int level=0, int parts=1):
    """Backward through time of `forward` run with training slots (S_h = T + 1, S_n = T).

    dy (T, B, H), or (0, B, H) for "no gradient from y". Weights as in `forward`. dh (2, B, H):
    dh[0] = dL/dh_n filled in by the caller, dh[1] scratch; on return dh[T % 2] = dL/dh0.
    Scratch kept until the whole-sequence products after the loop: d_gates (T, B, G), the gate
    gradients wrt W_h h + b_h; d_aux: reset_after=True, (T, B, H), dn_pre (the n block of the
    gradient wrt W_i x + b_i); reset_after=False, (1, B, H), d_rh of the current step.
    Outputs dx (or (0, B, I): no dx computed), dw_ih, dw_hh (in the weights' layout), db_ih,
    db_hh are overwritten. level, parts: as in `forward`.
    """
    cdef Sizes s
    s.T, s.B, s.n_in, s.H = x.shape[0], x.shape[1], x.shape[2], hs.shape[2]
    s.slots_g, s.slots_h, s.slots_n = s.T, s.T + 1, s.T
    s.reset_after, s.weights_t, s.level = reset_after, weights_t, level
    cdef Py_ssize_t I = s.n_in, H = s.H, G = 3 * H, M = s.T * s.B
    cdef const floating* w_ih_p = &w_ih[0, 0]
    cdef const floating* w_hh_p = &w_hh[0, 0]
    cdef bint need_dx = dx.shape[0] > 0
    cdef floating* packed[4]
    cdef int part
    packed[0] = packed_rows(&s, 0, G if reset_after else 2 * H, H, w_hh_p)
    packed[1] = packed_rows(&s, 2 * H, H, H, w_hh_p) if not reset_after else NULL
    packed[2] = packed_rows(&s, 0, 2 * H if reset_after else G, I, w_ih_p) if need_dx else NULL
    packed[3] = packed_rows(&s, 2 * H, H, I, w_ih_p) if need_dx and reset_after else NULL
    if packed[0] == NULL or (not reset_after and packed[1] == NULL):
        free_packed(packed, 4)
        s.level, parts = 0, 1           # BLAS, which threads itself (or out of memory)
    cdef int loop_level = s.level
    cdef bint dx_in_loop = (need_dx and s.level > 0 and packed[2] != NULL
                            and (not reset_after or packed[3] != NULL))
    parts = max(1, min(parts, <int> s.B))
    cdef const floating* dy_p = &dy[0, 0, 0] if dy.shape[0] > 0 else NULL
    cdef const Py_ssize_t* lengths_p = &lengths[0] if lengths.shape[0] > 0 else NULL
    cdef floating* dx_p = &dx[0, 0, 0] if need_dx else NULL
    cdef floating* d_gates_p = &d_gates[0, 0, 0]
    cdef floating* d_aux_p = &d_aux[0, 0, 0]
    with nogil:
        if parts == 1:
            backward_rows(&s, 0, s.B, dy_p, w_ih_p, w_hh_p, packed, &gates[0, 0, 0],
                          &hidden_n[0, 0, 0], &hs[0, 0, 0], lengths_p, &dh[0, 0, 0], d_gates_p,
                          d_aux_p, dx_p if dx_in_loop else NULL)
        else:
            for part in prange(parts, num_threads=parts, schedule="static", chunksize=1):
                backward_rows(&s, part_start(s.B, parts, part),
                              part_start(s.B, parts, part + 1), dy_p, w_ih_p, w_hh_p, packed,
                              &gates[0, 0, 0], &hidden_n[0, 0, 0], &hs[0, 0, 0], lengths_p,
                              &dh[0, 0, 0], d_gates_p, d_aux_p, dx_p if dx_in_loop else NULL)
        free_packed(packed, 4)
        if need_dx and not dx_in_loop:
            # dx = D[:, :2H] @ W_ih[:2H] + d_aux @ W_ih[2H:] (reset_after), else D @ W_ih
            s.level = 0
            if reset_after:
                times_rows(&s, M, 0, 2 * H, I, d_gates_p, G, w_ih_p, NULL, 0, dx_p, I)
                times_rows(&s, M, 2 * H, H, I, d_aux_p, H, w_ih_p, NULL, 1, dx_p, I)
            else:
                times_rows(&s, M, 0, G, I, d_gates_p, G, w_ih_p, NULL, 0, dx_p, I)
        s.level = loop_level
        weight_gradients(&s, parts, &x[0, 0, 0], &hs[0, 0, 0], &hidden_n[0, 0, 0], d_gates_p,
                         d_aux_p, &dw_ih[0, 0], &dw_hh[0, 0], &db_ih[0], &db_hh[0])

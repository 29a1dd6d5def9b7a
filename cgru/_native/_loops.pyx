"""GRU forward and backward through time: typed loops over the per-step products and cells.

Layering (scikit-learn style): the cell (_cell.pxd over _cell_template.h) does one step's
elementwise work on raw pointers; the products go through one interface (_gemm.pxd: the small
GEMM at the plan's level, or BLAS), reading the weights in either layout (_weights.pxd, which
also holds the weight gradients); the batch is cut over OpenMP threads (_parts.pxd); these
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
Masks: the same with a limit per step, valid[t, b] = T (step valid) or 0 (masked), read through
the cell's test t < limit; with `hold` a masked step's y repeats y of the step before (0 at
t = 0: Keras's RNN), and backward carries that y's gradient to the step before.
Recurrent dropout (Keras 3's GRUCell with recurrent_dropout, implementation 1): one mask per
gate m_r, m_z, m_n (B, H), the same at every step, multiplies h in that gate's recurrent
product only; the state update z * h + (1 - z) * n reads h itself:
    gh_r = (h * m_r) W_hr^T, gh_z = (h * m_z) W_hz^T,
    gh_n = (h * m_n) W_hn^T (reset_after) or W_hn (r * (h * m_n)) (reset_after=False).
Forward keeps hd[g, t] = h_t * m_g (3, T, B, H) for the weight gradients; backward multiplies
each gate's dL/d(h * m_g) by m_g before adding it to dL/dh.
Input dropout with a mask per gate (the same Keras cell with dropout too): x comes as
(3, T, B, I), x * d_g for gate g, and gate g's input product reads x[g]; dW_ih[g] reads it
too, and the caller computes dx = sum_g (dL/dgx_g @ W_ig) * d_g.
Activations: tanh and sigmoid above are the default codes of `activation` (n) and
`recurrent_activation` (r, z); the cell computes any of ACTIVATION_CODES natively.

Saved by forward for backward: gates (T, B, G) holding r, z, n (written over the input
projection, dead once its step is done), hidden_n (T, B, H), hs (T + 1, B, H), hs[0] = h0,
and, only for activations whose derivative needs their input (gelu, silu), pre (T, B, P),
P = pre_width(H, activation, recurrent_activation).
In inference the same loop runs with hs, hidden_n and gates as rings of 2, 1 and a few steps
(slot = t % slots), and the input is projected a chunk of steps at a time.
"""
from libc.stdlib cimport free, malloc
from cython cimport floating
from cython.parallel cimport prange
cimport numpy as cnp

from cgru._native._cell cimport (
    CGRU_ACT_ELU, CGRU_ACT_GELU, CGRU_ACT_HARD_SIGMOID, CGRU_ACT_LINEAR, CGRU_ACT_RELU,
    CGRU_ACT_SELU, CGRU_ACT_SIGMOID, CGRU_ACT_SILU, CGRU_ACT_SOFTSIGN, CGRU_ACT_TANH,
    CGRU_PRE_WIDTH, cell_backward_r, cell_backward_reset_after, cell_backward_zn,
    cell_forward_n, cell_forward_reset_after, cell_forward_rz, recurrent_step)
from cgru._native._gemm cimport cgru_cpu_gemm_level, product
from cgru._native._parts cimport part_start
from cgru._native._weights cimport (
    Sizes, ld_of, packed_rows, packed_rows_t, times_rows, weight_gradients)

cdef extern from *:
    """
    #ifndef CGRU_DEBUG_CHECKS
    #define CGRU_DEBUG_CHECKS 0
    #endif
    """
    int CGRU_DEBUG_CHECKS

cnp.import_array()

# True when built with CGRU_DEBUG=1 (bounds and initialisation checks in the loops).
DEBUG_CHECKS = bool(CGRU_DEBUG_CHECKS)
# The small GEMM's best form on this CPU: 2 AVX-512, 1 AVX2 with FMA, 0 none (BLAS only).
SMALL_GEMM_LEVEL = cgru_cpu_gemm_level()
# The activations the cell computes, by Keras's names: the codes `forward`, `backward` and
# the one-step kernel take.
ACTIVATION_CODES = {
    "tanh": CGRU_ACT_TANH, "sigmoid": CGRU_ACT_SIGMOID, "hard_sigmoid": CGRU_ACT_HARD_SIGMOID,
    "relu": CGRU_ACT_RELU, "linear": CGRU_ACT_LINEAR, "softsign": CGRU_ACT_SOFTSIGN,
    "elu": CGRU_ACT_ELU, "selu": CGRU_ACT_SELU, "gelu": CGRU_ACT_GELU, "silu": CGRU_ACT_SILU}


def pre_width(Py_ssize_t H, int activation, int recurrent_activation):
    """Numbers per batch row and step that training keeps of the pre-activations (0: none)."""
    return CGRU_PRE_WIDTH(H, activation, recurrent_activation)


cdef floating* pre_rows(const Sizes* s, floating* pre, Py_ssize_t row) noexcept nogil:
    """Row `row` (of T * B) of pre (T, B, P), or NULL when no pre-activations are kept."""
    return NULL if pre == NULL else pre + row * CGRU_PRE_WIDTH(s.H, s.act, s.rec)


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


cdef void add_held_rows(Py_ssize_t B, Py_ssize_t H, floating* dh, const floating* dy,
                        floating* carry, const Py_ssize_t* limits, Py_ssize_t t) noexcept nogil:
    """Backward of `hold_rows`: on a valid step dh (B, H) += dy[t] + carry, carry = 0; on a
    masked one carry += dy[t] (its y was the step before's)."""
    cdef Py_ssize_t i, j
    for i in range(B):
        if t < limits[i]:
            for j in range(H):
                dh[i * H + j] += dy[i * H + j] + carry[i * H + j]
                carry[i * H + j] = 0
        else:
            for j in range(H):
                carry[i * H + j] += dy[i * H + j]


cdef void hold_rows(Py_ssize_t B, Py_ssize_t H, floating* y, const floating* y_prev,
                    const Py_ssize_t* limits, Py_ssize_t t) noexcept nogil:
    """y (B, H) := y_prev (B, H), the step before's, in the rows masked at step t (the cell
    wrote 0 there, which stays at t = 0: y_prev NULL)."""
    cdef Py_ssize_t i, j
    if y_prev == NULL:
        return
    for i in range(B):
        if not t < limits[i]:
            for j in range(H):
                y[i * H + j] = y_prev[i * H + j]


cdef void drop_state(Py_ssize_t B, Py_ssize_t H, Py_ssize_t ld_m, const floating* h,
                     const floating* m, floating* hd, Py_ssize_t ld_d) noexcept nogil:
    """hd[g] (B, H) := h (B, H) * m[g] for the gates g = 0, 1, 2; m[g] starts g * ld_m after m,
    hd[g] g * ld_d after hd."""
    cdef Py_ssize_t g, i
    for g in range(3):
        for i in range(B * H):
            hd[g * ld_d + i] = h[i] * m[g * ld_m + i]


cdef void add_masked(Py_ssize_t B, Py_ssize_t H, floating* a, const floating* b,
                     const floating* m) noexcept nogil:
    """a (B, H) += b (B, H) * m (B, H)."""
    cdef Py_ssize_t i
    for i in range(B * H):
        a[i] += b[i] * m[i]


cdef void scale_rows(Py_ssize_t B, Py_ssize_t H, floating* a, const floating* m) noexcept nogil:
    """a (B, H) *= m (B, H)."""
    cdef Py_ssize_t i
    for i in range(B * H):
        a[i] *= m[i]


cdef void dropped_step(const Sizes* s, Py_ssize_t rows, floating* gates, floating* gates_h,
                       const floating* w_hh, floating** packed, const floating* b_ih,
                       const floating* b_hh, const floating* h_prev, const floating* m,
                       floating* hd, Py_ssize_t ld_d, floating* hidden_n, floating* h_next,
                       floating* y, const Py_ssize_t* limits, Py_ssize_t t,
                       floating* pre) noexcept nogil:
    """recurrent_step under recurrent dropout (see the top): m (3, B, H) the masks and hd
    (3, S, B, H) the dropped states, at this step's slot and this part's first row (gate
    strides B H and ld_d = S B H); packed: W_hh^T's column blocks r, z, n (packed[3:6]) or
    NULLs. pre: this step's rows of the kept pre-activations, or NULL."""
    cdef Py_ssize_t H = s.H, G = 3 * H, B = s.B, g
    cdef Py_ssize_t ld = G if s.weights_t else H, step = 1 if s.weights_t else H
    drop_state(rows, H, B * H, h_prev, m, hd, ld_d)
    # gates_h[:, g] = hd[g] @ W_hg^T, (B, H) @ (H, H), for g = r, z (and n with reset_after)
    for g in range(3 if s.reset_after else 2):
        product(s.level, rows, H, H, hd + g * ld_d, H, w_hh + g * H * step, ld,
                not s.weights_t, packed[3 + g], 0, gates_h + g * H, G)
    if s.reset_after:
        cell_forward_reset_after(rows, H, gates, gates_h, b_ih, b_hh, h_prev, hidden_n,
                                 h_next, y, limits, t, s.act, s.rec, pre)
    else:
        # hidden_n = r * hd[n]; gates_h[:, 2H:] = hidden_n @ W_hn^T; h' reads h_prev itself
        cell_forward_rz(rows, H, gates, gates_h, b_ih, b_hh, hd + 2 * ld_d, hidden_n, s.act,
                        s.rec, pre)
        product(s.level, rows, H, H, hidden_n, H, w_hh + 2 * H * step, ld, not s.weights_t,
                packed[5], 0, gates_h + 2 * H, G)
        cell_forward_n(rows, H, gates, gates_h, b_ih, b_hh, h_prev, h_next, y, limits, t,
                       s.act, s.rec, pre)


# ---------------------------------------------------------------------------------------------
# Forward: the loop over T steps for batch rows b0:b1.
# ---------------------------------------------------------------------------------------------
cdef void forward_rows(const Sizes* s, Py_ssize_t b0, Py_ssize_t b1, const floating* x,
                       const floating* w_ih, const floating* w_hh, floating** packed,
                       const floating* b_ih, const floating* b_hh, const Py_ssize_t* lengths,
                       bint per_step, bint hold, const floating* m, floating* hd,
                       Py_ssize_t slots_d, floating* gates, floating* gates_h,
                       floating* hidden_n, floating* hs, floating* y,
                       floating* pre) noexcept nogil:
    """packed: W_ih^T, W_hh^T's first and second column block (recurrent_step), its blocks
    r, z, n (dropped_step), W_ih^T's blocks r, z, n (s.x_gates), or NULLs. lengths: (B,),
    or (T, B) limits when per_step, or NULL; m (3, B, H) recurrent dropout masks and hd
    (3, slots_d, B, H), or NULL. pre: (T, B, P) (training, activations that keep their
    input), or NULL."""
    cdef Py_ssize_t T = s.T, B = s.B, I = s.n_in, H = s.H, G = 3 * H, rows = b1 - b0
    cdef Py_ssize_t t, k, g, steps, ld_ih = ld_of(s, I), step_ih = 1 if s.weights_t else I
    cdef const Py_ssize_t* limits = NULL
    cdef floating* y_t
    if lengths != NULL:
        lengths = lengths + b0
    if m != NULL:
        m = m + b0 * H
    for t in range(T):
        if t % s.slots_g == 0:
            steps = min(s.slots_g, T - t)
            if rows == B and not s.x_gates:
                # gates[:steps] = x[t:t + steps] @ W_ih^T: the input projection of the next
                # `steps` steps (all T in training) in one product, (steps B, I) @ (I, G)
                product(s.level, steps * B, G, I, x + t * B * I, I, w_ih, ld_ih,
                        not s.weights_t, packed[0], 0, gates, G)
            elif rows == B:
                # one input per gate: gates[:steps, :, g] = x[g, t:t + steps] @ W_ig^T
                for g in range(3):
                    product(s.level, steps * B, H, I, x + (g * T + t) * B * I, I,
                            w_ih + g * H * step_ih, ld_ih, not s.weights_t, packed[6 + g], 0,
                            gates + g * H, G)
            else:
                # a part's rows are not contiguous across steps: one product a step
                for k in range(steps):
                    if not s.x_gates:
                        product(s.level, rows, G, I, x + ((t + k) * B + b0) * I, I, w_ih,
                                ld_ih, not s.weights_t, packed[0], 0,
                                gates + (k * B + b0) * G, G)
                    else:
                        for g in range(3):
                            product(s.level, rows, H, I, x + ((g * T + t + k) * B + b0) * I,
                                    I, w_ih + g * H * step_ih, ld_ih, not s.weights_t,
                                    packed[6 + g], 0, gates + (k * B + b0) * G + g * H, G)
        limits = lengths + t * B if per_step else lengths
        y_t = y + (t * B + b0) * H
        if m == NULL:
            recurrent_step(s.level, rows, H, s.reset_after,
                           gates + ((t % s.slots_g) * B + b0) * G, gates_h + b0 * G, w_hh,
                           s.weights_t, packed[1], packed[2], b_ih, b_hh,
                           hs + ((t % s.slots_h) * B + b0) * H,
                           hidden_n + ((t % s.slots_n) * B + b0) * H,
                           hs + (((t + 1) % s.slots_h) * B + b0) * H, y_t, limits, t, s.act,
                           s.rec, pre_rows(s, pre, t * B + b0))
        else:
            dropped_step(s, rows, gates + ((t % s.slots_g) * B + b0) * G, gates_h + b0 * G,
                         w_hh, packed, b_ih, b_hh, hs + ((t % s.slots_h) * B + b0) * H, m,
                         hd + ((t % slots_d) * B + b0) * H, slots_d * B * H,
                         hidden_n + ((t % s.slots_n) * B + b0) * H,
                         hs + (((t + 1) % s.slots_h) * B + b0) * H, y_t, limits, t,
                         pre_rows(s, pre, t * B + b0))
        if hold and limits != NULL:
            # a masked step's y repeats the step before's (Keras's RNN; 0 before any valid step)
            hold_rows(rows, H, y_t, y_t - B * H if t > 0 else NULL, limits, t)


def forward(cnp.ndarray x, cnp.ndarray w_ih, cnp.ndarray w_hh, bint weights_t,
            cnp.ndarray b_ih, cnp.ndarray b_hh, cnp.ndarray lengths, bint reset_after,
            cnp.ndarray gates, cnp.ndarray hidden_n, cnp.ndarray hs, cnp.ndarray gates_h,
            cnp.ndarray y, int level=0, int parts=1, bint hold=False,
            cnp.ndarray rec_mask=None, cnp.ndarray hd=None, cnp.ndarray pre=None,
            int activation=CGRU_ACT_TANH, int recurrent_activation=CGRU_ACT_SIGMOID):
    """Runs the GRU over all T steps of x (T, B, I), T >= 1 and B >= 1; or of x (3, T, B, I),
    one input per gate r, z, n (input dropout with a mask per gate), gate g's input product
    reading x[g].

    Every array C-contiguous, the float ones of one dtype (the caller checked; plain arrays,
    not memoryviews: acquiring 13 typed memoryviews and dispatching on their dtype cost 20 us
    a call, more than a whole one-step GRU at (B, I, H) = (1, 32, 128)).
    w_ih, w_hh: (G, I), (G, H), or (I, G), (H, G) when weights_t. lengths: intp (B,), or
    (T, B) step limits (T: valid, 0: masked), or empty; hold: masked steps repeat y of the
    step before instead of writing 0. rec_mask (3, B, H) recurrent dropout masks (r, z, n)
    with hd (3, S_d, B, H) for the dropped states, or None.
    Outputs: gates (S_g, B, G) r, z, n; hidden_n (S_n, B, H); hs (S_h, B, H) with hs[0] = h0
    filled in by the caller; y (T, B, H). Each is a ring of slots, step t in slot t % S:
    S_g = S_n = S_d = T, S_h = T + 1 keep every step (training); in inference S_h = 2,
    S_n = S_d = 1 and the input projection runs S_g steps at a time. gates_h (B, G) is
    scratch. The final state is hs[T % S_h]. level: the small GEMM's form (0: BLAS);
    parts > 1 (with level > 0): the batch cut into that many parts, one OpenMP thread each.
    activation, recurrent_activation: codes (ACTIVATION_CODES); pre: (T, B, P) with
    P = pre_width(...) > 0 in training, where backward needs it, else None or empty.
    """
    cdef Sizes s
    s.x_gates = x.ndim == 4
    s.T, s.B, s.n_in, s.H = y.shape[0], y.shape[1], x.shape[x.ndim - 1], hs.shape[2]
    s.slots_g, s.slots_h, s.slots_n = gates.shape[0], hs.shape[0], hidden_n.shape[0]
    s.reset_after, s.weights_t, s.level = reset_after, weights_t, level
    s.act, s.rec = activation, recurrent_activation
    cdef const Py_ssize_t* lengths_p = <const Py_ssize_t*> (
        cnp.PyArray_DATA(lengths) if lengths.shape[0] > 0 else NULL)
    cdef bint per_step = lengths.ndim == 2
    cdef void* pre_p = cnp.PyArray_DATA(pre) if pre is not None and pre.size > 0 else NULL
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT64:
        forward_typed(&s, <const double*> cnp.PyArray_DATA(x), w_ih, w_hh, b_ih, b_hh,
                      lengths_p, per_step, hold, rec_mask, hd, gates, hidden_n, hs, gates_h, y,
                      parts, <double*> pre_p)
    else:
        forward_typed(&s, <const float*> cnp.PyArray_DATA(x), w_ih, w_hh, b_ih, b_hh,
                      lengths_p, per_step, hold, rec_mask, hd, gates, hidden_n, hs, gates_h, y,
                      parts, <float*> pre_p)


cdef void forward_typed(Sizes* s, const floating* x, cnp.ndarray w_ih, cnp.ndarray w_hh,
                        cnp.ndarray b_ih, cnp.ndarray b_hh, const Py_ssize_t* lengths,
                        bint per_step, bint hold, object rec_mask, object hd,
                        cnp.ndarray gates, cnp.ndarray hidden_n, cnp.ndarray hs,
                        cnp.ndarray gates_h, cnp.ndarray y, int parts, floating* pre):
    """`forward` for x's dtype: packs the weights (small GEMM), runs the parts."""
    cdef Py_ssize_t H = s.H, G = 3 * H, slots_d = 1
    cdef const floating* w_ih_p = <const floating*> cnp.PyArray_DATA(w_ih)
    cdef const floating* w_hh_p = <const floating*> cnp.PyArray_DATA(w_hh)
    cdef const floating* b_ih_p = <const floating*> cnp.PyArray_DATA(b_ih)
    cdef const floating* b_hh_p = <const floating*> cnp.PyArray_DATA(b_hh)
    cdef floating* gates_p = <floating*> cnp.PyArray_DATA(gates)
    cdef floating* gates_h_p = <floating*> cnp.PyArray_DATA(gates_h)
    cdef floating* hidden_n_p = <floating*> cnp.PyArray_DATA(hidden_n)
    cdef floating* hs_p = <floating*> cnp.PyArray_DATA(hs)
    cdef floating* y_p = <floating*> cnp.PyArray_DATA(y)
    cdef const floating* m_p = NULL
    cdef floating* hd_p = NULL
    cdef floating* packed[9]
    cdef int part, g
    cdef bint dropped = rec_mask is not None
    if dropped:
        m_p = <const floating*> cnp.PyArray_DATA(<cnp.ndarray> rec_mask)
        hd_p = <floating*> cnp.PyArray_DATA(<cnp.ndarray> hd)
        slots_d = (<cnp.ndarray> hd).shape[1]
    with nogil:
        for g in range(9):
            packed[g] = NULL
        if not s.x_gates:
            packed[0] = packed_rows_t(s, 0, G, s.n_in, w_ih_p)
        else:
            for g in range(3):
                packed[6 + g] = packed_rows_t(s, g * H, H, s.n_in, w_ih_p)
        if not dropped:
            packed[1] = packed_rows_t(s, 0, G if s.reset_after else 2 * H, H, w_hh_p)
            packed[2] = packed_rows_t(s, 2 * H, H, H, w_hh_p) if not s.reset_after else NULL
        else:
            for g in range(3):
                packed[3 + g] = packed_rows_t(s, g * H, H, H, w_hh_p)
        if (not s.x_gates and packed[0] == NULL) or (s.x_gates and (
                packed[6] == NULL or packed[7] == NULL or packed[8] == NULL)) or (
                not dropped and (packed[1] == NULL or (
                not s.reset_after and packed[2] == NULL))) or (dropped and (
                packed[3] == NULL or packed[4] == NULL or packed[5] == NULL)):
            free_packed(packed, 9)
            s.level, parts = 0, 1       # BLAS, which threads itself (or out of memory)
        parts = max(1, min(parts, <int> s.B))
        if parts == 1:
            forward_rows(s, 0, s.B, x, w_ih_p, w_hh_p, packed, b_ih_p, b_hh_p, lengths,
                         per_step, hold, m_p, hd_p, slots_d, gates_p, gates_h_p, hidden_n_p,
                         hs_p, y_p, pre)
        else:
            for part in prange(parts, num_threads=parts, schedule="static", chunksize=1):
                forward_rows(s, part_start(s.B, parts, part), part_start(s.B, parts, part + 1),
                             x, w_ih_p, w_hh_p, packed, b_ih_p, b_hh_p, lengths, per_step,
                             hold, m_p, hd_p, slots_d, gates_p, gates_h_p, hidden_n_p, hs_p,
                             y_p, pre)
        free_packed(packed, 9)


# ---------------------------------------------------------------------------------------------
# Backward: the loop over T steps in reverse for batch rows b0:b1, each step differentiating
# recurrent_step (the cell's lines are quoted in _cell_template.h's backward functions).
# ---------------------------------------------------------------------------------------------
cdef void backward_rows(const Sizes* s, Py_ssize_t b0, Py_ssize_t b1, const floating* dy,
                        const floating* w_ih, const floating* w_hh, floating** packed,
                        const floating* gates, const floating* hidden_n, const floating* hs,
                        const Py_ssize_t* lengths, bint per_step, bint hold, const floating* m,
                        floating* scratch, floating* dh, floating* d_gates, floating* d_aux,
                        floating* dx, const floating* pre) noexcept nogil:
    """packed: W_hh's rows [:G] or [:2H], its rows [2H:], W_ih's rows [:2H] or all, its rows
    [2H:], W_hh's rows [:H] and [H:2H] (recurrent dropout), or NULLs. dx (T, B, I) is written
    here, a step at a time, when not NULL. lengths, per_step, hold, m: as forward_rows;
    scratch (B, H): the carried dy of held outputs (hold), and (B, H) more for the products
    under recurrent dropout (m not NULL). pre: as forward_rows wrote it, or NULL."""
    cdef Py_ssize_t T = s.T, B = s.B, I = s.n_in, H = s.H, G = 3 * H, rows = b1 - b0, t, g, i
    cdef floating* dh_next = dh + b0 * H
    cdef floating* dh_prev = dh + (B + b0) * H
    cdef floating* carry = scratch + b0 * H
    cdef floating* tmp = scratch + (B + b0) * H
    cdef floating* swap
    cdef floating* dg_t
    cdef floating* d_aux_t
    cdef floating* dx_t
    cdef const floating* gates_t
    cdef const floating* h_prev
    cdef const Py_ssize_t* limits = NULL
    cdef const floating* pre_t
    if lengths != NULL:
        lengths = lengths + b0
    if m != NULL:
        m = m + b0 * H
    if hold:
        for i in range(rows * H):
            carry[i] = 0
    for t in range(T - 1, -1, -1):
        limits = lengths + t * B if per_step else lengths
        if dy != NULL:
            if hold and limits != NULL:
                # forward: y[t] = h' on valid steps, y[t - 1] (or 0) on masked ones
                add_held_rows(rows, H, dh_next, dy + (t * B + b0) * H, carry, limits, t)
            else:
                # dh_next += dy[t] where step t is valid (y is 0, a constant, past the length)
                add_valid_rows(rows, H, dh_next, dy + (t * B + b0) * H, limits, t)
        dg_t = d_gates + (t * B + b0) * G
        gates_t = gates + (t * B + b0) * G
        h_prev = hs + (t * B + b0) * H
        d_aux_t = d_aux + (t * B + b0) * H if s.reset_after else d_aux + b0 * H
        pre_t = pre_rows(s, <floating*> pre, t * B + b0)
        if s.reset_after:
            cell_backward_reset_after(rows, H, dg_t, d_aux_t, dh_prev, dh_next, gates_t,
                                      hidden_n + (t * B + b0) * H, h_prev, limits, t, s.act,
                                      s.rec, pre_t)
            if m == NULL:
                # forward: gates_h = h_prev @ W_hh^T, so dh_prev += d_gates[t] @ W_hh,
                # (B, G) @ (G, H)
                times_rows(s, rows, 0, G, H, dg_t, G, w_hh, packed[0], 1, dh_prev, H)
            else:
                # forward: gates_h[:, g] = (h_prev * m_g) @ W_hg^T, so
                # dh_prev += (d_gates[t][:, g] @ W_hg) * m_g for g = r, z, n
                for g in range(3):
                    times_rows(s, rows, g * H, H, H, dg_t + g * H, G, w_hh,
                               packed[4 + g] if g < 2 else packed[1], 0, tmp, H)
                    add_masked(rows, H, dh_prev, tmp, m + g * B * H)
        else:
            cell_backward_zn(rows, H, dg_t, dh_prev, dh_next, gates_t, h_prev, limits, t,
                             s.act, s.rec, pre_t)
            # forward: gates_h[:, 2H:] = (r * h_prev) @ W_hh[2H:]^T, so
            # d_rh = dn_pre @ W_hh[2H:], (B, H) @ (H, H)
            times_rows(s, rows, 2 * H, H, H, dg_t + 2 * H, G, w_hh, packed[1], 0, d_aux_t, H)
            if m != NULL:
                # forward: r * (h_prev * m_n): d(r * h_prev)/d(...) = d_rh * m_n, so that
                # cell_backward_r's dr and its dh_prev += d_rh * r stay right with h_prev
                scale_rows(rows, H, d_aux_t, m + 2 * B * H)
            cell_backward_r(rows, H, dg_t, dh_prev, d_aux_t, gates_t, h_prev, limits, t,
                            s.act, s.rec, pre_t)
            if m == NULL:
                # forward: gates_h[:, :2H] = h_prev @ W_hh[:2H]^T, so
                # dh_prev += d_gates[t][:, :2H] @ W_hh[:2H], (B, 2H) @ (2H, H)
                times_rows(s, rows, 0, 2 * H, H, dg_t, G, w_hh, packed[0], 1, dh_prev, H)
            else:
                # forward: gates_h[:, g] = (h_prev * m_g) @ W_hg^T for g = r, z
                for g in range(2):
                    times_rows(s, rows, g * H, H, H, dg_t + g * H, G, w_hh, packed[4 + g], 0,
                               tmp, H)
                    add_masked(rows, H, dh_prev, tmp, m + g * B * H)
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


def backward(cnp.ndarray dy, cnp.ndarray x, cnp.ndarray w_ih, cnp.ndarray w_hh,
             bint weights_t, cnp.ndarray gates, cnp.ndarray hidden_n, cnp.ndarray hs,
             cnp.ndarray lengths, bint reset_after, cnp.ndarray dh, cnp.ndarray d_gates,
             cnp.ndarray d_aux, cnp.ndarray dx, cnp.ndarray dw_ih, cnp.ndarray dw_hh,
             cnp.ndarray db_ih, cnp.ndarray db_hh, int level=0, int parts=1, bint hold=False,
             cnp.ndarray rec_mask=None, cnp.ndarray hd=None, cnp.ndarray scratch=None,
             cnp.ndarray pre=None, int activation=CGRU_ACT_TANH,
             int recurrent_activation=CGRU_ACT_SIGMOID):
    """Backward through time of `forward` run with training slots (S_h = T + 1, S_n = T).

    Arrays as in `forward`. dy (T, B, H), or (0, B, H) for "no gradient from y".
    dh (2, B, H): dh[0] = dL/dh_n filled in by the caller, dh[1] scratch; on return
    dh[T % 2] = dL/dh0. Scratch kept until the whole-sequence products after the loop:
    d_gates (T, B, G), the gate gradients wrt W_h h + b_h; d_aux: reset_after=True,
    (T, B, H), dn_pre (the n block of the gradient wrt W_i x + b_i); reset_after=False,
    (1, B, H), d_rh of the current step. Outputs dx (or (0, B, I): no dx computed), dw_ih,
    dw_hh (in the weights' layout), db_ih, db_hh are overwritten. level, parts: as `forward`.
    lengths, hold, rec_mask and hd (S_d = T) as the forward had them; scratch (2, B, H) when
    hold or rec_mask is given. With x (3, T, B, I), one input per gate, dx must be (0, B, I):
    the caller computes it (each gate's part times that gate's input mask). pre and the
    activation codes: as `forward` wrote and took them.
    """
    cdef Sizes s
    s.x_gates = x.ndim == 4
    s.T, s.B, s.n_in, s.H = gates.shape[0], gates.shape[1], x.shape[x.ndim - 1], hs.shape[2]
    s.slots_g, s.slots_h, s.slots_n = s.T, s.T + 1, s.T
    s.reset_after, s.weights_t, s.level = reset_after, weights_t, level
    s.act, s.rec = activation, recurrent_activation
    cdef const Py_ssize_t* lengths_p = <const Py_ssize_t*> (
        cnp.PyArray_DATA(lengths) if lengths.shape[0] > 0 else NULL)
    cdef bint per_step = lengths.ndim == 2
    cdef void* pre_p = cnp.PyArray_DATA(pre) if pre is not None and pre.size > 0 else NULL
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT64:
        backward_typed(&s, <const double*> cnp.PyArray_DATA(x), dy, w_ih, w_hh, gates,
                       hidden_n, hs, lengths_p, per_step, hold, rec_mask, hd, scratch, dh,
                       d_gates, d_aux, dx, dw_ih, dw_hh, db_ih, db_hh, parts,
                       <const double*> pre_p)
    else:
        backward_typed(&s, <const float*> cnp.PyArray_DATA(x), dy, w_ih, w_hh, gates,
                       hidden_n, hs, lengths_p, per_step, hold, rec_mask, hd, scratch, dh,
                       d_gates, d_aux, dx, dw_ih, dw_hh, db_ih, db_hh, parts,
                       <const float*> pre_p)


cdef void backward_typed(Sizes* s, const floating* x, cnp.ndarray dy, cnp.ndarray w_ih,
                         cnp.ndarray w_hh, cnp.ndarray gates, cnp.ndarray hidden_n,
                         cnp.ndarray hs, const Py_ssize_t* lengths, bint per_step, bint hold,
                         object rec_mask, object hd, object scratch, cnp.ndarray dh,
                         cnp.ndarray d_gates, cnp.ndarray d_aux, cnp.ndarray dx,
                         cnp.ndarray dw_ih, cnp.ndarray dw_hh, cnp.ndarray db_ih,
                         cnp.ndarray db_hh, int parts, const floating* pre):
    """`backward` for x's dtype: packs the weights (small GEMM), runs the parts, then the
    whole-sequence products."""
    cdef Py_ssize_t I = s.n_in, H = s.H, G = 3 * H, M = s.T * s.B
    cdef bint reset_after = s.reset_after, need_dx = dx.shape[0] > 0
    cdef bint dropped = rec_mask is not None
    cdef const floating* dy_p = <const floating*> (
        cnp.PyArray_DATA(dy) if dy.shape[0] > 0 else NULL)
    cdef const floating* w_ih_p = <const floating*> cnp.PyArray_DATA(w_ih)
    cdef const floating* w_hh_p = <const floating*> cnp.PyArray_DATA(w_hh)
    cdef const floating* gates_p = <const floating*> cnp.PyArray_DATA(gates)
    cdef const floating* hidden_n_p = <const floating*> cnp.PyArray_DATA(hidden_n)
    cdef const floating* hs_p = <const floating*> cnp.PyArray_DATA(hs)
    cdef floating* dh_p = <floating*> cnp.PyArray_DATA(dh)
    cdef floating* d_gates_p = <floating*> cnp.PyArray_DATA(d_gates)
    cdef floating* d_aux_p = <floating*> cnp.PyArray_DATA(d_aux)
    cdef floating* dx_p = <floating*> (cnp.PyArray_DATA(dx) if need_dx else NULL)
    cdef floating* dw_ih_p = <floating*> cnp.PyArray_DATA(dw_ih)
    cdef floating* dw_hh_p = <floating*> cnp.PyArray_DATA(dw_hh)
    cdef floating* db_ih_p = <floating*> cnp.PyArray_DATA(db_ih)
    cdef floating* db_hh_p = <floating*> cnp.PyArray_DATA(db_hh)
    cdef const floating* m_p = NULL
    cdef const floating* hd_p = NULL
    cdef floating* scratch_p = NULL
    cdef floating* packed[6]
    cdef floating* dx_loop
    cdef int part, loop_level
    if dropped:
        m_p = <const floating*> cnp.PyArray_DATA(<cnp.ndarray> rec_mask)
        hd_p = <const floating*> cnp.PyArray_DATA(<cnp.ndarray> hd)
    if scratch is not None:
        scratch_p = <floating*> cnp.PyArray_DATA(<cnp.ndarray> scratch)
    with nogil:
        packed[0] = packed_rows(s, 0, G if reset_after else 2 * H, H, w_hh_p) if not dropped \
            else NULL
        packed[1] = packed_rows(s, 2 * H, H, H, w_hh_p) if not reset_after or dropped else NULL
        packed[2] = packed_rows(s, 0, 2 * H if reset_after else G, I, w_ih_p) if need_dx else NULL
        packed[3] = packed_rows(s, 2 * H, H, I, w_ih_p) if need_dx and reset_after else NULL
        packed[4] = packed_rows(s, 0, H, H, w_hh_p) if dropped else NULL
        packed[5] = packed_rows(s, H, H, H, w_hh_p) if dropped else NULL
        if (not dropped and packed[0] == NULL) or ((not reset_after or dropped)
                                                   and packed[1] == NULL) or (dropped and (
                packed[4] == NULL or packed[5] == NULL)):
            free_packed(packed, 6)
            s.level, parts = 0, 1           # BLAS, which threads itself (or out of memory)
        loop_level = s.level
        # dx a step at a time (small GEMM, while the step's gradients are in cache), else after
        dx_loop = dx_p if (need_dx and s.level > 0 and packed[2] != NULL
                           and (not reset_after or packed[3] != NULL)) else NULL
        parts = max(1, min(parts, <int> s.B))
        if parts == 1:
            backward_rows(s, 0, s.B, dy_p, w_ih_p, w_hh_p, packed, gates_p, hidden_n_p, hs_p,
                          lengths, per_step, hold, m_p, scratch_p, dh_p, d_gates_p, d_aux_p,
                          dx_loop, pre)
        else:
            for part in prange(parts, num_threads=parts, schedule="static", chunksize=1):
                backward_rows(s, part_start(s.B, parts, part), part_start(s.B, parts, part + 1),
                              dy_p, w_ih_p, w_hh_p, packed, gates_p, hidden_n_p, hs_p, lengths,
                              per_step, hold, m_p, scratch_p, dh_p, d_gates_p, d_aux_p,
                              dx_loop, pre)
        free_packed(packed, 6)
        if need_dx and dx_loop == NULL:
            # dx = D[:, :2H] @ W_ih[:2H] + d_aux @ W_ih[2H:] (reset_after), else D @ W_ih
            s.level = 0
            if reset_after:
                times_rows(s, M, 0, 2 * H, I, d_gates_p, G, w_ih_p, NULL, 0, dx_p, I)
                times_rows(s, M, 2 * H, H, I, d_aux_p, H, w_ih_p, NULL, 1, dx_p, I)
            else:
                times_rows(s, M, 0, G, I, d_gates_p, G, w_ih_p, NULL, 0, dx_p, I)
            s.level = loop_level
        weight_gradients(s, parts, x, hs_p, hd_p, hidden_n_p, d_gates_p, d_aux_p, dw_ih_p,
                         dw_hh_p, db_ih_p, db_hh_p)

"""GRU forward and backward through time: typed loops over BLAS GEMMs.

Layering (scikit-learn style): the cell kernels (cgru/_cell_template.h, C) do one time step's
elementwise work on raw pointers (no allocation, no Python); `forward` and `backward` here loop
over time, calling a GEMM for every product and the cell kernels in between; `StepKernel` runs
a single step; `cgru/functional.py` validates the inputs, allocates every array, chooses how
the products run (`_plan`) and calls these entry points. Nothing here checks shapes.

The products run either on BLAS (cgru/_blas.pxd) or, asked for with `small_gemm`, on the small
GEMM of cgru/_gemm_template.h with the weights packed once per call; then with `parts` > 1 the
batch is cut into parts, each running the whole time loop on a thread of its own
(`run_in_parts`), and the weight gradients after the backward loop are cut by gate rows.

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
states hs (T + 1, B, H), hs[0] = h0. In inference the same loop runs with hs, hidden_n and
gates as ring buffers of 2, 1 and a few steps (slot = t % slots): nothing per step is kept,
and the input is projected a chunk of steps at a time, so the gates stay in cache.
"""
from libc.math cimport exp
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cython cimport floating
cimport numpy as cnp

from cgru._blas cimport gemm

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


# ---------------------------------------------------------------------------------------------
# The cell: one time step's elementwise work, forward and backward side by side, in C
# (cgru/_cell_template.h, compiled for float and double, multiversioned for AVX-512/AVX2).
# The wrappers below pick the dtype's version; the arguments are documented in the template.
# ---------------------------------------------------------------------------------------------
cdef extern from "_cell.h":
    float cgru_expf(float v) noexcept nogil
    float cgru_sigmoidf(float v) noexcept nogil
    float cgru_tanhf(float v) noexcept nogil
    double cgru_sigmoid(double v) noexcept nogil
    double cgru_tanh(double v) noexcept nogil
    void cell_forward_reset_after_f32(
        Py_ssize_t B, Py_ssize_t H, float* gates, const float* gates_h, const float* b_ih,
        const float* b_hh, const float* h_prev, float* hidden_n, float* h_next, float* y,
        const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil
    void cell_forward_reset_after_f64(
        Py_ssize_t B, Py_ssize_t H, double* gates, const double* gates_h, const double* b_ih,
        const double* b_hh, const double* h_prev, double* hidden_n, double* h_next, double* y,
        const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil
    void cell_backward_reset_after_f32(
        Py_ssize_t B, Py_ssize_t H, float* d_gates_h, float* d_gates_x_n, float* dh_prev,
        const float* dh, const float* gates, const float* hidden_n, const float* h_prev,
        const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil
    void cell_backward_reset_after_f64(
        Py_ssize_t B, Py_ssize_t H, double* d_gates_h, double* d_gates_x_n, double* dh_prev,
        const double* dh, const double* gates, const double* hidden_n, const double* h_prev,
        const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil
    void cell_forward_rz_f32(
        Py_ssize_t B, Py_ssize_t H, float* gates, const float* gates_h, const float* b_ih,
        const float* b_hh, const float* h_prev, float* hidden_n) noexcept nogil
    void cell_forward_rz_f64(
        Py_ssize_t B, Py_ssize_t H, double* gates, const double* gates_h, const double* b_ih,
        const double* b_hh, const double* h_prev, double* hidden_n) noexcept nogil
    void cell_forward_n_f32(
        Py_ssize_t B, Py_ssize_t H, float* gates, const float* gates_h, const float* b_ih,
        const float* b_hh, const float* h_prev, float* h_next, float* y,
        const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil
    void cell_forward_n_f64(
        Py_ssize_t B, Py_ssize_t H, double* gates, const double* gates_h, const double* b_ih,
        const double* b_hh, const double* h_prev, double* h_next, double* y,
        const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil
    void cell_backward_zn_f32(
        Py_ssize_t B, Py_ssize_t H, float* d_gates, float* dh_prev, const float* dh,
        const float* gates, const float* h_prev, const Py_ssize_t* lengths,
        Py_ssize_t t) noexcept nogil
    void cell_backward_zn_f64(
        Py_ssize_t B, Py_ssize_t H, double* d_gates, double* dh_prev, const double* dh,
        const double* gates, const double* h_prev, const Py_ssize_t* lengths,
        Py_ssize_t t) noexcept nogil
    void cell_backward_r_f32(
        Py_ssize_t B, Py_ssize_t H, float* d_gates, float* dh_prev, const float* d_rh,
        const float* gates, const float* h_prev, const Py_ssize_t* lengths,
        Py_ssize_t t) noexcept nogil
    void cell_backward_r_f64(
        Py_ssize_t B, Py_ssize_t H, double* d_gates, double* dh_prev, const double* d_rh,
        const double* gates, const double* h_prev, const Py_ssize_t* lengths,
        Py_ssize_t t) noexcept nogil


cdef inline void cell_forward_reset_after(
        Py_ssize_t B, Py_ssize_t H, floating* gates, const floating* gates_h,
        const floating* b_ih, const floating* b_hh, const floating* h_prev,
        floating* hidden_n, floating* h_next, floating* y,
        const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil:
    if floating is float:
        cell_forward_reset_after_f32(B, H, gates, gates_h, b_ih, b_hh, h_prev, hidden_n,
                                     h_next, y, lengths, t)
    else:
        cell_forward_reset_after_f64(B, H, gates, gates_h, b_ih, b_hh, h_prev, hidden_n,
                                     h_next, y, lengths, t)


cdef inline void cell_backward_reset_after(
        Py_ssize_t B, Py_ssize_t H, floating* d_gates_h, floating* d_gates_x_n,
        floating* dh_prev, const floating* dh, const floating* gates,
        const floating* hidden_n, const floating* h_prev,
        const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil:
    if floating is float:
        cell_backward_reset_after_f32(B, H, d_gates_h, d_gates_x_n, dh_prev, dh, gates,
                                      hidden_n, h_prev, lengths, t)
    else:
        cell_backward_reset_after_f64(B, H, d_gates_h, d_gates_x_n, dh_prev, dh, gates,
                                      hidden_n, h_prev, lengths, t)


cdef inline void cell_forward_rz(
        Py_ssize_t B, Py_ssize_t H, floating* gates, const floating* gates_h,
        const floating* b_ih, const floating* b_hh, const floating* h_prev,
        floating* hidden_n) noexcept nogil:
    if floating is float:
        cell_forward_rz_f32(B, H, gates, gates_h, b_ih, b_hh, h_prev, hidden_n)
    else:
        cell_forward_rz_f64(B, H, gates, gates_h, b_ih, b_hh, h_prev, hidden_n)


cdef inline void cell_forward_n(
        Py_ssize_t B, Py_ssize_t H, floating* gates, const floating* gates_h,
        const floating* b_ih, const floating* b_hh, const floating* h_prev,
        floating* h_next, floating* y, const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil:
    if floating is float:
        cell_forward_n_f32(B, H, gates, gates_h, b_ih, b_hh, h_prev, h_next, y, lengths, t)
    else:
        cell_forward_n_f64(B, H, gates, gates_h, b_ih, b_hh, h_prev, h_next, y, lengths, t)


cdef inline void cell_backward_zn(
        Py_ssize_t B, Py_ssize_t H, floating* d_gates, floating* dh_prev,
        const floating* dh, const floating* gates, const floating* h_prev,
        const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil:
    if floating is float:
        cell_backward_zn_f32(B, H, d_gates, dh_prev, dh, gates, h_prev, lengths, t)
    else:
        cell_backward_zn_f64(B, H, d_gates, dh_prev, dh, gates, h_prev, lengths, t)


cdef inline void cell_backward_r(
        Py_ssize_t B, Py_ssize_t H, floating* d_gates, floating* dh_prev,
        const floating* d_rh, const floating* gates, const floating* h_prev,
        const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil:
    if floating is float:
        cell_backward_r_f32(B, H, d_gates, dh_prev, d_rh, gates, h_prev, lengths, t)
    else:
        cell_backward_r_f64(B, H, d_gates, dh_prev, d_rh, gates, h_prev, lengths, t)


# ---------------------------------------------------------------------------------------------
# The per-step products: a small GEMM on packed weights (cgru/_gemm_template.h, AVX-512 or
# AVX2) where the caller asked for it and the CPU has it, else BLAS.
# ---------------------------------------------------------------------------------------------
cdef extern from "_gemm.h":
    int cgru_small_gemm_available() noexcept nogil
    int cgru_cpu_gemm_level() noexcept nogil
    int cgru_set_small_gemm_level(int level) noexcept nogil
    Py_ssize_t packed_size_f32(Py_ssize_t K, Py_ssize_t N) noexcept nogil
    Py_ssize_t packed_size_f64(Py_ssize_t K, Py_ssize_t N) noexcept nogil
    void pack_b_f32(Py_ssize_t K, Py_ssize_t N, const float* B, Py_ssize_t ldb,
                    float* Bp) noexcept nogil
    void pack_b_f64(Py_ssize_t K, Py_ssize_t N, const double* B, Py_ssize_t ldb,
                    double* Bp) noexcept nogil
    void small_gemm_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A,
                        Py_ssize_t lda, const float* Bp, float beta, float* C,
                        Py_ssize_t ldc) noexcept nogil
    void small_gemm_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* A,
                        Py_ssize_t lda, const double* Bp, double beta, double* C,
                        Py_ssize_t ldc) noexcept nogil
    void small_gemm_ta_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A,
                           Py_ssize_t lda, const float* Bp, float beta, float* C,
                           Py_ssize_t ldc) noexcept nogil
    void small_gemm_ta_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* A,
                           Py_ssize_t lda, const double* Bp, double beta, double* C,
                           Py_ssize_t ldc) noexcept nogil

# Can this CPU run the small GEMM (AVX-512, or AVX2 with FMA)?
SMALL_GEMM_AVAILABLE = bool(cgru_small_gemm_available())
# Which form of it: 2 AVX-512, 1 AVX2 with FMA, 0 none (BLAS does every product).
SMALL_GEMM_LEVEL = cgru_cpu_gemm_level()


def _set_small_gemm_level(int level):
    """Runs the small GEMM's form `level` (at most the CPU's; 0: BLAS) from now on; returns the
    level before. For tests, between kernel calls only: no call may be running."""
    return cgru_set_small_gemm_level(level)


cdef floating* packed_copy(bint wanted, Py_ssize_t K, Py_ssize_t N, const floating* w,
                           Py_ssize_t ldw) noexcept nogil:
    """A packed copy of w (K, N; leading dimension ldw) for step_gemm, to free() after use;
    NULL (step_gemm then calls BLAS) unless wanted and the CPU can use it, or out of memory."""
    if not wanted or not cgru_small_gemm_available():
        return NULL
    cdef Py_ssize_t size = packed_size_f32(K, N) if floating is float else packed_size_f64(K, N)
    cdef floating* packed = <floating*> malloc(size * sizeof(floating))
    if packed != NULL:
        if floating is float:
            pack_b_f32(K, N, w, ldw, packed)
        else:
            pack_b_f64(K, N, w, ldw, packed)
    return packed


cdef inline void step_gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* a,
                           Py_ssize_t lda, const floating* w, Py_ssize_t ldw,
                           const floating* w_packed, floating beta, floating* c,
                           Py_ssize_t ldc) noexcept nogil:
    """c (M, N) := a (M, K) @ w (K, N) + beta * c; w_packed is packed_copy(w) or NULL.
    One row goes to BLAS's GEMV, faster there than the small GEMM's register tile."""
    if w_packed == NULL or M == 1:
        gemm(False, False, M, N, K, 1, a, lda, w, ldw, beta, c, ldc)
    elif floating is float:
        small_gemm_f32(M, N, K, a, lda, w_packed, beta, c, ldc)
    else:
        small_gemm_f64(M, N, K, a, lda, w_packed, beta, c, ldc)


cdef inline bint is_valid(const Py_ssize_t* lengths, Py_ssize_t b, Py_ssize_t t) noexcept nogil:
    """Is step t inside sequence b (always, without lengths)?"""
    return lengths == NULL or t < lengths[b]


cdef void add_valid_rows(Py_ssize_t B, Py_ssize_t H, floating* a, const floating* b,
                         const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil:
    """a (B, H) += b (B, H) in the rows whose step t is valid."""
    cdef Py_ssize_t i, j
    for i in range(B):
        if is_valid(lengths, i, t):
            for j in range(H):
                a[i * H + j] += b[i * H + j]


cdef void column_sums(Py_ssize_t rows, Py_ssize_t cols, const floating* a, Py_ssize_t lda,
                      floating* out, bint add=False) noexcept nogil:
    """out (cols,) := a (rows, cols; leading dimension lda) summed over its rows, added to
    out's values when `add`."""
    cdef Py_ssize_t i, j
    if not add:
        for j in range(cols):
            out[j] = 0
    for i in range(rows):
        for j in range(cols):
            out[j] += a[i * lda + j]


# ---------------------------------------------------------------------------------------------
# The loops over time.
# ---------------------------------------------------------------------------------------------
cdef void recurrent_step(
        Py_ssize_t B, Py_ssize_t H, bint reset_after, floating* gates, floating* gates_h,
        const floating* w_hh_t, const floating* packed_a, const floating* packed_b,
        const floating* b_ih, const floating* b_hh,
        const floating* h_prev, floating* hidden_n, floating* h_next, floating* y,
        const Py_ssize_t* lengths, Py_ssize_t t) noexcept nogil:
    """One step after the input projection: gates (B, G) holds W_i x on entry, r, z, n on
    return; h_next, y (B, H) written; gates_h (B, G) scratch. packed_a, packed_b: packed
    copies of w_hh_t (reset_after) or of its columns [:2H] and [2H:], or NULL (BLAS)."""
    cdef Py_ssize_t G = 3 * H
    if reset_after:
        # gates_h = h_prev @ w_hh_t, (B, H) @ (H, G)
        step_gemm(B, G, H, h_prev, H, w_hh_t, G, packed_a, 0, gates_h, G)
        cell_forward_reset_after(B, H, gates, gates_h, b_ih, b_hh, h_prev, hidden_n, h_next, y,
                                 lengths, t)
    else:
        # gates_h[:, :2H] = h_prev @ w_hh_t[:, :2H], (B, H) @ (H, 2H)
        step_gemm(B, 2 * H, H, h_prev, H, w_hh_t, G, packed_a, 0, gates_h, G)
        cell_forward_rz(B, H, gates, gates_h, b_ih, b_hh, h_prev, hidden_n)
        # gates_h[:, 2H:] = (r * h_prev) @ w_hh_t[:, 2H:], (B, H) @ (H, H)
        step_gemm(B, H, H, hidden_n, H, w_hh_t + 2 * H, G, packed_b, 0, gates_h + 2 * H, G)
        cell_forward_n(B, H, gates, gates_h, b_ih, b_hh, h_prev, h_next, y, lengths, t)


cdef int run_step(Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, bint reset_after,
                  const floating* x, const floating* h, const floating* w_ih_t,
                  const floating* w_hh_t, const floating* b_ih, const floating* b_hh,
                  floating* h_next) noexcept nogil:
    """One step for a batch, B >= 1: h_next (B, H) from x (B, I) and h (B, H), weights as in
    `forward`. The scratch (B * 8H numbers) is allocated per call, so calls may run at once.
    Returns -1 when out of memory, else 0."""
    cdef Py_ssize_t G = 3 * H
    cdef floating* scratch = <floating*> malloc(B * (2 * G + 2 * H) * sizeof(floating))
    if scratch == NULL:
        return -1
    # gates = x @ w_ih_t, (B, I) @ (I, G)
    gemm(False, False, B, G, I, 1, x, I, w_ih_t, G, 0, scratch, G)
    # y gets a scratch row of its own: with y and h_next one array, gcc's alias checks fail
    # and the cell loop runs scalar.
    recurrent_step(B, H, reset_after, scratch, scratch + B * G, w_hh_t, NULL, NULL, b_ih, b_hh, h,
                   scratch + 2 * B * G, h_next, scratch + 2 * B * G + B * H, NULL, 0)
    free(scratch)
    return 0


cdef class StepKernel:
    """One GRU step with the weights held: the latency path of online inference.

    Holds w_ih_t (I, 3H), w_hh_t (H, 3H), b_ih, b_hh: contiguous, of one float dtype, checked
    by the caller (cgru.functional.GRUCell, a Python subclass). A call `kernel(x, h)` takes
    x (B, I) and h (B, H) that are C-contiguous ndarrays of the weights' dtype straight to
    native code; anything else goes to `self._prepare(x, h)` (defined by the subclass), which
    validates, converts or raises. Memoryviews are avoided here on purpose: acquiring eight
    of them cost 1.2 us per call, a third of the step at (B, I, H) = (1, 32, 128).
    """
    cdef readonly object w_ih_t, w_hh_t, b_ih, b_hh
    cdef readonly Py_ssize_t input_size, hidden_size
    cdef readonly bint reset_after
    cdef int typenum

    def __init__(self, w_ih_t, w_hh_t, b_ih, b_hh, reset_after):
        self.w_ih_t, self.w_hh_t, self.b_ih, self.b_hh = w_ih_t, w_hh_t, b_ih, b_hh
        self.input_size = w_ih_t.shape[0]
        self.hidden_size = w_hh_t.shape[0]
        self.reset_after = reset_after
        self.typenum = cnp.PyArray_TYPE(<cnp.ndarray> w_ih_t)

    cdef bint _ready(self, object a, Py_ssize_t rows, Py_ssize_t cols):
        """Is `a` a C-contiguous ndarray of the weights' dtype with `cols` columns (and `rows`
        rows unless rows < 0)?"""
        if not cnp.PyArray_CheckExact(a):
            return False
        cdef cnp.ndarray array = <cnp.ndarray> a
        return (cnp.PyArray_TYPE(array) == self.typenum and cnp.PyArray_NDIM(array) == 2
                and cnp.PyArray_IS_C_CONTIGUOUS(array) and array.shape[1] == cols
                and (rows < 0 or array.shape[0] == rows))

    def _prepare(self, x, h):
        raise NotImplementedError

    def __call__(self, x, h=None):
        cdef Py_ssize_t B, H = self.hidden_size, I = self.input_size
        if not (self._ready(x, -1, I) and h is not None
                and self._ready(h, (<cnp.ndarray> x).shape[0], H)):
            x, h = self._prepare(x, h)
        cdef cnp.ndarray x_a = <cnp.ndarray> x, h_a = <cnp.ndarray> h
        B = x_a.shape[0]
        cdef cnp.npy_intp dims[2]
        dims[0], dims[1] = B, H
        cdef cnp.ndarray h_next = cnp.PyArray_EMPTY(2, dims, self.typenum, 0)
        if B == 0:
            return h_next
        cdef int status
        cdef void* x_p = cnp.PyArray_DATA(x_a)
        cdef void* h_p = cnp.PyArray_DATA(h_a)
        cdef void* out_p = cnp.PyArray_DATA(h_next)
        cdef void* w_ih_t_p = cnp.PyArray_DATA(<cnp.ndarray> self.w_ih_t)
        cdef void* w_hh_t_p = cnp.PyArray_DATA(<cnp.ndarray> self.w_hh_t)
        cdef void* b_ih_p = cnp.PyArray_DATA(<cnp.ndarray> self.b_ih)
        cdef void* b_hh_p = cnp.PyArray_DATA(<cnp.ndarray> self.b_hh)
        with nogil:
            if self.typenum == cnp.NPY_FLOAT32:
                status = run_step(B, I, H, self.reset_after, <const float*> x_p,
                                  <const float*> h_p, <const float*> w_ih_t_p,
                                  <const float*> w_hh_t_p, <const float*> b_ih_p,
                                  <const float*> b_hh_p, <float*> out_p)
            else:
                status = run_step(B, I, H, self.reset_after, <const double*> x_p,
                                  <const double*> h_p, <const double*> w_ih_t_p,
                                  <const double*> w_hh_t_p, <const double*> b_ih_p,
                                  <const double*> b_hh_p, <double*> out_p)
        if status != 0:
            raise MemoryError(f"no memory for the scratch of a GRU step with B={B}, H={H}")
        return h_next


# ---------------------------------------------------------------------------------------------
# Parts of the batch on threads of their own. Rows of a GRU never meet in the time loop, so
# with several threads the batch is cut into parts, each running the whole loop on its rows
# with the small GEMM: no thread waits on another until the loop is done. (Measured against
# OpenBLAS threading each per-step product: its threads synchronise twice a step, and the
# elementwise cell ran on one core.) A part's arguments are a struct of untyped pointers,
# cast back to the dtype by the typed loop (`kind` only selects it).
# ---------------------------------------------------------------------------------------------
cdef extern from "pythread.h":
    ctypedef void* PyThread_type_lock
    PyThread_type_lock PyThread_allocate_lock() noexcept nogil
    void PyThread_free_lock(PyThread_type_lock) noexcept nogil
    int PyThread_acquire_lock(PyThread_type_lock, int mode) noexcept nogil
    void PyThread_release_lock(PyThread_type_lock) noexcept nogil
    unsigned long PyThread_start_new_thread(void (*)(void*) noexcept nogil, void*) noexcept nogil


cdef struct PartHead:
    # The first member of every part's arguments: which part of how many, its share of the
    # rows, and the lock its thread releases when done (NULL for the calling thread's part).
    int part, parts
    Py_ssize_t b0, b1
    PyThread_type_lock done


cdef struct ForwardPart:
    PartHead head
    bint is_double, reset_after
    Py_ssize_t T, B, n_input, H, slots_g, slots_h, slots_n   # (I is a C macro)
    const void* x
    const void* w_ih_t
    const void* packed_ih
    const void* w_hh_t
    const void* packed_a
    const void* packed_b
    const void* b_ih
    const void* b_hh
    const Py_ssize_t* lengths
    void* gates
    void* gates_h
    void* hidden_n
    void* hs
    void* y


cdef void forward_rows(const floating* kind, ForwardPart* p) noexcept nogil:
    """The forward loop over all T steps for batch rows b0:b1 (see `forward`)."""
    cdef Py_ssize_t T = p.T, B = p.B, I = p.n_input, H = p.H, G = 3 * H, b0 = p.head.b0
    cdef Py_ssize_t rows = p.head.b1 - p.head.b0, t, s, steps
    cdef const floating* x = <const floating*> p.x
    cdef const floating* w_ih_t = <const floating*> p.w_ih_t
    cdef floating* gates = <floating*> p.gates
    cdef floating* hs = <floating*> p.hs
    cdef floating* hidden_n = <floating*> p.hidden_n
    cdef floating* y = <floating*> p.y
    cdef const Py_ssize_t* lengths = p.lengths + b0 if p.lengths != NULL else NULL
    for t in range(T):
        if t % p.slots_g == 0:
            steps = min(p.slots_g, T - t)
            if rows == B:
                # gates[:steps] = x[t:t + steps] @ w_ih_t: the input projection of the next
                # `steps` steps (all T in training) in one GEMM, (steps B, I) @ (I, G)
                step_gemm(steps * B, G, I, x + t * B * I, I, w_ih_t, G,
                          <const floating*> p.packed_ih, 0, gates, G)
            else:
                # a part's rows are not contiguous across steps: one product a step
                for s in range(steps):
                    step_gemm(rows, G, I, x + ((t + s) * B + b0) * I, I, w_ih_t, G,
                              <const floating*> p.packed_ih, 0, gates + (s * B + b0) * G, G)
        recurrent_step(rows, H, p.reset_after, gates + ((t % p.slots_g) * B + b0) * G,
                       <floating*> p.gates_h + b0 * G, <const floating*> p.w_hh_t,
                       <const floating*> p.packed_a, <const floating*> p.packed_b,
                       <const floating*> p.b_ih, <const floating*> p.b_hh,
                       hs + ((t % p.slots_h) * B + b0) * H,
                       hidden_n + ((t % p.slots_n) * B + b0) * H,
                       hs + (((t + 1) % p.slots_h) * B + b0) * H, y + (t * B + b0) * H,
                       lengths, t)


cdef void forward_part_thread(void* arg) noexcept nogil:
    cdef ForwardPart* p = <ForwardPart*> arg
    if p.is_double:
        forward_rows(<const double*> NULL, p)
    else:
        forward_rows(<const float*> NULL, p)
    if p.head.done != NULL:
        PyThread_release_lock(p.head.done)


cdef Py_ssize_t part_start(Py_ssize_t B, int parts, int i) noexcept nogil:
    """First row of part i of `parts`: the rows cut in near-equal parts, multiples of 8 rows
    (the small GEMM's register tile) where B allows."""
    if i >= parts:
        return B
    cdef Py_ssize_t start = B * i // parts
    return min(B, (start + 4) // 8 * 8) if B >= 8 * parts else start


cdef int allocate_locks(PyThread_type_lock* locks, int parts) noexcept nogil:
    """locks[0] = NULL, locks[1:parts] new locks; returns how many parts can run (fewer when
    a lock could not be made)."""
    cdef int i
    locks[0] = NULL
    for i in range(1, parts):
        locks[i] = PyThread_allocate_lock()
        if locks[i] == NULL:
            return i
    return parts


cdef void free_locks(PyThread_type_lock* locks, int parts) noexcept nogil:
    cdef int i
    for i in range(1, parts):
        PyThread_free_lock(locks[i])


cdef void run_in_parts(void (*thread_main)(void*) noexcept nogil, void* parts_p,
                       size_t part_size, int parts, Py_ssize_t rows) noexcept nogil:
    """Runs thread_main on `parts` (at most 16) copies of the arguments at parts_p, whose
    first (a struct starting with a PartHead, in room for 16) the caller filled in: each copy
    gets its share of `rows`, parts 1.. run on new threads and part 0 here. Returns when all
    are done. A part whose thread cannot start runs here; without locks, fewer parts run."""
    cdef PyThread_type_lock locks[16]
    cdef char* base = <char*> parts_p
    cdef PartHead* head
    cdef int i
    parts = allocate_locks(locks, max(1, min(parts, 16)))
    for i in range(parts):
        if i > 0:
            memcpy(base + i * part_size, base, part_size)
        head = <PartHead*> (base + i * part_size)
        head.part, head.parts, head.done = i, parts, locks[i]
        head.b0, head.b1 = part_start(rows, parts, i), part_start(rows, parts, i + 1)
    for i in range(1, parts):
        PyThread_acquire_lock(locks[i], 1)
        if PyThread_start_new_thread(thread_main, base + i * part_size) == <unsigned long> -1:
            thread_main(base + i * part_size)          # releases the lock itself
    thread_main(base)
    for i in range(1, parts):
        PyThread_acquire_lock(locks[i], 1)             # the part is done
        PyThread_release_lock(locks[i])
    free_locks(locks, parts)


def forward(const floating[:, :, ::1] x, const floating[:, ::1] w_ih_t,
            const floating[:, ::1] w_hh_t, const floating[::1] b_ih, const floating[::1] b_hh,
            const Py_ssize_t[::1] lengths, bint reset_after,
            floating[:, :, ::1] gates, floating[:, :, ::1] hidden_n, floating[:, :, ::1] hs,
            floating[:, ::1] gates_h, floating[:, :, ::1] y, bint small_gemm=False,
            int parts=1):
    """Runs the GRU over all T steps of x (T, B, I), T >= 1 and B >= 1.

    w_ih_t (I, 3H) and w_hh_t (H, 3H) are the transposed PyTorch weights (contiguous, the layout
    OpenBLAS is fastest with for h @ W^T). lengths is (B,) or empty for "all T".
    Outputs: gates (S_g, B, 3H) r, z, n; hidden_n (S_n, B, H); hs (S_h, B, H) with hs[0] = h0
    filled in by the caller; y (T, B, H). Each is a ring of slots, step t in slot t % S:
    S_g = T, S_n = T, S_h = T + 1 keep every step (training); in inference S_h = 2, S_n = 1,
    and S_g steps of input projection are computed at a time, in one GEMM. gates_h (B, 3H) is
    scratch. The final state is hs[T % S_h].
    small_gemm: every product by the small GEMM on packed weights (where the CPU has it)
    instead of BLAS. parts > 1 (with small_gemm): the batch cut into that many parts, each on
    a thread of its own.
    """
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], I = x.shape[2]
    cdef Py_ssize_t H = w_hh_t.shape[0], G = 3 * H
    cdef const floating* w_hh_t_p = &w_hh_t[0, 0]
    cdef floating* packed_ih = packed_copy(small_gemm, I, G, &w_ih_t[0, 0], G)
    cdef floating* packed_a = packed_copy(small_gemm, H, G if reset_after else 2 * H, w_hh_t_p, G)
    cdef floating* packed_b = packed_copy(small_gemm and not reset_after, H, H, w_hh_t_p + 2 * H,
                                          G)
    if packed_ih == NULL or packed_a == NULL or (not reset_after and packed_b == NULL):
        parts = 1                   # the BLAS products thread themselves
    cdef ForwardPart part_args[16]
    cdef ForwardPart* p = &part_args[0]
    p.is_double = floating is double
    p.reset_after = reset_after
    p.T, p.B, p.n_input, p.H = T, B, I, H
    p.slots_g, p.slots_h, p.slots_n = gates.shape[0], hs.shape[0], hidden_n.shape[0]
    p.x, p.w_ih_t, p.packed_ih = &x[0, 0, 0], &w_ih_t[0, 0], packed_ih
    p.w_hh_t, p.packed_a, p.packed_b = w_hh_t_p, packed_a, packed_b
    p.b_ih, p.b_hh = &b_ih[0], &b_hh[0]
    p.lengths = &lengths[0] if lengths.shape[0] > 0 else NULL
    p.gates, p.gates_h, p.hidden_n = &gates[0, 0, 0], &gates_h[0, 0], &hidden_n[0, 0, 0]
    p.hs, p.y = &hs[0, 0, 0], &y[0, 0, 0]
    with nogil:
        run_in_parts(forward_part_thread, part_args, sizeof(ForwardPart), min(parts, <int> B),
                     B)
    free(packed_ih)
    free(packed_a)
    free(packed_b)


cdef struct BackwardPart:
    PartHead head
    bint is_double, reset_after, has_dy
    Py_ssize_t T, B, H
    const void* dy
    const void* w_ih
    const void* w_hh
    const void* packed_a
    const void* packed_b
    const void* gates
    const void* hidden_n
    const void* hs
    const Py_ssize_t* lengths
    void* dh
    void* d_gates
    void* d_aux
    # dx by the small GEMM, a step at a time while the step's gate gradients are in cache
    # (NULL: BLAS after the loop); packed_ih_a: w_ih (G, I), or its rows [:2H] when
    # reset_after; packed_ih_b: its rows [2H:] (reset_after)
    void* dx
    Py_ssize_t n_input
    const void* packed_ih_a
    const void* packed_ih_b


cdef void backward_rows(const floating* kind, BackwardPart* p) noexcept nogil:
    """The backward loop over all T steps for batch rows b0:b1 (see `backward`)."""
    cdef Py_ssize_t T = p.T, B = p.B, H = p.H, G = 3 * H, b0 = p.head.b0
    cdef Py_ssize_t rows = p.head.b1 - p.head.b0, t
    cdef Py_ssize_t I = p.n_input
    cdef const floating* w_hh = <const floating*> p.w_hh
    cdef const floating* w_ih = <const floating*> p.w_ih
    cdef const floating* packed_ih_a = <const floating*> p.packed_ih_a
    cdef const floating* packed_ih_b = <const floating*> p.packed_ih_b
    cdef floating* dx_t
    cdef const floating* packed_a = <const floating*> p.packed_a
    cdef const floating* packed_b = <const floating*> p.packed_b
    cdef const floating* gates
    cdef const floating* h_prev
    cdef const Py_ssize_t* lengths = p.lengths + b0 if p.lengths != NULL else NULL
    cdef floating* d_aux = <floating*> p.d_aux
    cdef floating* dh_next = <floating*> p.dh + b0 * H
    cdef floating* dh_prev = <floating*> p.dh + (B + b0) * H
    cdef floating* swap
    cdef floating* dg_t
    for t in range(T - 1, -1, -1):
        if p.has_dy:
            # dh_next += dy[t] where step t is valid (y is 0, a constant, past the length)
            add_valid_rows(rows, H, dh_next, <const floating*> p.dy + (t * B + b0) * H,
                           lengths, t)
        dg_t = <floating*> p.d_gates + (t * B + b0) * G
        gates = <const floating*> p.gates + (t * B + b0) * G
        h_prev = <const floating*> p.hs + (t * B + b0) * H
        if p.reset_after:
            cell_backward_reset_after(rows, H, dg_t, d_aux + (t * B + b0) * H, dh_prev,
                                      dh_next, gates,
                                      <const floating*> p.hidden_n + (t * B + b0) * H,
                                      h_prev, lengths, t)
            # dh_prev += d_gates[t] @ w_hh, (B, G) @ (G, H)
            step_gemm(rows, H, G, dg_t, G, w_hh, H, packed_a, 1, dh_prev, H)
        else:
            cell_backward_zn(rows, H, dg_t, dh_prev, dh_next, gates, h_prev, lengths, t)
            # d_rh = dn_pre @ w_hh[2H:], (B, H) @ (H, H)
            step_gemm(rows, H, H, dg_t + 2 * H, G, w_hh + 2 * H * H, H, packed_b, 0,
                      d_aux + b0 * H, H)
            cell_backward_r(rows, H, dg_t, dh_prev, d_aux + b0 * H, gates, h_prev, lengths, t)
            # dh_prev += d_gates[t][:, :2H] @ w_hh[:2H], (B, 2H) @ (2H, H)
            step_gemm(rows, H, 2 * H, dg_t, G, w_hh, H, packed_a, 1, dh_prev, H)
        if p.dx != NULL:
            dx_t = <floating*> p.dx + (t * B + b0) * I
            if p.reset_after:
                # dx[t] = d_gates[t][:, :2H] @ w_ih[:2H] + d_aux[t] @ w_ih[2H:]
                step_gemm(rows, I, 2 * H, dg_t, G, w_ih, I, packed_ih_a, 0, dx_t, I)
                step_gemm(rows, I, H, d_aux + (t * B + b0) * H, H, w_ih + 2 * H * I, I,
                          packed_ih_b, 1, dx_t, I)
            else:
                # dx[t] = d_gates[t] @ w_ih, (B, G) @ (G, I)
                step_gemm(rows, I, G, dg_t, G, w_ih, I, packed_ih_a, 0, dx_t, I)
        swap = dh_next
        dh_next = dh_prev
        dh_prev = swap


cdef void backward_part_thread(void* arg) noexcept nogil:
    cdef BackwardPart* p = <BackwardPart*> arg
    if p.is_double:
        backward_rows(<const double*> NULL, p)
    else:
        backward_rows(<const float*> NULL, p)
    if p.head.done != NULL:
        PyThread_release_lock(p.head.done)


# The weight gradients after the backward loop, by the small GEMM: jobs of the form
# C = A^T @ B (A (K, rows), B (K, n), leading dimensions lda and n, K = T*B) and
# sums = A's column sums (the bias gradients), in blocks of WEIGHT_KB rows of K. Each part
# takes its share of every job's rows (gates), so no two parts write the same numbers, and
# packs each block of B into scratch of its own just before using it (the parts pack the
# same blocks, at the same time: no more wall time than one packing, and no (K, n) copy).
cdef enum:
    WEIGHT_KB = 512         # rows of K a block: measured 100 GFLOP/s (256-1024 within 3%)

cdef struct WeightJob:
    const void* a
    const void* b
    Py_ssize_t lda, rows, n
    int b_index             # which of the part's packed blocks holds b (jobs share b)
    void* c
    void* sums


cdef struct WeightPart:
    PartHead head           # (its rows unused: a part's share is of each job's rows)
    bint is_double
    Py_ssize_t K
    int n_jobs
    WeightJob jobs[3]
    void* scratch           # WEIGHT_KB * padded n numbers for each distinct b, one after another,
    Py_ssize_t b_offsets[3] # for each part (at scratch + part * per_part)
    Py_ssize_t per_part


cdef void weight_rows(const floating* kind, WeightPart* p) noexcept nogil:
    cdef int j
    cdef Py_ssize_t g0, g1, k0, kb
    cdef WeightJob* job
    cdef floating* packed
    cdef const floating* a
    cdef floating* scratch = <floating*> p.scratch + p.head.part * p.per_part
    cdef Py_ssize_t n_blocks = (p.K + WEIGHT_KB - 1) // WEIGHT_KB, block
    for block in range(n_blocks):
        k0 = block * WEIGHT_KB
        kb = min(<Py_ssize_t> WEIGHT_KB, p.K - k0)
        for j in range(p.n_jobs):           # pack each distinct b's block once
            job = &p.jobs[j]
            if j == 0 or job.b != p.jobs[j - 1].b:
                packed = scratch + p.b_offsets[job.b_index]
                if floating is float:
                    pack_b_f32(kb, job.n, <const float*> job.b + k0 * job.n, job.n, packed)
                else:
                    pack_b_f64(kb, job.n, <const double*> job.b + k0 * job.n, job.n, packed)
        for j in range(p.n_jobs):
            job = &p.jobs[j]
            g0 = part_start(job.rows, p.head.parts, p.head.part)
            g1 = part_start(job.rows, p.head.parts, p.head.part + 1)
            if g1 <= g0:
                continue
            a = <const floating*> job.a + k0 * job.lda + g0
            packed = scratch + p.b_offsets[job.b_index]
            # c[g0:g1] (+)= a[k0:k0 + kb, g0:g1]^T @ b[k0:k0 + kb]
            if floating is float:
                small_gemm_ta_f32(g1 - g0, job.n, kb, a, job.lda, packed, 0 if k0 == 0 else 1,
                                  <float*> job.c + g0 * job.n, job.n)
            else:
                small_gemm_ta_f64(g1 - g0, job.n, kb, a, job.lda, packed, 0 if k0 == 0 else 1,
                                  <double*> job.c + g0 * job.n, job.n)
            if job.sums != NULL:
                column_sums(kb, g1 - g0, a, job.lda, <floating*> job.sums + g0, k0 > 0)


cdef void weight_part_thread(void* arg) noexcept nogil:
    cdef WeightPart* p = <WeightPart*> arg
    if p.is_double:
        weight_rows(<const double*> NULL, p)
    else:
        weight_rows(<const float*> NULL, p)
    if p.head.done != NULL:
        PyThread_release_lock(p.head.done)


cdef void set_job(WeightJob* job, const void* a, Py_ssize_t lda, Py_ssize_t rows,
                  const void* b, Py_ssize_t n, int b_index, void* c, void* sums) noexcept nogil:
    job.a, job.lda, job.rows, job.b, job.n, job.b_index = a, lda, rows, b, n, b_index
    job.c, job.sums = c, sums


cdef bint weight_gradients(
        bint reset_after, Py_ssize_t M, Py_ssize_t I, Py_ssize_t H, const floating* x,
        const floating* hs, const floating* hidden_n, const floating* d_gates,
        const floating* d_aux, floating* dw_ih, floating* dw_hh, floating* db_ih,
        floating* db_hh, int parts) noexcept nogil:
    """dw_ih, dw_hh, db_ih, db_hh of `backward` by the small GEMM on `parts` threads; False
    (nothing written) when out of memory, and the caller uses BLAS."""
    cdef Py_ssize_t G = 3 * H
    cdef WeightPart part_args[16]
    cdef WeightPart* p = &part_args[0]
    cdef Py_ssize_t size_x, size_h, per_part
    if floating is float:
        size_x, size_h = packed_size_f32(WEIGHT_KB, I), packed_size_f32(WEIGHT_KB, H)
    else:
        size_x, size_h = packed_size_f64(WEIGHT_KB, I), packed_size_f64(WEIGHT_KB, H)
    per_part = size_x + size_h * (1 if reset_after else 2)
    parts = max(1, min(parts, 16))
    cdef floating* scratch = <floating*> malloc(parts * per_part * sizeof(floating))
    if scratch == NULL:
        return False
    p.is_double = floating is double
    p.K = M
    p.n_jobs = 3
    p.scratch, p.per_part = scratch, per_part
    p.b_offsets[0] = 0                     # H_prev
    p.b_offsets[1] = size_h                # X
    p.b_offsets[2] = size_h + size_x       # r * H_prev (reset_after=False)
    if reset_after:
        # dw_hh = D^T @ H_prev; dw_ih[:2H] = D[:, :2H]^T @ X; dw_ih[2H:] = d_aux^T @ X
        set_job(&p.jobs[0], d_gates, G, G, hs, H, 0, dw_hh, db_hh)
        set_job(&p.jobs[1], d_gates, G, 2 * H, x, I, 1, dw_ih, db_ih)
        set_job(&p.jobs[2], d_aux, H, H, x, I, 1, dw_ih + 2 * H * I, db_ih + 2 * H)
    else:
        # dw_hh[:2H] = D[:, :2H]^T @ H_prev; dw_ih = D^T @ X;
        # dw_hh[2H:] = D[:, 2H:]^T @ (r * H_prev)
        set_job(&p.jobs[0], d_gates, G, 2 * H, hs, H, 0, dw_hh, NULL)
        set_job(&p.jobs[1], d_gates, G, G, x, I, 1, dw_ih, db_ih)
        set_job(&p.jobs[2], d_gates + 2 * H, G, H, hidden_n, H, 2, dw_hh + 2 * H * H, NULL)
    run_in_parts(weight_part_thread, part_args, sizeof(WeightPart), parts, 0)
    if not reset_after:
        memcpy(db_hh, db_ih, G * sizeof(floating))
    free(scratch)
    return True


def backward(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
             const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
             const floating[:, :, ::1] gates, const floating[:, :, ::1] hidden_n,
             const floating[:, :, ::1] hs, const Py_ssize_t[::1] lengths, bint reset_after,
             floating[:, :, ::1] dh, floating[:, :, ::1] d_gates, floating[:, :, ::1] d_aux,
             floating[:, :, ::1] dx, floating[:, ::1] dw_ih, floating[:, ::1] dw_hh,
             floating[::1] db_ih, floating[::1] db_hh, bint small_gemm=False, int parts=1):
    """Backward through time of `forward` run with training slots (S_h = T + 1, S_n = T).

    dy (T, B, H), or (0, B, H) for "no gradient from y". w_ih (3H, I) and w_hh (3H, H) in
    PyTorch's layout (the fast one for dG @ W). dh (2, B, H): dh[0] = dL/dh_n filled in by the
    caller, dh[1] scratch; on return dh[T % 2] = dL/dh0.
    Scratch kept until the whole-sequence GEMMs after the loop: d_gates (T, B, 3H), the gate
    gradients wrt W_h h + b_h; d_aux: reset_after=True, (T, B, H), dn_pre (the n block of the
    gradient wrt W_i x + b_i); reset_after=False, (1, B, H), d_rh of the current step.
    Outputs dx, dw_ih, dw_hh, db_ih, db_hh are overwritten. small_gemm: the per-step products
    by the small GEMM on packed weights (where the CPU has it) instead of BLAS; parts > 1 (with
    small_gemm): the loop over time runs on that many parts of the batch, each on a thread of
    its own. The whole-sequence products after it are BLAS's, threaded as BLAS is set.
    """
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], I = x.shape[2]
    cdef Py_ssize_t H = w_hh.shape[1], G = 3 * H, M = T * B
    cdef const Py_ssize_t* lengths_p = &lengths[0] if lengths.shape[0] > 0 else NULL
    cdef const floating* w_ih_p = &w_ih[0, 0]
    cdef const floating* w_hh_p = &w_hh[0, 0]
    cdef const floating* x_p = &x[0, 0, 0]
    cdef const floating* hs_p = &hs[0, 0, 0]
    cdef floating* d_gates_p = &d_gates[0, 0, 0]
    cdef floating* d_aux_p = &d_aux[0, 0, 0]
    # packed_a: w_hh (G, H), or its rows [:2H] when not reset_after; packed_b: rows [2H:]
    cdef floating* packed_a = packed_copy(small_gemm, G if reset_after else 2 * H, H, w_hh_p, H)
    cdef floating* packed_b = packed_copy(small_gemm and not reset_after, H, H,
                                          w_hh_p + 2 * H * H, H)
    # the same for w_ih (G, I): packed_ih_a its rows [:2H] when reset_after, else all of it;
    # packed_ih_b its rows [2H:] when reset_after
    cdef floating* packed_ih_a = packed_copy(small_gemm, 2 * H if reset_after else G, I,
                                             w_ih_p, I)
    cdef floating* packed_ih_b = packed_copy(small_gemm and reset_after, H, I,
                                             w_ih_p + 2 * H * I, I)
    cdef bint dx_in_loop = packed_ih_a != NULL and (not reset_after or packed_ih_b != NULL)
    if packed_a == NULL or (not reset_after and packed_b == NULL):
        parts = 1                   # the BLAS products thread themselves
    cdef BackwardPart part_args[16]
    cdef BackwardPart* p = &part_args[0]
    p.is_double = floating is double
    p.reset_after = reset_after
    p.has_dy = dy.shape[0] > 0
    p.T, p.B, p.H, p.n_input = T, B, H, I
    p.dy = &dy[0, 0, 0] if dy.shape[0] > 0 else NULL
    p.w_ih, p.w_hh, p.packed_a, p.packed_b = w_ih_p, w_hh_p, packed_a, packed_b
    p.gates, p.hidden_n, p.hs, p.lengths = &gates[0, 0, 0], &hidden_n[0, 0, 0], hs_p, lengths_p
    p.dh, p.d_gates, p.d_aux = &dh[0, 0, 0], d_gates_p, d_aux_p
    p.dx = &dx[0, 0, 0] if dx_in_loop else NULL
    p.packed_ih_a, p.packed_ih_b = packed_ih_a, packed_ih_b
    with nogil:
        run_in_parts(backward_part_thread, part_args, sizeof(BackwardPart), min(parts, <int> B),
                     B)
        free(packed_a)
        free(packed_b)
        free(packed_ih_a)
        free(packed_ih_b)

        # The weight and input gradients of all steps at once: X = x as (M, I), H_prev = hs[:T]
        # as (M, H), D = d_gates as (M, G).
        if dx_in_loop and weight_gradients(
                reset_after, M, I, H, x_p, hs_p, &hidden_n[0, 0, 0], d_gates_p, d_aux_p,
                &dw_ih[0, 0], &dw_hh[0, 0], &db_ih[0], &db_hh[0], parts):
            pass
        elif reset_after:
            # dw_hh = D^T @ H_prev, (G, M) @ (M, H)
            gemm(True, False, G, H, M, 1, d_gates_p, G, hs_p, H, 0, &dw_hh[0, 0], H)
            # dw_ih[:2H] = D[:, :2H]^T @ X and dw_ih[2H:] = d_aux^T @ X, (., M) @ (M, I)
            gemm(True, False, 2 * H, I, M, 1, d_gates_p, G, x_p, I, 0, &dw_ih[0, 0], I)
            gemm(True, False, H, I, M, 1, d_aux_p, H, x_p, I, 0, &dw_ih[2 * H, 0], I)
            if not dx_in_loop:
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
            if not dx_in_loop:
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
            sigmoid_out[i] = cgru_sigmoidf(v[i])
            tanh_out[i] = cgru_tanhf(v[i])
        else:
            exp_out[i] = exp(v[i])
            sigmoid_out[i] = cgru_sigmoid(v[i])
            tanh_out[i] = cgru_tanh(v[i])
    return exp_v, sigmoid_v, tanh_v


def small_gemm_for_tests(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] c,
                         double beta, bint trans_a=False):
    """c := op(a) @ b + beta * c through pack_b and the small GEMM; op(a) = a, or a^T (a stored
    (K, M)) when trans_a, the weight gradients' form (for the tests only; needs
    SMALL_GEMM_AVAILABLE)."""
    if not cgru_small_gemm_available():
        raise RuntimeError("the small GEMM is off (no AVX-512 or AVX2 on this CPU, or set so)")
    cdef Py_ssize_t M = c.shape[0], N = c.shape[1], K = b.shape[0], lda = a.shape[1]
    cdef floating* packed = packed_copy(True, K, N, &b[0, 0], N)
    if packed == NULL:
        raise MemoryError("no memory for the packed operand")
    if floating is float:
        if trans_a:
            small_gemm_ta_f32(M, N, K, &a[0, 0], lda, packed, <float> beta, &c[0, 0], N)
        else:
            small_gemm_f32(M, N, K, &a[0, 0], lda, packed, <float> beta, &c[0, 0], N)
    else:
        if trans_a:
            small_gemm_ta_f64(M, N, K, &a[0, 0], lda, packed, beta, &c[0, 0], N)
        else:
            small_gemm_f64(M, N, K, &a[0, 0], lda, packed, beta, &c[0, 0], N)
    free(packed)

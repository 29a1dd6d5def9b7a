# The weights in either layout, and their gradients.
#
# W_ih (G, I) and W_hh (G, H) come in PyTorch's layout, or stored transposed, (I, G) and
# (H, G): the layers' layout (`Sizes.weights_t`). The functions below give every product the
# rows of W it needs in the call's layout (a transpose flag for BLAS, strides for packing),
# and the weight gradients come out in the layout the weights came in, with no transposed
# copy: dW = D^T @ X, or dW^T = X^T @ D directly.
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cython cimport floating
from cython.parallel cimport prange

from cgru._native._blas cimport gemm
from cgru._native._gemm cimport pack, packed_copy, packed_size, product, product_ta
from cgru._native._parts cimport part_start


cdef struct Sizes:
    # One call's sizes and choices; n_in is I (a C macro), slots_* the rings' lengths;
    # x_gates: x holds one input per gate (3, T, B, I), r, z, n (input dropout with a mask
    # per gate), the gate g's input product reading block g.
    Py_ssize_t T, B, n_in, H, slots_g, slots_h, slots_n
    bint reset_after, weights_t, x_gates
    int level
    int act, rec        # activation codes of n and of r, z (_cell_math.h)


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


cdef inline void column_sums(Py_ssize_t rows, Py_ssize_t cols, const floating* a, Py_ssize_t lda,
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


cdef inline void weight_job(const Sizes* s, int part, int parts, Py_ssize_t k0, Py_ssize_t kb,
                            Py_ssize_t g0, Py_ssize_t n, Py_ssize_t K, const floating* d,
                            Py_ssize_t ldd, const floating* src, floating* dw, floating* bias,
                            floating* scratch) noexcept nogil:
    """Rows k0:k0 + kb of M's share of dW[g0:g0 + n] (n, K) = d^T @ src, d (M, n; leading
    dimension ldd), src (M, K), in the weights' layout, and of bias (n,) = d's column sums
    unless NULL; added to the earlier blocks' (k0 > 0). Part `part` of `parts` with the small
    GEMM (scratch: a packed block of its own), else by BLAS (part 0 of 1)."""
    cdef Py_ssize_t ld = ld_of(s, K), c0 = 0, c1 = n, out_rows = K if s.weights_t else n
    cdef floating* out = dw + g0 * row_step(s, K)
    cdef floating beta = 0 if k0 == 0 else 1
    d, src = d + k0 * ldd, src + k0 * K
    if s.level == 0 and s.weights_t:    # dW^T[:, g0:g0 + n] (+)= src^T @ d, (K, kb) @ (kb, n)
        gemm(True, False, K, n, kb, 1, src, K, d, ldd, beta, out, ld)
    elif s.level == 0:                  # dW[g0:g0 + n] (+)= d^T @ src, (n, kb) @ (kb, K)
        gemm(True, False, n, K, kb, 1, d, ldd, src, K, beta, out, ld)
    else:
        c0, c1 = part_start(out_rows, parts, part), part_start(out_rows, parts, part + 1)
        if c1 > c0 and s.weights_t:
            # dW^T[c0:c1, g0:g0 + n] (+)= src[:, c0:c1]^T @ d
            pack(s.level, kb, n, d, ldd, False, scratch)
            product_ta(s.level, c1 - c0, n, kb, src + c0, K, scratch, beta, out + c0 * ld, ld)
        elif c1 > c0:
            # dW[g0 + c0:g0 + c1] (+)= d[:, c0:c1]^T @ src
            pack(s.level, kb, K, src, K, False, scratch)
            product_ta(s.level, c1 - c0, K, kb, d + c0, ldd, scratch, beta, out + c0 * ld, ld)
        c0, c1 = part_start(n, parts, part), part_start(n, parts, part + 1)
    if bias != NULL and c1 > c0:
        column_sums(kb, c1 - c0, d + c0, ldd, bias + c0, k0 > 0)


cdef inline void weight_jobs(const Sizes* s, int part, int parts, const floating* x,
                             const floating* hs, const floating* hd, const floating* hidden_n,
                             const floating* d_gates, const floating* d_aux, floating* dw_ih,
                             floating* dw_hh, floating* db_ih, floating* db_hh,
                             floating* scratch) noexcept nogil:
    """Every weight gradient of `backward` (part `part` of `parts`): X = x as (M, I),
    H_prev = hs[:T] as (M, H), D = d_gates as (M, G). With the small GEMM in blocks of
    WEIGHT_KB rows of M, every job of a block before the next block, so that the block of D
    is read from cache by the jobs after the first (job after job over all of M was 10-20%
    slower on long training, (T, B, I, H) = (1000, 16, 32, 64)); BLAS takes M at once.
    hd: NULL, or (3, T, B, H) the states each gate's recurrent product read under recurrent
    dropout (h_prev times that gate's mask), which then replace H_prev gate by gate."""
    cdef Py_ssize_t I = s.n_in, H = s.H, G = 3 * H, M = s.T * s.B, block, k0, kb, g
    cdef Py_ssize_t block_rows = WEIGHT_KB if s.level > 0 else M
    for block in range((M + block_rows - 1) // block_rows):
        k0 = block * block_rows
        kb = min(block_rows, M - k0)
        if hd != NULL:
            # recurrent dropout: dW_hh[g] = D[:, g]^T @ Hd[g] for the gates whose product
            # reads the dropped state (all three with reset_after, r and z without)
            for g in range(3 if s.reset_after else 2):
                weight_job(s, part, parts, k0, kb, g * H, H, H, d_gates + g * H, G,
                           hd + g * M * H, dw_hh, db_hh + g * H if s.reset_after else NULL,
                           scratch)
        if s.reset_after:
            # dW_hh = D^T @ H_prev; dW_ih[:2H] = D[:, :2H]^T @ X; dW_ih[2H:] = d_aux^T @ X
            if hd == NULL:
                weight_job(s, part, parts, k0, kb, 0, G, H, d_gates, G, hs, dw_hh, db_hh,
                           scratch)
            if not s.x_gates:
                weight_job(s, part, parts, k0, kb, 0, 2 * H, I, d_gates, G, x, dw_ih, db_ih,
                           scratch)
            else:
                # one input per gate: dW_ih[g] = D[:, g]^T @ X[g] for g = r, z
                for g in range(2):
                    weight_job(s, part, parts, k0, kb, g * H, H, I, d_gates + g * H, G,
                               x + g * M * I, dw_ih, db_ih + g * H, scratch)
            weight_job(s, part, parts, k0, kb, 2 * H, H, I, d_aux, H,
                       x + 2 * M * I if s.x_gates else x, dw_ih, db_ih + 2 * H, scratch)
        else:
            # dW_hh[:2H] = D[:, :2H]^T @ H_prev; dW_hh[2H:] = D[:, 2H:]^T @ (r * H_prev);
            # dW_ih = D^T @ X; db_hh = db_ih (both biases add to the same pre-activations)
            if hd == NULL:
                weight_job(s, part, parts, k0, kb, 0, 2 * H, H, d_gates, G, hs, dw_hh, NULL,
                           scratch)
            weight_job(s, part, parts, k0, kb, 2 * H, H, H, d_gates + 2 * H, G, hidden_n,
                       dw_hh, NULL, scratch)
            if not s.x_gates:
                weight_job(s, part, parts, k0, kb, 0, G, I, d_gates, G, x, dw_ih, db_ih,
                           scratch)
            else:
                for g in range(3):
                    weight_job(s, part, parts, k0, kb, g * H, H, I, d_gates + g * H, G,
                               x + g * M * I, dw_ih, db_ih + g * H, scratch)


cdef inline void weight_gradients(Sizes* s, int parts, const floating* x,
                                  const floating* hs, const floating* hd,
                                  const floating* hidden_n,
                                  const floating* d_gates, const floating* d_aux,
                                  floating* dw_ih, floating* dw_hh, floating* db_ih,
                                  floating* db_hh) noexcept nogil:
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
        weight_jobs(s, 0, 1, x, hs, hd, hidden_n, d_gates, d_aux, dw_ih, dw_hh, db_ih, db_hh,
                    scratch)
    else:
        for part in prange(parts, num_threads=parts, schedule="static", chunksize=1):
            weight_jobs(s, part, parts, x, hs, hd, hidden_n, d_gates, d_aux, dw_ih, dw_hh, db_ih,
                        db_hh, scratch + part * per_part)
    free(scratch)
    if not s.reset_after:
        memcpy(db_hh, db_ih, 3 * s.H * sizeof(floating))

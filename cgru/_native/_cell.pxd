# The cell: one time step's elementwise work, forward beside backward, in C (_cell_template.h,
# compiled for float and double and multiversioned for AVX-512/AVX2 by _cell.h). The fused
# wrappers below pick the dtype's version; the arguments are documented in the template.
# `recurrent_step` at the end is a whole forward step after the input projection: the
# recurrent product(s) and the cell, shared by the time loop and the one-step kernel.
from cython cimport floating

from cgru._native._gemm cimport product

cdef extern from "_cell.h":
    # activation codes (_cell_math.h)
    enum:
        CGRU_ACT_TANH
        CGRU_ACT_SIGMOID
        CGRU_ACT_HARD_SIGMOID
        CGRU_ACT_RELU
        CGRU_ACT_LINEAR
        CGRU_ACT_SOFTSIGN
        CGRU_ACT_ELU
        CGRU_ACT_SELU
        CGRU_ACT_GELU
        CGRU_ACT_SILU
        CGRU_ACT_COUNT
    Py_ssize_t CGRU_PRE_WIDTH(Py_ssize_t H, int act, int rec) noexcept nogil
    void activate_f32(int code, Py_ssize_t count, float* v, float* keep) noexcept nogil
    void activate_f64(int code, Py_ssize_t count, double* v, double* keep) noexcept nogil
    void derivative_f32(int code, Py_ssize_t count, const float* out, const float* inp,
                        float* d) noexcept nogil
    void derivative_f64(int code, Py_ssize_t count, const double* out, const double* inp,
                        double* d) noexcept nogil
    float cgru_expf(float v) noexcept nogil
    float cgru_sigmoidf(float v) noexcept nogil
    float cgru_tanhf(float v) noexcept nogil
    double cgru_sigmoid(double v) noexcept nogil
    double cgru_tanh(double v) noexcept nogil
    void cell_forward_reset_after_f32(
        Py_ssize_t B, Py_ssize_t H, float* gates, const float* gates_h, const float* b_ih,
        const float* b_hh, const float* h_prev, float* hidden_n, float* h_next, float* y,
        const Py_ssize_t* lengths, Py_ssize_t t, int act, int rec, float* pre) noexcept nogil
    void cell_forward_reset_after_f64(
        Py_ssize_t B, Py_ssize_t H, double* gates, const double* gates_h, const double* b_ih,
        const double* b_hh, const double* h_prev, double* hidden_n, double* h_next, double* y,
        const Py_ssize_t* lengths, Py_ssize_t t, int act, int rec, double* pre) noexcept nogil
    void cell_backward_reset_after_f32(
        Py_ssize_t B, Py_ssize_t H, float* d_gates_h, float* d_gates_x_n, float* dh_prev,
        const float* dh, const float* gates, const float* hidden_n, const float* h_prev,
        const Py_ssize_t* lengths, Py_ssize_t t, int act, int rec,
        const float* pre) noexcept nogil
    void cell_backward_reset_after_f64(
        Py_ssize_t B, Py_ssize_t H, double* d_gates_h, double* d_gates_x_n, double* dh_prev,
        const double* dh, const double* gates, const double* hidden_n, const double* h_prev,
        const Py_ssize_t* lengths, Py_ssize_t t, int act, int rec,
        const double* pre) noexcept nogil
    void cell_forward_rz_f32(
        Py_ssize_t B, Py_ssize_t H, float* gates, const float* gates_h, const float* b_ih,
        const float* b_hh, const float* h_prev, float* hidden_n, int act, int rec,
        float* pre) noexcept nogil
    void cell_forward_rz_f64(
        Py_ssize_t B, Py_ssize_t H, double* gates, const double* gates_h, const double* b_ih,
        const double* b_hh, const double* h_prev, double* hidden_n, int act, int rec,
        double* pre) noexcept nogil
    void cell_forward_n_f32(
        Py_ssize_t B, Py_ssize_t H, float* gates, const float* gates_h, const float* b_ih,
        const float* b_hh, const float* h_prev, float* h_next, float* y,
        const Py_ssize_t* lengths, Py_ssize_t t, int act, int rec, float* pre) noexcept nogil
    void cell_forward_n_f64(
        Py_ssize_t B, Py_ssize_t H, double* gates, const double* gates_h, const double* b_ih,
        const double* b_hh, const double* h_prev, double* h_next, double* y,
        const Py_ssize_t* lengths, Py_ssize_t t, int act, int rec, double* pre) noexcept nogil
    void cell_backward_zn_f32(
        Py_ssize_t B, Py_ssize_t H, float* d_gates, float* dh_prev, const float* dh,
        const float* gates, const float* h_prev, const Py_ssize_t* lengths,
        Py_ssize_t t, int act, int rec, const float* pre) noexcept nogil
    void cell_backward_zn_f64(
        Py_ssize_t B, Py_ssize_t H, double* d_gates, double* dh_prev, const double* dh,
        const double* gates, const double* h_prev, const Py_ssize_t* lengths,
        Py_ssize_t t, int act, int rec, const double* pre) noexcept nogil
    void cell_backward_r_f32(
        Py_ssize_t B, Py_ssize_t H, float* d_gates, float* dh_prev, const float* d_rh,
        const float* gates, const float* h_prev, const Py_ssize_t* lengths,
        Py_ssize_t t, int act, int rec, const float* pre) noexcept nogil
    void cell_backward_r_f64(
        Py_ssize_t B, Py_ssize_t H, double* d_gates, double* dh_prev, const double* d_rh,
        const double* gates, const double* h_prev, const Py_ssize_t* lengths,
        Py_ssize_t t, int act, int rec, const double* pre) noexcept nogil


cdef inline void cell_forward_reset_after(
        Py_ssize_t B, Py_ssize_t H, floating* gates, const floating* gates_h,
        const floating* b_ih, const floating* b_hh, const floating* h_prev,
        floating* hidden_n, floating* h_next, floating* y,
        const Py_ssize_t* lengths, Py_ssize_t t, int act, int rec,
        floating* pre) noexcept nogil:
    if floating is float:
        cell_forward_reset_after_f32(B, H, gates, gates_h, b_ih, b_hh, h_prev, hidden_n,
                                     h_next, y, lengths, t, act, rec, pre)
    else:
        cell_forward_reset_after_f64(B, H, gates, gates_h, b_ih, b_hh, h_prev, hidden_n,
                                     h_next, y, lengths, t, act, rec, pre)


cdef inline void cell_backward_reset_after(
        Py_ssize_t B, Py_ssize_t H, floating* d_gates_h, floating* d_gates_x_n,
        floating* dh_prev, const floating* dh, const floating* gates,
        const floating* hidden_n, const floating* h_prev,
        const Py_ssize_t* lengths, Py_ssize_t t, int act, int rec,
        const floating* pre) noexcept nogil:
    if floating is float:
        cell_backward_reset_after_f32(B, H, d_gates_h, d_gates_x_n, dh_prev, dh, gates,
                                      hidden_n, h_prev, lengths, t, act, rec, pre)
    else:
        cell_backward_reset_after_f64(B, H, d_gates_h, d_gates_x_n, dh_prev, dh, gates,
                                      hidden_n, h_prev, lengths, t, act, rec, pre)


cdef inline void cell_forward_rz(
        Py_ssize_t B, Py_ssize_t H, floating* gates, const floating* gates_h,
        const floating* b_ih, const floating* b_hh, const floating* h_prev,
        floating* hidden_n, int act, int rec, floating* pre) noexcept nogil:
    if floating is float:
        cell_forward_rz_f32(B, H, gates, gates_h, b_ih, b_hh, h_prev, hidden_n, act, rec, pre)
    else:
        cell_forward_rz_f64(B, H, gates, gates_h, b_ih, b_hh, h_prev, hidden_n, act, rec, pre)


cdef inline void cell_forward_n(
        Py_ssize_t B, Py_ssize_t H, floating* gates, const floating* gates_h,
        const floating* b_ih, const floating* b_hh, const floating* h_prev,
        floating* h_next, floating* y, const Py_ssize_t* lengths, Py_ssize_t t,
        int act, int rec, floating* pre) noexcept nogil:
    if floating is float:
        cell_forward_n_f32(B, H, gates, gates_h, b_ih, b_hh, h_prev, h_next, y, lengths, t,
                           act, rec, pre)
    else:
        cell_forward_n_f64(B, H, gates, gates_h, b_ih, b_hh, h_prev, h_next, y, lengths, t,
                           act, rec, pre)


cdef inline void cell_backward_zn(
        Py_ssize_t B, Py_ssize_t H, floating* d_gates, floating* dh_prev,
        const floating* dh, const floating* gates, const floating* h_prev,
        const Py_ssize_t* lengths, Py_ssize_t t, int act, int rec,
        const floating* pre) noexcept nogil:
    if floating is float:
        cell_backward_zn_f32(B, H, d_gates, dh_prev, dh, gates, h_prev, lengths, t, act, rec,
                             pre)
    else:
        cell_backward_zn_f64(B, H, d_gates, dh_prev, dh, gates, h_prev, lengths, t, act, rec,
                             pre)


cdef inline void cell_backward_r(
        Py_ssize_t B, Py_ssize_t H, floating* d_gates, floating* dh_prev,
        const floating* d_rh, const floating* gates, const floating* h_prev,
        const Py_ssize_t* lengths, Py_ssize_t t, int act, int rec,
        const floating* pre) noexcept nogil:
    if floating is float:
        cell_backward_r_f32(B, H, d_gates, dh_prev, d_rh, gates, h_prev, lengths, t, act, rec,
                            pre)
    else:
        cell_backward_r_f64(B, H, d_gates, dh_prev, d_rh, gates, h_prev, lengths, t, act, rec,
                            pre)


cdef inline void recurrent_step(
        int level, Py_ssize_t B, Py_ssize_t H, bint reset_after, floating* gates,
        floating* gates_h, const floating* w_hh, bint w_hh_t, const floating* packed_a,
        const floating* packed_b, const floating* b_ih, const floating* b_hh,
        const floating* h_prev, floating* hidden_n, floating* h_next, floating* y,
        const Py_ssize_t* lengths, Py_ssize_t t, int act, int rec,
        floating* pre) noexcept nogil:
    """One step after the input projection: gates (B, G) holds W_i x on entry, r, z, n on
    return; h_next, y (B, H) written; gates_h (B, G) scratch. w_hh is W_hh (G, H) stored as
    itself, or transposed (H, G) when w_hh_t; packed_a, packed_b: packed copies of W_hh^T's
    columns [:G] (reset_after) or [:2H] and [2H:], or NULL (BLAS). act, rec: the activation
    codes of n and of r, z; pre (B, CGRU_PRE_WIDTH) gets the pre-activations backward needs,
    or NULL (inference, or none needed)."""
    cdef Py_ssize_t G = 3 * H, ld = G if w_hh_t else H, n_offset = 2 * H * (1 if w_hh_t else H)
    if reset_after:
        # gates_h = h_prev @ W_hh^T, (B, H) @ (H, G)
        product(level, B, G, H, h_prev, H, w_hh, ld, not w_hh_t, packed_a, 0, gates_h, G)
        cell_forward_reset_after(B, H, gates, gates_h, b_ih, b_hh, h_prev, hidden_n, h_next, y,
                                 lengths, t, act, rec, pre)
    else:
        # gates_h[:, :2H] = h_prev @ W_hh[:2H]^T, (B, H) @ (H, 2H)
        product(level, B, 2 * H, H, h_prev, H, w_hh, ld, not w_hh_t, packed_a, 0, gates_h, G)
        cell_forward_rz(B, H, gates, gates_h, b_ih, b_hh, h_prev, hidden_n, act, rec, pre)
        # gates_h[:, 2H:] = (r * h_prev) @ W_hh[2H:]^T, (B, H) @ (H, H)
        product(level, B, H, H, hidden_n, H, w_hh + n_offset, ld, not w_hh_t, packed_b, 0,
                gates_h + 2 * H, G)
        cell_forward_n(B, H, gates, gates_h, b_ih, b_hh, h_prev, h_next, y, lengths, t,
                       act, rec, pre)

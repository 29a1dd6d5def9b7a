"""One GRU step with the weights held (`StepKernel`): the latency path of online inference.

A step is the input product x @ W_ih^T by BLAS (GEMV for one row) and `recurrent_step`
(_cell.pxd): the recurrent product and the cell. `cgru.functional.GRUCell` subclasses
`StepKernel`, validating what it cannot take as it is.
"""
from libc.stdlib cimport free, malloc
from cython cimport floating
cimport numpy as cnp

from cgru._native._blas cimport gemm
from cgru._native._cell cimport recurrent_step

cnp.import_array()


cdef int run_step(Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, bint reset_after,
                  const floating* x, const floating* h, const floating* w_ih,
                  const floating* w_hh, const floating* b_ih, const floating* b_hh,
                  floating* h_next, int act, int rec) noexcept nogil:
    """One step for a batch, B >= 1: h_next (B, H) from x (B, I) and h (B, H), weights in
    PyTorch's layout, w_ih (G, I) and w_hh (G, H), read as BLAS's transposed operands (as
    gru_forward does for one step, so that both give the same bits); act, rec: the
    activation codes of n and of r, z. The scratch (B * 8H numbers) is allocated per call,
    so calls may run at once.
    Returns -1 when out of memory, else 0."""
    cdef Py_ssize_t G = 3 * H
    cdef floating* scratch = <floating*> malloc(B * (2 * G + 2 * H) * sizeof(floating))
    if scratch == NULL:
        return -1
    # gates = x @ w_ih^T, (B, I) @ (I, G)
    gemm(False, True, B, G, I, 1, x, I, w_ih, I, 0, scratch, G)
    # y gets a scratch row of its own: with y and h_next one array, gcc's alias checks fail
    # and the cell loop runs scalar.
    recurrent_step(0, B, H, reset_after, scratch, scratch + B * G, w_hh, False, NULL, NULL,
                   b_ih, b_hh, h, scratch + 2 * B * G, h_next, scratch + 2 * B * G + B * H,
                   NULL, 0, act, rec, NULL)
    free(scratch)
    return 0


cdef class StepKernel:
    """One GRU step with the weights held: the latency path of online inference.

    Holds w_ih (3H, I), w_hh (3H, H), b_ih, b_hh: contiguous, of one float dtype, checked
    by the caller (cgru.functional.GRUCell, a Python subclass), and the activation codes
    (checked there too). A call `kernel(x, h)` takes
    x (B, I) and h (B, H) that are C-contiguous ndarrays of the weights' dtype straight to
    native code; anything else goes to `self._prepare(x, h)` (defined by the subclass), which
    validates, converts or raises. Memoryviews are avoided here on purpose: acquiring eight
    of them cost 1.2 us per call, a third of the step at (B, I, H) = (1, 32, 128).
    """
    cdef readonly object w_ih, w_hh, b_ih, b_hh
    cdef readonly Py_ssize_t input_size, hidden_size
    cdef readonly bint reset_after
    cdef readonly int activation_code, recurrent_activation_code
    cdef int typenum

    def __init__(self, w_ih, w_hh, b_ih, b_hh, reset_after, int activation_code=0,
                 int recurrent_activation_code=1):
        self.w_ih, self.w_hh, self.b_ih, self.b_hh = w_ih, w_hh, b_ih, b_hh
        self.input_size = w_ih.shape[1]
        self.hidden_size = w_hh.shape[1]
        self.reset_after = reset_after
        self.activation_code = activation_code
        self.recurrent_activation_code = recurrent_activation_code
        self.typenum = cnp.PyArray_TYPE(<cnp.ndarray> w_ih)

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
        cdef int act = self.activation_code, rec = self.recurrent_activation_code
        cdef void* x_p = cnp.PyArray_DATA(x_a)
        cdef void* h_p = cnp.PyArray_DATA(h_a)
        cdef void* out_p = cnp.PyArray_DATA(h_next)
        cdef void* w_ih_p = cnp.PyArray_DATA(<cnp.ndarray> self.w_ih)
        cdef void* w_hh_p = cnp.PyArray_DATA(<cnp.ndarray> self.w_hh)
        cdef void* b_ih_p = cnp.PyArray_DATA(<cnp.ndarray> self.b_ih)
        cdef void* b_hh_p = cnp.PyArray_DATA(<cnp.ndarray> self.b_hh)
        with nogil:
            if self.typenum == cnp.NPY_FLOAT32:
                status = run_step(B, I, H, self.reset_after, <const float*> x_p,
                                  <const float*> h_p, <const float*> w_ih_p,
                                  <const float*> w_hh_p, <const float*> b_ih_p,
                                  <const float*> b_hh_p, <float*> out_p, act, rec)
            else:
                status = run_step(B, I, H, self.reset_after, <const double*> x_p,
                                  <const double*> h_p, <const double*> w_ih_p,
                                  <const double*> w_hh_p, <const double*> b_ih_p,
                                  <const double*> b_hh_p, <double*> out_p, act, rec)
        if status != 0:
            raise MemoryError(f"no memory for the scratch of a GRU step with B={B}, H={H}")
        return h_next

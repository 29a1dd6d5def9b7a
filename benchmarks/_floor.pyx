# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The GEMM floor of a GRU, for the benchmark.

Only the matrix products an ideal GRU must do, run from a compiled loop with the GIL released,
through the BLAS that cgru's kernels use (``scipy.linalg.cython_blas``). No elementwise gate math,
no bias, no allocation inside the timed loop: the time of a GRU made of these BLAS calls can
approach it, never beat it. (cgru's kernels do most of these products with a small GEMM of
their own and their own threads where the CPU has AVX-512, and can beat it.)

Forward (T steps, batch B, input I, hidden H):
    one input projection         (T*B, I) . (I, 3H)
    one recurrent product a step (B, H)   . (H, 3H)
Training adds the backward:
    one product a step           (B, 3H)  . (3H, H)   (the gradient flowing to h_{t-1})
    dW_hh = dG_h^T . H_prev      (3H, T*B) . (T*B, H)
    dW_ih = dG_x^T . X           (3H, T*B) . (T*B, I)
    dX    = dG_x . W_ih          (T*B, 3H) . (3H, I)
Streaming (one step a call, the state carried): two products a step, input and recurrent;
with batch 1 they are matrix-vector products (sgemv), which is what an ideal kernel would use.

The operands hold fixed random numbers; only the products are done, on real data.
"""
from time import perf_counter

import numpy as np
from scipy.linalg.cython_blas cimport sgemm, sgemv


cdef void mm(int M, int N, int K, const float* A, int lda, bint ta,
             const float* B, int ldb, bint tb, float* C, int ldc) noexcept nogil:
    """Row-major C (M, N) = op(A) (M, K) . op(B) (K, N).

    A is stored (M, K), or (K, M) when ``ta``; B is stored (K, N), or (N, K) when ``tb``.
    Row-major C is column-major C^T = op(B)^T op(A)^T, so the operands swap.
    A single row (M == 1, A not transposed) is a matrix-vector product.
    """
    cdef float one = 1.0, zero = 0.0
    cdef int inc = 1, m, n
    cdef char ca, cb
    if M == 0 or N == 0:
        return
    if M == 1 and not ta:
        if tb:                      # C = B_stored (N, K) . a  -> column-major (K, N), transposed
            m = K; n = N; cb = b'T'
        else:                       # C = B_stored^T . a       -> column-major (N, K)
            m = N; n = K; cb = b'N'
        sgemv(&cb, &m, &n, &one, <float*>B, &ldb, <float*>A, &inc, &zero, C, &inc)
        return
    ca = b'T' if ta else b'N'
    cb = b'T' if tb else b'N'
    sgemm(&cb, &ca, &N, &M, &K, &one, <float*>B, &ldb, <float*>A, &lda, &zero, C, &ldc)


def matmul(a, b, bint ta=False, bint tb=False):
    """``op(a) @ op(b)`` through the floor's row-major shim (float32, C-contiguous); for tests."""
    cdef float[:, ::1] A = np.ascontiguousarray(a, dtype=np.float32)
    cdef float[:, ::1] Bm = np.ascontiguousarray(b, dtype=np.float32)
    cdef int M = A.shape[1] if ta else A.shape[0]
    cdef int K = A.shape[0] if ta else A.shape[1]
    cdef int Kb = Bm.shape[1] if tb else Bm.shape[0]
    cdef int N = Bm.shape[0] if tb else Bm.shape[1]
    if K != Kb:
        raise ValueError(f"inner sizes differ: {K} and {Kb}")
    out = np.zeros((M, N), np.float32)
    cdef float[:, ::1] C = out
    if M and N and K:
        mm(M, N, K, &A[0, 0], A.shape[1], ta, &Bm[0, 0], Bm.shape[1], tb, &C[0, 0], N)
    return out


cdef class GRUFloor:
    """Buffers for one GRU shape and the loops of its GEMM floor.

    The arrays are public (as NumPy views) so that tests can check the products:
    ``x (T*B, I)``, ``w_ih (3H, I)``, ``w_hh (3H, H)`` and their contiguous transposes
    ``w_ih_t (I, 3H)``, ``w_hh_t (H, 3H)``; ``hs ((T+1)*B, H)`` holds h0 then each step's h;
    ``gx (T*B, 3H)``, ``gh (T*B, 3H)`` the forward products; ``dgx``, ``dgh (T*B, 3H)`` the gate
    gradients the backward consumes; ``dh (2*B, H)``, ``dx (T*B, I)``, ``dw_ih``, ``dw_hh``
    what it produces.
    """
    cdef readonly int T, B, H
    cdef int ni
    cdef float[:, ::1] _x, _w_ih, _w_hh, _w_ih_t, _w_hh_t, _hs, _gx, _gh, _dgx, _dgh
    cdef float[:, ::1] _dh, _dx, _dw_ih, _dw_hh

    def __init__(self, int T, int B, int I, int H, seed=0):
        if T < 1 or B < 1 or I < 1 or H < 1:
            raise ValueError(f"sizes must be positive, got T={T} B={B} I={I} H={H}")
        self.T, self.B, self.ni, self.H = T, B, I, H
        rng = np.random.default_rng(seed)
        def rand(*shape, scale=1.0):
            return (rng.standard_normal(shape) * scale).astype(np.float32)
        k = 1.0 / float(H) ** 0.5
        self._x = rand(T * B, I)
        self._w_ih = rand(3 * H, I, scale=k)
        self._w_hh = rand(3 * H, H, scale=k)
        self._w_ih_t = np.ascontiguousarray(np.asarray(self._w_ih).T)
        self._w_hh_t = np.ascontiguousarray(np.asarray(self._w_hh).T)
        self._hs = rand((T + 1) * B, H, scale=0.5)
        self._gx = np.zeros((T * B, 3 * H), np.float32)
        self._gh = np.zeros((T * B, 3 * H), np.float32)
        self._dgx = rand(T * B, 3 * H, scale=0.1)
        self._dgh = rand(T * B, 3 * H, scale=0.1)
        self._dh = np.zeros((2 * B, H), np.float32)
        self._dx = np.zeros((T * B, I), np.float32)
        self._dw_ih = np.zeros((3 * H, I), np.float32)
        self._dw_hh = np.zeros((3 * H, H), np.float32)

    @property
    def I(self):
        """Input size."""
        return self.ni

    @property
    def arrays(self):
        """The buffers as a dict of NumPy arrays (views, not copies)."""
        return {"x": np.asarray(self._x), "w_ih": np.asarray(self._w_ih),
                "w_hh": np.asarray(self._w_hh), "w_ih_t": np.asarray(self._w_ih_t),
                "w_hh_t": np.asarray(self._w_hh_t), "hs": np.asarray(self._hs),
                "gx": np.asarray(self._gx), "gh": np.asarray(self._gh),
                "dgx": np.asarray(self._dgx), "dgh": np.asarray(self._dgh),
                "dh": np.asarray(self._dh), "dx": np.asarray(self._dx),
                "dw_ih": np.asarray(self._dw_ih), "dw_hh": np.asarray(self._dw_hh)}

    cdef void _forward(self, bint keep) noexcept nogil:
        cdef int T = self.T, B = self.B, ni = self.ni, H = self.H, t, row
        mm(T * B, 3 * H, ni, &self._x[0, 0], ni, False, &self._w_ih_t[0, 0], 3 * H, False,
           &self._gx[0, 0], 3 * H)
        for t in range(T):
            row = t * B if keep else 0
            mm(B, 3 * H, H, &self._hs[t * B, 0], H, False, &self._w_hh_t[0, 0], 3 * H, False,
               &self._gh[row, 0], 3 * H)

    cdef void _backward(self) noexcept nogil:
        cdef int T = self.T, B = self.B, ni = self.ni, H = self.H, t
        for t in range(T - 1, -1, -1):
            mm(B, H, 3 * H, &self._dgh[t * B, 0], 3 * H, False, &self._w_hh[0, 0], H, False,
               &self._dh[(t % 2) * B, 0], H)
        mm(3 * H, H, T * B, &self._dgh[0, 0], 3 * H, True, &self._hs[0, 0], H, False,
           &self._dw_hh[0, 0], H)
        mm(3 * H, ni, T * B, &self._dgx[0, 0], 3 * H, True, &self._x[0, 0], ni, False,
           &self._dw_ih[0, 0], ni)
        mm(T * B, ni, 3 * H, &self._dgx[0, 0], 3 * H, False, &self._w_ih[0, 0], ni, False,
           &self._dx[0, 0], ni)

    cdef void _stream(self) noexcept nogil:
        cdef int T = self.T, B = self.B, ni = self.ni, H = self.H, t
        for t in range(T):
            mm(B, 3 * H, ni, &self._x[t * B, 0], ni, False, &self._w_ih_t[0, 0], 3 * H, False,
               &self._gx[t * B, 0], 3 * H)
            mm(B, 3 * H, H, &self._hs[t * B, 0], H, False, &self._w_hh_t[0, 0], 3 * H, False,
               &self._gh[t * B, 0], 3 * H)

    def forward(self, int reps=1):
        """Inference: the forward products ``reps`` times; returns elapsed seconds."""
        cdef int i
        t0 = perf_counter()
        with nogil:
            for i in range(reps):
                self._forward(False)
        return perf_counter() - t0

    def train(self, int reps=1):
        """A training step (forward keeping every step's products, then backward), ``reps`` times."""
        cdef int i
        t0 = perf_counter()
        with nogil:
            for i in range(reps):
                self._forward(True)
                self._backward()
        return perf_counter() - t0

    def stream(self, int reps=1):
        """T single-step calls (input and recurrent product each), ``reps`` times."""
        cdef int i
        t0 = perf_counter()
        with nogil:
            for i in range(reps):
                self._stream()
        return perf_counter() - t0

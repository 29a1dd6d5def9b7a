"""The functional GRU: ``gru_forward`` and ``gru_backward`` (time-major, PyTorch weight layout).

This module validates every argument, makes contiguous copies only where needed, allocates
every array the kernels write, and calls the compiled loops in ``cgru._gru``. Nothing reaches
native code before it has been checked here: wrong ranks, sizes, dtypes or lengths raise
``ValueError``/``TypeError`` naming the argument and the shapes.
"""
from collections import namedtuple

import numpy as np

from cgru import _gru
from cgru._pool import POOL
from cgru._threads import blas_threads

__all__ = ["gru_forward", "gru_backward", "GRUGrads", "GRUCache", "GRUCell"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# scipy.linalg.cython_blas is 32-bit indexed: every GEMM size and leading dimension must fit.
_BLAS_INT_MAX = 2**31 - 1
# Rows of input projection per GEMM in inference (see _inference_chunk).
_CHUNK_ROWS = 1024
# What the kernels take for "no lengths": an empty index array.
_NO_LENGTHS = np.empty(0, dtype=np.intp)
_NO_LENGTHS.flags.writeable = False

# What gru_backward returns: the gradients with respect to each input of gru_forward.
GRUGrads = namedtuple("GRUGrads", ["dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"])


class GRUCache:
    """What ``gru_forward(training=True)`` keeps for ``gru_backward``; treat it as opaque.

    It holds references to ``x`` and the weights as they were passed (or their contiguous
    copies): modifying those arrays in place between forward and backward changes the
    gradients. ``nbytes`` is the memory the cache itself owns.
    """

    __slots__ = ("x", "w_ih", "w_hh", "gates", "hidden_n", "hs", "lengths", "reset_after")

    def __init__(self, x, w_ih, w_hh, gates, hidden_n, hs, lengths, reset_after):
        self.x, self.w_ih, self.w_hh = x, w_ih, w_hh
        self.gates, self.hidden_n, self.hs = gates, hidden_n, hs
        self.lengths, self.reset_after = lengths, reset_after

    @property
    def dtype(self):
        return self.x.dtype

    @property
    def shape(self):
        """(T, B, I, H)."""
        return self.x.shape + (self.w_hh.shape[1],)

    @property
    def nbytes(self):
        return self.gates.nbytes + self.hidden_n.nbytes + self.hs.nbytes

    def __repr__(self):
        T, B, I, H = self.shape
        return (f"GRUCache(T={T}, B={B}, I={I}, H={H}, dtype={self.dtype}, "
                f"reset_after={self.reset_after}, nbytes={self.nbytes})")


def _as_float_array(value, name):
    """``value`` as an ndarray of float32 or float64, else TypeError naming ``name``."""
    if value is None:
        raise TypeError(f"`{name}` must be a float32 or float64 array, got None")
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"`{name}` must be a float32 or float64 array, got dtype {array.dtype} "
                        f"(shape {array.shape}); cast it with .astype(np.float32)")
    return array


def _check_shape(array, name, expected, meaning):
    if array.shape != expected:
        raise ValueError(f"`{name}` must have shape {meaning} = {expected}, "
                         f"got {array.shape}")


def _check_same_dtype(arrays, names, reference_name, dtype):
    for array, name in zip(arrays, names):
        if array is not None and array.dtype != dtype:
            reference = (f"`{reference_name}`" if reference_name.isidentifier()
                         else reference_name)
            raise TypeError(f"`{name}` has dtype {array.dtype} but {reference} has "
                            f"dtype {dtype}: one call uses one float dtype")


def _check_lengths(lengths, T, B):
    """``lengths`` as a contiguous intp array of shape (B,) with values in 0..T."""
    if lengths is None:
        return None
    array = np.asarray(lengths)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"`lengths` must be integers, got dtype {array.dtype}")
    if array.shape != (B,):
        raise ValueError(f"`lengths` must have shape (B,) = ({B},), got {array.shape}")
    if B and (array.min() < 0 or array.max() > T):
        raise ValueError(f"`lengths` must lie in 0..T = 0..{T}, got values from "
                         f"{array.min()} to {array.max()}")
    return np.ascontiguousarray(array, dtype=np.intp)


def _check_blas_sizes(T, B, I, H):
    for name, size in (("T * B", T * B), ("3 * H", 3 * H), ("I", I)):
        if size > _BLAS_INT_MAX:
            raise ValueError(f"{name} = {size} is larger than the 32-bit BLAS limit "
                             f"{_BLAS_INT_MAX} (x has shape ({T}, {B}, {I}), H = {H}); "
                             f"split the batch or the sequence")


def _inference_chunk(T, B):
    """Steps of input projection per GEMM in inference: about _CHUNK_ROWS rows, enough for an
    efficient GEMM while the chunk's gates stay in cache (and no (T, B, 3H) buffer)."""
    return max(1, min(T, -(-_CHUNK_ROWS // B)))


# A call's products: the small GEMM (cgru/_gemm_template.h) on parts of the batch, one thread
# each, or BLAS. Measured on the benchmark shapes (Zen 4, float32): at one thread the small
# GEMM runs the per-step products at the core's peak, 1.3-1.6x OpenBLAS for B = 32-64; with
# more threads, parts of the batch on threads of their own beat OpenBLAS threading each
# product. Below _PARTS_MIN_FLOPS a call is too short to start threads for (tens of us), and
# a part has at least _PART_MIN_ROWS rows (the register tile). On one thread the small GEMM
# needs a batch that fills its tile and weights worth packing: at (T, B, I, H) =
# (50, 4, 32, 64) it was 1.33x slower than OpenBLAS, at the seed shape (10, 32, 20, 32)
# 1.07-1.16x, at H = 64, B = 16 even, and 0.85-0.94x from H = 128 (B = 8 to 128).
_PARTS_MIN_FLOPS = 20e6
_PART_MIN_ROWS = 8
_SMALL_GEMM_MIN_H = 64
# (small_gemm, parts) forced for every call, or None for the rules of _plan (tests set it).
_PLAN_OVERRIDE = None


def _plan(T, B, I, H):
    """(small_gemm, parts) for a call on x (T, B, I) with H units."""
    if _PLAN_OVERRIDE is not None:
        return _PLAN_OVERRIDE
    if not _gru.SMALL_GEMM_AVAILABLE:
        return False, 1
    threads = blas_threads()
    parts = min(threads, B // _PART_MIN_ROWS)
    if parts >= 2 and 6.0 * T * B * H * (I + H) >= _PARTS_MIN_FLOPS:
        return True, parts
    if threads == 1 and B >= _PART_MIN_ROWS and H >= _SMALL_GEMM_MIN_H:
        return True, 1
    return False, 1         # small calls or batches, or too few rows to cut: BLAS


def _check_weights(w_ih, w_hh, b_ih, b_hh, I, dtype, dtype_from):
    """The four weights as float arrays of the PyTorch shapes for I input features, checked
    to share ``dtype`` (the dtype of the argument named ``dtype_from``)."""
    w_hh = _as_float_array(w_hh, "w_hh")
    if w_hh.ndim != 2 or w_hh.shape[0] != 3 * w_hh.shape[1] or w_hh.shape[1] == 0:
        raise ValueError(f"`w_hh` must have shape (3H, H) with H >= 1, got {w_hh.shape}")
    H = w_hh.shape[1]
    w_ih = _as_float_array(w_ih, "w_ih")
    _check_shape(w_ih, "w_ih", (3 * H, I), "(3H, I)")
    if I == 0:
        raise ValueError("the input must have at least one feature, got I = 0")
    b_ih = _as_float_array(b_ih, "b_ih")
    _check_shape(b_ih, "b_ih", (3 * H,), "(3H,)")
    b_hh = _as_float_array(b_hh, "b_hh")
    _check_shape(b_hh, "b_hh", (3 * H,), "(3H,)")
    _check_same_dtype((w_ih, w_hh, b_ih, b_hh), ("w_ih", "w_hh", "b_ih", "b_hh"), dtype_from,
                      dtype)
    return w_ih, w_hh, b_ih, b_hh


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, *, reset_after=True, lengths=None,
                training=True):
    """Runs a GRU over a time-major sequence.

    x (T, B, I); h0 (B, H) or None for zeros; w_ih (3H, I), w_hh (3H, H), b_ih (3H,),
    b_hh (3H,) in PyTorch's layout and gate order (r, z, n); lengths None or integers (B,) in
    0..T (steps past a sequence's length keep its h and give zero y). All float arrays share
    one dtype, float32 or float64.

    Returns y (T, B, H), h_n (B, H) and a cache for ``gru_backward`` (None unless training).
    """
    x = _as_float_array(x, "x")
    if x.ndim != 3:
        raise ValueError(f"`x` must have rank 3, (T, B, I) time-major, got shape {x.shape}")
    T, B, I = x.shape
    w_ih, w_hh, b_ih, b_hh = _check_weights(w_ih, w_hh, b_ih, b_hh, I, x.dtype, "x")
    H = w_hh.shape[1]
    if h0 is not None:
        h0 = _as_float_array(h0, "h0")
        _check_shape(h0, "h0", (B, H), "(B, H)")
        _check_same_dtype((h0,), ("h0",), "x", x.dtype)
    lengths = _check_lengths(lengths, T, B)
    _check_blas_sizes(T, B, I, H)
    dtype = x.dtype

    # The kernels write every element of y and of the gradients (y is 0 past a row's length),
    # so they start uninitialised; only empty sequences or batches take zeros.
    empty = T == 0 or B == 0
    # Large arrays come from POOL (cgru/_pool.py): reused ones save the page faults of fresh
    # memory, a third of a training step's time on the medium benchmark shape.
    y = np.zeros((T, B, H), dtype) if empty else POOL.empty((T, B, H), dtype)
    slots_h, slots_n = (T + 1, T) if training else (2, 1)
    hs = POOL.empty((slots_h, B, H), dtype)
    if h0 is None:
        hs[0] = 0
    else:
        hs[0] = h0
    if not empty:
        x = np.ascontiguousarray(x)
        w_ih = np.ascontiguousarray(w_ih)
        w_hh = np.ascontiguousarray(w_hh)
        gates = POOL.empty((T if training else _inference_chunk(T, B), B, 3 * H), dtype)
        hidden_n = POOL.empty((slots_n, B, H), dtype)
        gates_h = np.empty((B, 3 * H), dtype)
        small_gemm, parts = _plan(T, B, I, H)
        _gru.forward(x, np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T),
                     np.ascontiguousarray(b_ih), np.ascontiguousarray(b_hh),
                     _NO_LENGTHS if lengths is None else lengths, bool(reset_after),
                     gates, hidden_n, hs, gates_h, y, small_gemm, parts)
    else:
        gates = np.empty((T, B, 3 * H), dtype)
        hidden_n = np.empty((slots_n, B, H), dtype)
    h_n = hs[T % slots_h].copy()
    cache = None
    if training:
        cache = GRUCache(x, w_ih, w_hh, gates, hidden_n, hs, lengths, bool(reset_after))
    return y, h_n, cache


def gru_backward(dy, dh_n, cache):
    """Gradients of a scalar loss through ``gru_forward``.

    dy (T, B, H) or None and dh_n (B, H) or None are the loss's gradients with respect to y
    and h_n (None means zeros); cache is the third result of ``gru_forward(training=True)``.
    Returns ``GRUGrads(dx, dh0, dw_ih, dw_hh, db_ih, db_hh)`` in the shapes of the forward
    inputs (dh0 also when h0 was None). The cache is not changed: calling again gives the
    same result.
    """
    if cache is None:
        raise ValueError("`cache` is None: call gru_forward(..., training=True) to get a cache "
                         "for gru_backward")
    if not isinstance(cache, GRUCache):
        raise TypeError(f"`cache` must be the cache returned by gru_forward, got "
                        f"{type(cache).__name__}")
    T, B, I, H = cache.shape
    dtype = cache.dtype
    if dy is not None:
        dy = _as_float_array(dy, "dy")
        _check_shape(dy, "dy", (T, B, H), "(T, B, H)")
    if dh_n is not None:
        dh_n = _as_float_array(dh_n, "dh_n")
        _check_shape(dh_n, "dh_n", (B, H), "(B, H)")
    for array, name in ((dy, "dy"), (dh_n, "dh_n")):
        if array is not None and array.dtype != dtype:
            raise TypeError(f"`{name}` has dtype {array.dtype} but the forward pass ran in "
                            f"{dtype}: one call uses one float dtype")

    new = np.zeros if T == 0 or B == 0 else np.empty   # as in gru_forward
    dx = np.zeros((T, B, I), dtype) if T == 0 or B == 0 else POOL.empty((T, B, I), dtype)
    dw_ih = new((3 * H, I), dtype)
    dw_hh = new((3 * H, H), dtype)
    db_ih = new(3 * H, dtype)
    db_hh = new(3 * H, dtype)
    dh = np.empty((2, B, H), dtype)
    if dh_n is None:
        dh[0] = 0
    else:
        dh[0] = dh_n
    if T == 0 or B == 0:
        return GRUGrads(dx, dh[0].copy(), dw_ih, dw_hh, db_ih, db_hh)

    dy = np.empty((0, B, H), dtype) if dy is None else np.ascontiguousarray(dy)
    d_gates = POOL.empty((T, B, 3 * H), dtype)
    d_aux = POOL.empty((T if cache.reset_after else 1, B, H), dtype)
    small_gemm, parts = _plan(T, B, I, H)
    _gru.backward(dy, cache.x, cache.w_ih, cache.w_hh, cache.gates, cache.hidden_n, cache.hs,
                  _NO_LENGTHS if cache.lengths is None else cache.lengths, cache.reset_after,
                  dh, d_gates, d_aux, dx, dw_ih, dw_hh, db_ih, db_hh, small_gemm, parts)
    return GRUGrads(dx, dh[T % 2].copy(), dw_ih, dw_hh, db_ih, db_hh)


class GRUCell(_gru.StepKernel):
    """One GRU step at a time, with the weights prepared once: online inference.

    ``cell = GRUCell(w_ih, w_hh, b_ih, b_hh, reset_after=True)`` takes the weights of
    ``gru_forward`` (PyTorch's layout; they are copied, so later changes to the arrays do not
    affect the cell). ``h_next = cell(x, h)`` runs one step, as ``torch.nn.GRUCell`` does:
    x (B, I), h (B, H) or None for zeros, h_next (B, H) a new array; all of the weights'
    dtype. Inference only (no cache); calls may run from several threads at once.
    ``cell(x_t, h)`` equals ``gru_forward(x_t[None], h, ...)[1]``.

    The call itself is native (``_gru.StepKernel``): C-contiguous arrays of the right dtype and
    shape go straight to the kernel, anything else through ``_prepare`` below.
    """

    def __init__(self, w_ih, w_hh, b_ih, b_hh, *, reset_after=True):
        w_ih = _as_float_array(w_ih, "w_ih")
        if w_ih.ndim != 2:
            raise ValueError(f"`w_ih` must have shape (3H, I), got {w_ih.shape}")
        w_ih, w_hh, b_ih, b_hh = _check_weights(w_ih, w_hh, b_ih, b_hh, w_ih.shape[1],
                                                w_ih.dtype, "w_ih")
        _check_blas_sizes(1, 1, w_ih.shape[1], w_hh.shape[1])
        super().__init__(np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T),
                         np.array(b_ih, order="C"), np.array(b_hh, order="C"),
                         bool(reset_after))

    @property
    def dtype(self):
        return self.w_ih_t.dtype

    def __repr__(self):
        return (f"GRUCell(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"dtype={self.dtype}, reset_after={self.reset_after})")

    def _prepare(self, x, h):
        """x and h checked and made C-contiguous arrays of the cell's dtype, else an error."""
        x = _as_float_array(x, "x")
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"`x` must have shape (B, I) = (B, {self.input_size}), "
                             f"got {x.shape}")
        B, H = x.shape[0], self.hidden_size
        _check_same_dtype((x,), ("x",), "the cell's weights", self.dtype)
        if h is None:
            h = np.zeros((B, H), self.dtype)
        else:
            h = _as_float_array(h, "h")
            _check_shape(h, "h", (B, H), "(B, H)")
            _check_same_dtype((h,), ("h",), "the cell's weights", self.dtype)
        _check_blas_sizes(1, B, self.input_size, H)
        return np.ascontiguousarray(x), np.ascontiguousarray(h)


# ---------------------------------------------------------------------------------------------
# The entry for tier 3 (cgru.layers): weights in the layers' own layout, the one the kernels
# read directly, and no re-validation of what a layer's `build` already guarantees.
#   kernel (I, 3H) = w_ih.T, recurrent_kernel (H, 3H) = w_hh.T, b_ih and b_hh (3H,), all in
#   PyTorch's gate order (r, z, n), C-contiguous, of x's dtype; x (T, B, I) time-major of that
#   dtype (any strides); h0 (B, H) or None.
# _layer_backward returns (dx or None when not need_dx, dh0, d_kernel, d_recurrent_kernel,
# db_ih, db_hh), the weight gradients in the layout of the weights.
# ---------------------------------------------------------------------------------------------
def _layer_forward(x, h0, kernel, recurrent_kernel, b_ih, b_hh, reset_after, training):
    return gru_forward(x, h0, kernel.T, recurrent_kernel.T, b_ih, b_hh,
                       reset_after=reset_after, training=training)


def _layer_backward(dy, dh_n, cache, need_dx=True):
    g = gru_backward(dy, dh_n, cache)
    return (g.dx if need_dx else None, g.dh0, np.ascontiguousarray(g.dw_ih.T),
            np.ascontiguousarray(g.dw_hh.T), g.db_ih, g.db_hh)

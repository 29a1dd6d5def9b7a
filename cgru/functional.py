"""The functional GRU: ``gru_forward`` and ``gru_backward`` (time-major, PyTorch weight layout).

This module validates every argument, makes contiguous copies only where needed, allocates
every array the kernels write, chooses how a call runs (``_plan``: the small GEMM's level,
threads, weight layout) and calls the compiled loops in ``cgru._native``. Nothing reaches
native code before it has been checked here: wrong ranks, sizes, dtypes or lengths raise
``ValueError``/``TypeError`` naming the argument and the shapes.
"""
import os
from collections import namedtuple
from contextlib import nullcontext

import numpy as np

from cgru._native import _loops, _optim, _step
from cgru._pool import POOL
from cgru._threads import blas_on_one_thread, blas_threads

__all__ = ["gru_forward", "gru_backward", "GRUGrads", "GRUCache", "GRUCell",
           "set_num_threads", "get_num_threads", "ACTIVATIONS"]

_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)
_FLOAT_DTYPES = (_FLOAT32, _FLOAT64)
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

    __slots__ = ("x", "w_ih", "w_hh", "weights_t", "gates", "hidden_n", "hs", "lengths",
                 "reset_after", "plan", "level", "hold", "rec_mask", "hd", "input_masks",
                 "pre", "activations")

    def __init__(self, x, w_ih, w_hh, weights_t, gates, hidden_n, hs, lengths, reset_after,
                 plan, level, hold=False, rec_mask=None, hd=None, input_masks=None, pre=None,
                 activations=(0, 1)):
        self.x, self.w_ih, self.w_hh, self.weights_t = x, w_ih, w_hh, weights_t
        self.gates, self.hidden_n, self.hs = gates, hidden_n, hs
        # lengths: None, (B,) lengths or (T, B) step limits (a mask, see _mask_limits)
        self.lengths, self.reset_after = lengths, reset_after
        self.plan, self.level = plan, level     # the forward's plan, reused by backward
        # hold: masked steps repeated y of the step before; rec_mask (3, B, H) and the
        # dropped states hd (3, T, B, H) under recurrent dropout, else None
        self.hold, self.rec_mask, self.hd = hold, rec_mask, hd
        # input_masks (3, B, I): x is then (3, T, B, I), x * input_masks[g] for gate g
        self.input_masks = input_masks
        # the pre-activations that gelu and silu need in backward (None for the others), and
        # the activation codes (activation, recurrent_activation)
        self.pre, self.activations = pre, activations

    @property
    def dtype(self):
        return self.x.dtype

    @property
    def shape(self):
        """(T, B, I, H)."""
        return self.x.shape[-3:] + (self.hs.shape[2],)

    @property
    def nbytes(self):
        return (self.gates.nbytes + self.hidden_n.nbytes + self.hs.nbytes
                + (0 if self.hd is None else self.hd.nbytes)
                + (0 if self.input_masks is None else self.x.nbytes)
                + (0 if self.pre is None else self.pre.nbytes))

    def __repr__(self):
        T, B, I, H = self.shape
        act, rec = (_ACTIVATION_NAMES[code] for code in self.activations)
        return (f"GRUCache(T={T}, B={B}, I={I}, H={H}, dtype={self.dtype}, "
                f"reset_after={self.reset_after}, activation={act!r}, "
                f"recurrent_activation={rec!r}, nbytes={self.nbytes})")


# The cell's activations by name (Keras 3's names and definitions; "swish" is silu's other
# name): what `activation` and `recurrent_activation` take.
ACTIVATIONS = tuple(_loops.ACTIVATION_CODES)
_ACTIVATION_NAMES = {code: name for name, code in _loops.ACTIVATION_CODES.items()}
_DEFAULT_CODES = (_loops.ACTIVATION_CODES["tanh"], _loops.ACTIVATION_CODES["sigmoid"])


def _activation_codes(activation, recurrent_activation):
    """The cell's codes for the two activation names, else ValueError naming the argument."""
    if activation == "tanh" and recurrent_activation == "sigmoid":
        return _DEFAULT_CODES
    codes = []
    for name, value in (("activation", activation),
                        ("recurrent_activation", recurrent_activation)):
        key = "silu" if value == "swish" else value
        if not isinstance(key, str) or key not in _loops.ACTIVATION_CODES:
            raise ValueError(f"`{name}` must be the name of an activation the GRU cell "
                             f"computes, one of {list(ACTIVATIONS) + ['swish']}; got "
                             f"{value!r}")
        codes.append(_loops.ACTIVATION_CODES[key])
    return tuple(codes)


def _as_float_array(value, name):
    """``value`` as an ndarray of float32 or float64, else TypeError naming ``name``."""
    if value is None:
        raise TypeError(f"`{name}` must be a float32 or float64 array, got None")
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    dtype = array.dtype
    # identity first: NumPy's native float dtypes are singletons, and == costs a microsecond
    if dtype is not _FLOAT32 and dtype is not _FLOAT64 and dtype not in _FLOAT_DTYPES:
        raise TypeError(f"`{name}` must be a float32 or float64 array, got dtype {array.dtype} "
                        f"(shape {array.shape}); cast it with .astype(np.float32)")
    return array


def _check_shape(array, name, expected, meaning):
    if array.shape != expected:
        raise ValueError(f"`{name}` must have shape {meaning} = {expected}, "
                         f"got {array.shape}")


def _check_same_dtype(arrays, names, reference_name, dtype):
    for array, name in zip(arrays, names):
        if array is not None and array.dtype is not dtype and array.dtype != dtype:
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


def _check_mask(mask, T, B):
    """``mask`` (T, B) of booleans (or integers, nonzero meaning valid) as a boolean array."""
    if mask is None:
        return None
    array = np.asarray(mask)
    if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"`mask` must be booleans (T, B), got dtype {array.dtype}")
    if array.shape != (T, B):
        raise ValueError(f"`mask` must have shape (T, B) = ({T}, {B}), time-major like x, "
                         f"got {array.shape}")
    return array if array.dtype == np.bool_ else array != 0


def _mask_limits(mask):
    """A (T, B) boolean mask as the kernels read it: per-step limits, T where a step is
    valid and 0 where it is masked (the kernels test t < limit)."""
    T = mask.shape[0]
    # C order whatever the mask's (a layer passes the transposed view of its (B, T) mask)
    return np.where(mask, T, 0).astype(np.intp, order="C")


def _check_recurrent_mask(rec_mask, B, H, dtype):
    """``rec_mask`` (3, B, H) of x's dtype, contiguous, or None."""
    if rec_mask is None:
        return None
    rec_mask = _as_float_array(rec_mask, "recurrent_dropout_mask")
    _check_shape(rec_mask, "recurrent_dropout_mask", (3, B, H), "(3, B, H)")
    _check_same_dtype((rec_mask,), ("recurrent_dropout_mask",), "x", dtype)
    return np.ascontiguousarray(rec_mask)


def _check_blas_sizes(T, B, I, H):
    if T * B <= _BLAS_INT_MAX and 3 * H <= _BLAS_INT_MAX and I <= _BLAS_INT_MAX:
        return
    for name, size in (("T * B", T * B), ("3 * H", 3 * H), ("I", I)):
        if size > _BLAS_INT_MAX:
            raise ValueError(f"{name} = {size} is larger than the 32-bit BLAS limit "
                             f"{_BLAS_INT_MAX} (x has shape ({T}, {B}, {I}), H = {H}); "
                             f"split the batch or the sequence")


def _inference_chunk(T, B):
    """Steps of input projection per GEMM in inference: about _CHUNK_ROWS rows, enough for an
    efficient GEMM while the chunk's gates stay in cache (and no (T, B, 3H) buffer)."""
    return max(1, min(T, -(-_CHUNK_ROWS // B)))


# A call's products: the small GEMM (cgru/_native/_gemm_template.h) on parts of the batch, one
# thread each, or BLAS. The rules depend on the small GEMM's level, each set from measurements
# on a CPU of that level.
#
# Level 2 (AVX-512; a Zen 4 EPYC, float32; pinned by tests/test_plans.py): at one thread the
# small GEMM runs the per-step products at the core's peak, 1.3-1.6x OpenBLAS for B = 32-64,
# but needs weights worth packing: at (T, B, I, H) = (50, 4, 32, 64) it was 1.33x slower than
# OpenBLAS, at the seed shape (10, 32, 20, 32) 1.07-1.16x slower, at H = 64, B = 16 even, and
# 0.85-0.94x from H = 128 (B = 8 to 128); medium training 1.3x faster. With more threads,
# parts of the batch on threads of their own beat OpenBLAS threading each product, from
# _PARTS_MIN_FLOPS (set when each call started its own threads, before OpenMP's reused team),
# each part at least _PART_MIN_ROWS rows (the register tile).
#
# Level 1 (AVX2 with FMA; an AVX2-only EPYC, float32): the small GEMM wins at one thread from
# two rows on, at every shape measured; with one row BLAS's matrix-vector product wins. Whole
# calls, one thread, small GEMM over BLAS (`python benchmarks/plan_rules.py`, figures in
# benchmarks/README.md, "Plan rules per level"): seed 1.29 inference / 1.06-1.27 training,
# (20, 8, 32, 64) 1.75 / 1.67, (50, 4, 32, 64) 2.73 / 2.62, (50, 2, 32, 64) 2.95 / 3.04,
# small 1.36 / 0.95-1.40, medium 1.35 / 1.13, long 1.66 / 1.50, large 1.27 / 0.97; batch 1
# 0.31-0.75; one step (T = 1) 1.0-1.6, left to BLAS as GRUCell's steps. A part needs only
# _AVX2_PART_MIN_ROWS rows: at two threads (100, 12, 128, 256) in two parts of 6 rows was
# 2.79 / 2.16 over BLAS's two threads, one part 1.47 / 1.26; (50, 4, 128, 256) in parts of
# 2 rows 2.27 / 2.06, one part 2.50 / 1.71. Parts pay from _AVX2_PARTS_MIN_FLOPS: at two
# threads the seed shape (3.2 MFLOP) in two parts against one, same run (bench.py, medians):
# fit 21.5-21.9 ms against 22.9-24.2, a training step 315-319 us against 368-393, inference
# 111-135 us against 140-156; in plan_rules.py (10, 64, 20, 32) inference 1.64-1.66x BLAS
# against 1.10-1.19x, (50, 8, 32, 32) 1.64-2.04 against 1.60-1.74; (5, 16, 20, 32) (0.8
# MFLOP) even.
_PARTS_MIN_FLOPS = 20e6
_PART_MIN_ROWS = 8
_AVX2_MIN_ROWS = 2
_AVX2_PART_MIN_ROWS = 4
_AVX2_PARTS_MIN_FLOPS = 2e6
_SMALL_GEMM_MIN_H = 64
# (small_gemm, parts) forced for every call, or None for the rules of _plan (tests set it).
_PLAN_OVERRIDE = None


# The small GEMM's level for every call: the CPU's best (2 AVX-512, 1 AVX2 with FMA), or 0
# (BLAS does every product) when the environment has CGRU_SMALL_GEMM=0 at import.
_small_gemm_level = (0 if os.environ.get("CGRU_SMALL_GEMM", "1").strip() == "0"
                     else _loops.SMALL_GEMM_LEVEL)
# Threads for cgru's own parallel loops: set_num_threads's count, None to follow BLAS's.
_num_threads = None
# Set in a child process made by fork (multiprocessing's default on Linux): GNU OpenMP's
# threads do not survive a fork, and a child that enters a parallel region after its parent
# ran one hangs (tests/test_threads.py). Such a child runs cgru's loops on its own thread;
# BLAS (OpenBLAS resets itself at fork) and the results are unchanged.
_forked_child = False


def _after_fork_in_child():
    global _forked_child
    _forked_child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n):
    """Sets how many threads cgru's kernels use (``n >= 1``), or ``None`` to follow the count
    of SciPy's BLAS again (``threadpoolctl.threadpool_limits`` or ``OPENBLAS_NUM_THREADS`` /
    ``OMP_NUM_THREADS``, as by default). Products that run on BLAS use BLAS's own threads."""
    global _num_threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer))
                          or n < 1):
        raise ValueError(f"`n` must be a positive integer or None, got {n!r}")
    _num_threads = None if n is None else int(n)


def get_num_threads():
    """The threads cgru's kernels use: ``set_num_threads``'s count, else BLAS's."""
    return _num_threads if _num_threads is not None else blas_threads()


def _set_small_gemm_level(level):
    """Runs the small GEMM's form ``level`` (at most the CPU's; 0: BLAS only) from the next
    call on; returns the level before. For tests and benchmarks."""
    global _small_gemm_level
    before = _small_gemm_level
    _small_gemm_level = max(0, min(int(level), _loops.SMALL_GEMM_LEVEL))
    return before


def _plan(T, B, I, H, small_gemm=True):
    """(small_gemm, parts) for a call on x (T, B, I) with H units; ``small_gemm=False`` (or
    CGRU_SMALL_GEMM=0) keeps every product on BLAS. The rules of the small GEMM's level
    (see above)."""
    if _PLAN_OVERRIDE is not None:
        return _PLAN_OVERRIDE
    level = _small_gemm_level
    if not small_gemm or level == 0 or B < (_PART_MIN_ROWS if level >= 2 else _AVX2_MIN_ROWS):
        return False, 1     # BLAS: at level 2 below the register tile, at level 1 one row
    threads = get_num_threads()
    parts = min(threads, B // (_PART_MIN_ROWS if level >= 2 else _AVX2_PART_MIN_ROWS))
    min_flops = _PARTS_MIN_FLOPS if level >= 2 else _AVX2_PARTS_MIN_FLOPS
    if parts >= 2 and 6.0 * T * B * H * (I + H) >= min_flops:
        return True, parts
    if level == 1:
        # AVX2: two rows are enough, whatever the thread count; a one-step call stays on BLAS,
        # as GRUCell computes it (the same bits: tests/test_cell.py)
        return T >= 2, 1
    if threads == 1 and H >= _SMALL_GEMM_MIN_H:
        return True, 1
    return False, 1         # small calls or batches, or too few rows to cut: BLAS


def _blas_threads(plan, T, B, I, H):
    """The context a call's BLAS products run in: one thread for a call on BLAS below
    _PARTS_MIN_FLOPS (too short to share, as for cgru's own parts; see
    cgru._threads.blas_on_one_thread), else BLAS's own count."""
    if not plan[0] and 6.0 * T * B * H * (I + H) < _PARTS_MIN_FLOPS:
        return blas_on_one_thread
    return nullcontext()


def _level(plan):
    """The small GEMM's level a plan runs at (0: BLAS)."""
    return _small_gemm_level if plan[0] else 0


def _copies_transposed_weights(plan, T):
    """Does a forward on BLAS with weights in PyTorch's layout pay for contiguous transposed
    copies? The small GEMM's packing reads either layout: never. BLAS: h @ W^T on a (3H, K)
    operand was 1.2-2.6x slower than on a contiguous (K, 3H) copy (PERF-NOTES.md), so the copy
    (3H (I + H) numbers) pays from the second step on; a single step cannot win it back."""
    return not plan[0] and T >= 2


def _weights_are_plain(w_ih, w_hh, b_ih, b_hh, I, dtype):
    """Are the four weights ndarrays of ``dtype`` (a native float dtype) in the PyTorch shapes
    for I >= 1 input features? The common case, answered in a third of _check_weights's
    time (it is a fifth of a one-step gru_forward)."""
    arrays = (w_ih, w_hh, b_ih, b_hh)
    for array in arrays:
        if type(array) is not np.ndarray or array.dtype is not dtype:
            return False
    shape = w_hh.shape
    if len(shape) != 2 or I == 0:
        return False
    G = shape[0]
    return (G > 0 and G == 3 * shape[1] and w_ih.shape == (G, I) and b_ih.shape == (G,)
            and b_hh.shape == (G,))


def _check_weights(w_ih, w_hh, b_ih, b_hh, I, dtype, dtype_from):
    """The four weights as float arrays of the PyTorch shapes for I input features, checked
    to share ``dtype`` (the dtype of the argument named ``dtype_from``)."""
    if (dtype is _FLOAT32 or dtype is _FLOAT64) and _weights_are_plain(w_ih, w_hh, b_ih, b_hh,
                                                                        I, dtype):
        return w_ih, w_hh, b_ih, b_hh
    w_hh = _as_float_array(w_hh, "w_hh")
    shape = w_hh.shape
    if len(shape) != 2 or shape[0] != 3 * shape[1] or shape[1] == 0:
        raise ValueError(f"`w_hh` must have shape (3H, H) with H >= 1, got {shape}")
    G = shape[0]
    w_ih = _as_float_array(w_ih, "w_ih")
    _check_shape(w_ih, "w_ih", (G, I), "(3H, I)")
    if I == 0:
        raise ValueError("the input must have at least one feature, got I = 0")
    b_ih = _as_float_array(b_ih, "b_ih")
    _check_shape(b_ih, "b_ih", (G,), "(3H,)")
    b_hh = _as_float_array(b_hh, "b_hh")
    _check_shape(b_hh, "b_hh", (G,), "(3H,)")
    _check_same_dtype((w_ih, w_hh, b_ih, b_hh), ("w_ih", "w_hh", "b_ih", "b_hh"), dtype_from,
                      dtype)
    return w_ih, w_hh, b_ih, b_hh


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, *, reset_after=True, lengths=None,
                training=True, mask=None, zero_output_for_mask=False,
                recurrent_dropout_mask=None, activation="tanh", recurrent_activation="sigmoid"):
    """Runs a GRU over a time-major sequence.

    x (T, B, I); h0 (B, H) or None for zeros; w_ih (3H, I), w_hh (3H, H), b_ih (3H,),
    b_hh (3H,) in PyTorch's layout and gate order (r, z, n); lengths None or integers (B,) in
    0..T (steps past a sequence's length keep its h and give zero y). All float arrays share
    one dtype, float32 or float64. activation (in place of tanh in n) and
    recurrent_activation (in place of sigmoid in r and z): names of ``ACTIVATIONS``, with
    Keras 3's definitions.

    mask: None or booleans (T, B), time-major like x, any pattern (instead of lengths), with
    Keras 3's semantics: a masked step keeps h, and its y repeats y of the step before (0
    before a row's first valid step, whatever h0 is), or is 0 with zero_output_for_mask=True.
    h_n is h after a row's last valid step (h0 for a row masked entirely).
    recurrent_dropout_mask: None or (3, B, H) multipliers for h in each gate's recurrent
    product, gate order (r, z, n), the same at every step (Keras 3's recurrent dropout: the
    update z * h + (1 - z) * n reads h itself); gru_backward differentiates through them.

    Returns y (T, B, H), h_n (B, H) and a cache for ``gru_backward`` (None unless training).
    """
    codes = _activation_codes(activation, recurrent_activation)
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
    mask = _check_mask(mask, T, B)
    if mask is not None and lengths is not None:
        raise ValueError("pass `lengths` or `mask`, not both (a mask can say what lengths say: "
                         "mask[t, b] = t < lengths[b])")
    rec_mask = _check_recurrent_mask(recurrent_dropout_mask, B, H, x.dtype)
    _check_blas_sizes(T, B, I, H)
    plan = _plan(T, B, I, H)
    w_ih, w_hh, weights_t = _kernel_layout(w_ih, w_hh)
    forward_w_ih, forward_w_hh, forward_t = w_ih, w_hh, weights_t
    if not weights_t and _copies_transposed_weights(plan, T) and T * B > 0:
        forward_w_ih, forward_w_hh, forward_t = (np.ascontiguousarray(w_ih.T),
                                                 np.ascontiguousarray(w_hh.T), True)
    if mask is not None:
        lengths = _mask_limits(mask)
    return _run_forward(x, h0, (forward_w_ih, forward_w_hh, forward_t), (w_ih, w_hh, weights_t),
                        np.ascontiguousarray(b_ih), np.ascontiguousarray(b_hh), lengths,
                        bool(reset_after), training, plan,
                        hold=mask is not None and not zero_output_for_mask, rec_mask=rec_mask,
                        codes=codes)


def _kernel_layout(w_ih, w_hh):
    """(w_ih, w_hh, weights_t): the weights as the kernels read them, without a copy where one
    layout is contiguous for both: PyTorch's (3H, K) as it is, or transposed (K, 3H) stored
    C-contiguous (weights_t; a transposed view of the layers' arrays); else contiguous copies
    in PyTorch's layout."""
    if w_ih.flags.c_contiguous and w_hh.flags.c_contiguous:
        return w_ih, w_hh, False
    if w_ih.T.flags.c_contiguous and w_hh.T.flags.c_contiguous:
        return w_ih.T, w_hh.T, True
    return np.ascontiguousarray(w_ih), np.ascontiguousarray(w_hh), False


def _run_forward(x, h0, forward_weights, backward_weights, b_ih, b_hh, lengths, reset_after,
                 training, plan, hold=False, rec_mask=None, input_masks=None,
                 codes=_DEFAULT_CODES):
    """gru_forward after validation: x (T, B, I) of the weights' dtype (any strides); h0 (B, H)
    or None; forward_weights, backward_weights: (w_ih, w_hh, weights_t) as the kernels read
    them in forward and in backward; b_ih, b_hh contiguous; lengths None, checked intp (B,)
    or (T, B) step limits (_mask_limits); hold: masked steps repeat y (with step limits);
    rec_mask None or checked (3, B, H) recurrent dropout masks; input_masks None or (3, B, I)
    input dropout masks, one per gate (gates r, z, n), for the layers; codes: the activation
    codes (activation, recurrent_activation)."""
    T, B, I = x.shape
    w_ih, w_hh, weights_t = forward_weights
    H = w_hh.shape[0] if weights_t else w_hh.shape[1]
    dtype = x.dtype
    # The kernels write every element of y and of the gradients (y is 0 past a row's length),
    # so they start uninitialised; only empty sequences or batches take zeros.
    empty = T == 0 or B == 0
    # Large arrays come from POOL (cgru/_pool.py): reused ones save the page faults of fresh
    # memory, a third of a training step's time on the medium benchmark shape. A call whose
    # largest array is under the pool's bound asks NumPy directly (the pool would hand it
    # to np.empty after its own checks: 0.5-1 us an array, at the one-step shape).
    new = np.empty if T * B * 3 * H * dtype.itemsize < POOL.min_bytes else POOL.empty
    y = np.zeros((T, B, H), dtype) if empty else new((T, B, H), dtype)
    slots_h, slots_n = (T + 1, T) if training else (2, 1)
    hs = new((slots_h, B, H), dtype)
    if h0 is None:
        hs[0] = 0
    else:
        hs[0] = h0
    level, parts = _level(plan), (1 if _forked_child else plan[1])
    hd = None
    # the pre-activations of gelu and silu, kept for backward in training only
    width = _loops.pre_width(H, *codes) if training and codes != _DEFAULT_CODES else 0
    pre = new((T, B, width), dtype) if width and not empty else None
    if not empty:
        if input_masks is None:
            x = np.ascontiguousarray(x)
        else:
            # x[g] = x * input_masks[g] (3, T, B, I): the three gates' inputs, whole sequence
            x_gates = new((3, T, B, I), dtype)
            np.multiply(x[None], input_masks[:, None], out=x_gates)
            x = x_gates
        gates = new((T if training else _inference_chunk(T, B), B, 3 * H), dtype)
        hidden_n = new((slots_n, B, H), dtype)
        gates_h = np.empty((B, 3 * H), dtype)
        if rec_mask is not None:
            hd = new((3, slots_n, B, H), dtype)
        with _blas_threads(plan, T, B, I, H):
            _loops.forward(x, w_ih, w_hh, weights_t, b_ih, b_hh,
                           _NO_LENGTHS if lengths is None else lengths, reset_after,
                           gates, hidden_n, hs, gates_h, y, level, parts, hold, rec_mask, hd,
                           pre, *codes)
    else:
        gates = np.empty((T, B, 3 * H), dtype)
        hidden_n = np.empty((slots_n, B, H), dtype)
    h_n = hs[T % slots_h].copy()
    cache = None
    if training:
        cache = GRUCache(x, *backward_weights, gates, hidden_n, hs, lengths, reset_after,
                         plan, level, hold, rec_mask, hd,
                         None if empty else input_masks, pre, codes)
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

    dx, dh0, dw_ih, dw_hh, db_ih, db_hh = _run_backward(dy, dh_n, cache, True)
    if cache.weights_t:         # weights passed as transposed views: views back, no copy
        dw_ih, dw_hh = dw_ih.T, dw_hh.T
    return GRUGrads(dx, dh0, dw_ih, dw_hh, db_ih, db_hh)


def _run_backward(dy, dh_n, cache, need_dx):
    """gru_backward after validation: (dx or None unless need_dx, dh0, dw_ih, dw_hh, db_ih,
    db_hh), the weight gradients in the layout of the cache's weights."""
    T, B, I, H = cache.shape
    dtype = cache.dtype
    empty = T == 0 or B == 0
    new = np.zeros if empty else np.empty       # as in gru_forward
    # large arrays from POOL, small ones from NumPy directly, as in _run_forward
    pooled = np.empty if T * B * 3 * H * dtype.itemsize < POOL.min_bytes else POOL.empty
    weight_shape = (lambda K: (K, 3 * H)) if cache.weights_t else (lambda K: (3 * H, K))
    dw_ih = new(weight_shape(I), dtype)
    dw_hh = new(weight_shape(H), dtype)
    db_ih = new(3 * H, dtype)
    db_hh = new(3 * H, dtype)
    if not need_dx:
        dx = None
    elif empty:
        dx = np.zeros((T, B, I), dtype)
    else:
        dx = pooled((T, B, I), dtype)
    dh = np.empty((2, B, H), dtype)
    if dh_n is None:
        dh[0] = 0
    else:
        dh[0] = dh_n
    if empty:
        return dx, dh[0].copy(), dw_ih, dw_hh, db_ih, db_hh

    dy = _no_rows(B, H, dtype) if dy is None else np.ascontiguousarray(dy)
    d_gates = pooled((T, B, 3 * H), dtype)
    d_aux = pooled((T if cache.reset_after else 1, B, H), dtype)
    scratch = None
    if cache.hold or cache.rec_mask is not None:
        scratch = np.empty((2, B, H), dtype)
    x_gates = cache.input_masks is not None
    with _blas_threads(cache.plan, T, B, I, H):
        _loops.backward(dy, cache.x, cache.w_ih, cache.w_hh, cache.weights_t, cache.gates,
                        cache.hidden_n, cache.hs,
                        _NO_LENGTHS if cache.lengths is None else cache.lengths,
                        cache.reset_after, dh, d_gates, d_aux,
                        dx if need_dx and not x_gates else _no_rows(B, I, dtype), dw_ih,
                        dw_hh, db_ih, db_hh, cache.level, 1 if _forked_child else cache.plan[1],
                        cache.hold, cache.rec_mask, cache.hd, scratch, cache.pre,
                        *cache.activations)
    if need_dx and x_gates:
        _gate_input_gradient(cache, d_gates, d_aux, dx)
    return dx, dh[T % 2].copy(), dw_ih, dw_hh, db_ih, db_hh


def _gate_input_gradient(cache, d_gates, d_aux, dx):
    """dx (T, B, I) := sum over gates g of (D[:, :, g] @ W_ig) * input_masks[g], the forward
    having read x * input_masks[g] in gate g's input product; D's n block is d_aux with
    reset_after. Whole-sequence products (BLAS through NumPy), after the time loop."""
    H = cache.hs.shape[2]
    w_ih = cache.w_ih.T if cache.weights_t else cache.w_ih          # (3H, I) either way
    for g in range(3):
        d = d_aux if g == 2 and cache.reset_after else d_gates[:, :, g * H:(g + 1) * H]
        part = np.matmul(d, w_ih[g * H:(g + 1) * H])
        part *= cache.input_masks[g]
        if g == 0:
            dx[...] = part
        else:
            dx += part


def _no_rows(B, K, dtype):
    """A (0, B, K) array: what the kernels take for "no gradient" (no dy, or no dx wanted)."""
    return np.empty((0, B, K), dtype)


class GRUCell(_step.StepKernel):
    """One GRU step at a time, with the weights prepared once: online inference.

    ``cell = GRUCell(w_ih, w_hh, b_ih, b_hh, reset_after=True, activation="tanh",
    recurrent_activation="sigmoid")`` takes the weights and options of ``gru_forward``
    (PyTorch's layout; the weights are copied, so later changes to the arrays do not affect
    the cell). ``h_next = cell(x, h)`` runs one step, as ``torch.nn.GRUCell`` does:
    x (B, I), h (B, H) or None for zeros, h_next (B, H) a new array; all of the weights'
    dtype. Inference only (no cache); calls may run from several threads at once.
    ``cell(x_t, h)`` equals ``gru_forward(x_t[None], h, ...)[1]``.

    The call itself is native (``_native._step.StepKernel``): C-contiguous arrays of the right
    dtype and shape go straight to the kernel, anything else through ``_prepare`` below. The
    weights are held in PyTorch's layout, read as BLAS's transposed operand, as a one-step
    ``gru_forward`` reads them without a copy: so that both give the same bits.
    """

    def __init__(self, w_ih, w_hh, b_ih, b_hh, *, reset_after=True, activation="tanh",
                 recurrent_activation="sigmoid"):
        codes = _activation_codes(activation, recurrent_activation)
        w_ih = _as_float_array(w_ih, "w_ih")
        if w_ih.ndim != 2:
            raise ValueError(f"`w_ih` must have shape (3H, I), got {w_ih.shape}")
        w_ih, w_hh, b_ih, b_hh = _check_weights(w_ih, w_hh, b_ih, b_hh, w_ih.shape[1],
                                                w_ih.dtype, "w_ih")
        _check_blas_sizes(1, 1, w_ih.shape[1], w_hh.shape[1])
        super().__init__(np.array(w_ih, order="C"), np.array(w_hh, order="C"),
                         np.array(b_ih, order="C"), np.array(b_hh, order="C"),
                         bool(reset_after), *codes)

    @property
    def dtype(self):
        return self.w_ih.dtype

    @property
    def activation(self):
        return _ACTIVATION_NAMES[self.activation_code]

    @property
    def recurrent_activation(self):
        return _ACTIVATION_NAMES[self.recurrent_activation_code]

    def __repr__(self):
        extra = ("" if (self.activation_code, self.recurrent_activation_code) == _DEFAULT_CODES
                 else f", activation={self.activation!r}, "
                      f"recurrent_activation={self.recurrent_activation!r}")
        return (f"GRUCell(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"dtype={self.dtype}, reset_after={self.reset_after}{extra})")

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
def _layer_forward(x, h0, kernel, recurrent_kernel, b_ih, b_hh, reset_after, training,
                  mask=None, zero_output_for_mask=False, rec_mask=None, input_masks=None,
                  activation="tanh", recurrent_activation="sigmoid"):
    """gru_forward for a layer: weights taken as they are (no checks, copies or transposes);
    x (T, B, I) made contiguous once. The plan is made here once and kept in the cache.
    mask: None or booleans (T, B) (time-major); rec_mask: None or (3, B, H) contiguous of
    x's dtype, gate order (r, z, n); both as gru_forward's. input_masks: None or (3, B, I),
    an input dropout mask per gate (r, z, n), as Keras 3's GRUCell with recurrent_dropout
    draws them."""
    T, B, I = x.shape
    H = recurrent_kernel.shape[0]
    weights = (kernel, recurrent_kernel, True)
    limits = None if mask is None else _mask_limits(mask)
    return _run_forward(x, h0, weights, weights, b_ih, b_hh, limits, bool(reset_after),
                        training, _plan(T, B, I, H),
                        hold=mask is not None and not zero_output_for_mask, rec_mask=rec_mask,
                        input_masks=input_masks,
                        codes=_activation_codes(activation, recurrent_activation))


def _layer_backward(dy, dh_n, cache, need_dx=True):
    """gru_backward for a layer: (dx or None when not need_dx, dh0, d_kernel,
    d_recurrent_kernel, db_ih, db_hh), the weight gradients in the layers' layout. With
    need_dx=False (a model's first layer) no dx is computed at all."""
    return _run_backward(dy, dh_n, cache, bool(need_dx))


def _adam_update(weights, grads, momenta, velocities, scalars):
    """Tier 3's entry to the fused Adam rule (cgru/_native/_optim.pyx): one pass per weight,
    in place. The caller (cgru.optimizers.Adam) has checked the arrays: C-contiguous, of the
    weights' dtype and shapes. scalars: (alpha, 1 - beta_1, 1 - beta_2, epsilon) in that
    dtype."""
    _optim.adam_step(weights, grads, momenta, velocities, *scalars)

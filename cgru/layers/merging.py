"""Merging layers: Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum, Dot, and
their functions (``concatenate([a, b])``, ...), with Keras 3's shapes and masks.

These layers take several inputs: ``forward`` receives a list of arrays (and a list of
masks, None where an input has none), ``backward`` returns a list of input gradients.

Masks as Keras 3 applies them: the output mask of the elementwise layers is the OR of the
input masks when every input has one (else None). Add, Subtract and Average ignore masks
in their values; Multiply treats masked entries as 1 (and zeroes entries masked in every
input); Maximum and Minimum ignore masked entries. Concatenate concatenates the masks
(an input without one counts as all valid); Dot drops the mask.
"""
import numpy as np

from .base import Layer, shape_str
from .node import is_symbolic, symbolic_call

__all__ = ["Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
           "Dot", "concatenate", "add", "subtract", "multiply", "average", "maximum",
           "minimum", "dot"]


def _unbroadcast(d, shape):
    """``d`` summed down to ``shape`` (the inverse of NumPy's broadcasting)."""
    while d.ndim > len(shape):
        d = d.sum(axis=0)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and d.shape[i] != 1)
    return d.sum(axis=axes, keepdims=True) if axes else d


def _expanded_mask(mask, x):
    """A (batch, steps) mask broadcast over the trailing axes of ``x``, as Keras does."""
    if mask.ndim < x.ndim:
        mask = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    return np.broadcast_to(mask, x.shape)


class _Merge(Layer):
    """Shared by the merging layers: a list of at least ``min_inputs`` inputs, cast to the
    layer's dtype by ``__call__``; elementwise layers broadcast as Keras does (a lower-rank
    input gains axes after the batch axis)."""

    supports_masking = True
    min_inputs = 1
    exact_inputs = None

    def _check_list(self, shapes):
        if not isinstance(shapes, (list, tuple)) or not shapes or not all(
                isinstance(s, (list, tuple)) for s in shapes):
            raise ValueError(f"A merge layer ('{self.name}', {type(self).__name__}) should be "
                             f"called on a list of inputs. Received: {shapes!r}")
        n = len(shapes)
        if self.exact_inputs is not None and n != self.exact_inputs:
            raise ValueError(f"A `{type(self).__name__}` layer should be called on exactly "
                             f"{self.exact_inputs} inputs. Received {n} inputs of shapes "
                             f"{[shape_str(s) for s in shapes]}.")
        if n < self.min_inputs:
            raise ValueError(f"A `{type(self).__name__}` layer should be called on a list of "
                             f"at least {self.min_inputs} inputs. Received {n}.")

    def check_input_shape(self, shapes):
        """``shapes``: the inputs' shapes with the batch axis."""
        self._check_list(shapes)
        batches = {s[0] for s in shapes if s} - {None}
        if len(batches) > 1:
            raise ValueError("Cannot merge tensors with different batch sizes. Received "
                             f"tensors with shapes {[shape_str(s) for s in shapes]}")
        self.compute_output_shape([tuple(s[1:]) for s in shapes])

    def build(self, input_shape):
        super().build([tuple(s) for s in input_shape])

    def compute_output_shape(self, input_shape):
        out = tuple(input_shape[0])
        for shape in input_shape[1:]:
            out = self._broadcast_shape(out, tuple(shape), input_shape)
        return out

    @staticmethod
    def _broadcast_shape(a, b, shapes):
        if len(a) < len(b):
            a, b = b, a
        out = list(a[:len(a) - len(b)])
        for i, j in zip(a[len(a) - len(b):], b):
            if i is None or j is None:
                known = i if j is None else j
                out.append(None if known in (None, 1) else known)
            elif i == 1 or j == 1 or i == j:
                out.append(max(i, j))
            else:
                raise ValueError("Inputs have incompatible shapes. Received shapes "
                                 f"{[shape_str((None,) + tuple(s)) for s in shapes]}")
        return tuple(out)

    def compute_mask(self, inputs, mask=None):
        if mask is None or any(m is None for m in mask):
            return None
        out = mask[0]
        for m in mask[1:]:
            out = np.logical_or(out, m)
        return out

    @staticmethod
    def _aligned(inputs):
        """Inputs of lower rank get axes after the batch axis, as Keras's merge does."""
        rank = max(x.ndim for x in inputs)
        return [x.reshape(x.shape[:1] + (1,) * (rank - x.ndim) + x.shape[1:])
                if x.ndim < rank else x for x in inputs]

    def _input_grads(self, d_inputs, shapes):
        """Each gradient summed over the axes its input was broadcast along (with the axes
        ``_aligned`` added), in the input's shape."""
        out = []
        for d, shape in zip(d_inputs, shapes):
            aligned = shape[:1] + (1,) * (d.ndim - len(shape)) + tuple(shape[1:])
            out.append(np.ascontiguousarray(_unbroadcast(d, aligned).reshape(shape)))
        return out

    def __call__(self, inputs, training=False):
        if is_symbolic(inputs):
            return symbolic_call(self, inputs, training=training)
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(f"A merge layer ('{self.name}', {type(self).__name__}) should be "
                             f"called on a list of inputs. Received: inputs of type "
                             f"{type(inputs).__name__}")
        arrays = [self.cast(x, f"inputs[{i}]") for i, x in enumerate(inputs)]
        self.check_input_shape([x.shape for x in arrays])
        self.ensure_built([x.shape[1:] for x in arrays])
        return self.forward(arrays, training=training)[0]

    def get_config(self):
        config = super().get_config()
        config.pop("input_shape", None)
        return config


class _Elementwise(_Merge):
    """Add, Subtract, Average: linear in each input; masks leave the values alone."""

    def _coefficients(self, n):
        raise NotImplementedError

    def forward(self, inputs, training=False, mask=None, need_grad=False):
        xs = self._aligned(inputs)
        coefs = self._coefficients(len(xs))
        out = xs[0] * xs[0].dtype.type(coefs[0]) if coefs[0] != 1 else xs[0]
        for c, x in zip(coefs[1:], xs[1:]):
            out = out + (x if c == 1 else x * x.dtype.type(c))
        ctx = [x.shape for x in inputs] if need_grad else None
        return out, ctx

    def backward(self, d_output, ctx, need_input_grad=True):
        if not need_input_grad:
            return None, []
        coefs = self._coefficients(len(ctx))
        ds = [d_output if c == 1 else d_output * d_output.dtype.type(c) for c in coefs]
        return self._input_grads(ds, ctx), []


class Add(_Elementwise):
    """Sum of the inputs (broadcast as Keras does)."""

    def _coefficients(self, n):
        return [1] * n


class Subtract(_Elementwise):
    """``inputs[0] - inputs[1]``."""

    exact_inputs = 2

    def _coefficients(self, n):
        return [1, -1]


class Average(_Elementwise):
    """The mean of the inputs."""

    def _coefficients(self, n):
        return [1.0 / n] * n


class Multiply(_Merge):
    """Product of the inputs; a masked entry counts as 1, and when every input has a mask
    the entries masked in all of them are 0 (Keras 3)."""

    def forward(self, inputs, training=False, mask=None, need_grad=False):
        xs = self._aligned(inputs)
        masks = list(mask) if mask is not None else [None] * len(xs)
        all_masked = all(m is not None for m in masks)
        factors, any_valid = [], None
        for x, m in zip(xs, masks):
            if m is not None:
                m = _expanded_mask(m, x)
                x = np.where(m, x, x.dtype.type(1))
                any_valid = m if any_valid is None else np.logical_or(any_valid, m)
            factors.append((x, m))
        out = factors[0][0]
        for x, _ in factors[1:]:
            out = out * x
        keep = any_valid if all_masked else None
        if keep is not None:
            out = np.where(keep, out, out.dtype.type(0))
        ctx = (factors, keep, [x.shape for x in inputs]) if need_grad else None
        return out, ctx

    def backward(self, d_output, ctx, need_input_grad=True):
        if not need_input_grad:
            return None, []
        factors, keep, shapes = ctx
        if keep is not None:
            d_output = np.where(keep, d_output, d_output.dtype.type(0))
        ds = []
        for i, (_, m) in enumerate(factors):
            d = d_output
            for j, (x, _) in enumerate(factors):
                if j != i:
                    d = d * x
            if m is not None:               # a masked entry was replaced by 1
                d = np.where(m, d, d.dtype.type(0))
            ds.append(d)
        return self._input_grads(ds, shapes), []


class _Extremum(_Merge):
    """Maximum and Minimum: the gradient goes to the input each entry was taken from; masked
    entries never win (Keras 3)."""

    _pick = None     # np.greater for Maximum: does the new input replace the current one?

    def forward(self, inputs, training=False, mask=None, need_grad=False):
        xs = self._aligned(inputs)
        masks = list(mask) if mask is not None else [None] * len(xs)
        shape = np.broadcast_shapes(*[x.shape for x in xs])
        out = np.broadcast_to(xs[0], shape)
        src = np.zeros(shape, np.intp)      # which input each entry of `out` comes from
        out_mask = None if masks[0] is None else _expanded_mask(masks[0], out)
        for i in range(1, len(xs)):
            x = np.broadcast_to(xs[i], shape)
            x_src = np.full(shape, i, np.intp)
            m = masks[i]
            if m is not None:
                m = _expanded_mask(m, x)
                x, x_src = np.where(m, x, out), np.where(m, x_src, src)
            if out_mask is not None:
                out, src = np.where(out_mask, out, x), np.where(out_mask, src, x_src)
            out_mask = np.logical_or(out_mask, m) if (
                m is not None and out_mask is not None) else None
            # ties keep the current value, as the backends' maximum/minimum gradients do
            take = type(self)._pick(x, out)
            out, src = np.where(take, x, out), np.where(take, x_src, src)
        out = np.array(out)
        ctx = (src, [x.shape for x in inputs]) if need_grad else None
        return out, ctx

    def backward(self, d_output, ctx, need_input_grad=True):
        if not need_input_grad:
            return None, []
        src, shapes = ctx
        zero = d_output.dtype.type(0)
        ds = [np.where(src == i, d_output, zero) for i in range(len(shapes))]
        return self._input_grads(ds, shapes), []


class Maximum(_Extremum):
    """Elementwise maximum of the inputs."""

    _pick = np.greater


class Minimum(_Extremum):
    """Elementwise minimum of the inputs."""

    _pick = np.less


class Concatenate(_Merge):
    """The inputs joined along ``axis`` (counting the batch axis, as Keras: -1 is the last);
    all other axes must match."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis == 0:
            raise ValueError(f"Received an invalid value for `axis`, expected a non-zero "
                             f"integer (axis 0 is the batch axis). Received: axis={axis!r}")
        self.axis = int(axis)

    def _inner_axis(self, rank):
        """The axis in shapes without the batch axis (``rank`` of those shapes)."""
        axis = self.axis if self.axis < 0 else self.axis - 1
        if not -rank <= axis < rank:
            raise ValueError(f"Layer '{self.name}': `axis={self.axis}` is out of range for "
                             f"inputs of rank {rank + 1}.")
        return axis % rank

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise ValueError("A `Concatenate` layer requires inputs with matching shapes "
                             "except for the concatenation axis. Received: input_shape="
                             f"{[shape_str((None,) + s) for s in shapes]}")
        axis = self._inner_axis(ranks.pop())
        out = list(shapes[0])
        for s in shapes[1:]:
            for i, (a, b) in enumerate(zip(out, s)):
                if i != axis and a is not None and b is not None and a != b:
                    raise ValueError(
                        "A `Concatenate` layer requires inputs with matching shapes except "
                        "for the concatenation axis. Received: input_shape="
                        f"{[shape_str((None,) + t) for t in shapes]}")
            out[axis] = None if out[axis] is None or s[axis] is None else out[axis] + s[axis]
        return tuple(out)

    def forward(self, inputs, training=False, mask=None, need_grad=False):
        axis = self._inner_axis(inputs[0].ndim - 1) + 1
        out = np.concatenate(inputs, axis=axis)
        ctx = (axis, np.cumsum([x.shape[axis] for x in inputs])[:-1]) if need_grad else None
        return out, ctx

    def backward(self, d_output, ctx, need_input_grad=True):
        if not need_input_grad:
            return None, []
        axis, cuts = ctx
        return [np.ascontiguousarray(d) for d in np.split(d_output, cuts, axis=axis)], []

    def compute_mask(self, inputs, mask=None):
        if mask is None or all(m is None for m in mask):
            return None
        full = []
        for x, m in zip(inputs, mask):
            if m is None:
                full.append(np.ones(x.shape, bool))
            else:
                full.append(_expanded_mask(np.asarray(m, bool), x))
        axis = self._inner_axis(inputs[0].ndim - 1) + 1
        return np.any(np.concatenate(full, axis=axis), axis=-1)

    def get_config(self):
        config = super().get_config()
        config["axis"] = self.axis
        return config


class Dot(_Merge):
    """Batchwise dot product of two inputs over ``axes`` (an integer, or one axis per input,
    counting the batch axis); ``normalize`` L2-normalizes both along those axes first, making
    the result the cosine similarity. The mask is dropped, as in Keras."""

    exact_inputs = 2

    def __init__(self, axes, normalize=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axes, (list, tuple)):
            if len(axes) != 2:
                raise ValueError("Invalid format for argument `axes`: it should contain two "
                                 f"elements. Received: axes={axes}")
            if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool)
                       for a in axes):
                raise ValueError("Invalid format for argument `axes`: list elements should "
                                 f"be integers. Received: axes={axes}")
            axes = [int(a) for a in axes]
        elif isinstance(axes, bool) or not isinstance(axes, (int, np.integer)):
            raise TypeError("Invalid type for argument `axes`: it should be a list or an int. "
                            f"Received: axes={axes}")
        else:
            axes = int(axes)
        self.axes = axes
        self.normalize = bool(normalize)

    def _axes(self, rank1, rank2):
        """The contracted axes (with the batch axis) for inputs of these ranks."""
        axes = [self.axes, self.axes] if isinstance(self.axes, int) else list(self.axes)
        out = []
        for a, rank in zip(axes, (rank1, rank2)):
            a = a % rank if a < 0 else a
            if not 1 <= a < rank:
                raise ValueError(f"Layer '{self.name}': `axes={self.axes}` must name a non-batch "
                                 f"axis of inputs of rank {rank}.")
            out.append(a)
        return out

    def compute_output_shape(self, input_shape):
        s1, s2 = (None,) + tuple(input_shape[0]), (None,) + tuple(input_shape[1])
        if len(s1) < 2 or len(s2) < 2:
            raise ValueError(f"A `Dot` layer needs inputs of rank 2 or more; received shapes "
                             f"{shape_str(s1)} and {shape_str(s2)}.")
        a1, a2 = self._axes(len(s1), len(s2))
        if s1[a1] is not None and s2[a2] is not None and s1[a1] != s2[a2]:
            raise ValueError(f"Incompatible input shapes: axis values {s1[a1]} (at axis {a1}) "
                             f"!= {s2[a2]} (at axis {a2}). Full input shapes: "
                             f"{shape_str(s1)}, {shape_str(s2)}")
        out = [d for i, d in enumerate(s1[1:], 1) if i != a1] + \
              [d for i, d in enumerate(s2[1:], 1) if i != a2]
        return tuple(out) if out else (1,)

    def compute_mask(self, inputs, mask=None):
        return None

    @staticmethod
    def _l2_normalize(x, axis, eps):
        # Keras: x * min(rsqrt(sum(x^2)), 1 / epsilon)
        norm = np.sqrt(np.sum(x * x, axis=axis, keepdims=True))
        inv = np.minimum(1 / np.maximum(norm, np.finfo(x.dtype).tiny), x.dtype.type(1 / eps))
        return x * inv, inv, norm > eps

    def forward(self, inputs, training=False, mask=None, need_grad=False):
        from .. import backend
        x1, x2 = inputs
        a1, a2 = self._axes(x1.ndim, x2.ndim)
        n1 = n2 = None
        if self.normalize:
            eps = backend.epsilon()
            (x1, *n1), (x2, *n2) = (self._l2_normalize(x1, a1, eps),
                                    self._l2_normalize(x2, a2, eps))
        # (B, M, K) @ (B, K, N): the contracted axis last in x1 and first in x2
        m1 = np.moveaxis(x1, a1, -1)
        m2 = np.moveaxis(x2, a2, 1)
        rest1, rest2 = m1.shape[1:-1], m2.shape[2:]
        k = m1.shape[-1]
        p = np.matmul(m1.reshape(len(x1), -1, k), m2.reshape(len(x2), k, -1))
        out = p.reshape((len(x1),) + rest1 + rest2)
        if out.ndim == 1:
            out = out.reshape(-1, 1)
        ctx = (x1, x2, a1, a2, n1, n2, inputs) if need_grad else None
        return out, ctx

    def backward(self, d_output, ctx, need_input_grad=True):
        if not need_input_grad:
            return None, []
        x1, x2, a1, a2, n1, n2, raw = ctx
        m1 = np.moveaxis(x1, a1, -1)
        m2 = np.moveaxis(x2, a2, 1)
        b, k = len(x1), m1.shape[-1]
        a = m1.reshape(b, -1, k)
        c = m2.reshape(b, k, -1)
        d = d_output.reshape(b, a.shape[1], c.shape[2])
        # in the forward pass: p = a @ c
        da = (d @ c.transpose(0, 2, 1)).reshape(m1.shape)
        dc = (a.transpose(0, 2, 1) @ d).reshape(m2.shape)
        d1, d2 = np.moveaxis(da, -1, a1), np.moveaxis(dc, 1, a2)
        if self.normalize:
            d1 = self._normalize_backward(d1, x1, raw[0], a1, *n1)
            d2 = self._normalize_backward(d2, x2, raw[1], a2, *n2)
        return [np.ascontiguousarray(d1), np.ascontiguousarray(d2)], []

    @staticmethod
    def _normalize_backward(d_y, y, x, axis, inv, above_eps):
        # in the forward pass: y = x * inv, inv = 1/|x| (or 1/eps below eps, a constant)
        proj = np.sum(d_y * y, axis=axis, keepdims=True)
        return np.where(above_eps, (d_y - y * proj) * inv, d_y * inv)

    def get_config(self):
        config = super().get_config()
        config.update(axes=self.axes, normalize=self.normalize)
        return config


def concatenate(inputs, axis=-1, **kwargs):
    """``Concatenate(axis=axis, **kwargs)(inputs)``."""
    return Concatenate(axis=axis, **kwargs)(inputs)


def add(inputs, **kwargs):
    """``Add(**kwargs)(inputs)``."""
    return Add(**kwargs)(inputs)


def subtract(inputs, **kwargs):
    """``Subtract(**kwargs)(inputs)``."""
    return Subtract(**kwargs)(inputs)


def multiply(inputs, **kwargs):
    """``Multiply(**kwargs)(inputs)``."""
    return Multiply(**kwargs)(inputs)


def average(inputs, **kwargs):
    """``Average(**kwargs)(inputs)``."""
    return Average(**kwargs)(inputs)


def maximum(inputs, **kwargs):
    """``Maximum(**kwargs)(inputs)``."""
    return Maximum(**kwargs)(inputs)


def minimum(inputs, **kwargs):
    """``Minimum(**kwargs)(inputs)``."""
    return Minimum(**kwargs)(inputs)


def dot(inputs, axes=-1, **kwargs):
    """``Dot(axes=axes, **kwargs)(inputs)``."""
    return Dot(axes=axes, **kwargs)(inputs)

"""Losses with Keras 3's numerics, options, reductions, sample weights and masks.

A loss maps ``(y_true, y_pred)`` of shapes ``(B, ..., C)`` to per-sample values of shape
``(B, ...)`` (the last axis reduced, as Keras's loss functions do), weights them, and
reduces them to a scalar with one of Keras 3's reductions:

- ``"sum_over_batch_size"`` (default) and ``"mean"``: ``sum(w * values) / values.size``;
- ``"sum"``: ``sum(w * values)``;
- ``"mean_with_sample_weight"``: ``sum(w * values) / sum(w)``;
- ``"none"`` / ``None``: the weighted per-sample array.

``gradient`` is d(reduced loss)/d(y_pred); for ``"none"`` it is the gradient of the sum of
the returned array. ``logits_gradient`` is the gradient with respect to the
pre-activation when the loss pairs with its output activation (``logits_activation``
"sigmoid" or "softmax"): the model back-propagates ``p - y`` (scaled) there, which equals
the chain rule wherever the clip is inactive and stays informative where the output
saturates (as Keras's TensorFlow backend, which computes these losses from the logits).
With ``from_logits=True`` the loss takes logits itself and ``logits_activation`` is None.

Sample weights broadcast as in Keras: ``(B,)`` per sample or ``(B, T)`` per step for
sequence outputs (a ``(B,)`` weight also weights every step of a sequence sample, where
Keras 3 raises an error). A ``mask`` of the per-sample shape merges into the weights as
Keras 3's ``apply_mask`` does: for "sum_over_batch_size"/"mean" the valid entries get
weight ``total / valid`` so the mean is over the valid entries; for the other reductions
the mask multiplies the weights.

Probabilities are clipped to ``[1e-7, 1 - 1e-7]`` before the log, as Keras does.
"""
import inspect
import math

import numpy as np

EPSILON = 1e-7
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)


def _align(y_true, y_pred):
    """Keras' squeeze_or_expand_to_same_rank for a label/prediction pair."""
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    elif y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        y_true = y_true[..., None]
    return y_true


def _float_array(value, arg):
    """``value`` as a floating array (float32 unless it is float64 already)."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"`{arg}` must hold numbers; received dtype {array.dtype}.")
    if array.dtype.kind != "f" or array.dtype == np.float16:
        array = array.astype(np.float32)
    return array


def _mean(a, axis):
    """``np.mean(a, axis)`` for float arrays, the same bits (NumPy's pairwise sum, then one
    division by the count) at a fraction of its cost on a training step's small arrays:
    np.mean's Python-level dispatch took 9-13 us on a (32, 1) array, this 1.5-2 us."""
    axes = axis if isinstance(axis, tuple) else (axis,)
    count = math.prod(a.shape[i] for i in axes)
    total = np.add.reduce(a, axis=axis)
    return np.true_divide(total, count, out=total, casting="unsafe") \
        if isinstance(total, np.ndarray) else total.dtype.type(total / count)


def _sigmoid(z):
    return np.exp(-np.logaddexp(0, -z))


def _softmax(z):
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _logsumexp(z):
    zmax = np.max(z, axis=-1, keepdims=True)
    return (zmax + np.log(np.sum(np.exp(z - zmax), axis=-1, keepdims=True)))[..., 0]


def _check_last_axis(axis, ndim_hint, name):
    if axis not in (-1, None) and not (ndim_hint is not None and axis == ndim_hint - 1):
        raise ValueError(f"cgru's {name} supports axis=-1 only (the features axis); "
                         f"received axis={axis}.")


def _weights_for(values_shape, weights, arg="sample_weight"):
    """Keras's squeeze_or_expand_to_same_rank of ``weights`` against the per-sample values,
    then broadcast to ``values_shape``. Returns ``(broadcast weights, sum as Keras takes it
    for "mean_with_sample_weight")``."""
    w = weights
    rank = len(values_shape)
    if w.ndim == rank + 1 and w.shape[-1] == 1:
        w = w[..., 0]
    elif rank == w.ndim + 1 and values_shape[-1] == 1 and w.ndim >= 1:
        w = w[..., None]
    keras_sum = float(np.sum(w, dtype=np.float64)) if w.ndim in (0, rank) else None
    if 0 < w.ndim < rank:                   # (B,) weights every step of a sequence sample
        w = w.reshape(w.shape + (1,) * (rank - w.ndim))
    try:
        w = np.broadcast_to(w, values_shape)
    except ValueError:
        raise ValueError(
            f"`{arg}` of shape {weights.shape} does not fit the per-sample losses of shape "
            f"{tuple(values_shape)}: expected {tuple(values_shape[:1])} per sample or "
            f"{tuple(values_shape)}.") from None
    if keras_sum is None:
        keras_sum = float(np.sum(w, dtype=np.float64))
    return w, keras_sum


class Loss:
    """Base class. Subclasses implement ``_per_sample(y_true, y_pred, need_grad)`` returning
    ``(values, d_values)``: the per-sample values (``y_pred.shape`` without ``_axis``; may
    be None when ``need_grad``) and, when ``need_grad``, d values / d y_pred
    (``y_pred.shape``; each value depends only on its own slice along ``_axis``)."""
    name = "loss"
    #: activation whose logits gradient this loss can take directly
    logits_activation = None
    sparse = False
    _axis = -1

    def __init__(self, reduction="sum_over_batch_size", name=None):
        if reduction not in REDUCTIONS:
            raise ValueError(f"Invalid value for argument `reduction`: {reduction!r}. "
                             f"Expected one of {REDUCTIONS}.")
        self.reduction = reduction
        if name is not None:
            self.name = name

    def check_shapes(self, y_true_shape, y_pred_shape):
        """Raise ValueError unless labels of ``y_true_shape`` fit outputs of ``y_pred_shape``."""
        yt = tuple(y_true_shape)
        yp = tuple(y_pred_shape)
        ok = yt == yp or (len(yt) == len(yp) + 1 and yt[-1] == 1 and yt[:-1] == yp) or (
            len(yp) == len(yt) + 1 and yp[-1] == 1 and yp[:-1] == yt)
        if not ok:
            raise ValueError(
                f"Labels `y` of shape {yt} do not match the model output shape {yp} for "
                f"loss '{self.name}': expected y of shape {yp}"
                + (f" or {yp[:-1]}" if yp[-1:] == (1,) else "") + "."
            )

    # -- per-sample values ------------------------------------------------------------------
    def _prepare(self, y_true, y_pred):
        y_pred = _float_array(y_pred, "y_pred")
        if y_pred.ndim == 0:
            raise ValueError(f"`y_pred` for loss '{self.name}' must have at least one axis; "
                             "received a scalar.")
        y_true = np.asarray(y_true)
        if y_true.dtype.kind not in "biuf":
            raise TypeError(f"`y_true` must hold numbers; received dtype {y_true.dtype}.")
        self.check_shapes(y_true.shape, y_pred.shape)
        if not self.sparse:
            y_true = _align(y_true, y_pred).astype(y_pred.dtype, copy=False)
        return y_true, y_pred

    def _per_sample(self, y_true, y_pred, need_grad):
        raise NotImplementedError

    def _out_mask(self, y_true, y_pred):
        """A mask the loss itself puts on its values (Keras's ``ignore_class``), or None."""
        return None

    def values(self, y_true, y_pred):
        """Per-sample values, shape ``y_pred.shape`` without the reduced axis."""
        y_true, y_pred = self._prepare(y_true, y_pred)
        return self._per_sample(y_true, y_pred, False)[0]

    # -- weights and reduction ----------------------------------------------------------------
    def _merged_weights(self, values_shape, dtype, sample_weight, mask):
        """The weights (broadcast to ``values_shape``) and the divisor of the reduction."""
        size = math.prod(values_shape)
        weights = keras_sum = None
        if mask is not None:
            mask = np.asarray(mask).astype(bool)
            if self.reduction in ("mean", "sum_over_batch_size"):
                valid = int(mask.sum())
                weights = np.where(mask, mask.size / valid if valid else 0.0, 0.0)
            else:
                weights = mask.astype(np.float64)
            weights, _ = _weights_for(values_shape, weights, "mask")
        if sample_weight is not None:
            sw, keras_sum = _weights_for(values_shape, _float_array(sample_weight,
                                                                    "sample_weight"))
            if weights is not None:
                weights = weights * sw
                keras_sum = float(np.sum(weights, dtype=np.float64))
            else:
                weights = sw
        elif weights is not None:
            keras_sum = float(np.sum(weights, dtype=np.float64))
        if weights is not None:
            weights = weights.astype(dtype, copy=False)
        if self.reduction == "sum":
            divisor = 1.0
        elif self.reduction == "mean_with_sample_weight" and weights is not None:
            divisor = keras_sum
        else:
            divisor = float(size)
        return weights, divisor

    def _values_shape(self, y_pred):
        """The per-sample values' shape: ``y_pred.shape`` without the reduced axis."""
        axis = self._axis % y_pred.ndim
        return y_pred.shape[:axis] + y_pred.shape[axis + 1:]

    def _weights_and_divisor(self, y_true, y_pred, values_shape, dtype, sample_weight, mask):
        out_mask = self._out_mask(y_true, y_pred)
        if out_mask is not None:
            mask = out_mask if mask is None else (np.asarray(mask).astype(bool) & out_mask)
        if mask is None and sample_weight is None:  # unweighted: no weight arrays to build
            return None, 1.0 if self.reduction == "sum" else float(math.prod(values_shape))
        return self._merged_weights(values_shape, dtype, sample_weight, mask)

    def __call__(self, y_true, y_pred, sample_weight=None, mask=None):
        """The reduced loss (a float), or the weighted per-sample array for "none"."""
        y_true, y_pred = self._prepare(y_true, y_pred)
        values = self._per_sample(y_true, y_pred, False)[0]
        weights, divisor = self._weights_and_divisor(y_true, y_pred, values.shape,
                                                     values.dtype, sample_weight, mask)
        weighted = values if weights is None else values * weights
        if self.reduction in ("none", None):
            return weighted
        total = float(weighted.sum(dtype=np.float64))     # (np.sum: 3x the dispatch)
        return total / divisor if divisor != 0 else 0.0

    def _scaled(self, d_values, y_true, y_pred, sample_weight, mask):
        """d_values (``y_pred.shape``) times the reduction's weight of each value."""
        values_shape = self._values_shape(y_pred)
        weights, divisor = self._weights_and_divisor(y_true, y_pred, values_shape,
                                                     y_pred.dtype, sample_weight, mask)
        if self.reduction in ("none", None):
            divisor = 1.0
        if weights is None:
            grad = d_values / divisor if divisor != 0 else np.zeros_like(d_values)
            return grad.astype(y_pred.dtype, copy=False)
        scale = weights.astype(np.float64) / divisor if divisor != 0 \
            else np.zeros(values_shape)
        grad = d_values * np.expand_dims(scale, self._axis % y_pred.ndim)
        return grad.astype(y_pred.dtype, copy=False)

    def gradient(self, y_true, y_pred, sample_weight=None, mask=None):
        """d(reduced loss)/d(y_pred), shape ``y_pred.shape``."""
        y_true, y_pred = self._prepare(y_true, y_pred)
        d_values = self._per_sample(y_true, y_pred, True)[1]
        return self._scaled(d_values, y_true, y_pred, sample_weight, mask)

    def _logits_gradient(self, y_true, y_pred):
        """d values / d logits (``y_pred.shape``), ``y_pred`` the activation's output."""
        raise NotImplementedError(
            f"Loss '{self.name}' has no logits gradient (logits_activation is None).")

    def logits_gradient(self, y_true, y_pred, sample_weight=None, mask=None):
        """d(reduced loss)/d(logits) where ``y_pred = logits_activation(logits)``."""
        if self.logits_activation is None:
            raise NotImplementedError(
                f"Loss '{self.name}' has no logits gradient (logits_activation is None).")
        y_true, y_pred = self._prepare(y_true, y_pred)
        return self._scaled(self._logits_gradient(y_true, y_pred), y_true, y_pred,
                            sample_weight, mask)

    # -- configuration ------------------------------------------------------------------------
    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} reduction={self.reduction!r}>"


class _MeanOverLastAxis(Loss):
    """A loss that is the mean over the last axis of an elementwise term."""

    def _terms(self, y_true, y_pred, need_grad):
        """(elementwise term, its derivative in y_pred or None)."""
        raise NotImplementedError

    def _per_sample(self, y_true, y_pred, need_grad):
        terms, d_terms = self._terms(y_true, y_pred, need_grad)
        if need_grad:                   # the gradient does not need the values
            return None, d_terms / y_pred.dtype.type(y_pred.shape[-1])
        return _mean(terms, -1), None


class MeanSquaredError(_MeanOverLastAxis):
    name = "mean_squared_error"

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error"):
        super().__init__(reduction, name)

    def _terms(self, y_true, y_pred, need_grad):
        diff = y_pred - y_true
        return np.square(diff), (2 * diff if need_grad else None)


class MeanAbsoluteError(_MeanOverLastAxis):
    name = "mean_absolute_error"

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error"):
        super().__init__(reduction, name)

    def _terms(self, y_true, y_pred, need_grad):
        diff = y_pred - y_true
        return np.abs(diff), (np.sign(diff) if need_grad else None)


class MeanAbsolutePercentageError(_MeanOverLastAxis):
    name = "mean_absolute_percentage_error"

    def __init__(self, reduction="sum_over_batch_size",
                 name="mean_absolute_percentage_error"):
        super().__init__(reduction, name)

    def _terms(self, y_true, y_pred, need_grad):
        scale = np.maximum(np.abs(y_true), y_pred.dtype.type(EPSILON))
        diff = y_pred - y_true
        terms = 100 * np.abs(diff / scale)
        return terms, (100 * np.sign(diff) / scale if need_grad else None)


class MeanSquaredLogarithmicError(_MeanOverLastAxis):
    name = "mean_squared_logarithmic_error"

    def __init__(self, reduction="sum_over_batch_size",
                 name="mean_squared_logarithmic_error"):
        super().__init__(reduction, name)

    def _terms(self, y_true, y_pred, need_grad):
        eps = y_pred.dtype.type(EPSILON)
        shifted = np.maximum(y_pred, eps) + 1
        diff = np.log(shifted) - np.log(np.maximum(y_true, eps) + 1)
        grad = 2 * diff / shifted * (y_pred > eps) if need_grad else None
        return np.square(diff), grad


class Huber(_MeanOverLastAxis):
    name = "huber_loss"

    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name="huber_loss"):
        super().__init__(reduction, name)
        self.delta = float(delta)

    def _terms(self, y_true, y_pred, need_grad):
        delta = y_pred.dtype.type(self.delta)
        error = y_pred - y_true
        small = np.abs(error) <= delta
        terms = np.where(small, 0.5 * np.square(error),
                         delta * np.abs(error) - 0.5 * np.square(delta))
        grad = np.where(small, error, delta * np.sign(error)) if need_grad else None
        return terms, grad

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


class LogCosh(_MeanOverLastAxis):
    name = "log_cosh"

    def __init__(self, reduction="sum_over_batch_size", name="log_cosh"):
        super().__init__(reduction, name)

    def _terms(self, y_true, y_pred, need_grad):
        x = y_pred - y_true
        terms = x + np.logaddexp(x.dtype.type(0), -2 * x) - x.dtype.type(np.log(2.0))
        return terms, (np.tanh(x) if need_grad else None)


def _hinge_labels(y_true):
    """Keras's convert_binary_labels_to_hinge: {0, 1} labels become {-1, 1}."""
    if np.all((y_true == 0) | (y_true == 1)):
        return 2 * y_true - 1
    return y_true


class Hinge(_MeanOverLastAxis):
    name = "hinge"

    def __init__(self, reduction="sum_over_batch_size", name="hinge"):
        super().__init__(reduction, name)

    def _terms(self, y_true, y_pred, need_grad):
        y = _hinge_labels(y_true)
        margin = np.maximum(1 - y * y_pred, 0)
        return margin, (-y * (margin > 0) if need_grad else None)


class SquaredHinge(_MeanOverLastAxis):
    name = "squared_hinge"

    def __init__(self, reduction="sum_over_batch_size", name="squared_hinge"):
        super().__init__(reduction, name)

    def _terms(self, y_true, y_pred, need_grad):
        y = _hinge_labels(y_true)
        margin = np.maximum(1 - y * y_pred, 0)
        return np.square(margin), (-2 * y * margin if need_grad else None)


class Poisson(_MeanOverLastAxis):
    name = "poisson"

    def __init__(self, reduction="sum_over_batch_size", name="poisson"):
        super().__init__(reduction, name)

    def _terms(self, y_true, y_pred, need_grad):
        shifted = y_pred + y_pred.dtype.type(EPSILON)
        terms = y_pred - y_true * np.log(shifted)
        return terms, (1 - y_true / shifted if need_grad else None)


class CategoricalHinge(Loss):
    name = "categorical_hinge"

    def __init__(self, reduction="sum_over_batch_size", name="categorical_hinge"):
        super().__init__(reduction, name)

    def _per_sample(self, y_true, y_pred, need_grad):
        positive = np.sum(y_true * y_pred, axis=-1)
        others = (1 - y_true) * y_pred
        negative = np.max(others, axis=-1)
        values = np.maximum(negative - positive + 1, 0)
        if not need_grad:
            return values, None
        top = np.zeros_like(y_pred)
        np.put_along_axis(top, np.argmax(others, axis=-1)[..., None], 1, axis=-1)
        grad = (top * (1 - y_true) - y_true) * (values > 0)[..., None]
        return values, grad


class KLDivergence(Loss):
    name = "kl_divergence"

    def __init__(self, reduction="sum_over_batch_size", name="kl_divergence"):
        super().__init__(reduction, name)

    def _per_sample(self, y_true, y_pred, need_grad):
        eps = y_pred.dtype.type(EPSILON)
        t = np.clip(y_true, eps, 1)
        p = np.clip(y_pred, eps, 1)
        values = np.sum(t * np.log(t / p), axis=-1)
        grad = -t / p * ((y_pred > eps) & (y_pred < 1)) if need_grad else None
        return values, grad


class CosineSimilarity(Loss):
    """``-sum(l2_normalize(y_true) * l2_normalize(y_pred), axis)``; norms below 1e-7 are
    taken as 1e-7, as Keras's ``normalize`` does."""
    name = "cosine_similarity"

    def __init__(self, axis=-1, reduction="sum_over_batch_size", name="cosine_similarity"):
        super().__init__(reduction, name)
        self.axis = self._axis = int(axis)

    @staticmethod
    def _inverse_norm(x, axis):
        eps = x.dtype.type(EPSILON)
        with np.errstate(divide="ignore"):
            inv = 1 / np.sqrt(np.sum(np.square(x), axis=axis, keepdims=True))
        return np.minimum(inv, 1 / eps), inv < 1 / eps

    def _per_sample(self, y_true, y_pred, need_grad):
        axis = self.axis
        if not -y_pred.ndim <= axis < y_pred.ndim:
            raise ValueError(f"`axis`={axis} is out of range for y_pred of shape "
                             f"{y_pred.shape}.")
        inv_t, _ = self._inverse_norm(y_true, axis)
        inv_p, unclamped = self._inverse_norm(y_pred, axis)
        t_unit, p_unit = y_true * inv_t, y_pred * inv_p
        cos = np.sum(t_unit * p_unit, axis=axis, keepdims=True)
        values = -np.squeeze(cos, axis)
        if not need_grad:
            return values, None
        grad = np.where(unclamped, -(t_unit - cos * p_unit) * inv_p, -t_unit * inv_p)
        return values, grad

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class BinaryCrossentropy(_MeanOverLastAxis):
    name = "binary_crossentropy"

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="binary_crossentropy"):
        super().__init__(reduction, name)
        _check_last_axis(axis, None, "BinaryCrossentropy")
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        self.axis = axis
        self.logits_activation = None if self.from_logits else "sigmoid"

    def _smoothed(self, y_true):
        if self.label_smoothing:
            ls = y_true.dtype.type(self.label_smoothing)
            return y_true * (1 - ls) + 0.5 * ls
        return y_true

    def _terms(self, y_true, y_pred, need_grad):
        y = self._smoothed(y_true)
        if self.from_logits:           # sigmoid_cross_entropy_with_logits
            z = y_pred
            terms = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
            return terms, (_sigmoid(z) - y if need_grad else None)
        eps = y_pred.dtype.type(EPSILON)
        p = y_pred.clip(eps, 1 - eps)       # (np.clip: the same ufunc, 3x the dispatch)
        terms = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        if not need_grad:
            return terms, None
        inside = (y_pred > eps) & (y_pred < 1 - eps)
        return terms, (p - y) / (p * (1 - p)) * inside

    def _logits_gradient(self, y_true, y_pred):
        return (y_pred - self._smoothed(y_true)) / y_pred.shape[-1]

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "axis": self.axis}


class BinaryFocalCrossentropy(BinaryCrossentropy):
    """Keras's focal loss: ``(1 - p_t) ** gamma * bce``, times ``alpha``/``1 - alpha`` with
    ``apply_class_balancing``. No logits rule: the gradient goes through the sigmoid."""
    name = "binary_focal_crossentropy"

    def __init__(self, apply_class_balancing=False, alpha=0.25, gamma=2.0, from_logits=False,
                 label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="binary_focal_crossentropy"):
        super().__init__(from_logits, label_smoothing, axis, reduction, name)
        self.apply_class_balancing = bool(apply_class_balancing)
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.logits_activation = None

    def _terms(self, y_true, y_pred, need_grad):
        y = self._smoothed(y_true)
        dt = y_pred.dtype.type
        p = _sigmoid(y_pred) if self.from_logits else y_pred
        eps = dt(EPSILON)
        pc = np.clip(p, eps, 1 - eps)
        bce = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
        p_t = y * p + (1 - y) * (1 - p)
        focal = np.power(1 - p_t, dt(self.gamma))
        balance = y * dt(self.alpha) + (1 - y) * (1 - dt(self.alpha)) \
            if self.apply_class_balancing else dt(1)
        terms = balance * focal * bce
        if not need_grad:
            return terms, None
        d_bce = (pc - y) / (pc * (1 - pc)) * ((p > eps) & (p < 1 - eps))
        with np.errstate(divide="ignore", invalid="ignore"):
            d_focal = -dt(self.gamma) * np.power(1 - p_t, dt(self.gamma - 1)) * (2 * y - 1)
        grad = balance * (focal * d_bce + d_focal * bce)
        if self.from_logits:
            grad = grad * p * (1 - p)
        return terms, grad

    def get_config(self):
        return {**super().get_config(), "apply_class_balancing": self.apply_class_balancing,
                "alpha": self.alpha, "gamma": self.gamma}


class CategoricalCrossentropy(Loss):
    name = "categorical_crossentropy"

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="categorical_crossentropy"):
        super().__init__(reduction, name)
        _check_last_axis(axis, None, "CategoricalCrossentropy")
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        self.axis = axis
        self.logits_activation = None if self.from_logits else "softmax"

    def _smoothed(self, y_true):
        if self.label_smoothing:
            ls = y_true.dtype.type(self.label_smoothing)
            return y_true * (1 - ls) + ls / y_true.shape[-1]
        return y_true

    def _per_sample(self, y_true, y_pred, need_grad):
        y = self._smoothed(y_true)
        if self.from_logits:           # softmax_cross_entropy_with_logits
            lse = _logsumexp(y_pred)
            values = np.sum(y * (lse[..., None] - y_pred), axis=-1)
            grad = (_softmax(y_pred) * np.sum(y, axis=-1, keepdims=True) - y
                    if need_grad else None)
            return values, grad
        eps = y_pred.dtype.type(EPSILON)
        total = np.sum(y_pred, axis=-1, keepdims=True)
        q_raw = y_pred / total
        q = np.clip(q_raw, eps, 1 - eps)
        values = -np.sum(y * np.log(q), axis=-1)
        if not need_grad:
            return values, None
        gq = -y / q * ((q_raw > eps) & (q_raw < 1 - eps))
        # q = p / s: dL/dp_j = (gq_j - sum_k gq_k q_k) / s
        return values, (gq - np.sum(gq * q_raw, axis=-1, keepdims=True)) / total

    def _logits_gradient(self, y_true, y_pred):
        y = self._smoothed(y_true)
        return y_pred * np.sum(y, axis=-1, keepdims=True) - y

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "axis": self.axis}


class SparseCategoricalCrossentropy(Loss):
    """Integer labels ``(B, ...)`` or ``(B, ..., 1)``. From probabilities Keras takes
    ``-log(clip(p)[y]) + log(sum(clip(p)))``; ``ignore_class`` labels are masked out."""
    name = "sparse_categorical_crossentropy"
    sparse = True

    def __init__(self, from_logits=False, ignore_class=None, reduction="sum_over_batch_size",
                 name="sparse_categorical_crossentropy", axis=-1):
        super().__init__(reduction, name)
        _check_last_axis(axis, None, "SparseCategoricalCrossentropy")
        self.from_logits = bool(from_logits)
        self.ignore_class = None if ignore_class is None else int(ignore_class)
        self.logits_activation = None if self.from_logits else "softmax"

    def check_shapes(self, y_true_shape, y_pred_shape):
        yt, yp = tuple(y_true_shape), tuple(y_pred_shape)
        if not (yt == yp[:-1] or yt == yp[:-1] + (1,)):
            raise ValueError(
                f"Labels `y` of shape {yt} do not match the model output shape {yp} for "
                f"loss '{self.name}': expected integer class ids of shape {yp[:-1]}."
            )

    def _raw_labels(self, y_true, y_pred):
        if y_true.ndim == y_pred.ndim:
            y_true = y_true[..., 0]
        return y_true.astype(np.int64)

    def _labels(self, y_true, y_pred):
        labels = self._raw_labels(y_true, y_pred)
        if self.ignore_class is not None:
            labels = np.where(labels == self.ignore_class, 0, labels)
        n_classes = y_pred.shape[-1]
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(
                f"Sparse labels must be integers in [0, {n_classes}); "
                f"got values in [{labels.min()}, {labels.max()}]."
            )
        return labels

    def _out_mask(self, y_true, y_pred):
        if self.ignore_class is None:
            return None
        return self._raw_labels(y_true, y_pred) != self.ignore_class

    def _onehot(self, y_true, y_pred):
        onehot = np.zeros_like(y_pred)
        np.put_along_axis(onehot, self._labels(y_true, y_pred)[..., None], 1, axis=-1)
        return onehot

    def _per_sample(self, y_true, y_pred, need_grad):
        labels = self._labels(y_true, y_pred)[..., None]
        valid = self._out_mask(y_true, y_pred)
        if self.from_logits:
            values = _logsumexp(y_pred) - np.take_along_axis(y_pred, labels, -1)[..., 0]
            grad = _softmax(y_pred) - self._onehot(y_true, y_pred) if need_grad else None
        else:
            eps = y_pred.dtype.type(EPSILON)
            p = np.clip(y_pred, eps, 1 - eps)
            total = np.sum(p, axis=-1, keepdims=True)
            picked = np.take_along_axis(p, labels, -1)
            values = (np.log(total) - np.log(picked))[..., 0]
            grad = None
            if need_grad:
                inside = (y_pred > eps) & (y_pred < 1 - eps)
                grad = (1 / total - self._onehot(y_true, y_pred) / picked) * inside
        if valid is not None:
            values = np.where(valid, values, 0)
            if grad is not None:
                grad = grad * valid[..., None]
        return values, grad

    def _logits_gradient(self, y_true, y_pred):
        grad = y_pred - self._onehot(y_true, y_pred)
        valid = self._out_mask(y_true, y_pred)
        return grad if valid is None else grad * valid[..., None]

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits,
                "ignore_class": self.ignore_class}


# -- Keras's loss functions: per-sample values --------------------------------------------------
def mean_squared_error(y_true, y_pred):
    """Per-sample mean squared error over the last axis, shape ``y_pred.shape[:-1]``."""
    return MeanSquaredError().values(y_true, y_pred)


def mean_absolute_error(y_true, y_pred):
    """Per-sample mean absolute error over the last axis, shape ``y_pred.shape[:-1]``."""
    return MeanAbsoluteError().values(y_true, y_pred)


def mean_absolute_percentage_error(y_true, y_pred):
    """Per-sample ``100 * mean(|y - p| / max(|y|, 1e-7))``, shape ``y_pred.shape[:-1]``."""
    return MeanAbsolutePercentageError().values(y_true, y_pred)


def mean_squared_logarithmic_error(y_true, y_pred):
    """Per-sample mean squared log(1 + x) error, shape ``y_pred.shape[:-1]``."""
    return MeanSquaredLogarithmicError().values(y_true, y_pred)


def huber(y_true, y_pred, delta=1.0):
    """Per-sample Huber loss, shape ``y_pred.shape[:-1]``."""
    return Huber(delta=delta).values(y_true, y_pred)


def log_cosh(y_true, y_pred):
    """Per-sample mean log(cosh(p - y)), shape ``y_pred.shape[:-1]``."""
    return LogCosh().values(y_true, y_pred)


def kl_divergence(y_true, y_pred):
    """Per-sample ``sum(y * log(y / p))`` on values clipped to [1e-7, 1]."""
    return KLDivergence().values(y_true, y_pred)


def poisson(y_true, y_pred):
    """Per-sample mean of ``p - y * log(p + 1e-7)``."""
    return Poisson().values(y_true, y_pred)


def hinge(y_true, y_pred):
    """Per-sample mean ``max(1 - y * p, 0)``; {0, 1} labels are taken as {-1, 1}."""
    return Hinge().values(y_true, y_pred)


def squared_hinge(y_true, y_pred):
    """Per-sample mean ``max(1 - y * p, 0) ** 2``; {0, 1} labels are taken as {-1, 1}."""
    return SquaredHinge().values(y_true, y_pred)


def categorical_hinge(y_true, y_pred):
    """Per-sample ``max(max((1 - y) * p) - sum(y * p) + 1, 0)``."""
    return CategoricalHinge().values(y_true, y_pred)


def cosine_similarity(y_true, y_pred, axis=-1):
    """Per-sample negative cosine similarity along ``axis``."""
    return CosineSimilarity(axis=axis).values(y_true, y_pred)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Per-sample binary crossentropy averaged over the last axis."""
    return BinaryCrossentropy(from_logits, label_smoothing, axis).values(y_true, y_pred)


def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing=False, alpha=0.25,
                              gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1):
    """Per-sample binary focal crossentropy averaged over the last axis."""
    return BinaryFocalCrossentropy(apply_class_balancing, alpha, gamma, from_logits,
                                   label_smoothing, axis).values(y_true, y_pred)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Per-sample categorical crossentropy over the last axis."""
    return CategoricalCrossentropy(from_logits, label_smoothing, axis).values(y_true, y_pred)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None,
                                    axis=-1):
    """Per-sample crossentropy of integer labels; 0 where the label is ``ignore_class``."""
    loss = SparseCategoricalCrossentropy(from_logits, ignore_class, axis=axis)
    return loss.values(y_true, y_pred)


_CLASSES = (MeanSquaredError, MeanAbsoluteError, MeanAbsolutePercentageError,
            MeanSquaredLogarithmicError, Huber, LogCosh, KLDivergence, Poisson, Hinge,
            SquaredHinge, CategoricalHinge, CosineSimilarity, BinaryCrossentropy,
            BinaryFocalCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy)

#: each loss function and the class whose default instance computes it
_FUNCTIONS = {
    mean_squared_error: MeanSquaredError, mean_absolute_error: MeanAbsoluteError,
    mean_absolute_percentage_error: MeanAbsolutePercentageError,
    mean_squared_logarithmic_error: MeanSquaredLogarithmicError, huber: Huber,
    log_cosh: LogCosh, kl_divergence: KLDivergence, poisson: Poisson, hinge: Hinge,
    squared_hinge: SquaredHinge, categorical_hinge: CategoricalHinge,
    cosine_similarity: CosineSimilarity, binary_crossentropy: BinaryCrossentropy,
    binary_focal_crossentropy: BinaryFocalCrossentropy,
    categorical_crossentropy: CategoricalCrossentropy,
    sparse_categorical_crossentropy: SparseCategoricalCrossentropy,
}

_LOSSES = {cls.__name__: cls for cls in _CLASSES}
_LOSSES.update({fn.__name__: cls for fn, cls in _FUNCTIONS.items()})
_LOSSES.update({
    "bce": BinaryCrossentropy, "BCE": BinaryCrossentropy,
    "kld": KLDivergence, "KLD": KLDivergence,
    "kullback_leibler_divergence": KLDivergence,
    "mae": MeanAbsoluteError, "MAE": MeanAbsoluteError,
    "mse": MeanSquaredError, "MSE": MeanSquaredError,
    "mape": MeanAbsolutePercentageError, "MAPE": MeanAbsolutePercentageError,
    "msle": MeanSquaredLogarithmicError, "MSLE": MeanSquaredLogarithmicError,
    "huber_loss": Huber, "logcosh": LogCosh,
})
_LOSSES_LOWER = {key.lower(): cls for key, cls in _LOSSES.items()}


def _from_keras_object(obj):
    """A cgru loss from a Keras Loss instance of a class cgru has, with its config."""
    cls = _LOSSES.get(type(obj).__name__)
    if cls is None or cls.__name__ != type(obj).__name__:
        return None
    config = dict(obj.get_config())
    # Keras's config of some losses (Huber's delta) omits the options its function takes
    config.update(getattr(obj, "_fn_kwargs", None) or {})
    accepted = inspect.signature(cls).parameters
    config = {k: v for k, v in config.items() if k in accepted}
    return deserialize({"class_name": cls.__name__, "config": config})


def get(identifier):
    """A Loss instance from a name, a config dict, a Loss class or instance, or one of the
    loss functions of this module."""
    if identifier is None:
        return None
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = _LOSSES.get(identifier) or _LOSSES_LOWER.get(identifier.lower())
        if cls is not None:
            return cls()
        raise ValueError(f"Unknown loss: {identifier!r}. Expected one of {sorted(_LOSSES)}.")
    if identifier in _FUNCTIONS:
        return _FUNCTIONS[identifier]()
    if inspect.isfunction(identifier) and identifier.__module__.startswith("keras") \
            and identifier.__name__ in _LOSSES:      # Keras's own loss functions
        return _LOSSES[identifier.__name__]()
    if hasattr(identifier, "get_config") and type(identifier).__module__.startswith("keras"):
        loss = _from_keras_object(identifier)
        if loss is not None:
            return loss
    if callable(identifier):
        raise ValueError(
            f"The loss {identifier!r} is a Python function or object that cgru cannot "
            "differentiate: cgru has no automatic differentiation, so a loss must be one "
            f"of cgru's losses: {sorted(cls.__name__ for cls in _CLASSES)}, their "
            "functions in cgru.losses, or their names.")
    raise ValueError(f"Unknown loss: {identifier!r}. Expected one of {sorted(_LOSSES)}.")


def serialize(loss):
    """Keras's serialized form of a loss: ``{"module", "class_name", "config",
    "registered_name"}``."""
    loss = get(loss)
    return {"module": "keras.losses", "class_name": type(loss).__name__,
            "config": loss.get_config(), "registered_name": None}


def deserialize(config):
    """A Loss from ``serialize``'s output (or Keras's), a ``{"class_name", "config"}`` dict
    or a name."""
    if isinstance(config, str):
        return get(config)
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"Cannot deserialize a loss from {config!r}: expected a name or a "
                         "dict with 'class_name' and 'config'.")
    class_name, inner = config["class_name"], config.get("config") or {}
    if class_name == "function":        # Keras's form for a loss function
        return get(inner)
    cls = _LOSSES.get(class_name)
    if cls is None or cls.__name__ != class_name:
        raise ValueError(f"Unknown loss class {class_name!r}. Expected one of "
                         f"{sorted(c.__name__ for c in _CLASSES)}.")
    inner = {k: v for k, v in inner.items() if k != "dtype"}
    try:
        return cls(**inner)
    except TypeError as err:
        raise ValueError(f"Cannot build {class_name} from config {inner!r}: {err}.") from None

"""Losses with Keras 3's numerics and the "sum_over_batch_size" reduction.

A loss maps ``(y_true, y_pred)`` to a scalar and gives the gradient of that scalar with
respect to ``y_pred`` (``gradient``) or, for a sigmoid/softmax output, with respect to
the pre-activation (``logits_gradient``).

Per-sample values are averaged over every axis except the last (batch and, for
sequence outputs, time), as Keras does. Probabilities are clipped to
``[1e-7, 1 - 1e-7]`` before the log, as Keras does. When the output layer applies the
matching activation (sigmoid for binary, softmax for categorical crossentropy) the
model back-propagates ``logits_gradient`` = ``p - y`` (scaled), which equals the chain
rule wherever the clip is inactive and stays informative where the output saturates
(as with Keras' TensorFlow backend, which computes these losses from the logits).
"""
import numpy as np

EPSILON = 1e-7


def _align(y_true, y_pred):
    """Keras' squeeze_or_expand_to_same_rank for a label/prediction pair."""
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    elif y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        y_true = y_true[..., None]
    return y_true


def _n_samples(y_pred):
    """Number of per-sample loss values: all axes but the last."""
    return max(1, int(np.prod(y_pred.shape[:-1])))


class Loss:
    name = "loss"
    #: activation whose logits gradient this loss can take directly
    logits_activation = None
    sparse = False

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

    def __call__(self, y_true, y_pred):
        raise NotImplementedError

    def gradient(self, y_true, y_pred):
        raise NotImplementedError

    def logits_gradient(self, y_true, y_pred):
        raise NotImplementedError

    def get_config(self):
        return self.name


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"
    logits_activation = "sigmoid"

    def __call__(self, y_true, y_pred):
        y_true = _align(y_true, y_pred).astype(y_pred.dtype, copy=False)
        eps = y_pred.dtype.type(EPSILON)
        p = np.clip(y_pred, eps, 1 - eps)
        bce = -(y_true * np.log(p) + (1 - y_true) * np.log(1 - p))
        return float(np.mean(np.mean(bce, axis=-1)))

    def gradient(self, y_true, y_pred):
        y_true = _align(y_true, y_pred).astype(y_pred.dtype, copy=False)
        eps = y_pred.dtype.type(EPSILON)
        inside = (y_pred > eps) & (y_pred < 1 - eps)
        p = np.clip(y_pred, eps, 1 - eps)
        g = (p - y_true) / (p * (1 - p)) * inside
        return (g / y_pred.size).astype(y_pred.dtype, copy=False)

    def logits_gradient(self, y_true, y_pred):
        y_true = _align(y_true, y_pred).astype(y_pred.dtype, copy=False)
        return ((y_pred - y_true) / y_pred.size).astype(y_pred.dtype, copy=False)


class CategoricalCrossentropy(Loss):
    name = "categorical_crossentropy"
    logits_activation = "softmax"

    def __call__(self, y_true, y_pred):
        y_true = y_true.astype(y_pred.dtype, copy=False)
        eps = y_pred.dtype.type(EPSILON)
        q = np.clip(y_pred / np.sum(y_pred, axis=-1, keepdims=True), eps, 1 - eps)
        return float(np.mean(-np.sum(y_true * np.log(q), axis=-1)))

    def gradient(self, y_true, y_pred):
        y_true = y_true.astype(y_pred.dtype, copy=False)
        eps = y_pred.dtype.type(EPSILON)
        s = np.sum(y_pred, axis=-1, keepdims=True)
        q_raw = y_pred / s
        q = np.clip(q_raw, eps, 1 - eps)
        gq = -y_true / q * ((q_raw > eps) & (q_raw < 1 - eps))
        # q = p / s: dL/dp_j = (gq_j - sum_k gq_k q_k) / s
        gp = (gq - np.sum(gq * q_raw, axis=-1, keepdims=True)) / s
        return (gp / _n_samples(y_pred)).astype(y_pred.dtype, copy=False)

    def logits_gradient(self, y_true, y_pred):
        y_true = y_true.astype(y_pred.dtype, copy=False)
        g = y_pred * np.sum(y_true, axis=-1, keepdims=True) - y_true
        return (g / _n_samples(y_pred)).astype(y_pred.dtype, copy=False)


class SparseCategoricalCrossentropy(Loss):
    name = "sparse_categorical_crossentropy"
    logits_activation = "softmax"
    sparse = True

    def check_shapes(self, y_true_shape, y_pred_shape):
        yt, yp = tuple(y_true_shape), tuple(y_pred_shape)
        if not (yt == yp[:-1] or yt == yp[:-1] + (1,)):
            raise ValueError(
                f"Labels `y` of shape {yt} do not match the model output shape {yp} for "
                f"loss '{self.name}': expected integer class ids of shape {yp[:-1]}."
            )

    @staticmethod
    def _labels(y_true, y_pred):
        if y_true.ndim == y_pred.ndim:
            y_true = y_true[..., 0]
        labels = y_true.astype(np.int64)
        n_classes = y_pred.shape[-1]
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(
                f"Sparse labels must be integers in [0, {n_classes}); "
                f"got values in [{labels.min()}, {labels.max()}]."
            )
        return labels

    def __call__(self, y_true, y_pred):
        labels = self._labels(y_true, y_pred)
        eps = y_pred.dtype.type(EPSILON)
        q = np.clip(y_pred / np.sum(y_pred, axis=-1, keepdims=True), eps, 1 - eps)
        picked = np.take_along_axis(q, labels[..., None], axis=-1)[..., 0]
        return float(np.mean(-np.log(picked)))

    def _onehot(self, y_true, y_pred):
        labels = self._labels(y_true, y_pred)
        onehot = np.zeros_like(y_pred)
        np.put_along_axis(onehot, labels[..., None], 1, axis=-1)
        return onehot

    def gradient(self, y_true, y_pred):
        return CategoricalCrossentropy().gradient(self._onehot(y_true, y_pred), y_pred)

    def logits_gradient(self, y_true, y_pred):
        return ((y_pred - self._onehot(y_true, y_pred)) / _n_samples(y_pred)).astype(
            y_pred.dtype, copy=False)


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def __call__(self, y_true, y_pred):
        y_true = _align(y_true, y_pred).astype(y_pred.dtype, copy=False)
        return float(np.mean(np.mean(np.square(y_pred - y_true), axis=-1)))

    def gradient(self, y_true, y_pred):
        y_true = _align(y_true, y_pred).astype(y_pred.dtype, copy=False)
        return (2 * (y_pred - y_true) / y_pred.size).astype(y_pred.dtype, copy=False)


_LOSSES = {
    "binary_crossentropy": BinaryCrossentropy,
    "bce": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
}


def get(identifier):
    """A Loss instance from a name, a Loss class or instance."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, str) and identifier.lower() in _LOSSES:
        return _LOSSES[identifier.lower()]()
    raise ValueError(
        f"Unknown loss: {identifier!r}. Expected one of {sorted(_LOSSES)}."
    )

"""Accuracy metrics, accumulated over an epoch as Keras' MeanMetricWrapper does."""
import numpy as np

from .losses import _align


class Metric:
    def __init__(self, name):
        self.name = name
        self.reset_state()

    def reset_state(self):
        self.total = 0.0
        self.count = 0

    def values(self, y_true, y_pred):
        raise NotImplementedError

    def update_state(self, y_true, y_pred):
        v = self.values(y_true, y_pred)
        self.total += float(np.sum(v, dtype=np.float64))
        self.count += v.size

    def result(self):
        return self.total / self.count if self.count else 0.0


class BinaryAccuracy(Metric):
    def __init__(self, name="binary_accuracy", threshold=0.5):
        self.threshold = threshold
        super().__init__(name)

    def values(self, y_true, y_pred):
        y_true = _align(y_true, y_pred)
        return (y_true == (y_pred > self.threshold)).astype(np.float32)


class CategoricalAccuracy(Metric):
    def __init__(self, name="categorical_accuracy"):
        super().__init__(name)

    def values(self, y_true, y_pred):
        return (np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)).astype(np.float32)


class SparseCategoricalAccuracy(Metric):
    def __init__(self, name="sparse_categorical_accuracy"):
        super().__init__(name)

    def values(self, y_true, y_pred):
        if y_true.ndim == y_pred.ndim:
            y_true = y_true[..., 0]
        return (y_true == np.argmax(y_pred, axis=-1)).astype(np.float32)


_METRICS = {
    "binary_accuracy": BinaryAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
}


def is_binary_or_sparse_categorical(y_true_shape, y_pred_shape):
    """Keras' rule for resolving "accuracy" from the label and output shapes."""
    is_binary = y_pred_shape[-1] == 1
    is_sparse = len(y_true_shape) < len(y_pred_shape) or (
        y_true_shape[-1] == 1 and y_pred_shape[-1] > 1)
    return is_binary, is_sparse


def get(identifier, y_true_shape, y_pred_shape):
    """A fresh Metric for ``identifier``; "accuracy"/"acc" resolve by shapes as in Keras."""
    if isinstance(identifier, Metric):
        return identifier
    if not isinstance(identifier, str):
        raise ValueError(f"Unknown metric: {identifier!r}.")
    key = identifier.lower()
    if key in ("accuracy", "acc"):
        is_binary, is_sparse = is_binary_or_sparse_categorical(y_true_shape, y_pred_shape)
        if is_binary:
            return BinaryAccuracy(name=identifier)
        if is_sparse:
            return SparseCategoricalAccuracy(name=identifier)
        return CategoricalAccuracy(name=identifier)
    if key in _METRICS:
        return _METRICS[key](name=identifier)
    raise ValueError(
        f"Unknown metric: {identifier!r}. Expected 'accuracy' or one of {sorted(_METRICS)}."
    )

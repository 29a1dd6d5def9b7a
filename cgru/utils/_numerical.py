"""to_categorical and normalize, as keras.utils has them (NumPy in, NumPy out)."""
import operator

import numpy as np

__all__ = ["normalize", "to_categorical"]


def to_categorical(x, num_classes=None):
    """One-hot rows of class labels: float64 of shape ``x.shape + (num_classes,)``, where a
    last axis of size 1 is dropped first (``(n, 1) -> (n, num_classes)``), as Keras 3 does.

    ``num_classes`` ``None`` (or 0, as Keras) means ``max(x) + 1``. Labels must be whole
    numbers in ``0..num_classes-1``; out of that range is an IndexError (Keras raises one
    above the range, and silently wraps negative labels around; cgru raises for both).
    """
    labels = _as_labels(x)
    shape = labels.shape
    if len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    labels = labels.reshape(-1)
    num_classes = _resolve_num_classes(num_classes, labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise IndexError(f"Class label {bad} is out of range: labels must be in "
                         f"0..{num_classes - 1} for num_classes={num_classes}")
    one_hot = np.zeros((labels.size, num_classes))
    one_hot[np.arange(labels.size), labels] = 1
    return one_hot.reshape(shape + (num_classes,))


def _as_labels(x):
    """x as int64 labels; ValueError for labels that are not whole numbers."""
    array = np.asarray(x)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError("`x` must hold whole-number class labels; received values such "
                             f"as {array[array != np.round(array)][:3]}")
    try:
        return np.asarray(array, dtype=np.int64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`x` must hold integer class labels. Received dtype {array.dtype}: "
                         f"{error}") from error


def _resolve_num_classes(num_classes, labels):
    if not num_classes:                     # None or 0: inferred, as Keras
        if labels.size == 0:
            raise ValueError("`x` is empty and `num_classes` is None: give `num_classes` to "
                             "encode no labels")
        return int(labels.max()) + 1
    try:
        num_classes = operator.index(num_classes)
    except TypeError as error:
        raise TypeError(f"`num_classes` must be an integer. Received: "
                        f"num_classes={num_classes!r}") from error
    if num_classes < 0:
        raise ValueError(f"`num_classes` must be positive. Received: num_classes={num_classes}")
    return num_classes


def normalize(x, axis=-1, order=2):
    """``x`` divided by its ``order``-norm along ``axis`` (vectors of norm 0 are left as they
    are), as ``keras.utils.normalize`` on a NumPy array: same shape; integers give float64.

    Keras's NumPy branch turns ``axis=0`` into ``-1`` and a 1-D ``x`` into shape ``(1, n)``;
    cgru normalizes along axis 0 and keeps the shape, as Keras's tensor branch
    (``keras.ops.normalize``) does. ``axis`` is one integer.
    """
    array = np.asarray(x)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"`axis` must be one integer (cgru normalizes along one axis). "
                         f"Received: axis={axis!r}")
    if array.ndim == 0:
        raise ValueError(f"`x` must have at least one axis. Received a scalar: x={array!r}")
    norms = np.linalg.norm(array, order, axis, keepdims=True)
    norms[norms == 0] = 1
    return array / norms

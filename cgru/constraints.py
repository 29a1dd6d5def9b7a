"""Weight constraints with Keras 3's names and numbers, applied after each optimizer update.

A constraint maps a weight to its constrained value, ``constraint(w)``; ``fit`` writes the
result into the weight after every update, as Keras's optimizers do. Norms are taken along
``axis`` (0: each column of a kernel), with Keras's epsilon 1e-7 in the denominator.
"""
import numpy as np

from . import _objects

__all__ = ["Constraint", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "get", "serialize",
           "deserialize"]

_EPSILON = 1e-7


class Constraint(_objects.Configurable):
    """Base class: ``__call__(w)`` returns the constrained weight (a new array)."""

    def __call__(self, w):
        return w


def _norms(w, axis):
    return np.sqrt(np.sum(np.square(w), axis=axis, keepdims=True))


class MaxNorm(Constraint):
    """Scales down each slice along ``axis`` whose norm exceeds ``max_value``."""

    def __init__(self, max_value=2, axis=0):
        self.max_value, self.axis = max_value, axis

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = np.clip(norms, 0, self.max_value)
        return w * (desired / (w.dtype.type(_EPSILON) + norms))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class MinMaxNorm(Constraint):
    """Moves each slice's norm into [min_value, max_value] (``rate`` of the way there)."""

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value, self.max_value, self.rate, self.axis = min_value, max_value, rate, axis

    def __call__(self, w):
        norms = _norms(w, self.axis)
        t = w.dtype.type
        desired = t(self.rate) * np.clip(norms, self.min_value, self.max_value) \
            + t(1 - self.rate) * norms
        return w * (desired / (t(_EPSILON) + norms))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate,
                "axis": self.axis}


class NonNeg(Constraint):
    """max(w, 0)."""

    def __call__(self, w):
        return np.maximum(w, 0)


class UnitNorm(Constraint):
    """Each slice along ``axis`` scaled to unit norm."""

    def __init__(self, axis=0):
        self.axis = axis

    def __call__(self, w):
        return w / (w.dtype.type(_EPSILON) + _norms(w, self.axis))

    def get_config(self):
        return {"axis": self.axis}


_CLASSES = {cls.__name__: cls for cls in (Constraint, MaxNorm, MinMaxNorm, NonNeg, UnitNorm)}
_NAMES = {"max_norm": MaxNorm, "min_max_norm": MinMaxNorm, "non_neg": NonNeg,
          "unit_norm": UnitNorm}


def get(identifier):
    """A Constraint from a Keras name, a config dict, a class or an instance; None stays
    None."""
    if identifier is None:
        return None
    return _objects.get(identifier, Constraint, _NAMES, _CLASSES, "constraint",
                        "")


def serialize(constraint):
    return _objects.serialize(constraint)


def deserialize(config):
    if config is None:
        return None
    if isinstance(config, str):
        return get(config)
    return _objects.deserialize(config, _CLASSES, "constraint")

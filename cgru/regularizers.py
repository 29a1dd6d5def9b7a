"""Weight and activity regularizers with Keras 3's names and numbers, and their gradients.

A regularizer maps an array to a penalty, ``reg(x)``, and gives the penalty's gradient,
``reg.gradient(x)``. A layer's weight penalties (``kernel_regularizer``, ...) and activity
penalties (``activity_regularizer``, on the layer's output, divided by the batch size as
Keras 3 does) add to the training loss and to the loss that ``fit`` and ``evaluate`` report,
as in Keras; their gradients add to the weights' and outputs' gradients.
"""
import math

import numpy as np

from . import _objects

__all__ = ["Regularizer", "L1", "L2", "L1L2", "OrthogonalRegularizer", "l1", "l2", "l1_l2",
           "orthogonal_regularizer", "get", "serialize", "deserialize"]


def _factor(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or math.isinf(value) or math.isnan(value) or value < 0:
        raise ValueError(f"Invalid value for argument {name}: expected a non-negative float."
                         f"Received: {name}={value}")
    return float(value)


class Regularizer(_objects.Configurable):
    """Base class: ``__call__(x)`` the penalty (a float), ``gradient(x)`` its gradient."""

    def __call__(self, x):
        return 0.0

    def gradient(self, x):
        return np.zeros_like(x)


class L1L2(Regularizer):
    """``l1 * sum(|x|) + l2 * sum(x^2)``."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _factor(0.0 if l1 is None else l1, "l1")
        self.l2 = _factor(0.0 if l2 is None else l2, "l2")

    def __call__(self, x):
        t = x.dtype.type
        penalty = t(0)
        if self.l1:
            penalty += t(self.l1) * np.sum(np.abs(x))
        if self.l2:
            penalty += t(self.l2) * np.sum(np.square(x))
        return float(penalty)

    def gradient(self, x):
        t = x.dtype.type
        g = np.zeros_like(x)
        if self.l1:
            g += t(self.l1) * np.sign(x)
        if self.l2:
            g += t(2 * self.l2) * x
        return g

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    """``l1 * sum(|x|)``."""

    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(L1L2):
    """``l2 * sum(x^2)``."""

    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


class OrthogonalRegularizer(Regularizer):
    """Keras's penalty on the cosines between the rows (or columns) of a 2-D weight:
    ``factor * 0.5 * sum(|N N^T| off the diagonal) / (n (n - 1) / 2)``, N the rows scaled to
    unit norm (by ``min(1 / norm, 1e7)``, as Keras's ``normalize``)."""

    def __init__(self, factor=0.01, mode="rows"):
        self.factor = _factor(factor, "factor")
        if mode not in ("rows", "columns"):
            raise ValueError('Invalid value for argument `mode`. Expected one of '
                             f'{{"rows", "columns"}}. Received: mode={mode}')
        self.mode = mode

    def _parts(self, x):
        if x.ndim != 2:
            raise ValueError("Inputs to OrthogonalRegularizer must have rank 2. Received: "
                             f"inputs.shape={x.shape}")
        rows = x if self.mode == "rows" else x.T
        inv_norm = np.minimum(1 / np.sqrt(np.sum(np.square(rows), axis=1, keepdims=True)),
                              rows.dtype.type(1e7))
        unit = rows * inv_norm
        product = unit @ unit.T
        np.fill_diagonal(product, 0)
        n = rows.shape[0]
        scale = self.factor * 0.5 / (n * (n - 1.0) / 2.0)
        return rows, inv_norm, unit, product, scale

    def __call__(self, x):
        _, _, _, product, scale = self._parts(x)
        return float(scale * np.sum(np.abs(product)))

    def gradient(self, x):
        rows, inv_norm, unit, product, scale = self._parts(x)
        # penalty = scale * sum |P|, P = U U^T off the diagonal, U = rows * inv_norm
        d_product = x.dtype.type(scale) * np.sign(product)
        d_unit = (d_product + d_product.T) @ unit
        # U = r / |r| where the norm is above 1e-7 (else U = r * 1e7, a constant scale)
        scaled = inv_norm < 1e7
        d_rows = np.where(scaled, (d_unit - unit * np.sum(d_unit * unit, axis=1, keepdims=True))
                          * inv_norm, d_unit * inv_norm)
        return d_rows if self.mode == "rows" else d_rows.T

    def get_config(self):
        return {"factor": self.factor, "mode": self.mode}


# Keras 3's lower-case names are the classes themselves
l1, l2, l1_l2, orthogonal_regularizer = L1, L2, L1L2, OrthogonalRegularizer

_CLASSES = {cls.__name__: cls for cls in (Regularizer, L1, L2, L1L2, OrthogonalRegularizer)}
# The string "l1_l2" is 0.01 of each, as Keras documents it (Keras 3.15's own `get` rejects
# that string; "l1l2" is its L1L2() with both factors 0).
_NAMES = {"l1": L1, "l2": L2, "l1_l2": lambda: L1L2(0.01, 0.01), "l1l2": L1L2,
          "orthogonal_regularizer": OrthogonalRegularizer}


def get(identifier):
    """A Regularizer from a Keras name, a config dict, a class or an instance; None stays
    None."""
    if identifier is None:
        return None
    return _objects.get(identifier, Regularizer, _NAMES, _CLASSES, "regularizer",
                        " (A plain Python function has no gradient here: subclass Regularizer and define gradient().)")


def serialize(regularizer):
    return _objects.serialize(regularizer)


def deserialize(config):
    if config is None:
        return None
    if isinstance(config, str):
        return get(config)
    return _objects.deserialize(config, _CLASSES, "regularizer")

"""Activations with Keras 3's names, each with the derivative the layers' backward needs.

``get(name)`` gives an ``Activation``: ``activation(z)`` computes it and
``activation.backward(d_out, out)`` turns the gradient with respect to its output into the
gradient with respect to its input, from the output alone (every activation here can).
"""
import numpy as np
from scipy.special import expit


class Activation:
    """An elementwise activation (softmax: along the last axis) and its backward."""

    def __init__(self, name, forward, backward):
        self.name, self._forward, self._backward = name, forward, backward

    def __call__(self, z):
        return self._forward(z)

    def backward(self, d_out, out):
        """dL/dz from dL/d(out) and out = activation(z)."""
        return self._backward(d_out, out)

    def __repr__(self):
        return f"<Activation {self.name}>"


def _softmax(z):
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    e /= np.sum(e, axis=-1, keepdims=True)
    return e


def _softmax_backward(d_out, out):
    return out * (d_out - np.sum(d_out * out, axis=-1, keepdims=True))


linear = Activation("linear", lambda z: z, lambda d, out: d)
sigmoid = Activation("sigmoid", expit, lambda d, out: d * out * (1 - out))
tanh = Activation("tanh", np.tanh, lambda d, out: d * (1 - out * out))
relu = Activation("relu", lambda z: np.maximum(z, 0), lambda d, out: d * (out > 0))
softmax = Activation("softmax", _softmax, _softmax_backward)

_ACTIVATIONS = {a.name: a for a in (linear, sigmoid, tanh, relu, softmax)}


def get(identifier):
    """The Activation named ``identifier`` (None means linear), or an Activation as is."""
    if identifier is None:
        return linear
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _ACTIVATIONS:
        return _ACTIVATIONS[identifier.lower()]
    raise ValueError(f"Unknown activation: {identifier!r}. Expected one of "
                     f"{sorted(_ACTIVATIONS)} or None.")


def serialize(activation):
    return get(activation).name

"""Activations with Keras 3's names and definitions, each with the derivative backward needs.

``get(identifier)`` gives an ``Activation``: ``activation(z)`` computes it and
``activation.backward(d_out, out, z=None)`` turns the gradient with respect to its output into
the gradient with respect to its input. Every activation here takes its derivative from its
output alone, except gelu and silu (``needs_input``), which need their input ``z``.

Keras 3's definitions (its TensorFlow backend's numerics), in NumPy:
    hard_sigmoid(x) = relu6(x + 3) / 6
    softsign(x)     = x / (1 + |x|)
    elu(x)          = x if x > 0 else exp(x) - 1                    (alpha = 1)
    selu(x)         = scale * (x if x > 0 else alpha * (exp(x) - 1))
    gelu(x)         = x / 2 * erfc(-x / sqrt(2))       (approximate=False, the default of
                                                        keras.activations.gelu; 1 / sqrt(2)
                                                        rounded to float32, see GELU_C)
    silu(x)         = x * sigmoid(x)                                 ("swish" is its other name)

``serialize``/``deserialize`` use Keras's forms: a built-in activation serializes to its
name, and deserializes from its name or from Keras's dict form
``{"module": "keras.activations" (or "builtins"), "class_name": "function", "config": name}``.
"""
import numpy as np
from scipy.special import erfc, expit

# selu's constants, as Keras and TensorFlow define them
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
# gelu's 1 / sqrt(2) as TensorFlow computes it, rounded to float32 in float64 too (tf.nn.gelu
# casts the Python float through float32): up to 5e-9 in float64 results; Keras's numbers
GELU_C = float(np.float32(np.sqrt(0.5)))


class Activation:
    """An elementwise activation (softmax: along the last axis) and its backward."""

    def __init__(self, name, forward, backward, needs_input=False):
        self.name, self._forward, self._backward = name, forward, backward
        self.__name__ = name
        # does backward need the input z (it cannot be recovered from the output)?
        self.needs_input = needs_input

    def __call__(self, z):
        return self._forward(np.asarray(z))

    def backward(self, d_out, out, z=None):
        """dL/dz from dL/d(out) and out = activation(z); ``z`` is needed when
        ``needs_input``."""
        if self.needs_input:
            if z is None:
                raise ValueError(f"the derivative of {self.name} needs its input `z`")
            return self._backward(d_out, np.asarray(z))
        return self._backward(d_out, out)

    def __repr__(self):
        return f"<Activation {self.name}>"


def _softmax(z):
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    e /= np.sum(e, axis=-1, keepdims=True)
    return e


def _softmax_backward(d_out, out):
    return out * (d_out - np.sum(d_out * out, axis=-1, keepdims=True))


def _const(z, value):
    """``value`` in z's float dtype (so that float32 stays float32)."""
    return np.asarray(value, dtype=z.dtype if z.dtype.kind == "f" else np.float64)


def _hard_sigmoid(z):
    return np.clip(z + _const(z, 3), 0, 6) / _const(z, 6)


def _hard_sigmoid_backward(d, out):
    # relu6's derivative at x + 3: 1 where 0 < x + 3 < 6, i.e. where 0 < out < 1
    return d * ((out > 0) & (out < 1)) / _const(out, 6)


def _softsign_backward(d, out):
    # 1 / (1 + |x|)^2 = (1 - |out|)^2
    return d * (1 - np.abs(out)) ** 2


def _elu(z):
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))


def _elu_backward(d, out):
    # exp(x) = out + 1 where x < 0 (TensorFlow's form: from the output)
    return np.where(out < 0, d * (out + 1), d)


def _selu(z):
    scale, alpha = _const(z, SELU_SCALE), _const(z, SELU_ALPHA)
    return scale * np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))


def _selu_backward(d, out):
    scale_alpha = _const(out, SELU_SCALE * SELU_ALPHA)
    return np.where(out < 0, d * (out + scale_alpha), d * _const(out, SELU_SCALE))


def _gelu(z):
    return _const(z, 0.5) * z * erfc(-z * _const(z, GELU_C))


def _gelu_backward(d, z):
    # erfc(-u) / 2 + z c exp(-u^2) / sqrt(pi), u = c z
    u = z * _const(z, GELU_C)
    return d * (_const(z, 0.5) * erfc(-u)
                + z * _const(z, GELU_C / np.sqrt(np.pi)) * np.exp(-u * u))


def _silu_backward(d, z):
    s = expit(z)
    return d * s * (1 + z * (1 - s))


linear = Activation("linear", lambda z: z, lambda d, out: d)
sigmoid = Activation("sigmoid", expit, lambda d, out: d * out * (1 - out))
tanh = Activation("tanh", np.tanh, lambda d, out: d * (1 - out * out))
relu = Activation("relu", lambda z: np.maximum(z, 0), lambda d, out: d * (out > 0))
softmax = Activation("softmax", _softmax, _softmax_backward)
hard_sigmoid = Activation("hard_sigmoid", _hard_sigmoid, _hard_sigmoid_backward)
softsign = Activation("softsign", lambda z: z / (1 + np.abs(z)), _softsign_backward)
elu = Activation("elu", _elu, _elu_backward)
selu = Activation("selu", _selu, _selu_backward)
gelu = Activation("gelu", _gelu, _gelu_backward, needs_input=True)
silu = Activation("silu", lambda z: z * expit(z), _silu_backward, needs_input=True)
swish = silu            # Keras's other name for silu (the same function)

_ACTIVATIONS = {a.name: a for a in (linear, sigmoid, tanh, relu, softmax, hard_sigmoid,
                                    softsign, elu, selu, gelu, silu)}
_ALIASES = {"swish": "silu"}


def _from_keras_object(identifier):
    """The Activation a Keras activation function (``keras.activations.relu``, ...) or its
    config dict names, else None. An arbitrary callable is not taken by its name."""
    if isinstance(identifier, dict):
        module = identifier.get("module") or "keras.activations"
        name = identifier.get("config")
        # Keras writes its built-in functions with module "keras.activations" or "builtins"
        if identifier.get("class_name") == "function" and isinstance(name, str) and (
                module == "builtins" or module.startswith("keras")):
            return _by_name(name)
        return None
    module = getattr(identifier, "__module__", None) or ""
    if callable(identifier) and (module == "keras" or module.startswith("keras.")):
        return _by_name(getattr(identifier, "__name__", None))
    return None


def _by_name(name):
    if not isinstance(name, str):
        return None
    key = name.lower()
    return _ACTIVATIONS.get(_ALIASES.get(key, key))


def get(identifier):
    """The Activation named by ``identifier``: None (linear), a name, an Activation, one of
    Keras's activation functions or its serialized form; else ValueError."""
    if identifier is None:
        return linear
    if isinstance(identifier, Activation):
        return identifier
    found = _by_name(identifier) if isinstance(identifier, str) else \
        _from_keras_object(identifier)
    if found is not None:
        return found
    raise ValueError(f"Unknown activation: {identifier!r}. Expected one of "
                     f"{sorted(_ACTIVATIONS) + sorted(_ALIASES)}, one of these functions "
                     "(cgru.activations or keras.activations), or None.")


def serialize(activation):
    """The activation's name (Keras 3 serializes its built-in activations by name)."""
    return get(activation).name


def deserialize(config, custom_objects=None):
    """The Activation that ``config`` names: a name or Keras's dict form; a name found in
    ``custom_objects`` is looked up there first, as Keras does."""
    if custom_objects:
        name = config.get("config") if isinstance(config, dict) else config
        if isinstance(name, str) and name in custom_objects:
            return get(custom_objects[name])
    return get(config)


def get_backward_from_output(identifier, layer_name):
    """``get(identifier)`` for a layer whose backward keeps only its output (Dense, Conv1D,
    Activation): gelu and silu, whose derivatives need their input, raise ValueError."""
    activation = get(identifier)
    if activation.needs_input:
        raise ValueError(
            f"{layer_name}(activation={identifier!r}): cgru's {layer_name} keeps only its "
            f"output for backward, and the derivative of {activation.name} needs its input; "
            "it supports " + ", ".join(sorted(n for n, a in _ACTIVATIONS.items()
                                              if not a.needs_input))
            + ". (GRU computes every one of these activations, gelu and silu too.)")
    return activation

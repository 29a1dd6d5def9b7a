"""Keras-style layers: GRU, Bidirectional, Dense, Dropout.

Layers are batch-first, as in Keras. Each layer has two faces:

* ``layer(x, training=False)`` for users: casts ``x`` to the layer dtype, checks its
  shape, builds the weights on first use and returns the output;
* ``forward(x, training, need_grad) -> (output, ctx)`` and
  ``backward(d_output, ctx) -> (dx, grads)`` for ``Sequential``: ``ctx`` holds what the
  backward pass needs and nothing is stored on the layer, so inference calls of one
  layer may run from several threads at once. ``grads`` follow ``get_weights()``.

Every GRU time loop runs inside ``cgru.functional.gru_forward``/``gru_backward``
(time-major, PyTorch layout); the layer keeps Keras-layout weights and converts them
per call (``cgru._layout``): measured at about 16 us against about 1.3 ms for one
batch-32 training step of a GRU(32) on (10, 20) inputs, so no cache is kept.
"""
import collections
import re

import numpy as np
from scipy.special import expit

from . import initializers
from ._layout import keras_to_torch, torch_grads_to_keras

from .functional import gru_backward, gru_forward

_name_counts = collections.defaultdict(int)


def _auto_name(cls_name):
    base = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls_name).lower()
    n = _name_counts[base]
    _name_counts[base] += 1
    return base if n == 0 else f"{base}_{n}"


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"Received an invalid value for `{name}`, expected a positive "
                         f"integer. Received: {name}={value!r}")
    return int(value)


def _check_rate(name, value):
    if not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"Received an invalid value for `{name}`, expected a float in "
                         f"[0, 1). Received: {name}={value!r}")
    return float(value)


def _fresh_seed():
    """A seed drawn from NumPy's global generator, so np.random.seed() fixes it."""
    return int(np.random.randint(0, 2**31 - 1))


class Layer:
    """Base class: name, dtype, lazy build, weights, RNG for weights and dropout."""

    def __init__(self, *, name=None, input_shape=None, dtype="float32", seed=None):
        self.name = name or _auto_name(type(self).__name__)
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise TypeError(f"Layer dtype must be float32 or float64. Received: dtype={dtype!r}")
        self.dtype = dt
        if input_shape is not None:
            input_shape = tuple(None if d is None else int(d) for d in input_shape)
        self.input_shape = input_shape
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"Received an invalid value for `seed`, expected an integer "
                             f"or None. Received: seed={seed!r}")
        self.seed = None if seed is None else int(seed)
        resolved = self.seed if self.seed is not None else _fresh_seed()
        self._init_rng = np.random.default_rng([resolved, 0])
        self._dropout_rng = np.random.default_rng([resolved, 1])
        self.built = False
        self.built_input_shape = None
        self._params = []

    # -- building --------------------------------------------------------------------------
    def build(self, input_shape):
        """Create the weights for inputs of ``input_shape`` (without the batch axis)."""
        self.built_input_shape = tuple(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def _ensure_built(self, input_shape):
        if not self.built:
            self.build(input_shape)

    # -- weights ---------------------------------------------------------------------------
    @property
    def weights(self):
        return self._params

    def get_weights(self):
        return [p.copy() for p in self._params]

    def set_weights(self, weights):
        weights = list(weights)
        if not self.built:
            raise ValueError(f"Layer '{self.name}' is not built yet: call it on an input or "
                             "give it `input_shape` before set_weights().")
        if len(weights) != len(self._params):
            raise ValueError(
                f"Layer '{self.name}' expects {len(self._params)} weight arrays with shapes "
                f"{[p.shape for p in self._params]}; received {len(weights)} arrays.")
        for i, (p, w) in enumerate(zip(self._params, weights)):
            w = np.asarray(w)
            if w.shape != p.shape:
                raise ValueError(f"Layer '{self.name}' weight {i} has shape {p.shape}; "
                                 f"received an array of shape {w.shape}.")
        for p, w in zip(self._params, weights):
            p[...] = np.asarray(w, dtype=self.dtype)

    def count_params(self):
        return int(sum(p.size for p in self._params))

    # -- calling ---------------------------------------------------------------------------
    def _cast(self, x, arg="x"):
        x = np.asarray(x)
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise TypeError(f"`{arg}` must be a numeric array; received dtype {x.dtype}.")
        return x.astype(self.dtype, copy=False)

    def check_input_shape(self, shape):
        """Raise ValueError unless a batch of ``shape`` suits this layer (built or not)."""

    def __call__(self, x, training=False):
        x = self._cast(x)
        self.check_input_shape(x.shape)
        self._ensure_built(x.shape[1:])
        out, _ = self.forward(x, training=training, need_grad=False)
        return out

    def forward(self, x, training=False, need_grad=False):
        raise NotImplementedError

    def backward(self, d_output, ctx):
        raise NotImplementedError

    # -- config ----------------------------------------------------------------------------
    def get_config(self):
        return {"name": self.name, "dtype": self.dtype.name, "seed": self.seed,
                "input_shape": None if self.input_shape is None else list(self.input_shape)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # RNG state, so that resumed training draws the same dropout masks
    def rng_state(self):
        return self._dropout_rng.bit_generator.state

    def set_rng_state(self, state):
        self._dropout_rng.bit_generator.state = state

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}>"


def _dropout_mask(rng, shape, rate, dtype):
    """Inverted dropout mask: kept units scaled by 1 / (1 - rate), as in Keras."""
    keep = rng.random(shape) >= rate
    return keep.astype(dtype) / dtype.type(1 - rate)


class GRU(Layer):
    """Gated recurrent unit layer (Keras 3 arguments, Keras weight layout z, r, h)."""

    def __init__(self, units, *, return_sequences=False, return_state=False,
                 go_backwards=False, reset_after=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", dropout=0.0,
                 input_shape=None, seed=None, dtype="float32", name=None):
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, seed=seed)
        self.units = _check_positive_int("units", units)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.reset_after = bool(reset_after)
        self.kernel_initializer = initializers.name_of(kernel_initializer) \
            if isinstance(kernel_initializer, str) else kernel_initializer
        self.recurrent_initializer = initializers.name_of(recurrent_initializer) \
            if isinstance(recurrent_initializer, str) else recurrent_initializer
        self.bias_initializer = initializers.name_of(bias_initializer) \
            if isinstance(bias_initializer, str) else bias_initializer
        for arg in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
            initializers.get(getattr(self, arg))  # fail early on unknown names
        self.dropout = _check_rate("dropout", dropout)
        if input_shape is not None:
            if len(self.input_shape) != 2:
                raise ValueError("GRU `input_shape` must be (timesteps, features); received "
                                 f"input_shape={tuple(input_shape)}")
            self.build(self.input_shape)

    def check_input_shape(self, shape):
        if len(shape) != 3:
            raise ValueError(f"Layer '{self.name}' expects input of shape (batch, timesteps, "
                             f"features); received an array of shape {tuple(shape)}.")
        # the time axis is free unless `input_shape` fixed it; features must match
        t = self.input_shape[0] if self.input_shape is not None else None
        f = (self.built_input_shape if self.built else self.input_shape or (None, None))[1]
        if (f is not None and shape[2] != f) or (t is not None and shape[1] != t):
            raise ValueError(
                f"Layer '{self.name}' expects input of shape (batch, {t}, {f}); "
                f"received an array of shape {tuple(shape)}.")

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"GRU needs inputs of shape (timesteps, features); received "
                             f"{tuple(input_shape)}")
        I, H = int(input_shape[-1]), self.units
        rng = self._init_rng
        self.kernel = initializers.get(self.kernel_initializer)((I, 3 * H), self.dtype, rng)
        self.recurrent_kernel = initializers.get(self.recurrent_initializer)(
            (H, 3 * H), self.dtype, rng)
        bias_shape = (2, 3 * H) if self.reset_after else (3 * H,)
        self.bias = initializers.get(self.bias_initializer)(bias_shape, self.dtype, rng)
        self._params = [self.kernel, self.recurrent_kernel, self.bias]
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        if self.return_sequences:
            return (input_shape[0], self.units)
        return (self.units,)

    # -- the two halves used by Sequential and Bidirectional -------------------------------
    def _run(self, x, h0, training, need_grad):
        """x (B, T, I) -> (output, h_n, ctx); ctx is None unless need_grad."""
        B, T, I = x.shape
        mask = None
        if training and self.dropout > 0:
            # Keras (recurrent_dropout=0): one (B, I) mask shared by all time steps
            mask = _dropout_mask(self._dropout_rng, (B, I), self.dropout, self.dtype)
            x = x * mask[:, None, :]
        xt = x.transpose(1, 0, 2)  # time-major view; the kernel copies it at most once
        if self.go_backwards:
            xt = xt[::-1]
        w_ih, w_hh, b_ih, b_hh = keras_to_torch(self.kernel, self.recurrent_kernel,
                                                self.bias, self.reset_after)
        y, h_n, cache = gru_forward(xt, h0, w_ih, w_hh, b_ih, b_hh,
                                    reset_after=self.reset_after, training=need_grad)
        # with go_backwards the sequence stays in processing order, as in Keras
        output = np.ascontiguousarray(y.transpose(1, 0, 2)) if self.return_sequences else h_n
        ctx = (cache, mask) if need_grad else None
        return output, h_n, ctx

    def _grad(self, d_output, d_h, ctx):
        """Gradients of (output, h_n) -> (dx, dh0, [dkernel, drecurrent, dbias])."""
        cache, mask = ctx
        if self.return_sequences:
            dy = d_output.transpose(1, 0, 2)
            dh_n = d_h
        else:
            dy = None
            dh_n = d_output if d_h is None else d_output + d_h
        g = gru_backward(dy, dh_n, cache)
        dx = g.dx[::-1] if self.go_backwards else g.dx
        dx = dx.transpose(1, 0, 2)
        dx = dx * mask[:, None, :] if mask is not None else np.ascontiguousarray(dx)
        grads = torch_grads_to_keras(g.dw_ih, g.dw_hh, g.db_ih, g.db_hh, self.reset_after)
        return dx, g.dh0, grads

    def _initial_state(self, initial_state, batch):
        if initial_state is None:
            return None
        if isinstance(initial_state, (list, tuple)):
            if len(initial_state) != 1:
                raise ValueError(f"GRU takes one initial state; received {len(initial_state)}.")
            initial_state = initial_state[0]
        h0 = self._cast(initial_state, "initial_state")
        if h0.shape != (batch, self.units):
            raise ValueError(f"`initial_state` must have shape ({batch}, {self.units}); "
                             f"received an array of shape {h0.shape}.")
        return h0

    def forward(self, x, training=False, need_grad=False, initial_state=None):
        output, h_n, ctx = self._run(x, initial_state, training, need_grad)
        if self.return_state:
            return (output, h_n.copy()), ctx
        return output, ctx

    def backward(self, d_output, ctx):
        if self.return_state:
            d_output, d_h = d_output
        else:
            d_h = None
        dx, _, grads = self._grad(d_output, d_h, ctx)
        return dx, grads

    def __call__(self, x, initial_state=None, training=False):
        x = self._cast(x)
        self.check_input_shape(x.shape)
        self._ensure_built(x.shape[1:])
        h0 = self._initial_state(initial_state, x.shape[0])
        out, _ = self.forward(x, training=training, need_grad=False, initial_state=h0)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, return_sequences=self.return_sequences,
                      return_state=self.return_state, go_backwards=self.go_backwards,
                      reset_after=self.reset_after,
                      kernel_initializer=initializers.name_of(self.kernel_initializer),
                      recurrent_initializer=initializers.name_of(self.recurrent_initializer),
                      bias_initializer=initializers.name_of(self.bias_initializer),
                      dropout=self.dropout)
        return config


_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class Bidirectional(Layer):
    """Runs a GRU forwards and a copy of it backwards and merges the two outputs."""

    def __init__(self, layer, merge_mode="concat", *, input_shape=None, name=None):
        if not isinstance(layer, GRU):
            raise TypeError(f"Bidirectional wraps a GRU layer; received {layer!r}.")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"Received an invalid value for `merge_mode`, expected one of "
                             f"{_MERGE_MODES}. Received: merge_mode={merge_mode!r}")
        input_shape = input_shape if input_shape is not None else layer.input_shape
        super().__init__(name=name or f"bidirectional_{layer.name}", input_shape=input_shape,
                         dtype=layer.dtype.name, seed=layer.seed)
        self.merge_mode = merge_mode
        config = layer.get_config()
        config.update(input_shape=None, name=f"forward_{layer.name}")
        self.forward_layer = GRU.from_config(config)
        if layer.built:
            self.forward_layer.build(layer.built_input_shape)
            self.forward_layer.set_weights(layer.get_weights())
        config.update(name=f"backward_{layer.name}", go_backwards=not layer.go_backwards,
                      seed=None if layer.seed is None else layer.seed + 1)
        self.backward_layer = GRU.from_config(config)
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        if self.input_shape is not None:
            self.build(self.input_shape)

    def check_input_shape(self, shape):
        self.forward_layer.check_input_shape(shape)
        if self.input_shape is not None:
            t, f = self.input_shape
            if shape[2] != f or (t is not None and shape[1] != t):
                raise ValueError(f"Layer '{self.name}' expects input of shape (batch, {t}, "
                                 f"{f}); received an array of shape {tuple(shape)}.")

    def build(self, input_shape):
        for sub in (self.forward_layer, self.backward_layer):
            if not sub.built:
                sub.build(input_shape)
        self._params = self.forward_layer._params + self.backward_layer._params
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        shape = self.forward_layer.compute_output_shape(input_shape)
        if self.merge_mode == "concat":
            return shape[:-1] + (2 * shape[-1],)
        return shape

    def _merge(self, yf, yb):
        if self.merge_mode == "concat":
            return np.concatenate([yf, yb], axis=-1)
        if self.merge_mode == "sum":
            return yf + yb
        if self.merge_mode == "mul":
            return yf * yb
        if self.merge_mode == "ave":
            return (yf + yb) / self.dtype.type(2)
        return [yf, yb]

    def forward(self, x, training=False, need_grad=False, initial_state=None):
        hf0 = hb0 = None
        if initial_state is not None:
            hf0, hb0 = initial_state
        yf, hf, ctx_f = self.forward_layer._run(x, hf0, training, need_grad)
        yb, hb, ctx_b = self.backward_layer._run(x, hb0, training, need_grad)
        if self.return_sequences:
            yb = yb[:, ::-1]  # back to time order before merging
        out = self._merge(yf, yb)
        ctx = (ctx_f, ctx_b, yf, yb) if need_grad else None
        if self.return_state:
            states = [hf.copy(), hb.copy()]
            out = (*out, *states) if self.merge_mode is None else (out, *states)
        return out, ctx

    def backward(self, d_output, ctx):
        ctx_f, ctx_b, yf, yb = ctx
        if self.merge_mode is None:
            raise ValueError("Bidirectional(merge_mode=None) returns a list and cannot be "
                             "trained inside Sequential.")
        dhf = dhb = None
        if self.return_state:
            d_output, dhf, dhb = d_output
        if self.merge_mode == "concat":
            H = yf.shape[-1]
            d_f, d_b = d_output[..., :H], d_output[..., H:]
        elif self.merge_mode == "sum":
            d_f = d_b = d_output
        elif self.merge_mode == "mul":
            d_f, d_b = d_output * yb, d_output * yf
        else:  # ave
            d_f = d_b = d_output / self.dtype.type(2)
        if self.return_sequences:
            d_b = d_b[:, ::-1]
        dx_f, _, g_f = self.forward_layer._grad(d_f, dhf, ctx_f)
        dx_b, _, g_b = self.backward_layer._grad(d_b, dhb, ctx_b)
        return dx_f + dx_b, g_f + g_b

    def __call__(self, x, initial_state=None, training=False):
        x = self._cast(x)
        self.check_input_shape(x.shape)
        self._ensure_built(x.shape[1:])
        states = None
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)) or len(initial_state) != 2:
                raise ValueError("Bidirectional `initial_state` must be a list of two "
                                 "arrays (forward state, backward state).")
            states = [self.forward_layer._initial_state(s, x.shape[0]) for s in initial_state]
        out, _ = self.forward(x, training=training, need_grad=False, initial_state=states)
        return out

    def rng_state(self):
        return [self.forward_layer.rng_state(), self.backward_layer.rng_state()]

    def set_rng_state(self, state):
        self.forward_layer.set_rng_state(state[0])
        self.backward_layer.set_rng_state(state[1])

    def get_config(self):
        inner = self.forward_layer.get_config()
        inner["name"] = inner["name"][len("forward_"):]
        return {"name": self.name, "merge_mode": self.merge_mode,
                "input_shape": None if self.input_shape is None else list(self.input_shape),
                "layer": inner}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = GRU.from_config(config.pop("layer"))
        return cls(layer, **config)


def _softmax(z):
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


_ACTIVATIONS = {
    None: lambda z: z,
    "linear": lambda z: z,
    "sigmoid": expit,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "softmax": _softmax,
}


class Dense(Layer):
    """``activation(x @ kernel + bias)`` on the last axis (so per time step on 3-D input)."""

    def __init__(self, units, activation=None, *, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 input_shape=None, seed=None, dtype="float32", name=None):
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, seed=seed)
        self.units = _check_positive_int("units", units)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"Unknown activation: {activation!r}. Expected one of "
                             f"{[a for a in _ACTIVATIONS if a]} or None.")
        self.activation = None if activation == "linear" else activation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.name_of(kernel_initializer)
        self.bias_initializer = initializers.name_of(bias_initializer)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def check_input_shape(self, shape):
        if len(shape) < 2:
            raise ValueError(f"Layer '{self.name}' expects input of shape (batch, ..., "
                             f"features); received an array of shape {tuple(shape)}.")
        if self.built and shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"Layer '{self.name}' expects inputs with {self.kernel.shape[0]} "
                             f"features on the last axis; received shape {tuple(shape)}.")

    def build(self, input_shape):
        n_in = int(input_shape[-1])
        rng = self._init_rng
        self.kernel = initializers.get(self.kernel_initializer)((n_in, self.units),
                                                                self.dtype, rng)
        self._params = [self.kernel]
        if self.use_bias:
            self.bias = initializers.get(self.bias_initializer)((self.units,), self.dtype, rng)
            self._params.append(self.bias)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, x, training=False, need_grad=False):
        z = np.matmul(x, self.kernel)
        if self.use_bias:
            z += self.bias
        out = _ACTIVATIONS[self.activation](z).astype(self.dtype, copy=False)
        return out, ((x, out) if need_grad else None)

    def backward(self, d_output, ctx, from_logits=False):
        """``from_logits=True``: ``d_output`` is already the gradient of the pre-activation."""
        x, out = ctx
        a = self.activation
        if from_logits or a is None:
            dz = d_output
        elif a == "sigmoid":
            dz = d_output * out * (1 - out)
        elif a == "tanh":
            dz = d_output * (1 - out * out)
        elif a == "relu":
            dz = d_output * (out > 0)
        else:  # softmax
            dz = out * (d_output - np.sum(d_output * out, axis=-1, keepdims=True))
        x2 = x.reshape(-1, x.shape[-1])
        dz2 = dz.reshape(-1, self.units)
        grads = [x2.T @ dz2]
        if self.use_bias:
            grads.append(dz2.sum(axis=0))
        dx = np.matmul(dz, self.kernel.T)
        return dx, grads

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=self.activation, use_bias=self.use_bias,
                      kernel_initializer=self.kernel_initializer,
                      bias_initializer=self.bias_initializer)
        return config


class Dropout(Layer):
    """Inverted dropout: in training, zero a ``rate`` fraction and scale by 1/(1-rate)."""

    def __init__(self, rate, *, input_shape=None, seed=None, dtype="float32", name=None):
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, seed=seed)
        self.rate = _check_rate("rate", rate)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def forward(self, x, training=False, need_grad=False):
        if not training or self.rate == 0:
            return x, (None if need_grad else None)
        mask = _dropout_mask(self._dropout_rng, x.shape, self.rate, self.dtype)
        return x * mask, (mask if need_grad else None)

    def backward(self, d_output, ctx):
        return (d_output if ctx is None else d_output * ctx), []

    def get_config(self):
        config = super().get_config()
        config["rate"] = self.rate
        return config


LAYER_CLASSES = {c.__name__: c for c in (GRU, Bidirectional, Dense, Dropout)}

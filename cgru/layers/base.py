"""The layer protocol's base class (the protocol itself is written down in ``cgru.layers``)."""
import collections
import re

import numpy as np

from .. import backend, constraints, initializers, regularizers
from .node import is_symbolic, symbolic_call

# Automatic names, numbered per base name as Keras does ("gru", "gru_1", ...).
_name_counts = collections.defaultdict(int)

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def auto_name(cls_name):
    base = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls_name).lower()
    n = _name_counts[base]
    _name_counts[base] += 1
    return base if n == 0 else f"{base}_{n}"


def fresh_seed():
    """A seed drawn from NumPy's global generator, so np.random.seed() fixes it."""
    return int(np.random.randint(0, 2**31 - 1))


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"Received an invalid value for `{name}`, expected a positive "
                         f"integer. Received: {name}={value!r}")
    return int(value)


def check_rate(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"Received an invalid value for `{name}`, expected a float in "
                         f"[0, 1). Received: {name}={value!r}")
    return float(value)


def shape_str(shape):
    """A shape as Keras prints it: (None, 10, 20)."""
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"


def dropout_mask(rng, shape, rate, dtype):
    """Inverted dropout mask: kept units scaled by 1 / (1 - rate), as in Keras."""
    keep = rng.random(shape) >= rate
    return keep.astype(dtype) / dtype.type(1 - rate)


class Weight:
    """One weight of a layer: the live array and what the model needs to know about it:
    its name, whether the optimizer trains it, its regularizer (a penalty added to the loss)
    and its constraint (applied after each update)."""

    __slots__ = ("name", "array", "trainable", "regularizer", "constraint")

    def __init__(self, name, array, trainable=True, regularizer=None, constraint=None):
        self.name, self.array, self.trainable = name, array, bool(trainable)
        self.regularizer, self.constraint = regularizer, constraint

    @property
    def shape(self):
        return self.array.shape

    @property
    def dtype(self):
        return self.array.dtype

    def numpy(self):
        return self.array.copy()

    def __repr__(self):
        return (f"<Weight {self.name} shape={self.array.shape} dtype={self.array.dtype} "
                f"trainable={self.trainable}>")


class Layer:
    """Base class of every layer: name, dtype, weights, build, the user's call, configs.

    Subclasses implement the protocol methods of ``cgru.layers`` (``build``,
    ``compute_output_shape``, ``forward``, ``backward`` and, where it applies,
    ``weights_to_keras``/``weights_from_keras``, ``compute_mask``, ``check_input_shape``).
    """

    #: Outputs the layer returns: 1, or more (a tuple) for e.g. ``return_state=True``.
    num_outputs = 1
    #: Name of the elementwise activation the layer applies last, when its ``backward``
    #: can take the gradient at that activation's input (``at_logits=True``): the model
    #: then lets a matching loss give that gradient directly (sigmoid + binary
    #: crossentropy, softmax + categorical crossentropy), as Keras does.
    output_activation = None
    #: Does the layer pass a mask through unchanged (``compute_mask``)?
    supports_masking = False

    def __init__(self, *, name=None, input_shape=None, dtype=None, seed=None, trainable=True,
                 activity_regularizer=None, batch_size=None, batch_input_shape=None,
                 input_dim=None):
        self.name = name or auto_name(type(self).__name__)
        if batch_input_shape is not None:           # Keras 2's way to fix the batch size
            batch_size, input_shape = batch_input_shape[0], tuple(batch_input_shape[1:])
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        if batch_size is not None:
            batch_size = check_positive_int("batch_size", batch_size)
        #: The batch size the layer is built for, when fixed (stateful layers need it).
        self.batch_size = batch_size
        self.activity_regularizer = regularizers.get(activity_regularizer)
        dtype = backend.floatx() if dtype is None else dtype
        try:
            dt = np.dtype(dtype)
        except TypeError:
            dt = None
        if dt not in FLOAT_DTYPES:
            raise TypeError(f"Layer dtype must be float32 or float64. Received: dtype={dtype!r}")
        self.dtype = dt
        if input_shape is not None:
            input_shape = tuple(None if d is None else int(d) for d in input_shape)
        self.input_shape = input_shape
        if seed is not None and (isinstance(seed, bool)
                                 or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"Received an invalid value for `seed`, expected an integer "
                             f"or None. Received: seed={seed!r}")
        self.seed = None if seed is None else int(seed)
        resolved = self.seed if self.seed is not None else fresh_seed()
        self._init_rng = np.random.default_rng([resolved, 0])
        self._dropout_rng = np.random.default_rng([resolved, 1])
        self.trainable = bool(trainable)
        self.built = False
        self.built_input_shape = None
        self._weights = []          # Weight records, in get_weights() order

    # -- building ----------------------------------------------------------------------------
    def build(self, input_shape):
        """Creates the weights for inputs of ``input_shape`` (without the batch axis)."""
        self.built_input_shape = tuple(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        """The output's shape (without the batch axis), or a list of shapes when the layer
        returns several outputs."""
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        """The mask of the output: the input's when ``supports_masking``, else None."""
        return mask if self.supports_masking else None

    def initial_state_shapes(self, input_shape):
        """The shapes (without the batch axis) of the tensors ``initial_state`` takes for
        inputs of ``input_shape``, or None when the layer takes no initial state."""
        return None

    def check_input_shape(self, shape):
        """Raises ValueError unless a batch of ``shape`` (with the batch axis) suits this
        layer, built or not."""

    def ensure_built(self, input_shape):
        if not self.built:
            self.build(tuple(input_shape))

    def add_weight(self, name, shape=None, initializer="zeros", *, value=None, trainable=True,
                   regularizer=None, constraint=None):
        """A new weight of ``shape`` drawn by ``initializer`` from the layer's seeded
        generator (or ``value``, taken as is), C-contiguous, of the layer's dtype."""
        if value is None:
            value = initializers.get(initializer)(tuple(shape), self.dtype, self._init_rng)
        array = np.ascontiguousarray(value, dtype=self.dtype)
        self._weights.append(Weight(f"{self.name}/{name}", array, trainable,
                                    regularizers.get(regularizer), constraints.get(constraint)))
        return array

    # -- weights -------------------------------------------------------------------------
    @property
    def weights(self):
        """The live weight arrays, in the layout the layer computes with (see
        ``weights_to_keras``); an optimizer updates these in place."""
        return [w.array for w in self._weights]

    @property
    def variables(self):
        """The ``Weight`` records (array, trainable, regularizer, constraint) of ``weights``."""
        return list(self._weights)

    @property
    def trainable_weights(self):
        return [w.array for w in self._weights if w.trainable and self.trainable]

    @property
    def non_trainable_weights(self):
        return [w.array for w in self._weights if not (w.trainable and self.trainable)]

    def weights_to_keras(self, arrays):
        """Arrays in the order and layout of ``weights`` -> Keras 3's (``get_weights``).
        Also used on optimizer slots, which have the weights' shapes."""
        return list(arrays)

    def weights_from_keras(self, arrays):
        """The inverse of ``weights_to_keras``."""
        return list(arrays)

    def get_weights(self):
        """Copies of the weights in Keras 3's layout and order."""
        return [np.array(w) for w in self.weights_to_keras(self.weights)]

    def set_weights(self, weights):
        """Sets the weights from arrays in Keras 3's layout (``get_weights``' order)."""
        weights = list(weights)
        if not self.built:
            raise ValueError(f"Layer '{self.name}' is not built yet: call it on an input or "
                             "give it `input_shape` before set_weights().")
        expected = [w.shape for w in self.get_weights()]
        if len(weights) != len(expected):
            raise ValueError(f"Layer '{self.name}' expects {len(expected)} weight arrays with "
                             f"shapes {expected}; received {len(weights)} arrays.")
        arrays = [np.asarray(w) for w in weights]
        for i, (shape, w) in enumerate(zip(expected, arrays)):
            if w.shape != shape:
                raise ValueError(f"Layer '{self.name}' weight {i} has shape {shape}; "
                                 f"received an array of shape {w.shape}.")
        for own, value in zip(self.weights, self.weights_from_keras(arrays)):
            own[...] = value        # in place: optimizers hold these arrays

    def count_params(self):
        return int(sum(w.size for w in self.weights))

    # -- the protocol's two halves (see cgru.layers) ---------------------------------------
    def forward(self, inputs, training=False, mask=None, need_grad=False):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self, d_outputs, ctx, need_input_grad=True):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    # -- the user's call -----------------------------------------------------------------
    def cast(self, x, arg="x"):
        """``x`` as an array of the layer's dtype (Keras's autocast at the layer's input)."""
        x = np.asarray(x)
        if x.dtype != self.dtype:
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
                raise TypeError(f"`{arg}` must be a numeric array; received dtype {x.dtype}.")
            x = x.astype(self.dtype)
        return x

    def __call__(self, x, training=False):
        if is_symbolic(x):                  # building a functional model
            return symbolic_call(self, x, training=training)
        x = self.cast(x)
        self.check_input_shape(x.shape)
        self.ensure_built(x.shape[1:])
        return self.forward(x, training=training)[0]

    # -- config --------------------------------------------------------------------------
    def get_config(self):
        config = {"name": self.name, "dtype": self.dtype.name, "seed": self.seed,
                  "input_shape": None if self.input_shape is None else list(self.input_shape)}
        if self.batch_size is not None:
            config["batch_size"] = self.batch_size
        if not self.trainable:
            config["trainable"] = False
        if self.activity_regularizer is not None:
            config["activity_regularizer"] = regularizers.serialize(self.activity_regularizer)
        return config

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

"""Embedding: integer ids -> rows of a learned table."""
import numpy as np
import scipy.sparse

from .. import constraints, initializers, regularizers
from .base import Layer, check_positive_int


def _initializer(identifier):
    """Keras's "uniform" alias is RandomUniform(-0.05, 0.05)."""
    if isinstance(identifier, str) and identifier.lower() == "uniform":
        return initializers.RandomUniform()
    return identifier


class Embedding(Layer):
    """``embeddings[ids]``: ids of any shape ``(batch, ...)`` -> ``(batch, ..., output_dim)``.

    Weights: embeddings (input_dim, output_dim), as in Keras. Ids may come as any integer
    dtype or as floats holding integers (a model casts its input to the first layer's
    dtype); floats are truncated to integers as Keras's cast does. An id outside
    ``0..input_dim-1`` is a ValueError. With ``mask_zero=True`` the output's mask is
    ``ids != 0``. ``input_length`` is accepted and ignored, as in Keras 3.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform",
                 embeddings_regularizer=None, embeddings_constraint=None, mask_zero=False,
                 weights=None, input_length=None, **kwargs):
        for name in ("lora_rank", "lora_alpha", "quantization_config"):
            if kwargs.pop(name, None) is not None:
                raise NotImplementedError(f"cgru's Embedding does not support `{name}`.")
        super().__init__(**kwargs)
        self.input_dim = check_positive_int("input_dim", input_dim)
        self.output_dim = check_positive_int("output_dim", output_dim)
        self.embeddings_initializer = initializers.serialize(
            _initializer(embeddings_initializer))
        if embeddings_initializer == "uniform":
            self.embeddings_initializer = "uniform"
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self.embeddings_constraint = constraints.get(embeddings_constraint)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        if self.input_shape is not None or weights is not None:
            self.build(self.input_shape or (None,))
        if weights is not None:
            self.set_weights(weights if isinstance(weights, list) else [weights])

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            "embeddings", (self.input_dim, self.output_dim),
            _initializer(self.embeddings_initializer),
            regularizer=self.embeddings_regularizer, constraint=self.embeddings_constraint)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def check_input_shape(self, shape):
        if len(shape) < 1:
            raise ValueError(f"Layer '{self.name}' expects ids of shape (batch, ...); "
                             f"received an array of shape {tuple(shape)}.")

    def cast(self, x, arg="x"):
        """Ids stay as they are (no cast to a float dtype, as Keras's Embedding)."""
        x = np.asarray(x)
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise TypeError(f"`{arg}` must be an array of integer ids; received dtype "
                            f"{x.dtype}.")
        return x

    def ids(self, x):
        """``x`` as int64 ids, checked to lie in ``0..input_dim-1``."""
        x = np.asarray(x)
        if x.dtype.kind == "f":
            if not np.all(np.isfinite(x)):
                raise ValueError(f"Layer '{self.name}' received non-finite ids.")
            x = np.trunc(x)
        ids = x.astype(np.int64, copy=False)
        if ids.size:
            low, high = ids.min(), ids.max()
            if x.dtype == np.float32 and high > 2 ** 24:
                raise ValueError(f"Layer '{self.name}' received id {high} as float32, which "
                                 "holds integers exactly only up to 2**24 (a model casts "
                                 "its input to the first layer's dtype): give the "
                                 "Embedding dtype='float64'.")
            if low < 0 or high >= self.input_dim:
                bad = low if low < 0 else high
                raise ValueError(f"Layer '{self.name}' received id {bad}, outside the "
                                 f"table: ids must be in [0, {self.input_dim}) for "
                                 f"input_dim={self.input_dim} (input shape {x.shape}).")
        return ids

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return np.asarray(inputs) != 0

    # forward: out[..., :] = embeddings[ids[...], :]
    def forward(self, x, training=False, mask=None, need_grad=False):
        ids = self.ids(x)
        return np.take(self.embeddings, ids, axis=0), (ids if need_grad else None)

    def backward(self, d_output, ids, need_input_grad=True):
        """The ids get no gradient (zeros when asked for, as for any integer input); the
        table's gradient sums the rows of ``d_output`` that share an id."""
        grads = []
        if self.trainable:
            grads.append(self._table_gradient(ids.reshape(-1),
                                              d_output.reshape(-1, self.output_dim)))
        d_x = np.zeros(ids.shape, self.dtype) if need_input_grad else None
        return d_x, grads

    def _table_gradient(self, ids, d_rows):
        """(input_dim, output_dim): the rows of ``d_rows`` summed by id, as a sparse
        (input_dim, n) one-hot matrix times ``d_rows``. Measured (10,000 x 64 table, 6,400
        ids, float32): 0.6 ms, against 8.5 ms for np.add.at and for a sort + reduceat."""
        n = ids.size
        one_hot = scipy.sparse.csr_array((np.ones(n, self.dtype), (ids, np.arange(n))),
                                         shape=(self.input_dim, n))
        return np.asarray(one_hot @ d_rows, dtype=self.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(input_dim=self.input_dim, output_dim=self.output_dim,
                      embeddings_initializer=self.embeddings_initializer,
                      embeddings_regularizer=regularizers.serialize(
                          self.embeddings_regularizer),
                      embeddings_constraint=constraints.serialize(self.embeddings_constraint),
                      mask_zero=self.mask_zero)
        return config

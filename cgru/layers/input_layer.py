"""Input and InputLayer: where a model's input shape, batch size and dtype are declared."""
import numpy as np

from .base import Layer
from .node import KerasTensor, Node


class InputLayer(Layer):
    """Declares a model's input: ``shape`` (without the batch axis), or ``batch_shape``
    (with it), and optionally ``batch_size`` (needed by ``stateful`` recurrent layers). Used
    as the first element of a ``Sequential``, as in Keras; it computes nothing and is not
    listed in ``model.layers``."""

    def __init__(self, shape=None, batch_size=None, dtype=None, batch_shape=None, name=None,
                 **kwargs):
        if "batch_input_shape" in kwargs:           # Keras 2's name, still accepted
            batch_shape = kwargs.pop("batch_input_shape")
        if "input_shape" in kwargs:
            shape = kwargs.pop("input_shape")
        if kwargs:
            raise TypeError(f"InputLayer got unexpected arguments {sorted(kwargs)}")
        if shape is not None and batch_shape is not None:
            raise ValueError("You cannot pass both `shape` and `batch_shape` at the same time.")
        if batch_size is not None and batch_shape is not None:
            raise ValueError("You cannot pass both `batch_size` and `batch_shape` at the "
                             "same time.")
        if shape is None and batch_shape is None:
            raise ValueError("You must pass a `shape` argument.")
        if batch_shape is not None:
            batch_shape = tuple(batch_shape)
            batch_size, shape = batch_shape[0], batch_shape[1:]
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        integer = None      # integer ids (for an Embedding), as Keras's Input(dtype="int32")
        if dtype is not None and isinstance(dtype, (str, type, np.dtype)):
            try:
                if np.issubdtype(np.dtype(dtype), np.integer):
                    integer, dtype = np.dtype(dtype), None
            except TypeError:
                pass
        super().__init__(name=name, dtype=dtype, input_shape=shape, batch_size=batch_size)
        if integer is not None:
            self.dtype = integer
        self.build(self.input_shape)
        node = Node(self, [])
        #: The symbolic tensor this layer stands for (what ``Input`` returns).
        self.output = KerasTensor(self.batch_shape, self.dtype.name, node=node,
                                  name=self.name, input_layer=self)
        node.outputs = [self.output]
        self._inbound_nodes = [node]

    @property
    def batch_shape(self):
        return (self.batch_size,) + tuple(self.input_shape)

    def forward(self, x, training=False, mask=None, need_grad=False):
        return x, None

    def backward(self, d_output, ctx, need_input_grad=True):
        return d_output, []

    def get_config(self):
        return {"batch_shape": list(self.batch_shape), "dtype": self.dtype.name,
                "name": self.name}


def Input(shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None, name=None,
          tensor=None, optional=False):
    """A symbolic model input, as ``keras.Input``: ``Input(shape=(timesteps, features))``,
    or ``Input(batch_shape=(batch, timesteps, features))`` for a fixed batch size."""
    if sparse:
        raise NotImplementedError("cgru has no sparse tensors: Input(sparse=True) is not "
                                  "supported.")
    if tensor is not None:
        raise NotImplementedError("cgru builds models from shapes: Input(tensor=...) is not "
                                  "supported.")
    if optional:
        raise NotImplementedError("cgru has no optional inputs: Input(optional=True) is not "
                                  "supported.")
    layer = InputLayer(shape=shape, batch_size=batch_size, dtype=dtype,
                       batch_shape=batch_shape, name=name)
    return layer.output

"""TimeDistributed: one layer applied to every time step."""
import numpy as np

from .. import saving
from .base import Layer


class TimeDistributed(Layer):
    """Applies ``layer`` to every step of ``(batch, time, ...)``: the input is reshaped to
    ``(batch * time, ...)``, the layer runs once on it, and the output is reshaped back.
    The weights are the wrapped layer's (one set shared by all steps); the mask passes on,
    as Keras's TimeDistributed does.

    Layers whose output for a sample depends on the other samples of the batch
    (BatchNormalization in training) would see ``batch * time`` samples here rather than
    Keras's ``batch`` at each step, so they are refused."""

    supports_masking = True

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed wraps a cgru layer; received {layer!r}.")
        if layer.num_outputs != 1:
            raise ValueError(f"TimeDistributed needs a layer with one output; layer "
                             f"'{layer.name}' returns {layer.num_outputs}.")
        if getattr(layer, "uses_batch_statistics", False):
            raise NotImplementedError(
                f"TimeDistributed({type(layer).__name__}) is not supported: Keras normalizes "
                "each time step over the batch separately; apply the layer to the 3-D "
                "input directly.")
        if layer.activity_regularizer is not None:
            raise NotImplementedError("TimeDistributed does not support an "
                                      "activity_regularizer on the wrapped layer; give it to "
                                      "TimeDistributed instead.")
        self.layer = layer
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = layer.dtype.name
        trainable = bool(kwargs.pop("trainable", True)) and layer.trainable
        super().__init__(**kwargs)          # sets self.trainable (the wrapped layer's)
        self.trainable = trainable
        if np.dtype(self.dtype) != layer.dtype:
            raise ValueError(f"TimeDistributed(dtype={self.dtype.name}) differs from the "
                             f"wrapped layer's dtype {layer.dtype.name}.")
        self.output_activation = layer.output_activation
        if self.input_shape is not None:
            self.build(self.input_shape)

    @property
    def trainable(self):
        return self.layer.trainable

    @trainable.setter
    def trainable(self, value):
        self.layer.trainable = bool(value)

    def check_input_shape(self, shape):
        if len(shape) < 3:
            raise ValueError(f"Layer '{self.name}' expects input of shape (batch, time, ...) "
                             f"with at least 3 axes; received an array of shape "
                             f"{tuple(shape)}.")
        self.layer.check_input_shape((None,) + tuple(shape[2:]))

    def build(self, input_shape):
        self.layer.ensure_built(tuple(input_shape[1:]))
        self._weights = self.layer._weights
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape(tuple(input_shape[1:]))
        return (input_shape[0],) + tuple(inner)

    def weights_to_keras(self, arrays):
        return self.layer.weights_to_keras(arrays)

    def weights_from_keras(self, arrays):
        return self.layer.weights_from_keras(arrays)

    def forward(self, x, training=False, mask=None, need_grad=False):
        batch, steps = x.shape[:2]
        inner_mask = None
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim < 2 or mask.shape[:2] != (batch, steps):
                raise ValueError(f"The mask passed to layer '{self.name}' has shape "
                                 f"{mask.shape}; its first two axes must be the input's "
                                 f"(batch, time) = ({batch}, {steps}).")
            inner_mask = mask.reshape((batch * steps,) + mask.shape[2:])
        flat = x.reshape((batch * steps,) + x.shape[2:])
        out, ctx = self.layer.forward(flat, training=training, mask=inner_mask,
                                      need_grad=need_grad)
        out = out.reshape((batch, steps) + out.shape[1:])
        return out, ((ctx, x.shape) if need_grad else None)

    def backward(self, d_output, ctx, need_input_grad=True, at_logits=False):
        inner_ctx, x_shape = ctx
        flat = d_output.reshape((-1,) + d_output.shape[2:])
        kwargs = {"at_logits": True} if at_logits else {}
        d_x, grads = self.layer.backward(flat, inner_ctx, need_input_grad=need_input_grad,
                                         **kwargs)
        return (None if d_x is None else d_x.reshape(x_shape)), grads

    def rng_state(self):
        return self.layer.rng_state()

    def set_rng_state(self, state):
        self.layer.set_rng_state(state)

    def get_config(self):
        config = super().get_config()
        config["layer"] = saving.serialize(self.layer)
        config.pop("trainable", None)       # the wrapped layer's config holds it
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = saving.deserialize(config.pop("layer"))
        return cls(layer, **config)

"""Masking: marks the time steps whose features all equal ``mask_value`` as padding."""
import numpy as np

from .base import Layer


class Masking(Layer):
    """Steps of ``(batch, steps, features)`` whose features all equal ``mask_value`` are
    zeroed and masked: the output's mask is ``any(x != mask_value, axis=-1)``, as Keras's."""

    supports_masking = True

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(mask_value, bool) or not isinstance(mask_value, (int, float)):
            raise ValueError("Received an invalid value for `mask_value`, expected a "
                             f"number. Received: mask_value={mask_value!r}")
        self.mask_value = float(mask_value)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def check_input_shape(self, shape):
        if len(shape) < 2:
            raise ValueError(f"Layer '{self.name}' expects input of shape (batch, ..., "
                             f"features); received an array of shape {tuple(shape)}.")

    def compute_mask(self, inputs, mask=None):
        return np.any(np.asarray(inputs) != self.mask_value, axis=-1)

    # forward: out = x * keep, keep = any(x != mask_value) over the features
    def forward(self, x, training=False, mask=None, need_grad=False):
        keep = np.any(x != self.mask_value, axis=-1, keepdims=True).astype(x.dtype)
        return x * keep, (keep if need_grad else None)

    def backward(self, d_output, keep, need_input_grad=True):
        return (d_output * keep if need_input_grad else None), []

    def get_config(self):
        config = super().get_config()
        config["mask_value"] = self.mask_value
        return config

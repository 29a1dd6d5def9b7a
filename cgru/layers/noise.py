"""Regularization noise, active in training only: SpatialDropout1D, GaussianNoise,
GaussianDropout. Each draws from the layer's dropout generator (``seed`` makes it
reproducible; saving keeps its state). Each passes the mask on, as Keras does."""
import math

from .base import Layer, check_rate, dropout_mask
from .conv import keras_named


class _Noise(Layer):
    """Training: ``out = x * factor`` or ``x + noise`` drawn afresh; inference: ``x``."""

    supports_masking = True

    def backward(self, d_output, factor, need_input_grad=True):
        if not need_input_grad:
            return None, []
        return (d_output if factor is None else d_output * factor), []


class SpatialDropout1D(_Noise):
    """Dropout of whole channels: in training, each (sample, channel) of
    ``(batch, steps, channels)`` is zeroed for every step with probability ``rate``, the kept
    ones scaled by ``1 / (1 - rate)``, as in Keras."""

    def __init__(self, rate, **kwargs):
        kwargs.pop("noise_shape", None)        # Keras fixes it to (batch, 1, channels)
        super().__init__(**keras_named(kwargs, "spatial_dropout1d"))
        self.rate = check_rate("rate", rate)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def check_input_shape(self, shape):
        if len(shape) != 3:
            raise ValueError(f"Layer '{self.name}' expects input of shape (batch, steps, "
                             f"channels); received an array of shape {tuple(shape)}.")

    def forward(self, x, training=False, mask=None, need_grad=False):
        if not training or self.rate == 0:
            return x, None
        keep = dropout_mask(self._dropout_rng, (x.shape[0], 1, x.shape[2]), self.rate,
                            self.dtype)
        return x * keep, keep

    def get_config(self):
        config = super().get_config()
        config["rate"] = self.rate
        return config


class GaussianNoise(_Noise):
    """In training, ``x + N(0, stddev)`` (fresh noise per call); at inference, ``x``."""

    def __init__(self, stddev, **kwargs):
        super().__init__(**kwargs)
        if isinstance(stddev, bool) or not isinstance(stddev, (int, float)) \
                or not 0 <= stddev < math.inf:
            raise ValueError("Received an invalid value for `stddev`, expected a "
                             f"non-negative float. Received: stddev={stddev!r}")
        self.stddev = float(stddev)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def forward(self, x, training=False, mask=None, need_grad=False):
        if not training or self.stddev == 0:
            return x, None
        noise = self._dropout_rng.normal(0.0, self.stddev, x.shape).astype(self.dtype)
        return x + noise, None               # the gradient passes through unchanged

    def get_config(self):
        config = super().get_config()
        config["stddev"] = self.stddev
        return config


class GaussianDropout(_Noise):
    """In training, ``x * N(1, sqrt(rate / (1 - rate)))``; at inference, ``x``."""

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate("rate", rate)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def forward(self, x, training=False, mask=None, need_grad=False):
        if not training or self.rate == 0:
            return x, None
        stddev = math.sqrt(self.rate / (1.0 - self.rate))
        factor = self._dropout_rng.normal(1.0, stddev, x.shape).astype(self.dtype)
        return x * factor, factor

    def get_config(self):
        config = super().get_config()
        config["rate"] = self.rate
        return config

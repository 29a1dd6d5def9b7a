"""1-D pooling over the time axis: MaxPooling1D, AveragePooling1D and their global forms."""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .base import Layer
from .conv import check_channels_last, check_choice, keras_named, one_int, window_padding


def _check_3d(layer, shape):
    if len(shape) != 3:
        raise ValueError(f"Layer '{layer.name}' expects input of shape (batch, steps, "
                         f"features); received an array of shape {tuple(shape)}.")


class _Pooling1D(Layer):
    """Windows of ``pool_size`` steps, ``strides`` apart (default: ``pool_size``), padded as
    TensorFlow pads ("same": padding never enters a window's max or average). The mask is
    dropped, as Keras's pooling layers drop it."""

    _keras_name = None

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None,
                 **kwargs):
        check_channels_last(data_format)
        super().__init__(**keras_named(kwargs, self._keras_name))
        self.pool_size = one_int("pool_size", pool_size)
        self.strides = self.pool_size if strides is None else one_int("strides", strides)
        self.padding = check_choice("padding", padding, ("valid", "same"))
        if self.input_shape is not None:
            self.build(self.input_shape)

    def check_input_shape(self, shape):
        _check_3d(self, shape)
        if shape[1] is not None and self._padding(shape[1])[2] <= 0:
            raise ValueError(f"Layer '{self.name}': inputs of {shape[1]} steps are shorter "
                             f"than pool_size={self.pool_size} (padding='{self.padding}'); "
                             f"received an array of shape {tuple(shape)}.")

    def build(self, input_shape):
        self.check_input_shape((None,) + tuple(input_shape))
        super().build(input_shape)

    def _padding(self, length):
        return window_padding(length, self.pool_size, self.strides, self.padding)

    def compute_output_shape(self, input_shape):
        steps = None if input_shape[0] is None else self._padding(input_shape[0])[2]
        return (steps, input_shape[1])

    def _windows(self, x, fill):
        """(batch, out_steps, features, pool_size) view of ``x`` padded with ``fill``."""
        left, right, out = self._padding(x.shape[1])
        if left or right:
            x = np.pad(x, ((0, 0), (left, right), (0, 0)), constant_values=fill)
        return sliding_window_view(x, self.pool_size, axis=1)[:, ::self.strides][:, :out]

    def _scatter(self, tap_gradient, x_shape):
        """Adds each tap's gradient ``tap_gradient(tap)`` (batch, out_steps, features) back
        at the steps that tap read (a loop over the pool's taps only), then crops the
        padding."""
        batch, length, features = x_shape
        left, right, out = self._padding(length)
        d_padded = np.zeros((batch, length + left + right, features), self.dtype)
        stop = self.strides * (out - 1) + 1
        for tap in range(self.pool_size):
            d_padded[:, tap:tap + stop:self.strides] += tap_gradient(tap)
        return d_padded[:, left:left + length]

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides, padding=self.padding)
        return config


class MaxPooling1D(_Pooling1D):
    """The maximum of each window; its gradient goes to the window's first maximum, as
    TensorFlow's max pooling sends it."""

    _keras_name = "max_pooling1d"

    def forward(self, x, training=False, mask=None, need_grad=False):
        windows = self._windows(x, -np.inf)
        where = windows.argmax(axis=-1)
        out = np.take_along_axis(windows, where[..., None], axis=-1)[..., 0]
        return out, ((where, x.shape) if need_grad else None)

    def backward(self, d_output, ctx, need_input_grad=True):
        if not need_input_grad:
            return None, []
        where, x_shape = ctx
        return self._scatter(lambda tap: d_output * (where == tap), x_shape), []


class AveragePooling1D(_Pooling1D):
    """The mean of each window's steps (padding excluded from the count, as TensorFlow)."""

    _keras_name = "average_pooling1d"

    def _counts(self, length):
        """(out_steps, 1): how many real (unpadded) steps each window holds."""
        left, _, out = self._padding(length)
        starts = np.arange(out) * self.strides - left
        ends = np.minimum(starts + self.pool_size, length)
        return (ends - np.maximum(starts, 0)).astype(self.dtype)[:, None]

    def forward(self, x, training=False, mask=None, need_grad=False):
        counts = self._counts(x.shape[1])
        out = self._windows(x, 0).sum(axis=-1) / counts
        return out, ((counts, x.shape) if need_grad else None)

    def backward(self, d_output, ctx, need_input_grad=True):
        if not need_input_grad:
            return None, []
        counts, x_shape = ctx
        d_mean = d_output / counts
        return self._scatter(lambda tap: d_mean, x_shape), []


class _GlobalPooling1D(Layer):
    """Pools ``(batch, steps, features)`` over the steps: ``(batch, features)``, or
    ``(batch, 1, features)`` with ``keepdims``. The output carries no mask."""

    _keras_name = None

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        check_channels_last(data_format)
        super().__init__(**keras_named(kwargs, self._keras_name))
        self.keepdims = bool(keepdims)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def check_input_shape(self, shape):
        _check_3d(self, shape)

    def build(self, input_shape):
        self.check_input_shape((None,) + tuple(input_shape))
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return (1, input_shape[-1]) if self.keepdims else (input_shape[-1],)

    def compute_mask(self, inputs, mask=None):
        return None

    def _shape_out(self, pooled):
        return pooled[:, None, :] if self.keepdims else pooled

    def _shape_in(self, d_output):
        return d_output if self.keepdims else d_output[:, None, :]

    def get_config(self):
        config = super().get_config()
        config["keepdims"] = self.keepdims
        return config


class GlobalMaxPooling1D(_GlobalPooling1D):
    """The maximum over the steps. A mask is ignored (and dropped), as in Keras 3; ties
    share the gradient equally, as TensorFlow's reduce_max gradient does."""

    _keras_name = "global_max_pooling1d"

    def forward(self, x, training=False, mask=None, need_grad=False):
        pooled = x.max(axis=1)
        return self._shape_out(pooled), ((x, pooled) if need_grad else None)

    def backward(self, d_output, ctx, need_input_grad=True):
        if not need_input_grad:
            return None, []
        x, pooled = ctx
        hits = (x == pooled[:, None, :]).astype(self.dtype)
        hits /= hits.sum(axis=1, keepdims=True)
        return self._shape_in(d_output) * hits, []


class GlobalAveragePooling1D(_GlobalPooling1D):
    """The mean over the steps; with a mask, the mean of the valid steps only, as Keras 3
    (a sample with no valid step gives NaN there, as Keras's 0 / 0 does)."""

    _keras_name = "global_average_pooling1d"
    supports_masking = True

    def _weights_of_steps(self, x, mask):
        """(batch, steps, 1): each step's share of the mean."""
        if mask is None:
            return np.full((1, x.shape[1], 1), 1 / x.shape[1], self.dtype)
        mask = np.asarray(mask)
        if mask.shape != x.shape[:2]:
            raise ValueError(f"The mask passed to layer '{self.name}' has shape {mask.shape}; "
                             f"it must be the input's (batch, steps) = {x.shape[:2]}.")
        valid = mask.astype(self.dtype)[:, :, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return valid / valid.sum(axis=1, keepdims=True)

    def forward(self, x, training=False, mask=None, need_grad=False):
        share = self._weights_of_steps(x, mask)
        if mask is not None:
            x = np.where(share > 0, x, 0)   # masked steps never enter, even if not finite
        pooled = (x * share).sum(axis=1)
        return self._shape_out(pooled), ((share, x.shape) if need_grad else None)

    def backward(self, d_output, ctx, need_input_grad=True):
        if not need_input_grad:
            return None, []
        share, x_shape = ctx
        return np.broadcast_to(self._shape_in(d_output) * share, x_shape).copy(), []

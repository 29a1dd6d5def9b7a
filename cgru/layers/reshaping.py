"""Layers that move values without computing: Flatten, Reshape, Permute, RepeatVector."""
import math

import numpy as np

from .base import Layer, check_positive_int, shape_str


def _check_rank(layer, shape, rank, what):
    if len(shape) != rank:
        raise ValueError(f"Layer '{layer.name}' expects input of shape {what}; received "
                         f"an array of shape {tuple(shape)}.")


class _ShapeOnly(Layer):
    """A layer without weights whose ``build`` checks the input shape."""

    def build(self, input_shape):
        self.check_input_shape((None,) + tuple(input_shape))
        super().build(input_shape)


class Flatten(_ShapeOnly):
    """``(batch, d1, d2, ...) -> (batch, d1 * d2 * ...)``; with
    ``data_format="channels_first"`` the channels axis (1) moves last first, as Keras does.
    Drops the mask, as Keras's Flatten does."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        data_format = "channels_last" if data_format is None else data_format
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError("`data_format` must be 'channels_last' or 'channels_first'; "
                             f"received data_format={data_format!r}")
        self.data_format = data_format
        if self.input_shape is not None:
            self.build(self.input_shape)

    def check_input_shape(self, shape):
        if len(shape) < 1:
            raise ValueError(f"Layer '{self.name}' expects input with a batch axis; "
                             f"received an array of shape {tuple(shape)}.")

    def compute_output_shape(self, input_shape):
        if any(d is None for d in input_shape):
            return (None,)
        return (math.prod(input_shape),)

    def _to_channels_last(self, x):
        if self.data_format == "channels_first" and x.ndim > 2:
            return np.moveaxis(x, 1, -1)
        return x

    def forward(self, x, training=False, mask=None, need_grad=False):
        out = self._to_channels_last(x).reshape(x.shape[0], -1)
        return out, (x.shape if need_grad else None)

    def backward(self, d_output, shape, need_input_grad=True):
        if not need_input_grad:
            return None, []
        if self.data_format == "channels_first" and len(shape) > 2:
            moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
            return np.moveaxis(d_output.reshape(moved), -1, 1), []
        return d_output.reshape(shape), []

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


def _resolve_target(layer, input_shape, target_shape):
    """``target_shape`` with its -1 resolved for inputs of ``input_shape`` (no batch axis);
    ValueError naming both when the sizes cannot match."""
    target = tuple(target_shape)
    if any(d is None for d in input_shape):
        return tuple(None if d == -1 else d for d in target)
    size = math.prod(input_shape)
    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if known == 0 or size % known:
            raise ValueError(f"Layer '{layer.name}': cannot reshape inputs of shape "
                             f"{shape_str((None,) + tuple(input_shape))} to target_shape "
                             f"{target}.")
        return tuple(size // known if d == -1 else d for d in target)
    if known != size:
        raise ValueError(f"Layer '{layer.name}': cannot reshape inputs of shape "
                         f"{shape_str((None,) + tuple(input_shape))} ({size} values per "
                         f"sample) to target_shape {target} ({known} values).")
    return target


class Reshape(_ShapeOnly):
    """``(batch, ...) -> (batch, *target_shape)``; one entry of ``target_shape`` may be -1.
    Drops the mask, as Keras's Reshape does."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        target = tuple(target_shape) if isinstance(target_shape, (tuple, list)) else None
        if (target is None or any(isinstance(d, bool) or not isinstance(d, (int, np.integer))
                                  or (d <= 0 and d != -1) for d in target)
                or target.count(-1) > 1):
            raise ValueError("`target_shape` must be a tuple of positive integers with at "
                             f"most one -1; received target_shape={target_shape!r}")
        self.target_shape = tuple(int(d) for d in target)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def check_input_shape(self, shape):
        if len(shape) >= 1 and all(d is not None for d in shape[1:]):
            _resolve_target(self, tuple(shape[1:]), self.target_shape)

    def compute_output_shape(self, input_shape):
        return _resolve_target(self, tuple(input_shape), self.target_shape)

    def forward(self, x, training=False, mask=None, need_grad=False):
        target = _resolve_target(self, x.shape[1:], self.target_shape)
        return x.reshape((x.shape[0],) + target), (x.shape if need_grad else None)

    def backward(self, d_output, shape, need_input_grad=True):
        return (d_output.reshape(shape) if need_input_grad else None), []

    def get_config(self):
        config = super().get_config()
        config["target_shape"] = list(self.target_shape)
        return config


class Permute(_ShapeOnly):
    """Permutes the non-batch axes: ``dims`` is a permutation of ``1..rank``, as in Keras
    (``Permute((2, 1))`` swaps time and features). Drops the mask, as Keras does."""

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        dims = tuple(dims) if isinstance(dims, (tuple, list)) else None
        if dims is None or sorted(dims) != list(range(1, len(dims) + 1)):
            raise ValueError("Invalid permutation argument `dims` for Permute layer: it "
                             "must be a permutation of 1..rank (the batch axis is 0 and "
                             f"stays). Received: dims={dims!r}")
        self.dims = tuple(int(d) for d in dims)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def check_input_shape(self, shape):
        _check_rank(self, shape, len(self.dims) + 1,
                    f"(batch, ...) with {len(self.dims)} axes after the batch axis "
                    f"(dims={self.dims})")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[d - 1] for d in self.dims)

    def forward(self, x, training=False, mask=None, need_grad=False):
        return np.transpose(x, (0,) + self.dims), None

    def backward(self, d_output, ctx, need_input_grad=True):
        if not need_input_grad:
            return None, []
        inverse = np.argsort((0,) + self.dims)
        return np.transpose(d_output, inverse), []

    def get_config(self):
        config = super().get_config()
        config["dims"] = list(self.dims)
        return config


class RepeatVector(_ShapeOnly):
    """``(batch, features) -> (batch, n, features)``, the input repeated ``n`` times."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = check_positive_int("n", n)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def check_input_shape(self, shape):
        _check_rank(self, shape, 2, "(batch, features)")

    def compute_output_shape(self, input_shape):
        return (self.n,) + tuple(input_shape)

    def forward(self, x, training=False, mask=None, need_grad=False):
        return np.repeat(x[:, None, :], self.n, axis=1), None

    def backward(self, d_output, ctx, need_input_grad=True):
        # out[:, i] = x for every i
        return (d_output.sum(axis=1) if need_input_grad else None), []

    def get_config(self):
        config = super().get_config()
        config["n"] = self.n
        return config

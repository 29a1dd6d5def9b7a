"""BatchNormalization and LayerNormalization, with exact backwards."""
import numpy as np

from .. import constraints, initializers, regularizers
from .base import Layer

#: Keras's backend.epsilon(), which its masked batch moments add to the weight sums.
_KERAS_EPSILON = 1e-7


def _check_positive_float(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"Received an invalid value for `{name}`, expected a positive "
                         f"float. Received: {name}={value!r}")
    return float(value)


class _Normalization(Layer):
    """What both normalizations share: gamma and beta along the normalized axes."""

    supports_masking = True

    def __init__(self, epsilon, center, scale, beta_initializer, gamma_initializer,
                 beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint,
                 **kwargs):
        super().__init__(**kwargs)
        self.epsilon = _check_positive_float("epsilon", epsilon)
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = initializers.serialize(beta_initializer)
        self.gamma_initializer = initializers.serialize(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)

    def _full_axes(self, rank, axes):
        """``axes`` (Keras's, counting the batch axis) as non-negative axes of a tensor of
        ``rank``; ValueError naming them when out of range."""
        out = []
        for axis in axes:
            if not -rank <= axis < rank or axis % rank == 0:
                raise ValueError(f"Layer '{self.name}': axis {axis} is out of bounds for "
                                 f"inputs of rank {rank} (or is the batch axis).")
            out.append(axis % rank)
        return sorted(out)

    def _add_gamma_beta(self, shape):
        self.gamma = self.beta = None
        if self.scale:
            self.gamma = self.add_weight("gamma", shape, self.gamma_initializer,
                                         regularizer=self.gamma_regularizer,
                                         constraint=self.gamma_constraint)
        if self.center:
            self.beta = self.add_weight("beta", shape, self.beta_initializer,
                                        regularizer=self.beta_regularizer,
                                        constraint=self.beta_constraint)

    def _param_grads(self, d_output, x_hat, reduce_axes):
        """[d_gamma, d_beta] (those that exist) summed over ``reduce_axes``."""
        if not self.trainable:
            return []
        shape = self.gamma.shape if self.scale else self.beta.shape
        grads = []
        if self.scale:
            grads.append(np.sum(d_output * x_hat, axis=reduce_axes).reshape(shape))
        if self.center:
            grads.append(np.sum(d_output, axis=reduce_axes).reshape(shape))
        return grads

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon, center=self.center, scale=self.scale,
                      beta_initializer=self.beta_initializer,
                      gamma_initializer=self.gamma_initializer,
                      beta_regularizer=regularizers.serialize(self.beta_regularizer),
                      gamma_regularizer=regularizers.serialize(self.gamma_regularizer),
                      beta_constraint=constraints.serialize(self.beta_constraint),
                      gamma_constraint=constraints.serialize(self.gamma_constraint))
        return config


class BatchNormalization(_Normalization):
    """Normalizes each feature of ``axis`` over the batch (and every other axis).

    Training (``training=True`` and trainable): the batch's mean and (biased) variance, the
    moving statistics updated in place as Keras does,
    ``moving = moving * momentum + batch_statistic * (1 - momentum)``; with a mask, the
    moments of the valid steps only (Keras's weighted moments). Inference, or a frozen
    layer: the moving statistics. Weights, in Keras's order: gamma, beta (trainable),
    moving_mean, moving_variance (not trainable).
    """

    #: The output of one sample depends on the others in training (TimeDistributed asks).
    uses_batch_statistics = True

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, renorm=False, synchronized=False, **kwargs):
        for name in ("renorm_clipping", "renorm_momentum"):
            kwargs.pop(name, None)
        if renorm:
            raise NotImplementedError("cgru's BatchNormalization does not support batch "
                                      "renormalization (renorm=True).")
        if synchronized:
            raise NotImplementedError("cgru trains on one process: BatchNormalization("
                                      "synchronized=True) is not supported.")
        if isinstance(axis, (list, tuple)):
            raise NotImplementedError("cgru's BatchNormalization takes one integer axis; "
                                      f"received axis={axis!r}.")
        super().__init__(epsilon, center, scale, beta_initializer, gamma_initializer,
                         beta_regularizer, gamma_regularizer, beta_constraint,
                         gamma_constraint, **kwargs)
        self.axis = int(axis)
        momentum = float(momentum)
        if not 0 <= momentum <= 1:
            raise ValueError(f"Received an invalid value for `momentum`, expected a float "
                             f"in [0, 1]. Received: momentum={momentum!r}")
        self.momentum = momentum
        self.moving_mean_initializer = initializers.serialize(moving_mean_initializer)
        self.moving_variance_initializer = initializers.serialize(moving_variance_initializer)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def check_input_shape(self, shape):
        self._full_axes(len(shape), [self.axis])
        if self.built and shape[self._axis_of(len(shape))] != self.moving_mean.shape[0]:
            raise ValueError(f"Layer '{self.name}' expects {self.moving_mean.shape[0]} "
                             f"features on axis {self.axis}; received an array of shape "
                             f"{tuple(shape)}.")

    def _axis_of(self, rank):
        return self._full_axes(rank, [self.axis])[0]

    def build(self, input_shape):
        full = (None,) + tuple(input_shape)
        self.check_input_shape(full)
        shape = (int(full[self._axis_of(len(full))]),)
        self._add_gamma_beta(shape)
        self.moving_mean = self.add_weight("moving_mean", shape, self.moving_mean_initializer,
                                           trainable=False)
        self.moving_variance = self.add_weight("moving_variance", shape,
                                               self.moving_variance_initializer,
                                               trainable=False)
        super().build(input_shape)

    def _moments(self, x, mask, reduce_axes):
        """(mean, variance, w, total): the (masked) moments over ``reduce_axes``, kept as
        broadcastable arrays, with the weights ``w`` (None without a mask) and their sum."""
        if mask is None:
            mean = x.mean(axis=reduce_axes, keepdims=True)
            variance = np.square(x - mean).mean(axis=reduce_axes, keepdims=True)
            return mean, variance, None, x.size // mean.size
        mask = np.asarray(mask)
        if mask.ndim != x.ndim - 1 or mask.shape != x.shape[:-1]:
            raise ValueError(f"The mask passed to layer '{self.name}' should be one "
                             f"dimension less than the inputs. Received: mask.shape="
                             f"{mask.shape}, inputs.shape={x.shape}")
        w = np.broadcast_to(mask[..., None], x.shape).astype(x.dtype)
        total = w.sum(axis=reduce_axes, keepdims=True) + x.dtype.type(_KERAS_EPSILON)
        mean = (w * x).sum(axis=reduce_axes, keepdims=True) / total
        variance = (w * np.square(x - mean)).sum(axis=reduce_axes, keepdims=True) / total
        return mean, variance, w, total

    def _param(self, array, rank, axis):
        shape = [1] * rank
        shape[axis] = -1
        return array.reshape(shape)

    # forward: y = (x - mean) * inv * gamma + beta, inv = 1 / sqrt(variance + epsilon)
    def forward(self, x, training=False, mask=None, need_grad=False):
        axis = self._axis_of(x.ndim)
        reduce_axes = tuple(a for a in range(x.ndim) if a != axis)
        batch_mode = bool(training) and self.trainable
        if batch_mode:
            mean, variance, w, total = self._moments(x, mask, reduce_axes)
            m = self.dtype.type(self.momentum)
            self.moving_mean[...] = self.moving_mean * m + mean.reshape(-1) * (1 - m)
            self.moving_variance[...] = (self.moving_variance * m
                                         + variance.reshape(-1) * (1 - m))
        else:
            mean = self._param(self.moving_mean, x.ndim, axis).copy()
            variance = self._param(self.moving_variance, x.ndim, axis).copy()
            w = total = None
        inv = 1 / np.sqrt(variance + self.dtype.type(self.epsilon))
        centred = x - mean
        gamma = self._param(self.gamma, x.ndim, axis) if self.scale else self.dtype.type(1)
        out = centred * (inv * gamma)
        if self.center:
            out += self._param(self.beta, x.ndim, axis)
        ctx = (centred, inv, gamma, w, total, reduce_axes, batch_mode) if need_grad else None
        return out, ctx

    def backward(self, d_output, ctx, need_input_grad=True):
        centred, inv, gamma, w, total, reduce_axes, batch_mode = ctx
        grads = self._param_grads(d_output, centred * inv, reduce_axes)
        if not need_input_grad:
            return None, grads
        g = d_output * gamma                    # the gradient at centred * inv
        if not batch_mode:
            return g * inv, grads               # mean and variance are constants
        return self._batch_input_gradient(g, centred, inv, w, total, reduce_axes), grads

    @staticmethod
    def _batch_input_gradient(g, centred, inv, w, total, reduce_axes):
        """dL/dx through y = centred * inv (g = dL/dy * gamma) with mean and variance the
        (weighted) batch moments: mean = sum(w x) / W, variance = sum(w centred^2) / W."""
        def total_of(a):
            return a.sum(axis=reduce_axes, keepdims=True)
        w = 1 if w is None else w
        d_variance = total_of(g * centred) * (-0.5 * inv ** 3)
        d_mean = -inv * total_of(g) + d_variance * (-2 * total_of(w * centred) / total)
        return g * inv + d_variance * 2 * w * centred / total + d_mean * w / total

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, momentum=self.momentum,
                      moving_mean_initializer=self.moving_mean_initializer,
                      moving_variance_initializer=self.moving_variance_initializer)
        return config


class LayerNormalization(_Normalization):
    """Normalizes each sample over ``axis`` (an int or a list of ints, Keras's counting):
    ``(x - mean) / sqrt(variance + epsilon) * gamma + beta``; gamma and beta have the
    shape of those axes. Passes the mask on, as Keras does."""

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", beta_regularizer=None,
                 gamma_regularizer=None, beta_constraint=None, gamma_constraint=None,
                 **kwargs):
        if kwargs.pop("rms_scaling", False):
            raise NotImplementedError("cgru's LayerNormalization does not support the "
                                      "deprecated rms_scaling=True.")
        super().__init__(epsilon, center, scale, beta_initializer, gamma_initializer,
                         beta_regularizer, gamma_regularizer, beta_constraint,
                         gamma_constraint, **kwargs)
        if isinstance(axis, (list, tuple)) and axis and all(
                isinstance(a, (int, np.integer)) for a in axis):
            self.axis = [int(a) for a in axis]
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
            self.axis = int(axis)
        else:
            raise TypeError("Expected an int or a list/tuple of ints for the argument "
                            f"'axis', but received: {axis!r}")
        if self.input_shape is not None:
            self.build(self.input_shape)

    def _axes(self, rank):
        return self._full_axes(rank, self.axis if isinstance(self.axis, list) else [self.axis])

    def check_input_shape(self, shape):
        axes = self._axes(len(shape))
        if self.built and tuple(shape[a] for a in axes) != self._param_shape:
            raise ValueError(f"Layer '{self.name}' normalizes axes {self.axis} of size "
                             f"{self._param_shape}; received an array of shape "
                             f"{tuple(shape)}.")

    def build(self, input_shape):
        full = (None,) + tuple(input_shape)
        self.check_input_shape(full)
        self._param_shape = tuple(int(full[a]) for a in self._axes(len(full)))
        self._add_gamma_beta(self._param_shape)
        super().build(input_shape)

    def _param(self, array, rank):
        shape = [1] * rank
        for a, n in zip(self._axes(rank), self._param_shape):
            shape[a] = n
        return array.reshape(shape)

    # forward: y = (x - mean) * inv * gamma + beta over the normalized axes of each sample
    def forward(self, x, training=False, mask=None, need_grad=False):
        axes = tuple(self._axes(x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        centred = x - mean
        variance = np.square(centred).mean(axis=axes, keepdims=True)
        inv = 1 / np.sqrt(variance + self.dtype.type(self.epsilon))
        x_hat = centred * inv
        out = x_hat * self._param(self.gamma, x.ndim) if self.scale else x_hat.copy()
        if self.center:
            out += self._param(self.beta, x.ndim)
        return out, ((x_hat, inv, axes) if need_grad else None)

    def backward(self, d_output, ctx, need_input_grad=True):
        x_hat, inv, axes = ctx
        reduce_axes = tuple(a for a in range(x_hat.ndim) if a not in axes)
        grads = self._param_grads(d_output, x_hat, reduce_axes)
        if not need_input_grad:
            return None, grads
        g = d_output * self._param(self.gamma, x_hat.ndim) if self.scale else d_output
        # dx = inv * (g - mean(g) - x_hat * mean(g * x_hat)) over the normalized axes
        d_x = inv * (g - g.mean(axis=axes, keepdims=True)
                     - x_hat * (g * x_hat).mean(axis=axes, keepdims=True))
        return d_x, grads

    def get_config(self):
        config = super().get_config()
        config["axis"] = self.axis
        return config

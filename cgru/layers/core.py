"""Dense and Dropout."""
import numpy as np

from .. import activations, constraints, initializers, regularizers
from .base import Layer, check_positive_int, check_rate, dropout_mask


class Dense(Layer):
    """``activation(x @ kernel + bias)`` on the last axis (so per time step on 3-D input).

    Weights: kernel (features, units), bias (units,), as in Keras. A mask passes through (it
    acts on each step alone), as in Keras 3.
    """

    supports_masking = True

    def __init__(self, units, activation=None, *, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.units = check_positive_int("units", units)
        self.activation_fn = activations.get_backward_from_output(activation, "Dense")
        self.activation = None if self.activation_fn.name == "linear" else self.activation_fn.name
        self.output_activation = self.activation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.serialize(kernel_initializer)
        self.bias_initializer = initializers.serialize(bias_initializer)
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
        self.check_input_shape((None,) + tuple(input_shape))
        self.kernel = self.add_weight("kernel", (int(input_shape[-1]), self.units),
                                      self.kernel_initializer,
                                      regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.units,), self.bias_initializer,
                                        regularizer=self.bias_regularizer,
                                        constraint=self.bias_constraint)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    # forward: out = activation(z), z = x @ kernel + bias
    def forward(self, x, training=False, mask=None, need_grad=False):
        z = np.matmul(x, self.kernel)
        if self.use_bias:
            z += self.bias
        out = self.activation_fn(z)
        return out, ((x, out) if need_grad else None)

    def backward(self, d_output, ctx, need_input_grad=True, at_logits=False):
        """``at_logits=True``: ``d_output`` is already the gradient with respect to z."""
        x, out = ctx
        # in the forward pass: out = activation(z)
        dz = d_output if at_logits else self.activation_fn.backward(d_output, out)
        grads = []
        if self.trainable:
            # z = x @ kernel + bias: d_kernel = x^T dz over every leading axis
            x2 = x.reshape(-1, x.shape[-1])
            dz2 = dz.reshape(-1, self.units)
            grads.append(x2.T @ dz2)
            if self.use_bias:
                grads.append(dz2.sum(axis=0))
        dx = np.matmul(dz, self.kernel.T) if need_input_grad else None
        return dx, grads

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=self.activation, use_bias=self.use_bias,
                      kernel_initializer=self.kernel_initializer,
                      bias_initializer=self.bias_initializer,
                      kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
                      bias_regularizer=regularizers.serialize(self.bias_regularizer),
                      kernel_constraint=constraints.serialize(self.kernel_constraint),
                      bias_constraint=constraints.serialize(self.bias_constraint))
        return config


class Dropout(Layer):
    """Inverted dropout: in training, zero a ``rate`` fraction and scale by 1/(1-rate)."""

    supports_masking = True

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_rate("rate", rate)
        if self.input_shape is not None:
            self.build(self.input_shape)

    def forward(self, x, training=False, mask=None, need_grad=False):
        if not training or self.rate == 0:
            return x, None
        keep = dropout_mask(self._dropout_rng, x.shape, self.rate, self.dtype)
        return x * keep, keep

    def backward(self, d_output, keep, need_input_grad=True):
        if not need_input_grad:
            return None, []
        return (d_output if keep is None else d_output * keep), []

    def get_config(self):
        config = super().get_config()
        config["rate"] = self.rate
        return config

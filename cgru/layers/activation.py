"""Activation: an elementwise activation as a layer of its own."""
from .. import activations
from .base import Layer


class Activation(Layer):
    """``activation(x)`` (softmax on the last axis); passes the mask on, as Keras does.

    As the last layer before a matching loss (sigmoid with binary crossentropy, softmax
    with categorical crossentropy), the model takes the loss gradient at its input
    (``output_activation``), as Keras does."""

    supports_masking = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation_fn = activations.get_backward_from_output(activation, "Activation")
        self.activation = self.activation_fn.name
        self.output_activation = None if self.activation == "linear" else self.activation
        if self.input_shape is not None:
            self.build(self.input_shape)

    def forward(self, x, training=False, mask=None, need_grad=False):
        out = self.activation_fn(x)
        return out, (out if need_grad else None)

    def backward(self, d_output, out, need_input_grad=True, at_logits=False):
        if not need_input_grad:
            return None, []
        return (d_output if at_logits else self.activation_fn.backward(d_output, out)), []

    def get_config(self):
        config = super().get_config()
        config["activation"] = self.activation
        return config

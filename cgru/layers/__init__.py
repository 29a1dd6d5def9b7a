"""Keras-style layers (tier 3): GRU, Bidirectional, Dense, Dropout, and the layer protocol.

Around the GRU, the layers real recurrent models use, with Keras 3's names, arguments and
weights: Embedding, Masking; Activation, Flatten, Reshape, Permute, RepeatVector, TimeDistributed;
Conv1D; MaxPooling1D, AveragePooling1D, GlobalMaxPooling1D, GlobalAveragePooling1D;
BatchNormalization, LayerNormalization; SpatialDropout1D, GaussianNoise, GaussianDropout;
the merging layers Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum, Dot and
their functions (concatenate, add, ...).
Keras layers cgru lacks (LSTM, Conv2D, MultiHeadAttention, ...) import from here and raise
NotImplementedError when constructed, naming what to use instead.

Layers are batch-first, as in Keras. A user calls a layer, ``layer(x, training=False)``: it
casts ``x`` to the layer's dtype, checks its shape, builds the weights on first use and
returns the output. Called on symbolic tensors (``cgru.Input`` or another layer's output),
it builds itself for their shapes and records the call, which is how a functional
``cgru.Model(inputs, outputs)`` learns its graph (``cgru.layers.node``). Models drive layers
through the protocol below and nothing else: a model never looks at a layer's class.

The layer protocol
------------------
``build(input_shape)``
    Creates the weights (``add_weight``) for inputs of ``input_shape`` (no batch axis).
``compute_output_shape(input_shape)``
    The output's shape without the batch axis, or a list of shapes when the layer returns
    several outputs (``num_outputs`` > 1, e.g. ``GRU(return_state=True)``).
``compute_mask(inputs, mask)``
    The mask that goes with the output (default: the input's when ``supports_masking``).
``check_input_shape(shape)``
    Raises a ValueError naming the shapes unless a batch of ``shape`` suits the layer.
``forward(inputs, training, mask, need_grad) -> (outputs, ctx)``
    Computes the outputs from inputs already cast to the layer's dtype. ``ctx`` holds what
    ``backward`` needs (None unless ``need_grad``); nothing is stored on the layer, so
    inference calls of one layer may run from several threads at once.
``backward(d_outputs, ctx, need_input_grad) -> (d_inputs, grads)``
    ``grads`` follow ``trainable_weights`` (empty when the layer is frozen); ``d_inputs``
    is None when ``need_input_grad`` is False (the model's first layer), and then is not
    computed at all.
``weights`` / ``trainable_weights``
    The live arrays, in the layout the layer computes with (for a GRU, the kernels' gate
    order); an optimizer updates them in place. ``get_weights()``/``set_weights()`` speak
    Keras 3's layout, through ``weights_to_keras``/``weights_from_keras``.
``get_config()`` / ``from_config(config)``, ``rng_state()`` / ``set_rng_state(state)``
    What saving stores and restores.
``output_activation``
    The name of an elementwise activation the layer applies last (or None). When it pairs
    with the loss (sigmoid with binary crossentropy, softmax with categorical
    crossentropy), the model asks the loss for the gradient at the activation's input and
    calls ``backward(..., at_logits=True)``, as Keras computes these losses from logits.

Layers with several inputs (the merging layers) take lists where the protocol says
"inputs": ``check_input_shape``, ``build`` and ``compute_output_shape`` get a list of
shapes, ``forward`` a list of arrays and a list of masks (None for an input without one;
``mask=None`` when no input has one), ``compute_mask`` the same two lists, and ``backward``
returns a list of input gradients (or None when ``need_input_grad`` is False). The model
calls a layer with a list exactly when the layer was called on a list.

Recurrent layers (GRU, Bidirectional) also take an initial state from the graph, as Keras's
encoder-decoders do (``decoder(x, initial_state=encoder_state)``):

``initial_state_shapes(input_shape)``
    The shapes (no batch axis) of the tensors ``initial_state`` takes, in order (GRU:
    ``[(units,)]``; Bidirectional: the forward state's, then the backward state's), or None
    (the default) when the layer takes none. A symbolic call checks the given states against
    them and records them in its ``Node`` after the input (``num_states``).
``forward(x, training, mask, need_grad, initial_state=[arrays])``
    The model passes the state tensors as that keyword, a list in the order given, each cast
    to the layer's dtype, and ``mask=None``: as in Keras 3, whose ``Layer.__call__`` passes a
    mask only to a call with one tensor argument, such a call runs unmasked (the states
    never carry a mask) while ``compute_mask`` still gives its outputs' masks from the
    input's.
``backward(d_outputs, ctx, need_input_grad, need_state_grad=True)``
    Asked for when a state comes from another layer: ``d_inputs`` is then the pair
    ``(d_x, d_states)``, ``d_x`` as without states (None when ``need_input_grad`` is False)
    and ``d_states`` one gradient per state tensor, which the model adds into the gradient
    of the tensor that layer produced (summed with its other uses).

The model casts between layers of different dtypes: each layer receives its inputs in its
own dtype and its input gradient goes back in the dtype the previous layer produced.

A new layer is one class. For example, a layer that scales its input by a learned vector::

    import numpy as np
    from cgru.layers import Layer

    class Scale(Layer):
        \"\"\"y = x * gamma, gamma of shape (features,).\"\"\"
        supports_masking = True

        def build(self, input_shape):
            self.gamma = self.add_weight("gamma", (input_shape[-1],), "ones")
            super().build(input_shape)

        def forward(self, x, training=False, mask=None, need_grad=False):
            return x * self.gamma, (x if need_grad else None)

        def backward(self, d_y, x, need_input_grad=True):
            # in the forward pass: y = x * gamma
            d_gamma = (d_y * x).reshape(-1, x.shape[-1]).sum(axis=0)
            d_x = d_y * self.gamma if need_input_grad else None
            return d_x, ([d_gamma] if self.trainable else [])

It trains inside ``Sequential`` as it is (``compute_output_shape`` defaults to the input's).
"""
from .. import saving
from .base import Layer, Weight
from .core import Dense, Dropout
from .input_layer import Input, InputLayer, KerasTensor
from .rnn import GRU, Bidirectional
from .embedding import Embedding
from .activation import Activation
from .masking import Masking
from .reshaping import Flatten, Permute, RepeatVector, Reshape
from .wrappers import TimeDistributed
from .conv import Conv1D
from .normalization import BatchNormalization, LayerNormalization
from .noise import GaussianDropout, GaussianNoise, SpatialDropout1D
from .pooling import (AveragePooling1D, GlobalAveragePooling1D, GlobalMaxPooling1D,
                      MaxPooling1D)
from .merging import (Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract,
                      add, average, concatenate, dot, maximum, minimum, multiply, subtract)

for _cls in (GRU, Bidirectional, Dense, Dropout, InputLayer):
    saving.register_serializable(_cls)
for _cls in (Embedding, Activation, Flatten, Permute, RepeatVector, Reshape,
             TimeDistributed, Conv1D, MaxPooling1D, AveragePooling1D, GlobalMaxPooling1D,
             GlobalAveragePooling1D, BatchNormalization, LayerNormalization,
             SpatialDropout1D, GaussianNoise, GaussianDropout, Masking,
             Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum, Dot):
    saving.register_serializable(_cls)

__all__ = ["Layer", "Weight", "GRU", "Bidirectional", "Dense", "Dropout", "Input",
           "InputLayer"]
__all__ += ["Embedding", "Activation", "Flatten", "Permute", "RepeatVector", "Reshape",
            "TimeDistributed", "Conv1D", "MaxPooling1D", "AveragePooling1D",
            "GlobalMaxPooling1D", "GlobalAveragePooling1D", "BatchNormalization",
            "LayerNormalization", "SpatialDropout1D", "GaussianNoise", "GaussianDropout",
            "Masking"]
__all__ += ["Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
            "Dot", "concatenate", "add", "subtract", "multiply", "average", "maximum",
            "minimum", "dot"]
# Keras's short aliases
MaxPool1D, AvgPool1D = MaxPooling1D, AveragePooling1D
GlobalMaxPool1D, GlobalAvgPool1D = GlobalMaxPooling1D, GlobalAveragePooling1D
__all__ += ["MaxPool1D", "AvgPool1D", "GlobalMaxPool1D", "GlobalAvgPool1D"]

# Keras names that cgru does not implement: constructing one raises NotImplementedError
# saying what to use instead (a saved config naming one raises the same).
from . import unsupported as _unsupported  # noqa: E402
from .unsupported import *  # noqa: E402,F401,F403
for _cls in _unsupported.UNSUPPORTED.values():
    saving.register_serializable(_cls)
__all__ += _unsupported.__all__

"""Keras layer names that cgru does not implement. They import, so that a Keras script fails
where it builds one, with a NotImplementedError saying what to use instead, rather than at
the import or, worse, by running something else."""
from .base import Layer

_RNN = ("cgru is a GRU library: it has no {name}. Use cgru.layers.GRU (or "
        "Bidirectional(GRU(...))), which trains with the same API.")
_CELL = ("cgru has no cell-level layer API ({name}). Use cgru.layers.GRU for a sequence, or "
         "cgru.functional.GRUCell for single GRU steps on NumPy arrays.")
_CUDNN = ("{name} is a Keras 2 GPU layer; cgru runs on CPUs. Use "
          "cgru.layers.GRU(reset_after=True), the cuDNN-compatible GRU (Keras's GRU weights).")
_SPATIAL = ("cgru works on sequences (batch, steps, features) and has no {name}. Use the 1-D "
            "layers: Conv1D, MaxPooling1D, AveragePooling1D, GlobalMaxPooling1D, "
            "GlobalAveragePooling1D, SpatialDropout1D.")
_ATTENTION = ("cgru is a GRU library and has no attention layers ({name}). Use GRU or "
              "Bidirectional(GRU(...)) followed by GlobalAveragePooling1D or Dense.")
_LAMBDA = ("cgru layers need a backward pass, which a Lambda cannot give. Write a "
           "cgru.layers.Layer subclass with forward and backward (see cgru.layers).")

_ADVICE = {
    "LSTM": _RNN, "SimpleRNN": _RNN, "RNN": _RNN, "ConvLSTM1D": _RNN, "ConvLSTM2D": _RNN,
    "ConvLSTM3D": _RNN,
    "GRUCell": _CELL, "LSTMCell": _CELL, "SimpleRNNCell": _CELL, "StackedRNNCells": _CELL,
    "CuDNNGRU": _CUDNN, "CuDNNLSTM": _CUDNN,
    "Conv2D": _SPATIAL, "Conv3D": _SPATIAL, "Conv1DTranspose": _SPATIAL,
    "Conv2DTranspose": _SPATIAL, "Conv3DTranspose": _SPATIAL, "SeparableConv1D": _SPATIAL,
    "SeparableConv2D": _SPATIAL, "DepthwiseConv1D": _SPATIAL, "DepthwiseConv2D": _SPATIAL,
    "MaxPooling2D": _SPATIAL, "MaxPooling3D": _SPATIAL, "AveragePooling2D": _SPATIAL,
    "AveragePooling3D": _SPATIAL, "GlobalMaxPooling2D": _SPATIAL,
    "GlobalMaxPooling3D": _SPATIAL, "GlobalAveragePooling2D": _SPATIAL,
    "GlobalAveragePooling3D": _SPATIAL, "SpatialDropout2D": _SPATIAL,
    "SpatialDropout3D": _SPATIAL, "UpSampling2D": _SPATIAL, "UpSampling3D": _SPATIAL,
    "ZeroPadding2D": _SPATIAL, "ZeroPadding3D": _SPATIAL, "Cropping2D": _SPATIAL,
    "Cropping3D": _SPATIAL,
    "Attention": _ATTENTION, "AdditiveAttention": _ATTENTION,
    "MultiHeadAttention": _ATTENTION, "GroupQueryAttention": _ATTENTION,
    "Lambda": _LAMBDA,
}


def _unsupported(name, advice):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(advice.format(name=name))

    def from_config(cls, config):
        raise NotImplementedError(advice.format(name=name))

    doc = f"Not implemented in cgru: constructing one raises NotImplementedError. " \
          f"{advice.format(name=name)}"
    return type(name, (Layer,), {"__init__": __init__, "__doc__": doc,
                                 "__module__": __name__,
                                 "from_config": classmethod(from_config)})


UNSUPPORTED = {name: _unsupported(name, advice) for name, advice in _ADVICE.items()}
globals().update(UNSUPPORTED)
__all__ = sorted(UNSUPPORTED)

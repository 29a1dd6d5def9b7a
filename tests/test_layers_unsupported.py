"""Keras layer names cgru does not implement import, and raise a NotImplementedError that
says so and what to use, when constructed or loaded from a config."""
import pytest

import cgru.layers
from cgru import saving

NAMES = ["LSTM", "SimpleRNN", "RNN", "ConvLSTM2D", "GRUCell", "LSTMCell", "CuDNNGRU",
         "CuDNNLSTM", "Conv2D", "MaxPooling2D", "GlobalAveragePooling2D", "Attention",
         "MultiHeadAttention", "Lambda"]


@pytest.mark.parametrize("name", NAMES)
def test_unsupported_names_import_and_raise_with_advice(name):
    cls = getattr(cgru.layers, name)
    assert name in cgru.layers.__all__
    with pytest.raises(NotImplementedError, match=rf"{name}|Lambda") as info:
        cls(4, return_sequences=True)
    message = str(info.value)
    assert "cgru" in message and ("Use" in message or "Write" in message)
    with pytest.raises(NotImplementedError):
        saving.deserialize({"class_name": name, "config": {"units": 4}})


def test_advice_points_to_the_right_layer():
    with pytest.raises(NotImplementedError, match="GRU library.*cgru.layers.GRU"):
        cgru.layers.LSTM(8)
    with pytest.raises(NotImplementedError, match="Conv1D"):
        cgru.layers.Conv2D(8, 3)
    with pytest.raises(NotImplementedError, match="functional.GRUCell"):
        cgru.layers.GRUCell(8)
    with pytest.raises(NotImplementedError, match="reset_after=True"):
        cgru.layers.CuDNNGRU(8)


def test_from_import_works():
    from cgru.layers import LSTM, MultiHeadAttention  # noqa: F401

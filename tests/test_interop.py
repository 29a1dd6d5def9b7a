"""cgru.interop against real PyTorch modules (and, below, ONNX files run in onnxruntime).

Every comparison runs both libraries on the same weights and inputs: torch computes the
expected output, cgru the actual one (or the other way for to_torch).
"""
import numpy as np
import pytest

import cgru
from cgru import GRU, Bidirectional, Dense, Dropout, Sequential
from cgru.interop import from_torch, to_torch

torch = pytest.importorskip("torch")

TOL = {"float32": 2e-6, "float64": 1e-12}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}


def _max_diff(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def _run_torch_gru(module, x_batch_first):
    """(output batch-first, h_n) of a torch.nn.GRU on a batch-first NumPy input."""
    x = torch.from_numpy(x_batch_first)
    with torch.no_grad():
        y, h_n = module(x if module.batch_first else x.transpose(0, 1))
    if not module.batch_first:
        y = y.transpose(0, 1)
    return y.numpy(), h_n


# ---------------------------------------------------------------------------------------------
# PyTorch -> cgru
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_from_torch_gru_matches_torch(num_layers, bidirectional, batch_first, bias, dtype):
    torch.manual_seed(num_layers + 10 * bidirectional)
    module = torch.nn.GRU(5, 7, num_layers=num_layers, bidirectional=bidirectional,
                          batch_first=batch_first, bias=bias, dtype=TORCH_DTYPE[dtype]).eval()
    x = np.random.default_rng(0).standard_normal((4, 6, 5)).astype(dtype)
    y_torch, h_n = _run_torch_gru(module, x)

    model = from_torch(module)
    assert isinstance(model, Sequential)
    assert len(model.layers) == num_layers
    y = model.predict(x)
    assert y.dtype == np.dtype(dtype)
    assert _max_diff(y, y_torch) < TOL[dtype]

    last_only = from_torch(module, return_sequences=False)
    expected = torch.cat([h_n[-2], h_n[-1]], dim=1) if bidirectional else h_n[-1]
    assert _max_diff(last_only.predict(x), expected.numpy()) < TOL[dtype]


def test_from_torch_gru_without_bias_gets_zero_biases():
    module = torch.nn.GRU(3, 4, bias=False)
    model = from_torch(module)
    kernel, recurrent_kernel, bias = model.layers[0].get_weights()
    assert bias.shape == (2, 12)
    assert not bias.any()


def test_from_torch_eval_dropout_becomes_dropout_layers():
    module = torch.nn.GRU(3, 4, num_layers=3, dropout=0.25).eval()
    model = from_torch(module)
    names = [type(layer).__name__ for layer in model.layers]
    assert names == ["GRU", "Dropout", "GRU", "Dropout", "GRU"]
    assert [layer.rate for layer in model.layers if isinstance(layer, Dropout)] == [0.25, 0.25]


def test_from_torch_rejects_dropout_in_training_mode():
    module = torch.nn.GRU(3, 4, num_layers=2, dropout=0.5)  # training mode by default
    with pytest.raises(ValueError, match=r"dropout=0.5.*training mode.*eval\(\)"):
        from_torch(module)


def test_from_torch_rejects_other_modules():
    with pytest.raises(NotImplementedError, match="LSTM"):
        from_torch(torch.nn.LSTM(3, 4))
    with pytest.raises(TypeError, match="Conv1d"):
        from_torch(torch.nn.Conv1d(3, 4, 2))
    with pytest.raises(TypeError, match="float16"):
        from_torch(torch.nn.GRU(3, 4).half())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
def test_gru_cell_both_ways(bias, dtype):
    torch.manual_seed(1)
    module = torch.nn.GRUCell(5, 6, bias=bias, dtype=TORCH_DTYPE[dtype])
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5)).astype(dtype)
    h = rng.standard_normal((3, 6)).astype(dtype)
    with torch.no_grad():
        expected = module(torch.from_numpy(x), torch.from_numpy(h)).numpy()
        expected_zero_h = module(torch.from_numpy(x)).numpy()
    cell = from_torch(module)
    assert isinstance(cell, cgru.functional.GRUCell)
    assert _max_diff(cell(x, h), expected) < TOL[dtype]
    assert _max_diff(cell(x, None), expected_zero_h) < TOL[dtype]

    back = to_torch(cell)
    assert isinstance(back, torch.nn.GRUCell)
    with torch.no_grad():
        again = back(torch.from_numpy(x), torch.from_numpy(h)).numpy()
    assert _max_diff(again, expected) < TOL[dtype]


@pytest.mark.parametrize("bias", [True, False])
def test_linear_both_ways(bias):
    torch.manual_seed(2)
    module = torch.nn.Linear(5, 3, bias=bias)
    x = np.random.default_rng(2).standard_normal((4, 6, 5)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    dense = from_torch(module)
    assert isinstance(dense, Dense) and dense.use_bias == bias
    assert _max_diff(dense(x), expected) < TOL["float32"]
    back = to_torch(dense)
    with torch.no_grad():
        assert _max_diff(back(torch.from_numpy(x)).numpy(), expected) < TOL["float32"]


# ---------------------------------------------------------------------------------------------
# cgru -> PyTorch
# ---------------------------------------------------------------------------------------------
def _torch_output(module, x):
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_to_torch_gru_layer(return_sequences, dtype):
    layer = GRU(6, return_sequences=return_sequences, input_shape=(None, 4), seed=3,
                bias_initializer="glorot_uniform", dtype=dtype)
    x = np.random.default_rng(3).standard_normal((5, 7, 4)).astype(dtype)
    module = to_torch(layer)
    assert isinstance(module, torch.nn.GRU) and module.batch_first
    assert not module.training
    y, h_n = _torch_output(module, x)
    got = y if return_sequences else h_n[-1]
    assert _max_diff(layer(x), got.numpy()) < TOL[dtype]


@pytest.mark.parametrize("return_sequences", [True, False])
def test_to_torch_bidirectional_layer(return_sequences):
    layer = Bidirectional(GRU(5, return_sequences=return_sequences, seed=4,
                              bias_initializer="glorot_uniform"), input_shape=(None, 3))
    x = np.random.default_rng(4).standard_normal((2, 9, 3)).astype(np.float32)
    module = to_torch(layer)
    assert module.bidirectional
    y, h_n = _torch_output(module, x)
    got = y if return_sequences else torch.cat([h_n[-2], h_n[-1]], dim=1)
    assert _max_diff(layer(x), got.numpy()) < TOL["float32"]


@pytest.mark.parametrize("activation", [None, "sigmoid", "tanh", "relu", "softmax"])
def test_to_torch_dense_activations(activation):
    dense = Dense(4, activation=activation, input_shape=(6,), seed=5,
                  bias_initializer="glorot_uniform")
    x = np.random.default_rng(5).standard_normal((8, 6)).astype(np.float32)
    assert _max_diff(dense(x), _torch_output(to_torch(dense), x).numpy()) < TOL["float32"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_to_torch_sequential_stacks_and_heads(dtype):
    model = Sequential([
        GRU(8, return_sequences=True, input_shape=(None, 3), seed=6, dtype=dtype),
        Dropout(0.2, dtype=dtype),
        GRU(8, return_sequences=True, seed=7, dtype=dtype),
        Bidirectional(GRU(4, return_sequences=False, seed=8, dtype=dtype)),
        Dense(3, activation="softmax", seed=9, dtype=dtype),
    ])
    x = np.random.default_rng(6).standard_normal((5, 11, 3)).astype(dtype)
    module = to_torch(model)
    grus = [m for m in module.layers if isinstance(m, torch.nn.GRU)]
    assert [(g.num_layers, g.bidirectional, g.dropout) for g in grus] == \
        [(2, False, 0.2), (1, True, 0.0)]
    assert _max_diff(model.predict(x), _torch_output(module, x).numpy()) < TOL[dtype]


def test_round_trip_torch_cgru_torch():
    torch.manual_seed(11)
    module = torch.nn.GRU(4, 5, num_layers=2, bidirectional=True, batch_first=True).eval()
    x = np.random.default_rng(11).standard_normal((3, 8, 4)).astype(np.float32)
    expected, _ = _run_torch_gru(module, x)
    again = to_torch(from_torch(module))
    assert _max_diff(_torch_output(again, x).numpy(), expected) < TOL["float32"]


@pytest.mark.parametrize("layer, match", [
    (GRU(3, reset_after=False, input_shape=(None, 2)), "reset_after=False"),
    (GRU(3, go_backwards=True, input_shape=(None, 2)), "go_backwards=True"),
    (GRU(3, dropout=0.1, input_shape=(None, 2)), r"dropout=0.1"),
    (Bidirectional(GRU(3), merge_mode="sum", input_shape=(None, 2)), "merge_mode='sum'"),
    (GRU(3), "not built"),
])
def test_to_torch_errors_name_the_option(layer, match):
    with pytest.raises((NotImplementedError, ValueError), match=match):
        to_torch(layer)


def test_to_torch_rejects_unknown_objects():
    with pytest.raises(TypeError, match="to_torch converts"):
        to_torch("gru")

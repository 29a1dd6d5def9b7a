"""cgru.interop against real PyTorch modules (and, below, ONNX files run in onnxruntime).

Every comparison runs both libraries on the same weights and inputs: torch computes the
expected output, cgru the actual one (or the other way for to_torch).
"""
import numpy as np
import pytest

import cgru
from cgru import GRU, Bidirectional, Dense, Dropout, Sequential
from cgru.interop import from_torch, to_torch
from conftest import max_diff as _max_diff  # noqa: E402

torch = pytest.importorskip("torch")

TOL = {"float32": 2e-6, "float64": 1e-12}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}


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
    (GRU(3, recurrent_dropout=0.2, input_shape=(None, 2)), r"recurrent_dropout=0.2"),
    (Bidirectional(GRU(3), merge_mode="sum", input_shape=(None, 2)), "merge_mode='sum'"),
    (GRU(3), "not built"),
])
def test_to_torch_errors_name_the_option(layer, match):
    with pytest.raises((NotImplementedError, ValueError), match=match):
        to_torch(layer)


def test_to_torch_rejects_unknown_objects():
    with pytest.raises(TypeError, match="to_torch converts"):
        to_torch("gru")


# ---------------------------------------------------------------------------------------------
# ONNX export, run in onnxruntime against cgru's predict
# ---------------------------------------------------------------------------------------------
def _onnx_predict(model, x, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "model.onnx"
    assert cgru.interop.to_onnx(model, path) == path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0], path


def _inputs(batch=5, time=9, features=3, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, time, features)).astype(
        np.float32)


def _gru(units, **kwargs):
    # non-zero biases, so that the bias layout is checked too
    return GRU(units, bias_initializer="glorot_uniform", **kwargs)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_onnx_gru_matches_predict(go_backwards, return_sequences, reset_after, tmp_path):
    model = Sequential([_gru(4, return_sequences=return_sequences, reset_after=reset_after,
                             go_backwards=go_backwards, input_shape=(None, 3), seed=1)])
    x = _inputs()
    y, _ = _onnx_predict(model, x, tmp_path)
    assert _max_diff(y, model.predict(x)) < TOL["float32"]


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
def test_onnx_stacked_bidirectional_matches_predict(merge_mode, return_sequences, reset_after,
                                                    tmp_path):
    model = Sequential([
        Bidirectional(_gru(4, return_sequences=True, reset_after=reset_after, seed=2),
                      merge_mode=merge_mode, input_shape=(None, 3)),
        Dropout(0.3),
        _gru(5, return_sequences=True, reset_after=reset_after, seed=3),
        Bidirectional(_gru(4, return_sequences=return_sequences, reset_after=reset_after,
                           seed=4), merge_mode=merge_mode),
        Dense(3, activation="softmax", seed=5),
    ])
    x = _inputs(seed=1)
    y, _ = _onnx_predict(model, x, tmp_path)
    assert _max_diff(y, model.predict(x)) < TOL["float32"]


def test_onnx_batch_and_time_are_free(tmp_path):
    model = Sequential([_gru(6, input_shape=(None, 3), seed=6),
                        Dense(2, activation="sigmoid", seed=7)])
    x = _inputs(batch=4, time=7)
    _, path = _onnx_predict(model, x, tmp_path)
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, time in [(1, 3), (17, 12)]:
        other = _inputs(batch=batch, time=time, seed=batch)
        assert _max_diff(session.run(None, {"x": other})[0], model.predict(other)) < \
            TOL["float32"]


@pytest.mark.parametrize("activation", [None, "sigmoid", "tanh", "relu", "softmax"])
def test_onnx_dense_activations(activation, tmp_path):
    model = Sequential([_gru(4, return_sequences=True, input_shape=(None, 3), seed=8),
                        Dense(3, activation=activation, seed=9,
                              bias_initializer="glorot_uniform")])
    x = _inputs(seed=2)
    y, _ = _onnx_predict(model, x, tmp_path)
    assert _max_diff(y, model.predict(x)) < TOL["float32"]


def test_onnx_gru_nodes_and_attributes(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = Sequential([
        Bidirectional(_gru(4, return_sequences=True, seed=10), input_shape=(None, 3)),
        _gru(4, reset_after=False, go_backwards=True, seed=11),
    ])
    path = tmp_path / "m.onnx"
    cgru.interop.to_onnx(model, path)
    graph = onnx.load(str(path)).graph
    grus = [n for n in graph.node if n.op_type == "GRU"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in grus]
    assert [(a["direction"], a["linear_before_reset"]) for a in attrs] == \
        [(b"bidirectional", 1), (b"reverse", 0)]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "time", 3]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary left


@pytest.mark.parametrize("model, error, match", [
    (lambda: Sequential([GRU(3, input_shape=(None, 2), dtype="float64")]), TypeError,
     "float64"),
    (lambda: GRU(3, return_state=True, input_shape=(None, 2)), NotImplementedError,
     "return_state=True"),
    (lambda: Bidirectional(GRU(3), merge_mode=None, input_shape=(None, 2)),
     NotImplementedError, "merge_mode=None"),
    (lambda: Sequential([Bidirectional(GRU(3, go_backwards=True), input_shape=(None, 2))]),
     NotImplementedError, "go_backwards=True"),
    (lambda: Sequential([GRU(3)]), ValueError, "not built"),
    (lambda: "model", TypeError, "to_onnx exports"),
    (lambda: Dropout(0.5, input_shape=(None, 2)), TypeError, "to_onnx exports"),
])
def test_onnx_errors_leave_no_file(model, error, match, tmp_path):
    pytest.importorskip("onnx")
    with pytest.raises(error, match=match):
        cgru.interop.to_onnx(model(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_onnx_missing_package_is_a_clear_import_error(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "onnx", None)
    model = Sequential([GRU(3, input_shape=(None, 2))])
    with pytest.raises(ImportError, match=r"pip install .*onnx"):
        cgru.interop.to_onnx(model, tmp_path / "m.onnx")


@pytest.mark.parametrize("make_layer, x_shape", [
    (lambda: Bidirectional(_gru(3, return_sequences=True, seed=12), merge_mode="mul",
                           input_shape=(None, 3)), (4, 6, 3)),
    (lambda: _gru(3, go_backwards=True, input_shape=(6, 3), seed=13), (4, 6, 3)),
    (lambda: Dense(2, activation="relu", input_shape=(3,), seed=14,
                   bias_initializer="glorot_uniform"), (4, 3)),
])
def test_onnx_single_layers_match_calling_them(make_layer, x_shape, tmp_path):
    layer = make_layer()
    x = np.random.default_rng(12).standard_normal(x_shape).astype(np.float32)
    y, _ = _onnx_predict(layer, x, tmp_path)
    assert _max_diff(y, layer(x)) < TOL["float32"]


def test_from_torch_rejects_a_projection():
    module = torch.nn.GRU(3, 4)
    module.proj_size = 2  # torch.nn.GRU refuses proj_size; a subclass or edit could set it
    with pytest.raises(NotImplementedError, match="proj_size=2"):
        from_torch(module)

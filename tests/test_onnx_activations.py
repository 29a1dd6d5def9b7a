"""ONNX export of every activation cgru computes, run in onnxruntime against cgru's predict
(2e-6, float32): the GRU's activation pairs (ONNX's GRU op where onnxruntime computes the pair,
a Scan over the cell otherwise), and the activations of Dense, Activation and Conv1D.

The weights are drawn small (|w| <= 0.3): with unbounded gates (relu, linear, elu, selu, gelu,
silu as recurrent_activation) z can leave [0, 1] and larger weights make the state grow
without bound, where float32 rounding differences grow with it (a property of the function,
not of the export)."""
import itertools

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import cgru  # noqa: E402
import cgru.interop  # noqa: E402,F401
from cgru import Sequential  # noqa: E402
from cgru import layers as C  # noqa: E402
from cgru.functional import ACTIVATIONS  # noqa: E402
from conftest import max_diff as _max_diff  # noqa: E402

TOL = 2e-6
B, T, F = 5, 9, 3
PAIRS = list(itertools.product(ACTIVATIONS, ACTIVATIONS))
# the functions onnxruntime's CPU GRU kernel computes (the rest run in a Scan)
GRU_OP = {"tanh", "sigmoid", "hard_sigmoid", "relu", "linear", "softsign", "elu"}
# what Dense, Activation and Conv1D take (gelu and silu are GRU-only in cgru)
LAYER_ACTIVATIONS = ["linear", "sigmoid", "tanh", "relu", "softmax", "hard_sigmoid",
                     "softsign", "elu", "selu"]


def _small_weights(model, seed=1, scale=0.3):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-scale, scale, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    return model


def _floats(batch=B, steps=T, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal((batch, steps, F))).astype(
        np.float32)


def _export(model, tmp_path, **kwargs):
    path = tmp_path / "m.onnx"
    assert cgru.interop.to_onnx(model, path, **kwargs) == path
    return path


def _run(model, x, tmp_path, **kwargs):
    session = ort.InferenceSession(str(_export(model, tmp_path, **kwargs)),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _op_types(path):
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    for node in graph.node:                        # the Scan bodies' ops too
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                ops += [n.op_type for n in attribute.g.node]
    return ops


# ---------------------------------------------------------------------------------------------
# GRU
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("activation, recurrent_activation", PAIRS)
def test_gru_activation_pair_stacked_bidirectional(activation, recurrent_activation,
                                                   reset_after, tmp_path):
    """Every pair, in a Bidirectional, a GRU returning sequences and a go_backwards GRU."""
    def gru(units, **kwargs):
        return C.GRU(units, activation=activation, recurrent_activation=recurrent_activation,
                     reset_after=reset_after, **kwargs)
    model = _small_weights(Sequential([
        C.Bidirectional(gru(4, return_sequences=True), input_shape=(None, F)),
        gru(4, return_sequences=True),
        gru(3, go_backwards=True)]))
    x = _floats()
    assert _max_diff(_run(model, x, tmp_path), model.predict(x)) < TOL


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gru_activation_returning_sequences(activation, reset_after, go_backwards, tmp_path):
    """Each function as the candidate's and as the gates' activation, every output step."""
    model = _small_weights(Sequential([
        C.GRU(4, activation=activation, recurrent_activation="sigmoid", return_sequences=True,
              reset_after=reset_after, go_backwards=go_backwards, input_shape=(None, F)),
        C.GRU(4, activation="tanh", recurrent_activation=activation, return_sequences=True,
              reset_after=reset_after, go_backwards=go_backwards)]))
    x = _floats(seed=2)
    assert _max_diff(_run(model, x, tmp_path), model.predict(x)) < TOL


def _masked_input():
    x = _floats(seed=3)
    x[0, :3] = 0.0       # left padding
    x[1, -4:] = 0.0      # right padding
    x[2, 4] = 0.0        # a hole
    x[3] = 0.0           # a row masked entirely
    return x


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_masked_gru_activations(activation, reset_after, tmp_path):
    """Masked GRUs (a Scan over the cell) with each function in each slot."""
    other = ACTIVATIONS[(ACTIVATIONS.index(activation) + 3) % len(ACTIVATIONS)]
    model = _small_weights(Sequential([
        C.Masking(0.0, input_shape=(None, F)),
        C.Bidirectional(C.GRU(4, activation=activation, recurrent_activation=other,
                              return_sequences=True, reset_after=reset_after),
                        merge_mode="sum"),
        C.GRU(4, activation=other, recurrent_activation=activation, return_sequences=True,
              reset_after=reset_after),
        C.GRU(3, activation=activation, recurrent_activation=activation, go_backwards=True,
              reset_after=reset_after)]))
    x = _masked_input()
    assert _max_diff(_run(model, x, tmp_path), model.predict(x)) < TOL


@pytest.mark.parametrize("activation, recurrent_activation", [
    ("relu", "hard_sigmoid"), ("linear", "elu"), ("softsign", "linear"),
    ("hard_sigmoid", "tanh"), ("elu", "softsign")])
def test_gru_op_carries_the_activations(activation, recurrent_activation, tmp_path):
    """Pairs onnxruntime's GRU computes stay one GRU node, with f (gates) then g (candidate)
    per direction, and the alpha/beta values of the functions that take them."""
    model = _small_weights(Sequential([
        C.Bidirectional(C.GRU(4, activation=activation,
                              recurrent_activation=recurrent_activation,
                              return_sequences=True), input_shape=(None, F)),
        C.GRU(3, activation=activation, recurrent_activation=recurrent_activation)]))
    path = _export(model, tmp_path)
    graph = onnx.load(str(path)).graph
    assert [n.op_type for n in graph.node].count("GRU") == 2
    assert "Scan" not in [n.op_type for n in graph.node]
    names = {"tanh": "Tanh", "sigmoid": "Sigmoid", "hard_sigmoid": "HardSigmoid",
             "relu": "Relu", "linear": "Affine", "softsign": "Softsign", "elu": "Elu"}
    alpha = {"hard_sigmoid": [np.float32(1 / 6)], "linear": [1.0], "elu": [1.0]}
    beta = {"hard_sigmoid": [0.5], "linear": [0.0]}
    first = {a.name: onnx.helper.get_attribute_value(a)
             for a in [n for n in graph.node if n.op_type == "GRU"][0].attribute}
    pair = [recurrent_activation, activation]
    assert [f.decode() for f in first["activations"]] == [names[n] for n in pair] * 2
    assert first.get("activation_alpha", []) == pytest.approx(
        [v for n in pair for v in alpha.get(n, [])] * 2)
    assert first.get("activation_beta", []) == pytest.approx(
        [v for n in pair for v in beta.get(n, [])] * 2)
    x = _floats(seed=4)
    assert _max_diff(_run(model, x, tmp_path), model.predict(x)) < TOL


def test_default_gru_node_has_no_activation_attributes(tmp_path):
    model = Sequential([C.GRU(3, input_shape=(None, F))])
    graph = onnx.load(str(_export(model, tmp_path))).graph
    gru = [n for n in graph.node if n.op_type == "GRU"][0]
    assert not {"activations", "activation_alpha", "activation_beta"} & \
        {a.name for a in gru.attribute}


@pytest.mark.parametrize("activation, recurrent_activation",
                         [p for p in PAIRS if not set(p) <= GRU_OP])
def test_pairs_outside_the_gru_op_run_in_a_scan(activation, recurrent_activation, tmp_path):
    model = Sequential([C.GRU(3, activation=activation,
                              recurrent_activation=recurrent_activation,
                              input_shape=(None, F))])
    ops = _op_types(_export(model, tmp_path))
    assert "GRU" not in ops and "Scan" in ops


def test_swish_is_silu(tmp_path):
    model = _small_weights(Sequential([C.GRU(4, activation="swish",
                                             recurrent_activation="swish",
                                             return_sequences=True, input_shape=(None, F))]))
    x = _floats(seed=5)
    assert _max_diff(_run(model, x, tmp_path), model.predict(x)) < TOL


@pytest.mark.parametrize("opset, gelu_ops", [(17, {"Erf"}), (20, {"Gelu"})])
def test_gelu_as_erf_or_the_opset_20_op(opset, gelu_ops, tmp_path):
    """gelu is x / 2 * (1 + erf(x c)) up to opset 19 and ONNX's Gelu from opset 20."""
    model = _small_weights(Sequential([
        C.GRU(4, activation="gelu", recurrent_activation="gelu", return_sequences=True,
              input_shape=(None, F)),
        C.Dense(3, activation="selu")]))
    x = _floats(seed=6, scale=2.0)
    y = _run(model, x, tmp_path, opset=opset)
    assert gelu_ops <= set(_op_types(tmp_path / "m.onnx"))
    assert _max_diff(y, model.predict(x)) < TOL
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == opset


# ---------------------------------------------------------------------------------------------
# Dense, Activation, Conv1D
# ---------------------------------------------------------------------------------------------
def test_layer_activations_are_the_ones_cgru_layers_take():
    """The list below is every activation Dense accepts (gelu and silu are refused there)."""
    from cgru import activations
    accepted = []
    for name in sorted(activations._ACTIVATIONS):
        try:
            C.Dense(2, activation=name)
        except ValueError:
            continue
        accepted.append(name)
    assert sorted(LAYER_ACTIVATIONS) == accepted


@pytest.mark.parametrize("activation", LAYER_ACTIVATIONS)
def test_dense_activation(activation, tmp_path):
    model = _small_weights(Sequential([
        C.Dense(6, activation=activation, input_shape=(None, F)),
        C.Dense(4, activation=activation)]), scale=1.0)
    x = _floats(seed=7, scale=3.0)       # both sides of hard_sigmoid's clip, elu's bend
    assert _max_diff(_run(model, x, tmp_path), model.predict(x)) < TOL


@pytest.mark.parametrize("activation", LAYER_ACTIVATIONS)
def test_activation_layer(activation, tmp_path):
    model = Sequential([C.Activation(activation, input_shape=(None, F))])
    x = _floats(seed=8, scale=4.0)
    assert _max_diff(_run(model, x, tmp_path), model.predict(x)) < TOL


@pytest.mark.parametrize("activation", LAYER_ACTIVATIONS)
def test_activations_after_a_gru_and_in_conv1d(activation, tmp_path):
    model = _small_weights(Sequential([
        C.Conv1D(4, 2, padding="causal", activation=activation, input_shape=(None, F)),
        C.GRU(5, return_sequences=True),
        C.TimeDistributed(C.Dense(4, activation=activation)),
        C.Activation(activation)]), scale=1.0)
    x = _floats(seed=9, scale=2.0)
    assert _max_diff(_run(model, x, tmp_path), model.predict(x)) < TOL


@pytest.mark.parametrize("activation, ops", [
    ("hard_sigmoid", {"HardSigmoid"}), ("softsign", {"Softsign"}), ("elu", {"Elu"}),
    ("selu", {"Selu"}), ("softmax", {"Softmax"})])
def test_activation_ops(activation, ops, tmp_path):
    model = Sequential([C.Dense(3, activation=activation, input_shape=(None, F))])
    assert ops <= set(_op_types(_export(model, tmp_path)))


# ---------------------------------------------------------------------------------------------
# opsets
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [17, 18, 19, 20, 21])
def test_opsets(opset, tmp_path):
    """From opset 18 the reductions take their axes as an input (and Split its sizes, which
    the export always gives as one); from 20 gelu is the Gelu op."""
    model = _small_weights(Sequential([
        C.Masking(0.0, input_shape=(None, F)),
        C.Bidirectional(C.GRU(4, activation="gelu", recurrent_activation="hard_sigmoid",
                              return_sequences=True)),
        C.GRU(4, activation="silu", return_sequences=True),
        C.LayerNormalization(),
        C.GRU(4, activation="elu", return_sequences=True),
        C.GlobalAveragePooling1D()]), scale=0.5)
    x = _masked_input()
    x[3, 5] = 1.0    # one valid step (the mean over none is 0 / 0 in both)
    assert _max_diff(_run(model, x, tmp_path, opset=opset), model.predict(x)) < TOL
    other = _small_weights(Sequential([
        C.Conv1D(4, 2, activation="selu", input_shape=(None, F)), C.GRU(4,
                                                                        return_sequences=True),
        C.GlobalMaxPooling1D(), C.Dense(3, activation="softsign")]))
    x = _floats(seed=10)
    assert _max_diff(_run(other, x, tmp_path, opset=opset), other.predict(x)) < TOL

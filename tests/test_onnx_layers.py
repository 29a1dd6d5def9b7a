"""ONNX export of every cgru layer, run in onnxruntime: against cgru's predict (2e-6,
float32), and for GRUs that receive a mask, against Keras 3's own predict on the same weights
(cgru's GRU takes its Keras semantics from there)."""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import cgru  # noqa: E402
import cgru.interop  # noqa: E402,F401
from cgru import Sequential  # noqa: E402
from cgru import layers as C  # noqa: E402
from conftest import max_diff as _max_diff  # noqa: E402

TOL = 2e-6
B, T, F, VOCAB = 5, 9, 3, 11


def _session(model, tmp_path):
    path = tmp_path / "m.onnx"
    assert cgru.interop.to_onnx(model, path) == path
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(model, x, tmp_path):
    return _session(model, tmp_path).run(None, {"x": x})[0]


def _randomize(model, seed=1):
    """Non-zero values in every weight; variances positive."""
    rng = np.random.default_rng(seed)
    names = [v.name for layer in model.layers for v in layer.variables]
    arrays = []
    for name, w in zip(names, model.get_weights()):
        a = rng.uniform(-0.5, 0.5, w.shape)
        arrays.append((np.abs(a) + 0.5 if "moving_variance" in name else a).astype(w.dtype))
    model.set_weights(arrays)
    return model


def _floats(batch=B, steps=T, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, steps, F)).astype(np.float32)


def _ids(batch=B, steps=T, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, steps))


# name -> layers (the first one given the input shape)
CASES = {
    "dense_activations": lambda s: [C.Dense(4, activation="relu", input_shape=s),
                                    C.Dense(4, activation="tanh"),
                                    C.Dense(3, activation="softmax")],
    "activation_layers": lambda s: [C.Activation("sigmoid", input_shape=s),
                                    C.Activation("relu"), C.Activation("softmax"),
                                    C.Activation("linear")],
    "flatten_dense": lambda s: [C.Flatten(input_shape=(T, F)), C.Dense(2)],
    "flatten_channels_first": lambda s: [C.Flatten(data_format="channels_first",
                                                   input_shape=(T, F))],
    "reshape_permute_repeat": lambda s: [C.Reshape((F, -1), input_shape=(T, F)),
                                         C.Permute((2, 1)), C.GRU(2), C.RepeatVector(4),
                                         C.Reshape((2, 2, 2))],
    "time_distributed_dense": lambda s: [C.TimeDistributed(C.Dense(4, activation="tanh"),
                                                           input_shape=s),
                                         C.TimeDistributed(C.Dense(2))],
    "max_pooling": lambda s: [C.MaxPooling1D(2, input_shape=s),
                              C.MaxPooling1D(3, strides=2, padding="same"),
                              C.MaxPooling1D(2, strides=1, padding="same")],
    "average_pooling": lambda s: [C.AveragePooling1D(3, strides=2, padding="same",
                                                     input_shape=s),
                                  C.AveragePooling1D(2, strides=1, padding="same"),
                                  C.AveragePooling1D(2)],
    "global_max": lambda s: [C.Dense(3, input_shape=s), C.GlobalMaxPooling1D()],
    "global_max_keepdims": lambda s: [C.GlobalMaxPooling1D(keepdims=True, input_shape=s)],
    "global_average": lambda s: [C.GlobalAveragePooling1D(input_shape=s)],
    "batch_normalization": lambda s: [C.BatchNormalization(input_shape=s),
                                      C.BatchNormalization(center=False, epsilon=0.1),
                                      C.BatchNormalization(scale=False)],
    "batch_normalization_time_axis": lambda s: [C.BatchNormalization(axis=1,
                                                                     input_shape=(T, F))],
    "layer_normalization": lambda s: [C.LayerNormalization(input_shape=s),
                                      C.LayerNormalization(center=False, epsilon=0.1),
                                      C.LayerNormalization(scale=False)],
    "layer_normalization_axes": lambda s: [C.LayerNormalization(axis=[1, 2],
                                                                input_shape=(T, F)),
                                           C.LayerNormalization(axis=1)],
    "noise_and_dropout": lambda s: [C.SpatialDropout1D(0.4, input_shape=s),
                                    C.GaussianNoise(0.5), C.GaussianDropout(0.3),
                                    C.Dropout(0.5), C.Dense(2)],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_layer_matches_predict(name, tmp_path):
    model = _randomize(Sequential(CASES[name]((None, F))))
    x = _floats()
    assert _max_diff(_run(model, x, tmp_path), model.predict(x)) < TOL


@pytest.mark.parametrize("padding", ["valid", "same", "causal"])
@pytest.mark.parametrize("strides, dilation", [(1, 1), (2, 1), (3, 1), (1, 2), (1, 3)])
@pytest.mark.parametrize("kernel_size", [1, 2, 3])
def test_conv1d_paddings_strides_dilations(padding, strides, dilation, kernel_size, tmp_path):
    model = _randomize(Sequential([C.Conv1D(4, kernel_size, strides=strides,
                                            dilation_rate=dilation, padding=padding,
                                            activation="relu", input_shape=(None, F))]))
    session = _session(model, tmp_path)
    for steps in (9, 10, 12):       # "same" with strides pads by the length's remainder
        x = _floats(steps=steps, seed=steps)
        assert _max_diff(session.run(None, {"x": x})[0], model.predict(x)) < TOL


def test_conv1d_without_bias_and_activations(tmp_path):
    model = _randomize(Sequential([
        C.Conv1D(3, 2, use_bias=False, activation="tanh", input_shape=(None, F)),
        C.Conv1D(3, 2, activation="sigmoid", padding="same"),
        C.Conv1D(2, 3, activation="softmax", padding="causal")]))
    x = _floats()
    assert _max_diff(_run(model, x, tmp_path), model.predict(x)) < TOL


def test_embedding_takes_int64_ids(tmp_path):
    model = _randomize(Sequential([C.Embedding(VOCAB, 4, input_shape=(None,)), C.GRU(3)]))
    path = tmp_path / "m.onnx"
    cgru.interop.to_onnx(model, path)
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] \
        == ["batch", "time"]
    assert [n.op_type for n in graph.node][:2] == ["Cast", "Gather"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, steps in ((B, T), (2, 4)):
        ids = _ids(batch, steps, seed=steps)
        assert _max_diff(session.run(None, {"x": ids})[0], model.predict(ids)) < TOL


def test_realistic_model_matches_predict(tmp_path):
    model = _randomize(Sequential([
        C.Embedding(VOCAB, 6, input_shape=(None,)),
        C.Conv1D(8, 3, padding="same", activation="relu"),
        C.BatchNormalization(),
        C.GRU(5),
        C.Dense(3, activation="softmax")]))
    ids = _ids()
    assert _max_diff(_run(model, ids, tmp_path), model.predict(ids)) < TOL


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
def test_stacked_bidirectional_with_the_new_layers(merge_mode, tmp_path):
    model = _randomize(Sequential([
        C.Conv1D(6, 3, padding="causal", input_shape=(None, F)),
        C.LayerNormalization(),
        C.SpatialDropout1D(0.2),
        C.Bidirectional(C.GRU(4, return_sequences=True, reset_after=False),
                        merge_mode=merge_mode),
        C.BatchNormalization(),
        C.GRU(4, return_sequences=True, go_backwards=True),
        C.Bidirectional(C.GRU(3, return_sequences=True), merge_mode=merge_mode),
        C.TimeDistributed(C.Dense(2)),
        C.MaxPooling1D(2, padding="same"),
        C.GlobalAveragePooling1D()]))
    x = _floats(seed=3)
    assert _max_diff(_run(model, x, tmp_path), model.predict(x)) < TOL


@pytest.mark.parametrize("keepdims", [False, True])
def test_masked_global_average_matches_predict(keepdims, tmp_path):
    model = _randomize(Sequential([C.Masking(0.25, input_shape=(None, F)),
                                   C.TimeDistributed(C.Dense(4)), C.Dense(3),
                                   C.GlobalAveragePooling1D(keepdims=keepdims)]))
    x = _floats()
    x[0, :3] = 0.25
    x[1, 4] = x[1, -1] = 0.25
    assert _max_diff(_run(model, x, tmp_path), model.predict(x)) < TOL
    emb = _randomize(Sequential([C.Embedding(VOCAB, 3, mask_zero=True, input_shape=(None,)),
                                 C.GlobalAveragePooling1D(keepdims=keepdims)]))
    ids = _ids(seed=4)
    ids[:, 0] = 1                  # no row all padding (its average is 0 / 0)
    ids[2, 3:5] = 0
    assert _max_diff(_run(emb, ids, tmp_path), emb.predict(ids)) < TOL


# ---------------------------------------------------------------------------------------------
# masked GRUs, against Keras 3
# ---------------------------------------------------------------------------------------------
def _masked_inputs(seed=0, value=0.0):
    """Masks of every pattern: left padding, holes, right padding, a row masked entirely,
    a row with one valid step, and a row without padding."""
    x = _floats(batch=7, seed=seed)
    x[0, :3] = value
    x[1, 2] = x[1, 5] = x[1, 6] = value
    x[2, -3:] = value
    x[3] = value
    x[4, :] = value
    x[4, 4] = 1.0
    return x


def _masked_ids(seed=0):
    ids = np.random.default_rng(seed).integers(1, VOCAB, (7, T))
    ids[0, :3] = 0
    ids[1, [2, 5, 6]] = 0
    ids[2, -3:] = 0
    ids[3] = 0
    ids[4, :] = 0
    ids[4, 4] = 3
    return ids


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("keras")


def _against_keras(make, x, tmp_path, after=None):
    """The same layers in Keras and cgru with Keras's weights; the ONNX file of the cgru
    model against Keras's predict."""
    keras = _keras()
    ids = x.dtype.kind == "i"
    kmodel = keras.Sequential([keras.Input(x.shape[1:], dtype="int32" if ids else "float32")]
                              + make(keras.layers))
    rng = np.random.default_rng(11)
    kmodel.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32)
                        for w in kmodel.get_weights()])
    model = Sequential(make(C))
    model.build(x.shape[1:])
    model.set_weights(kmodel.get_weights())
    if after is not None:
        after(model)
    expected = kmodel.predict(x, verbose=0)
    assert _max_diff(_run(model, x, tmp_path), expected) < TOL
    return model


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("reset_after", [True, False])
def test_masked_gru_matches_keras(reset_after, return_sequences, go_backwards, tmp_path):
    _against_keras(lambda L: [L.Masking(0.5), L.GRU(4, reset_after=reset_after,
                                                    return_sequences=return_sequences,
                                                    go_backwards=go_backwards)],
                   _masked_inputs(value=0.5), tmp_path)


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave"])
def test_masked_bidirectional_stack_matches_keras(merge_mode, return_sequences, tmp_path):
    # Keras's Bidirectional zeroes the masked steps' outputs of both halves when they return
    # sequences; a plain GRU repeats the previous output
    _against_keras(lambda L: [
        L.Masking(0.0),
        L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode=merge_mode),
        L.Dense(5, activation="tanh"),
        L.GRU(3, return_sequences=True, reset_after=False),
        L.Bidirectional(L.GRU(2, return_sequences=return_sequences, reset_after=False),
                        merge_mode=merge_mode),
        L.Dense(2)], _masked_inputs(seed=1), tmp_path)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_embedding_mask_zero_gru_matches_keras(bidirectional, tmp_path):
    def make(L):
        gru = L.GRU(4, return_sequences=True)
        return [L.Embedding(VOCAB, 3, mask_zero=True),
                L.Bidirectional(gru) if bidirectional else gru,
                L.GRU(3, go_backwards=True), L.Dense(2, activation="softmax")]
    model = _against_keras(make, _masked_ids(seed=2), tmp_path)
    # the masked model's batch and time are free
    session = _session(model, tmp_path)
    assert session.get_inputs()[0].shape == ["batch", "time"]
    assert session.run(None, {"x": _masked_ids(seed=3)[:3, :4]})[0].shape == (3, 2)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_masked_gru_with_zero_output_for_mask_matches_keras(return_sequences, tmp_path):
    """A GRU whose outputs at masked steps are zero (Keras's ``zero_output_for_mask``): the
    export reads the option from the layer."""
    def zero_output(model):
        model.layers[1].zero_output_for_mask = True

    _against_keras(lambda L: [L.Masking(0.0), L.GRU(4, return_sequences=return_sequences,
                                                    **({"zero_output_for_mask": True}
                                                       if L is not C else {}))],
                   _masked_inputs(seed=4), tmp_path, after=zero_output)


def test_unmasked_gru_keeps_one_gru_node_and_masked_one_is_a_scan(tmp_path):
    for first, op in ((C.Dropout(0.1, input_shape=(None, F)), "GRU"),
                      (C.Masking(0.0, input_shape=(None, F)), "Scan")):
        model = Sequential([first, C.GRU(3)])
        cgru.interop.to_onnx(model, tmp_path / "m.onnx")
        ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
        assert op in ops and ({"GRU", "Scan"} - {op}).isdisjoint(ops)


# ---------------------------------------------------------------------------------------------
# what ONNX cannot express is named
# ---------------------------------------------------------------------------------------------
class _Scale(C.Layer):
    supports_masking = True

    def forward(self, x, training=False, mask=None, need_grad=False):
        return 2 * x, None


@pytest.mark.parametrize("model, match", [
    (lambda: Sequential([C.Dense(2, input_shape=(None, F)), _Scale()]),
     r"Layer '.*' \(_Scale\) has no ONNX export"),
    (lambda: Sequential([C.GRU(2, stateful=True, batch_input_shape=(2, T, F))]),
     "stateful=True"),
    (lambda: Sequential([C.Masking(0.0, input_shape=(T, 4, F)),
                         C.TimeDistributed(C.GlobalAveragePooling1D())]),
     "masked TimeDistributed"),
])
def test_layers_onnx_cannot_express_are_named(model, match, tmp_path):
    with pytest.raises(NotImplementedError, match=match):
        cgru.interop.to_onnx(model(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []

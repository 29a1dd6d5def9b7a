"""ONNX export of functional cgru Models (several inputs and outputs, merging layers, masks),
run in onnxruntime against cgru's predict (2e-6, float32)."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import cgru  # noqa: E402
import cgru.interop  # noqa: E402,F401
from cgru import layers as C  # noqa: E402

TOL = 2e-6
B, T, F = 5, 7, 3
MERGES = [C.Add, C.Subtract, C.Multiply, C.Average, C.Maximum, C.Minimum, C.Concatenate]


def _floats(batch=B, steps=T, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, steps, F)).astype(np.float32)


def _masked_pair():
    a, b = _floats(seed=1), _floats(seed=2)
    a[0, :2] = 0.0        # left padding
    a[1, -3:] = 0.0       # right padding
    a[3] = 0.0            # a row masked entirely in one input
    b[0, -2:] = 0.0
    b[2, 3] = 0.0         # a hole
    b[3, :4] = 0.0
    return a, b


def _session(model, tmp_path):
    path = tmp_path / "m.onnx"
    assert cgru.interop.to_onnx(model, path) == path
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _check(model, feeds, tmp_path):
    """Every ONNX output equals predict's, by name; returns the session."""
    session = _session(model, tmp_path)
    assert [i.name for i in session.get_inputs()] == model.input_names
    assert [o.name for o in session.get_outputs()] == model.output_names
    got = session.run(None, feeds)
    expected = model.predict([feeds[n] for n in model.input_names])
    if isinstance(expected, dict):
        expected = [expected[name] for name in model.output_names]
    expected = expected if isinstance(expected, list) else [expected]
    assert len(got) == len(expected)
    for name, y, p in zip(model.output_names, got, expected):
        assert y.shape == p.shape, (name, y.shape, p.shape)
        assert float(np.abs(y - p).max()) < TOL, name
    return session


def _two_inputs(masked):
    a = cgru.Input(shape=(None, F), name="first")
    b = cgru.Input(shape=(None, F), name="second")
    xa, xb = (C.Masking()(a), C.Masking()(b)) if masked else (a, b)
    return a, b, C.GRU(4, return_sequences=True, seed=1)(xa), \
        C.GRU(4, return_sequences=True, activation="gelu", seed=2)(xb)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("merge", MERGES)
def test_two_inputs_one_merge(merge, masked, tmp_path):
    """A merging layer of two GRUs' sequences, read by a GRU (which consumes the merged
    mask) and by a masked average."""
    a, b, ha, hb = _two_inputs(masked)
    merged = merge()([ha, hb])
    out = C.Dense(2, activation="softmax", seed=3)(C.GRU(3, seed=4)(merged))
    pooled = C.GlobalAveragePooling1D()(merged)
    model = cgru.Model([a, b], [out, pooled])
    xa, xb = _masked_pair()
    _check(model, {"first": xa, "second": xb}, tmp_path)


@pytest.mark.parametrize("merge", [C.Add, C.Multiply, C.Maximum, C.Minimum, C.Average,
                                   C.Concatenate])
def test_merges_of_three_with_one_mask_missing(merge, tmp_path):
    """Three inputs, the last without a mask: Multiply counts masked entries as 1, Maximum
    and Minimum never take them, Concatenate counts the unmasked input as valid."""
    a, b, ha, hb = _two_inputs(True)
    plain = C.GRU(4, return_sequences=True, seed=5)(b)
    model = cgru.Model([a, b], merge()([ha, hb, plain]))
    xa, xb = _masked_pair()
    _check(model, {"first": xa, "second": xb}, tmp_path)


def test_two_outputs_from_one_input_with_shared_layers(tmp_path):
    x = cgru.Input(shape=(None, F), name="x_in")
    shared = C.Dense(4, activation="tanh", seed=1)
    h = C.GRU(5, return_sequences=True, seed=2)(x)
    left = C.GRU(3, recurrent_activation="hard_sigmoid", seed=3)(shared(h))
    right = C.GlobalMaxPooling1D()(shared(C.Conv1D(5, 2, padding="causal", seed=4)(x)))
    model = cgru.Model(x, [C.Dense(2, name="left_head", seed=5)(left),
                           C.Dense(1, activation="sigmoid", name="right_head",
                                   seed=6)(right)])
    session = _check(model, {"x_in": _floats(seed=3)}, tmp_path)
    for batch, steps in [(1, 2), (9, 11)]:     # batch and time stay free
        x = _floats(batch, steps, seed=batch)
        for y, p in zip(session.run(None, {"x_in": x}), model.predict(x)):
            assert float(np.abs(y - p).max()) < TOL


def test_two_inputs_two_outputs_with_ids_and_sequences(tmp_path):
    ids = cgru.Input(shape=(None,), dtype="int32", name="tokens")
    feats = cgru.Input(shape=(None, F), name="features")
    emb = C.Embedding(11, F, mask_zero=True, seed=1)(ids)
    joined = C.Concatenate()([emb, C.Dense(F, seed=2)(feats)])
    h = C.Bidirectional(C.GRU(4, return_sequences=True, seed=3))(joined)
    model = cgru.Model({"tokens": ids, "features": feats},
                       {"tags": C.TimeDistributed(C.Dense(3, activation="softmax",
                                                          seed=4))(h),
                        "summary": C.GRU(2, activation="selu", seed=5)(h)})
    tokens = np.random.default_rng(4).integers(1, 11, (B, T))
    tokens[0, :3] = 0
    tokens[2, -2:] = 0
    session = _session(model, tmp_path)
    assert [i.name for i in session.get_inputs()] == ["tokens", "features"]
    assert session.get_inputs()[0].type == "tensor(int64)"
    assert [o.name for o in session.get_outputs()] == ["tags", "summary"]
    feeds = {"tokens": tokens.astype(np.int64), "features": _floats(seed=5)}
    got = session.run(None, feeds)
    expected = model.predict({"tokens": tokens, "features": feeds["features"]})
    for y, name in zip(got, ["tags", "summary"]):
        assert float(np.abs(y - expected[name]).max()) < TOL, name


@pytest.mark.parametrize("axes, normalize, shapes", [
    (2, False, [(T, 4), (T, 4)]), (1, True, [(T, 4), (T, 6)]), ((2, 1), False, [(T, 4), (4,)]),
    (1, True, [(4,), (4,)]), ((1, 2), False, [(4,), (3, 4)]),
    ((3, 1), False, [(2, 3, 4), (4, 5)])])
def test_dot(axes, normalize, shapes, tmp_path):
    inputs = [cgru.Input(shape=s, name=f"in_{i}") for i, s in enumerate(shapes)]
    model = cgru.Model(inputs, C.Dot(axes=axes, normalize=normalize)(inputs))
    rng = np.random.default_rng(6)
    feeds = {f"in_{i}": rng.standard_normal((B,) + s).astype(np.float32)
             for i, s in enumerate(shapes)}
    _check(model, feeds, tmp_path)


def test_an_output_that_a_layer_also_reads(tmp_path):
    x = cgru.Input(shape=(None, F), name="x")
    h = C.GRU(4, return_sequences=True, seed=1)(x)
    model = cgru.Model(x, [h, C.Dense(2, seed=2)(h)])
    _check(model, {"x": _floats(seed=7)}, tmp_path)


def test_output_names_that_look_like_internal_names(tmp_path):
    """The graph's own tensor names never take a model output's name."""
    x = cgru.Input(shape=(None, F), name="transpose_9")
    h = C.GRU(4, return_sequences=True, seed=1)(x)
    model = cgru.Model(x, {f"{base}_{i}": C.Dense(2, seed=i)(h)
                           for i in range(1, 6) for base in ("transpose", "gru", "add")})
    _check(model, {"transpose_9": _floats(seed=8)}, tmp_path)


def test_an_input_returned_as_an_output_is_refused(tmp_path):
    x = cgru.Input(shape=(None, F), name="x")
    model = cgru.Model(x, [C.GRU(4, seed=1)(x), x])
    with pytest.raises(NotImplementedError, match="share a name"):
        cgru.interop.to_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("build, error, match", [
    (lambda x: C.GRU(3, return_state=True)(x)[0], NotImplementedError, "several tensors"),
    (lambda x: C.Dense(2, dtype="float64")(x), TypeError, "float64"),
])
def test_errors_leave_no_file(build, error, match, tmp_path):
    x = cgru.Input(shape=(None, F))
    model = cgru.Model(x, build(x))
    with pytest.raises(error, match=match):
        cgru.interop.to_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("opset", [18, 20])
def test_later_opsets(opset, tmp_path):
    a, b, ha, hb = _two_inputs(True)
    joined = C.Concatenate()([ha, hb])
    pooled = C.GlobalMaxPooling1D()(joined)
    model = cgru.Model([a, b], [C.GRU(3, seed=6)(joined),
                                C.Dot(axes=1, normalize=True)([pooled, pooled])])
    path = tmp_path / "m.onnx"
    cgru.interop.to_onnx(model, path, opset=opset)
    assert onnx.load(str(path)).opset_import[0].version == opset
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xa, xb = _masked_pair()
    for y, p in zip(session.run(None, {"first": xa, "second": xb}), model.predict([xa, xb])):
        assert float(np.abs(y - p).max()) < TOL

"""The functional Model: graphs of layers (several inputs and outputs, shared layers, masks,
layers with several outputs) trained as Keras 3 trains them, on copied weights; per-output
losses, loss_weights, metrics and weighted_metrics with Keras's History names; summary,
get_layer, saving, and the errors for what cgru does not do."""
import numpy as np
import pytest

from _layer_checks import OPTIMIZERS, keras
import cgru
from cgru import layers as CL
from cgru import optimizers as copt

pytest.importorskip("keras")


def _two_inputs(L, M, Input):
    a = Input((5, 3), name="seq_in")
    b = Input((4,), name="side_in")
    h = L.concatenate([L.GRU(6, name="gru")(a), L.Dense(5, activation="tanh", name="side")(b)],
                      name="joined")
    return M([a, b], L.Dense(1, activation="sigmoid", name="prob")(h))


def _two_outputs(L, M, Input):
    a = Input((5, 3), name="seq_in")
    h = L.GRU(6, name="gru")(a)
    reg = L.Dense(2, name="reg")(h)
    cls = L.Dense(3, activation="softmax", name="cls")(L.Dense(4, activation="relu",
                                                                 name="hidden")(h))
    return M(a, [reg, cls])


def _copy_weights(k_model, c_model):
    assert [layer.name for layer in c_model.layers] == [layer.name for layer in k_model.layers]
    c_model.set_weights(k_model.get_weights())       # the same order as Keras's


def _assert_same_run(kh, ch, k_model, c_model):
    assert set(ch.history) == set(kh.history)
    for key in kh.history:
        np.testing.assert_allclose(ch.history[key], kh.history[key], rtol=1e-4, atol=1e-6,
                                   err_msg=key)
    for cw, kw in zip(c_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(cw, kw, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_input_model_joined_by_concatenate_trains_as_keras(optimizer):
    k = keras()
    rng = np.random.default_rng(0)
    xa = rng.standard_normal((24, 5, 3)).astype(np.float32)
    xb = rng.standard_normal((24, 4)).astype(np.float32)
    y = (rng.random((24, 1)) > 0.5).astype(np.float32)
    k_model = _two_inputs(k.layers, k.Model, k.Input)
    c_model = _two_inputs(CL, cgru.Model, cgru.Input)
    _copy_weights(k_model, c_model)
    for m, mod in ((k_model, k), (c_model, cgru)):
        m.compile(optimizer=OPTIMIZERS[optimizer](mod.optimizers), loss="binary_crossentropy",
                  metrics=["accuracy"])
    kh = k_model.fit([xa, xb], y, batch_size=8, epochs=3, shuffle=False, verbose=0,
                     validation_data=([xa[:8], xb[:8]], y[:8]))
    ch = c_model.fit([xa, xb], y, batch_size=8, epochs=3, shuffle=False, verbose=0,
                     validation_data=([xa[:8], xb[:8]], y[:8]))
    _assert_same_run(kh, ch, k_model, c_model)
    np.testing.assert_allclose(c_model.predict({"seq_in": xa, "side_in": xb}),
                               k_model.predict([xa, xb], verbose=0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_output_model_with_per_output_losses_and_loss_weights_trains_as_keras(optimizer):
    k = keras()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((24, 5, 3)).astype(np.float32)
    y_reg = rng.standard_normal((24, 2)).astype(np.float32)
    y_cls = rng.integers(0, 3, 24)
    k_model = _two_outputs(k.layers, k.Model, k.Input)
    c_model = _two_outputs(CL, cgru.Model, cgru.Input)
    _copy_weights(k_model, c_model)
    compile_args = dict(loss={"reg": "mse", "cls": "sparse_categorical_crossentropy"},
                        loss_weights={"reg": 0.5, "cls": 2.0},
                        metrics={"reg": ["mae"], "cls": ["accuracy"]})
    k_model.compile(optimizer=OPTIMIZERS[optimizer](k.optimizers), **compile_args)
    c_model.compile(optimizer=OPTIMIZERS[optimizer](copt), **compile_args)
    # 18 training samples in batches of 6: Keras's per-output losses are means of batch
    # means, cgru's per-sample means (the same here; see the test on uneven batches)
    kh = k_model.fit(x, [y_reg, y_cls], batch_size=6, epochs=3, shuffle=False, verbose=0,
                     validation_split=0.25)
    ch = c_model.fit(x, {"reg": y_reg, "cls": y_cls}, batch_size=6, epochs=3, shuffle=False,
                     verbose=0, validation_split=0.25)
    assert {"loss", "reg_loss", "cls_loss", "reg_mae", "cls_accuracy",
            "val_reg_loss"} <= set(ch.history)
    _assert_same_run(kh, ch, k_model, c_model)
    c_eval = c_model.evaluate(x, [y_reg, y_cls])
    k_eval = k_model.evaluate(x, [y_reg, y_cls], verbose=0)
    np.testing.assert_allclose(c_eval, k_eval, rtol=1e-4)
    assert c_model.evaluate(x, [y_reg, y_cls], return_dict=True).keys() == \
        k_model.evaluate(x, [y_reg, y_cls], verbose=0, return_dict=True).keys()
    c_pred, k_pred = c_model.predict(x), k_model.predict(x, verbose=0)
    assert isinstance(c_pred, list) and len(c_pred) == 2
    for c, kp in zip(c_pred, k_pred):
        np.testing.assert_allclose(c, kp, rtol=1e-4, atol=1e-6)


def test_history_names_with_lists_of_metrics_and_weighted_metrics_as_keras():
    k = keras()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 5, 3)).astype(np.float32)
    ys = [rng.standard_normal((16, 2)).astype(np.float32), rng.integers(0, 3, 16)]
    sw = rng.random(16).astype(np.float32)
    k_model = _two_outputs(k.layers, k.Model, k.Input)
    c_model = _two_outputs(CL, cgru.Model, cgru.Input)
    _copy_weights(k_model, c_model)
    args = dict(loss=["mse", "sparse_categorical_crossentropy"], metrics=["mae", "accuracy"],
                weighted_metrics=[["mae"], ["accuracy"]])
    k_model.compile(optimizer=k.optimizers.SGD(0.1), **args)
    c_model.compile(optimizer=copt.SGD(0.1), **args)
    kh = k_model.fit(x, ys, sample_weight=sw, batch_size=8, epochs=2, shuffle=False, verbose=0)
    ch = c_model.fit(x, ys, sample_weight=sw, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert "reg_weighted_mae" in ch.history and "cls_weighted_accuracy" in ch.history
    _assert_same_run(kh, ch, k_model, c_model)


def test_per_output_losses_in_history_are_per_sample_averages_over_the_epoch():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 5, 3))
    ys = [rng.standard_normal((20, 2)), rng.integers(0, 3, 20)]
    models = []
    for _ in range(2):
        m = _two_outputs(CL, cgru.Model, cgru.Input)
        m.compile(optimizer=copt.SGD(0.1), loss=["mse", "sparse_categorical_crossentropy"])
        models.append(m)
    models[1].set_weights(models[0].get_weights())
    history = models[0].fit(x, ys, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    expected = {"loss": 0.0, "reg_loss": 0.0, "cls_loss": 0.0}
    for s in (slice(0, 8), slice(8, 16), slice(16, 20)):    # batches of 8, 8 and 4
        before = models[1].test_on_batch(x[s], [y[s] for y in ys], return_dict=True)
        for key in expected:
            expected[key] += before[key] * len(x[s]) / 20
        models[1].train_on_batch(x[s], [y[s] for y in ys])
    for key, value in expected.items():
        np.testing.assert_allclose(history[key][0], value, rtol=1e-5, err_msg=key)


def _masked_model(L, M, Input, head):
    inputs = Input((6, 3), name="x")
    masked = L.Masking(name="masking")(inputs)
    if head == "time_distributed":
        out = L.TimeDistributed(L.Dense(2, name="inner"), name="td")(masked)
    else:
        pooled = L.GlobalAveragePooling1D(name="pool")(masked)
        out = L.Dense(1, name="out")(L.concatenate([pooled, L.Dense(2, name="d")(pooled)],
                                                  name="cat"))
    return M(inputs, out)


@pytest.mark.parametrize("head", ["time_distributed", "pooling"])
def test_masks_travel_along_the_graph_as_in_keras(head):
    k = keras()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 6, 3)).astype(np.float32)
    x[:5, 4:] = 0.0                             # masked steps
    x[7, :2] = 0.0
    y = rng.standard_normal((16, 6, 2) if head == "time_distributed" else (16, 1)) \
        .astype(np.float32)
    k_model = _masked_model(k.layers, k.Model, k.Input, head)
    c_model = _masked_model(CL, cgru.Model, cgru.Input, head)
    _copy_weights(k_model, c_model)
    k_model.compile(optimizer=k.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    c_model.compile(optimizer=copt.Adam(0.01), loss="mse", metrics=["mae"])
    kh = k_model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    ch = c_model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    _assert_same_run(kh, ch, k_model, c_model)


def test_shared_layers_and_several_outputs_per_layer_have_exact_gradients():
    """A Dense called on two tensors (its gradients summed), a GRU whose sequence and state
    both feed the head, two outputs with loss weights: central differences (float64)."""
    f64 = dict(dtype="float64")
    a, b = cgru.Input((4, 3), **f64), cgru.Input((4, 3), **f64)
    gru = CL.GRU(3, return_sequences=True, return_state=True, **f64)
    seq, state = gru(a)
    shared = CL.Dense(3, activation="tanh", **f64)
    pooled = CL.GlobalAveragePooling1D(**f64)(seq)
    joined = CL.add([shared(pooled), shared(state), CL.GlobalMaxPooling1D(**f64)(b)], **f64)
    out1 = CL.Dense(2, **f64)(CL.multiply([joined, state], **f64))
    out2 = CL.Dense(3, activation="softmax", **f64)(
        CL.concatenate([joined, CL.Dot(axes=(1, 1), **f64)([pooled, state])], **f64))
    model = cgru.Model([a, b], [out1, out2])
    model.compile(loss=["mse", "categorical_crossentropy"], loss_weights=[0.3, 1.7])
    rng = np.random.default_rng(5)
    for w in model.weights:
        w += rng.uniform(-0.3, 0.3, w.shape)
    xs = [rng.standard_normal((5, 4, 3)), rng.standard_normal((5, 4, 3))]
    ys = [rng.standard_normal((5, 2)), np.eye(3)[rng.integers(0, 3, 5)]]
    assert sum(layer is shared for layer in model.layers) == 1      # listed once
    ys_pred, trace = model._run_graph(xs, need_grad=True)
    grads = model._gradients(ys, ys_pred, trace)
    assert len(grads) == len(model.trainable_weights)

    def loss():
        preds, tr = model._run_graph(xs)
        return model._compute_loss(ys, preds, None, tr)[0]

    eps = 1e-6
    for w, g in zip(model.trainable_weights, grads):
        flat, gflat = w.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            up = loss()
            flat[i] = old - eps
            down = loss()
            flat[i] = old
            np.testing.assert_allclose(gflat[i], (up - down) / (2 * eps), rtol=1e-5,
                                       atol=1e-9)


def test_dtypes_meet_at_layer_boundaries_in_a_graph():
    a = cgru.Input((3,), dtype="float64")
    h = CL.Dense(4, dtype="float32")(a)
    out = CL.add([h, CL.Dense(4, dtype="float64")(a)], dtype="float64")
    model = cgru.Model(a, out)
    model.compile(loss="mse", optimizer="sgd")
    x, y = np.ones((4, 3)), np.zeros((4, 4))
    assert model.predict(x).dtype == np.float64
    model.fit(x, y, epochs=1, verbose=0)
    assert model.layers[1].weights[0].dtype in (np.float32, np.float64)


def test_structure_summary_and_get_layer(capsys):
    model = _two_inputs(CL, cgru.Model, cgru.Input)
    assert [layer.name for layer in model.layers] == [
        "seq_in", "side_in", "gru", "side", "joined", "prob"]
    assert model.get_layer("gru") is model.layers[2]
    assert model.get_layer(index=-1).name == "prob"
    with pytest.raises(ValueError, match="No such layer: nope"):
        model.get_layer("nope")
    assert [t.shape for t in model.inputs] == [(None, 5, 3), (None, 4)]
    assert model.outputs[0].shape == (None, 1)
    model.summary()
    text = capsys.readouterr().out
    assert "Connected to" in text
    joined = next(line for line in text.splitlines() if line.startswith(" joined"))
    assert "gru[0][0]" in joined and "(None, 11)" in joined
    assert any(line.strip() == "side[0][0]" for line in text.splitlines())
    assert "Total params: 235" in text


def test_save_and_load_round_trip_resumes_training_exactly(tmp_path):
    rng = np.random.default_rng(6)
    x = {"a": rng.standard_normal((12, 5, 3)), "b": rng.standard_normal((12, 4))}
    y = {"p": rng.standard_normal((12, 1)), "q": rng.integers(0, 3, 12)}

    def build():
        a, b = cgru.Input((5, 3), name="a"), cgru.Input((4,), name="b")
        shared = CL.Dense(4, activation="relu")
        h = CL.concatenate([CL.GRU(4)(a), shared(b), shared(b)])
        return cgru.Model({"a": a, "b": b}, {"p": CL.Dense(1)(h),
                                             "q": CL.Dense(3, activation="softmax")(h)})

    model = build()
    model.compile(optimizer="adam", loss={"p": "mse", "q": "sparse_categorical_crossentropy"},
                  loss_weights={"p": 2.0, "q": 1.0}, metrics={"q": "accuracy"})
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "model.cgru"
    model.save(path)
    loaded = cgru.models.load_model(path)
    assert type(loaded) is cgru.Model and loaded.output_names == ["p", "q"]
    for k in ("p", "q"):
        np.testing.assert_array_equal(loaded.predict(x)[k], model.predict(x)[k])
    h1 = model.fit(x, y, epochs=2, batch_size=4, verbose=0).history
    h2 = loaded.fit(x, y, epochs=2, batch_size=4, verbose=0).history
    assert h1 == h2
    for w1, w2 in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(w1, w2)


def test_what_cgru_does_not_do_raises_clearly(tmp_path):
    class Custom(cgru.Model):
        def __init__(self):
            super().__init__()
            self.dense = CL.Dense(1)

        def call(self, inputs):
            return self.dense(inputs)

    with pytest.raises(NotImplementedError, match="automatic differentiation.*functional API"):
        Custom()
    with pytest.raises(NotImplementedError, match="functional API"):
        cgru.Model()
    a = cgru.Input((3,))
    model = cgru.Model(a, CL.Dense(2)(a))
    seq = cgru.Input((4, 3))
    out, state = cgru.GRU(2, return_state=True)(seq)
    with pytest.raises(ValueError, match=r"initial_state.*\(None, 3\).*\(None, 2\)"):
        cgru.GRU(3)(seq, initial_state=state)       # a graph state of another size
    with pytest.raises(ValueError, match="Graph disconnected"):
        cgru.Model(cgru.Input((3,)), CL.Dense(2)(a))
    model.compile(loss=["mse"], optimizer="sgd")
    with pytest.raises(ValueError, match=r"`y\[|one label per sample"):
        model.fit(np.ones((4, 3)), np.ones((5, 2)), verbose=0)
    with pytest.raises(ValueError, match=r"shape \(None, 3\)"):
        model.predict(np.ones((4, 5)))
    b = cgru.Input((3,))
    two = cgru.Model([a, b], [CL.Dense(1, name="u")(a), CL.Dense(1, name="v")(b)])
    with pytest.raises(ValueError, match="names \\['w'\\].*outputs are \\['u', 'v'\\]"):
        two.compile(loss={"w": "mse"})
    with pytest.raises(ValueError, match="2 entries|2 outputs"):
        two.compile(loss=["mse", "mse", "mse"])
    two.compile(loss="mse", optimizer="sgd")
    with pytest.raises(ValueError, match="class_weight"):
        two.fit([np.ones((4, 3))] * 2, [np.ones((4, 1))] * 2, class_weight={0: 1.0}, verbose=0)


def test_generators_yield_lists_and_dicts_of_arrays():
    rng = np.random.default_rng(7)
    model = _two_inputs(CL, cgru.Model, cgru.Input)
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    xa, xb = rng.standard_normal((16, 5, 3)), rng.standard_normal((16, 4))
    y = (rng.random((16, 1)) > 0.5).astype(float)

    def batches():
        while True:
            for i in range(0, 16, 8):
                yield {"seq_in": xa[i:i + 8], "side_in": xb[i:i + 8]}, y[i:i + 8]

    history = model.fit(batches(), steps_per_epoch=2, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    np.testing.assert_allclose(model.predict((([xa[i:i + 8], xb[i:i + 8]],) for i in (0, 8))),
                               model.predict([xa, xb]), rtol=1e-6)
    logs = model.evaluate(batches(), steps=2, return_dict=True)
    np.testing.assert_allclose(logs["loss"], model.evaluate([xa, xb], y)[0], rtol=1e-6)


def _embedding_model(L, M, Input):
    ids = Input((6,), dtype="int32", name="ids")
    emb = L.Embedding(12, 4, mask_zero=True, name="emb")(ids)
    pooled = L.GlobalAveragePooling1D(name="pool")(emb)
    dense = L.Dense(4, activation="tanh", name="d")
    return M(ids, L.Dense(1, name="out")(L.add([dense(pooled), pooled], name="sum")))


def test_integer_input_and_embedding_mask_through_a_graph_train_as_keras():
    """Input(dtype="int32") -> Embedding(mask_zero=True) -> masked average -> add: SGD (Keras's
    TensorFlow backend gives Adam one embedding row per occurrence, see the README)."""
    k = keras()
    rng = np.random.default_rng(8)
    ids = rng.integers(1, 12, (16, 6))
    ids[:6, 4:] = 0                              # padding, masked
    y = rng.standard_normal((16, 1)).astype(np.float32)
    k_model = _embedding_model(k.layers, k.Model, k.Input)
    c_model = _embedding_model(CL, cgru.Model, cgru.Input)
    assert c_model.inputs[0].dtype == "int32"
    _copy_weights(k_model, c_model)
    k_model.compile(optimizer=k.optimizers.SGD(0.1), loss="mse")
    c_model.compile(optimizer=copt.SGD(0.1), loss="mse")
    kh = k_model.fit(ids, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    ch = c_model.fit(ids, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    _assert_same_run(kh, ch, k_model, c_model)


def test_frozen_model_keeps_its_weights():
    a = cgru.Input((3,))
    model = cgru.Model(a, CL.Dense(2)(CL.Dense(4)(a)), trainable=False)
    model.compile(loss="mse", optimizer="sgd")
    before = model.get_weights()
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), epochs=2, verbose=0)
    for w0, w1 in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    assert model.trainable_weights == [] and len(model.non_trainable_weights) == 4


def test_sequential_shares_the_model_structure_api():
    model = cgru.Sequential([CL.GRU(3, input_shape=(4, 2)), CL.Dense(1, name="last")])
    assert isinstance(model, cgru.Model)
    assert model.inputs[0].shape == (None, 4, 2) and model.output.shape == (None, 1)
    assert model.get_layer("last") is model.layers[-1] and model.output_names == ["last"]
    with pytest.raises(AttributeError, match="no defined inputs"):
        cgru.Sequential([CL.Dense(1)]).inputs

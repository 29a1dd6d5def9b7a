"""The layer protocol: what a model may assume about layers, and what layers may assume."""
import ast
import os
import re

import numpy as np
import pytest

import cgru
from cgru import GRU, Bidirectional, Dense, Dropout, Sequential
from cgru.layers import Layer

PACKAGE_DIR = os.path.dirname(cgru.__file__)


def _mixed_model(seed=0):
    model = Sequential([GRU(5, dtype="float64", input_shape=(6, 3), seed=seed),
                        Dense(2, activation="softmax", seed=seed)], seed=seed)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam",
                  metrics=["accuracy"])
    return model


def _mixed_data(n=24):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 6, 3)).astype(np.float32)
    return x, (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)


def test_mixed_dtypes_fit_evaluate_predict_and_keep_each_layers_dtype():
    x, y = _mixed_data()
    model = _mixed_model()
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    gru, dense = model.layers
    assert [w.dtype for w in gru.get_weights()] == [np.float64] * 3
    assert [w.dtype for w in dense.get_weights()] == [np.float32] * 2
    y_pred = model.predict(x)
    assert y_pred.dtype == np.float32
    # Keras's autocast: the float64 GRU's output enters the Dense cast to float32
    np.testing.assert_array_equal(y_pred, dense(gru(x.astype(np.float64)).astype(np.float32)))
    loss, accuracy = model.evaluate(x, y)
    assert np.isfinite(loss) and 0 <= accuracy <= 1


def test_mixed_dtype_gradients_match_a_float64_model():
    x, y = _mixed_data(5)
    mixed = _mixed_model()
    reference = Sequential([GRU(5, dtype="float64", input_shape=(6, 3)),
                            Dense(2, activation="softmax", dtype="float64")])
    reference.compile(loss="sparse_categorical_crossentropy")
    reference.set_weights(mixed.get_weights())
    grads = mixed._backward(y, *mixed._forward(x, need_grad=True))
    expected = reference._backward(y, *reference._forward(x.astype(np.float64), need_grad=True))
    for g, e, w in zip(grads, expected, mixed.trainable_weights):
        assert g.dtype == w.dtype
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)


def test_mixed_dtypes_save_and_load(tmp_path):
    x, y = _mixed_data()
    model = _mixed_model()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "mixed.npz")
    loaded = cgru.models.load_model(tmp_path / "mixed.npz")
    assert [layer.dtype for layer in loaded.layers] == [np.float64, np.float32]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_mixed_dtypes_match_keras():
    keras = pytest.importorskip("keras")
    x, _ = _mixed_data()
    model = _mixed_model()
    k_model = keras.Sequential([keras.Input((6, 3)), keras.layers.GRU(5, dtype="float64"),
                                keras.layers.Dense(2, activation="softmax")])
    k_model.set_weights(model.get_weights())
    np.testing.assert_allclose(model.predict(x), k_model.predict(x, verbose=0), atol=2e-6)


def test_load_model_lives_in_models_and_at_the_top():
    assert cgru.models.load_model is cgru.load_model


def _protocol_example_source():
    doc = cgru.layers.__doc__
    block = doc.split("A new layer is one class.")[1].split("::", 1)[1]
    lines = block.split("\n\n", 1)[1].split("\nIt trains")[0]
    return "\n".join(line[4:] for line in lines.splitlines())


def test_the_protocol_example_in_the_docstring_trains_with_exact_gradients():
    namespace = {}
    exec(compile(_protocol_example_source(), "protocol-example", "exec"), namespace)
    scale_cls = namespace["Scale"]
    rng = np.random.default_rng(3)
    model = Sequential([GRU(3, return_sequences=True, input_shape=(4, 2), dtype="float64"),
                        scale_cls(dtype="float64"), GRU(2, dtype="float64")])
    model.compile(loss="mse", optimizer="sgd")
    for w in model.weights:
        w += rng.uniform(-0.3, 0.3, w.shape)
    x, y = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 2))
    grads = model._backward(y, *model._forward(x, need_grad=True))
    eps = 1e-6
    for w, g in zip(model.weights, grads):
        flat, numeric = w.reshape(-1), np.zeros(w.size)
        for i in range(w.size):
            old = flat[i]
            flat[i] = old + eps
            plus = model.loss(y, model._forward(x)[0])
            flat[i] = old - eps
            minus = model.loss(y, model._forward(x)[0])
            flat[i] = old
            numeric[i] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(g.reshape(-1), numeric, rtol=1e-5, atol=1e-9)
    before = model.layers[1].get_weights()[0].copy()
    model.fit(x, y, epochs=2, batch_size=3, verbose=0)
    assert not np.array_equal(model.layers[1].get_weights()[0], before)


def test_first_layer_computes_no_input_gradient(monkeypatch):
    import cgru.layers.rnn as rnn
    asked = []
    real = rnn._layer_backward

    def spy(dy, dh_n, cache, need_dx=True):
        asked.append(need_dx)
        result = real(dy, dh_n, cache, need_dx=need_dx)
        assert (result[0] is None) == (not need_dx)
        return result

    monkeypatch.setattr(rnn, "_layer_backward", spy)
    model = Sequential([GRU(3, return_sequences=True, input_shape=(4, 2)), GRU(3), Dense(1)])
    model.compile(loss="mse", optimizer="sgd")
    model.fit(np.zeros((4, 4, 2)), np.zeros((4, 1)), batch_size=4, verbose=0)
    assert asked == [True, False]       # backward runs from the last GRU to the first


def test_a_training_step_converts_no_weight_layout(monkeypatch):
    import cgru.layers.rnn as rnn
    calls = []
    real = rnn.swap_gate_blocks
    model = Sequential([Bidirectional(GRU(3), input_shape=(4, 2)), Dense(1)])
    model.compile(loss="mse", optimizer="adam")
    monkeypatch.setattr(rnn, "swap_gate_blocks", lambda a, H: calls.append(1) or real(a, H))
    model.fit(np.ones((8, 4, 2)), np.ones((8, 1)), batch_size=4, epochs=2, verbose=0)
    model.predict(np.ones((8, 4, 2)))
    assert calls == []


def test_the_logits_rule_is_found_through_the_protocol():
    """A layer of any class that declares an output activation gets the loss's gradient at
    the logits, and it equals the chain rule through the activation."""
    seen = []

    class Sigmoid(Layer):
        output_activation = "sigmoid"

        def forward(self, x, training=False, mask=None, need_grad=False):
            out = 1 / (1 + np.exp(-x))
            return out, (out if need_grad else None)

        def backward(self, d, out, need_input_grad=True, at_logits=False):
            seen.append(at_logits)
            return (d if at_logits else d * out * (1 - out)), []

    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5, 2))
    y = (rng.random((6, 1)) > 0.5).astype(float)
    layers = [GRU(3, input_shape=(5, 2), dtype="float64", seed=1),
              Dense(1, dtype="float64", seed=1), Sigmoid(dtype="float64")]
    model = Sequential(layers)
    model.compile(loss="binary_crossentropy")
    grads = model._backward(y, *model._forward(x, need_grad=True))
    assert seen == [True]
    fused = Sequential([GRU(3, input_shape=(5, 2), dtype="float64"),
                        Dense(1, activation="sigmoid", dtype="float64")])
    fused.compile(loss="binary_crossentropy")
    fused.set_weights(model.get_weights())
    for a, b in zip(grads, fused._backward(y, *fused._forward(x, need_grad=True))):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_frozen_layers_keep_their_weights_and_summary_counts_them(capsys):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 5, 2)), rng.standard_normal((16, 1))
    frozen = GRU(4, input_shape=(5, 2), trainable=False, seed=0)
    model = Sequential([frozen, Dense(1, seed=0)])
    model.compile(loss="mse", optimizer="adam")
    before = model.get_weights()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after = model.get_weights()
    for a, b in zip(before[:3], after[:3]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(before[3], after[3])
    model.summary()
    text = capsys.readouterr().out
    n_gru = 3 * (2 * 4 + 4 * 4 + 2 * 4)
    assert re.search(r"\nTrainable params: 5 \(", text)
    assert re.search(rf"Non-trainable params: {n_gru} \(", text)


def _module_imports(path, package):
    """The cgru modules that the module at `path` imports at module level (any depth of
    `from .. import`), as dotted names."""
    module = package + "." + os.path.relpath(path, PACKAGE_DIR)[:-3].replace(os.sep, ".")
    module = module.removesuffix(".__init__")
    is_package = path.endswith("__init__.py")
    tree = ast.parse(open(path).read())
    found = set()
    for node in tree.body:              # module level only: function-level imports are lazy
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(package)}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith(package):
                # `from package import module` imports the module; anything else, the
                # module named (resolved by _import_graph)
                found |= {(target, alias.name) for alias in node.names}
    return module, found


def _import_graph():
    graph = {}
    for root, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(".py"):
                module, imports = _module_imports(path, "cgru")
                graph[module] = imports
            elif name.endswith(".pyx"):     # compiled (tier 1): imports nothing of cgru
                graph["cgru." + os.path.relpath(path, PACKAGE_DIR)[:-4].replace(os.sep, ".")] \
                    = set()
    known = set(graph)

    def resolve(item):
        if isinstance(item, str):
            return item
        target, name = item
        return f"{target}.{name}" if f"{target}.{name}" in known else target

    return {m: {resolve(i) for i in imports} & known - {m} for m, imports in graph.items()}


def test_no_import_cycles():
    graph = _import_graph()
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in graph[module]:
            if state.get(target) == "open":
                pytest.fail("import cycle: " + " -> ".join(path + [module, target]))
            if target not in state:
                visit(target, path + [module])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])


def test_tiers_import_only_downward():
    graph = _import_graph()
    tier3 = ("cgru.layers", "cgru.models", "cgru.saving", "cgru.callbacks", "cgru.optimizers",
             "cgru.losses", "cgru.metrics")
    assert not {i for i in graph["cgru.functional"] if i.startswith(tier3)}
    assert not {i for i in graph["cgru.saving"]
                if i.startswith(("cgru.layers", "cgru.models"))}
    # the model never names a layer class
    source = open(os.path.join(PACKAGE_DIR, "models.py")).read()
    for name in ("GRU", "Bidirectional", "Dense", "Dropout"):
        assert not re.search(rf"\b{name}\b", source), name


def test_layers_copy_keras_layout_through_set_weights_only():
    """get_weights speaks Keras's layout while the live weights are the kernels'."""
    layer = GRU(2, input_shape=(3, 4), seed=0)
    kernel_keras = layer.get_weights()[0]
    live = layer.weights[0]
    H = 2
    np.testing.assert_array_equal(live[:, :H], kernel_keras[:, H:2 * H])     # r
    np.testing.assert_array_equal(live[:, H:2 * H], kernel_keras[:, :H])     # z
    np.testing.assert_array_equal(live[:, 2 * H:], kernel_keras[:, 2 * H:])  # n / h
    layer.set_weights([np.arange(24.0).reshape(4, 6)] + layer.get_weights()[1:])
    assert live is layer.weights[0]           # set in place: optimizers hold the arrays
    np.testing.assert_array_equal(layer.get_weights()[0], np.arange(24.0).reshape(4, 6))


def test_dropout_between_layers_of_another_dtype():
    model = Sequential([GRU(3, dtype="float64", input_shape=(4, 2), return_sequences=True),
                        Dropout(0.5), GRU(2)])
    model.compile(loss="mse", optimizer="sgd")
    model.fit(np.ones((4, 4, 2)), np.ones((4, 2)), verbose=0)
    assert model.predict(np.ones((4, 4, 2))).dtype == np.float32


def test_backend_floatx_is_the_layers_default_dtype_and_clear_session_restarts_names():
    from cgru import backend
    try:
        backend.set_floatx("float64")
        assert GRU(2).dtype == np.float64 and Dense(1).dtype == np.float64
    finally:
        backend.set_floatx("float32")
    assert GRU(2).dtype == np.float32
    backend.clear_session()
    assert [GRU(2).name, GRU(2).name, Dense(1).name] == ["gru", "gru_1", "dense"]


def test_dense_passes_a_mask_on_like_keras():
    keras = pytest.importorskip("keras")
    from cgru.layers import Embedding, GlobalAveragePooling1D
    ids = np.array([[3, 5, 0, 0], [1, 0, 0, 0], [2, 2, 7, 1]])
    model = Sequential([Embedding(10, 4, mask_zero=True), Dense(3), GlobalAveragePooling1D()])
    k_model = keras.Sequential([keras.Input((4,), dtype="int32"),
                                keras.layers.Embedding(10, 4, mask_zero=True),
                                keras.layers.Dense(3), keras.layers.GlobalAveragePooling1D()])
    model.build((4,))
    model.set_weights(k_model.get_weights())
    np.testing.assert_allclose(model.predict(ids), k_model.predict(ids, verbose=0), atol=2e-6)

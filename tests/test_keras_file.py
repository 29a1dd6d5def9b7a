"""Keras 3 .keras and .weights.h5 files, both ways, against real Keras 3.

Files Keras writes are read by cgru and files cgru writes are opened by Keras; each side's
predictions (and optimizer state) are compared with the other's.
"""
import json
import os
import sys
import zipfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")

from cgru import GRU, Bidirectional, Dense, Dropout, Sequential  # noqa: E402
from cgru import keras_file  # noqa: E402
from cgru.keras_file import (load_keras_model, load_keras_weights,  # noqa: E402
                             save_keras_model, save_keras_weights)
from conftest import max_diff as _max_diff  # noqa: E402

TOL = 2e-6
T, F = 7, 3


def _x(batch=6, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((batch, T, F)).astype(dtype)


def _randomize(model, seed=1):
    """Non-zero values in every weight (biases included), so that layouts cannot hide."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    return model


def _keras_models():
    L = keras.layers
    return {
        "gru": lambda: [L.GRU(4)],
        "gru_sequences_backwards": lambda: [L.GRU(4, return_sequences=True,
                                                  go_backwards=True)],
        "gru_reset_before": lambda: [L.GRU(4, reset_after=False, return_sequences=True),
                                     L.GRU(5, reset_after=False)],
        "bidirectional_concat": lambda: [L.Bidirectional(L.GRU(3, return_sequences=True)),
                                         L.Dropout(0.3), L.Bidirectional(L.GRU(2))],
        "bidirectional_sum": lambda: [L.Bidirectional(L.GRU(3), merge_mode="sum")],
        "bidirectional_mul": lambda: [L.Bidirectional(L.GRU(3, return_sequences=True),
                                                      merge_mode="mul")],
        "bidirectional_ave": lambda: [L.Bidirectional(L.GRU(3, reset_after=False),
                                                      merge_mode="ave")],
        "dense_heads": lambda: [L.GRU(6, return_sequences=True), L.Dense(4, activation="relu"),
                                L.GRU(3), L.Dense(5, activation="tanh"),
                                L.Dense(2, activation="softmax")],
        "sigmoid_head": lambda: [L.GRU(4, dropout=0.2), L.Dense(1, activation="sigmoid")],
        # the activations cgru's cell computes go both ways, inside Bidirectional too
        "gru_activations": lambda: [
            L.GRU(4, activation="relu", recurrent_activation="hard_sigmoid",
                  return_sequences=True),
            L.Bidirectional(L.GRU(3, activation="gelu", recurrent_activation="swish",
                                  reset_after=False))],
        # a GRU without biases reads as zero biases (exact); Dense keeps use_bias=False
        "no_bias": lambda: [L.GRU(4, use_bias=False, return_sequences=True),
                            L.GRU(3, use_bias=False, reset_after=False),
                            L.Dense(2, use_bias=False)],
    }


@pytest.mark.parametrize("name", sorted(_keras_models()))
def test_keras_saved_model_loads_and_predicts_the_same(name, tmp_path):
    kmodel = keras.Sequential([keras.Input((T, F))] + _keras_models()[name]())
    _randomize(kmodel)
    path = tmp_path / "m.keras"
    kmodel.save(path)
    model = load_keras_model(path)
    assert isinstance(model, Sequential)
    x = _x()
    assert _max_diff(model.predict(x), kmodel.predict(x, verbose=0)) < TOL


@pytest.mark.parametrize("name", sorted(_keras_models()))
def test_cgru_saved_model_opens_in_keras(name, tmp_path):
    kmodel = keras.Sequential([keras.Input((None, F))] + _keras_models()[name]())
    # the cgru model is built from the Keras one's file, then re-weighted and written back
    kmodel.save(tmp_path / "k.keras")
    model = _randomize(load_keras_model(tmp_path / "k.keras"), seed=2)
    path = tmp_path / "c.keras"
    assert save_keras_model(model, path) == path
    reopened = keras.models.load_model(path)
    x = _x(seed=3)
    assert _max_diff(reopened.predict(x, verbose=0), model.predict(x)) < TOL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.keras", "k.keras"]


def test_cgru_built_model_round_trips_through_keras(tmp_path):
    model = _randomize(Sequential([
        GRU(5, return_sequences=True, input_shape=(None, F), seed=1),
        Dropout(0.1),
        Bidirectional(GRU(4, go_backwards=False, reset_after=False, seed=2), merge_mode="ave"),
        Dense(3, activation="softmax", seed=3)]), seed=4)
    save_keras_model(model, tmp_path / "m.keras")
    kmodel = keras.models.load_model(tmp_path / "m.keras")
    x = _x(batch=9, seed=5)
    assert _max_diff(kmodel.predict(x, verbose=0), model.predict(x)) < TOL
    again = load_keras_model(tmp_path / "m.keras")
    assert _max_diff(again.predict(x), model.predict(x)) == 0.0
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        assert sorted(archive.namelist()) == ["config.json", "metadata.json",
                                              "model.weights.h5"]
        config = json.loads(archive.read("config.json"))
    assert [layer["class_name"] for layer in config["config"]["layers"]] == \
        ["InputLayer", "GRU", "Dropout", "Bidirectional", "Dense"]


def test_float64_model_both_ways(tmp_path):
    kmodel = keras.Sequential([keras.Input((T, F), dtype="float64"),
                               keras.layers.GRU(4, dtype="float64"),
                               keras.layers.Dense(2, dtype="float64")])
    _randomize(kmodel)
    kmodel.save(tmp_path / "k.keras")
    model = load_keras_model(tmp_path / "k.keras")
    assert model.layers[0].dtype == np.float64
    x = _x(dtype=np.float64)
    # Keras's predict casts arrays to float32 (floatx); calling the model keeps float64
    assert _max_diff(model.predict(x), np.asarray(kmodel(x))) < 1e-12
    save_keras_model(model, tmp_path / "c.keras")
    reopened = keras.models.load_model(tmp_path / "c.keras")
    assert _max_diff(np.asarray(reopened(x)), model.predict(x)) < 1e-12


# ---------------------------------------------------------------------------------------------
# optimizer state and compile settings
# ---------------------------------------------------------------------------------------------
OPTIMIZERS = {
    "adam": lambda m: m.Adam(learning_rate=0.01),
    "sgd_momentum": lambda m: m.SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
    "rmsprop_momentum_centered": lambda m: m.RMSprop(learning_rate=0.01, momentum=0.5,
                                                     centered=True),
}


def _classification_data(seed=0):
    rng = np.random.default_rng(seed)
    return _x(batch=16, seed=seed), np.eye(3, dtype=np.float32)[rng.integers(0, 3, 16)]


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_keras_optimizer_state_is_restored(optimizer, tmp_path):
    kmodel = keras.Sequential([keras.Input((T, F)), keras.layers.GRU(4),
                               keras.layers.Dense(3, activation="softmax")])
    # run_eagerly: tracing the training step costs more than these few steps (the compile
    # setting changes no number)
    kmodel.compile(optimizer=OPTIMIZERS[optimizer](keras.optimizers),
                   loss="categorical_crossentropy", metrics=["accuracy"], run_eagerly=True)
    x, y = _classification_data()
    kmodel.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    kmodel.save(tmp_path / "m.keras")
    model = load_keras_model(tmp_path / "m.keras")
    assert model.optimizer.iterations == int(kmodel.optimizer.iterations) == 4
    assert type(model.optimizer).__name__ == type(kmodel.optimizer).__name__
    # the model was trained by the reloaded state: one more epoch on both sides agrees
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    kmodel.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for mine, theirs in zip(model.get_weights(), kmodel.get_weights()):
        assert _max_diff(mine, theirs) < 1e-5


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_cgru_optimizer_state_opens_in_keras(optimizer, tmp_path):
    from cgru import optimizers
    model = Sequential([GRU(4, input_shape=(T, F), seed=1),
                        Dense(3, activation="softmax", seed=2)])
    model.compile(optimizer=OPTIMIZERS[optimizer](optimizers),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    x, y = _classification_data(seed=1)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    save_keras_model(model, tmp_path / "m.keras")
    kmodel = keras.models.load_model(tmp_path / "m.keras")
    kmodel.run_eagerly = True  # as above: faster for a few steps, the same numbers
    assert int(kmodel.optimizer.iterations) == 4
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    kmodel.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for mine, theirs in zip(model.get_weights(), kmodel.get_weights()):
        assert _max_diff(mine, theirs) < 1e-5


def test_compile_false_skips_the_optimizer(tmp_path):
    kmodel = keras.Sequential([keras.Input((T, F)), keras.layers.GRU(2)])
    kmodel.compile(optimizer="adam", loss="mse")
    kmodel.save(tmp_path / "m.keras")
    assert not load_keras_model(tmp_path / "m.keras", compile=False).compiled
    assert load_keras_model(tmp_path / "m.keras").compiled


# ---------------------------------------------------------------------------------------------
# .weights.h5
# ---------------------------------------------------------------------------------------------
def _pair():
    kmodel = keras.Sequential([keras.Input((T, F)),
                               keras.layers.Bidirectional(keras.layers.GRU(3,
                                                          return_sequences=True)),
                               keras.layers.GRU(4, reset_after=False),
                               keras.layers.Dense(2)])
    model = Sequential([Bidirectional(GRU(3, return_sequences=True), input_shape=(T, F)),
                        GRU(4, reset_after=False), Dense(2)])
    return kmodel, model


def test_keras_weights_file_loads_into_cgru(tmp_path):
    kmodel, model = _pair()
    _randomize(kmodel, seed=6)
    kmodel.save_weights(tmp_path / "k.weights.h5")
    load_keras_weights(model, tmp_path / "k.weights.h5")
    x = _x(seed=7)
    assert _max_diff(model.predict(x), kmodel.predict(x, verbose=0)) < TOL


def test_cgru_weights_file_loads_into_keras(tmp_path):
    kmodel, model = _pair()
    _randomize(model, seed=8)
    save_keras_weights(model, tmp_path / "c.weights.h5")
    kmodel.load_weights(tmp_path / "c.weights.h5")
    x = _x(seed=9)
    assert _max_diff(kmodel.predict(x, verbose=0), model.predict(x)) < TOL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.weights.h5"]


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    kmodel = keras.Sequential([keras.Input((T, F)), keras.layers.GRU(5)])
    kmodel.save_weights(tmp_path / "k.weights.h5")
    model = Sequential([GRU(4, input_shape=(T, F))])
    with pytest.raises(ValueError, match=r"layers/gru/cell/vars.*\(3, 15\).*\(3, 12\)"):
        load_keras_weights(model, tmp_path / "k.weights.h5")
    other = Sequential([Dense(4, input_shape=(F,))])
    with pytest.raises(ValueError, match="no weights for layer"):
        load_keras_weights(other, tmp_path / "k.weights.h5")


# ---------------------------------------------------------------------------------------------
# what cgru cannot read gets an error naming it
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layers, match", [
    (lambda L: [L.LSTM(3)], r"'LSTM' has no cgru equivalent"),
    (lambda L: [L.GRU(3, activation="softplus")], "activation='softplus'"),
    (lambda L: [L.GRU(3), L.Dense(2, activation="gelu")], "activation='gelu'"),
    (lambda L: [L.Bidirectional(L.LSTM(3))], "LSTM"),
])
def test_unsupported_keras_layers_are_named(layers, match, tmp_path):
    kmodel = keras.Sequential([keras.Input((T, F))] + layers(keras.layers))
    kmodel.save(tmp_path / "m.keras")
    with pytest.raises(NotImplementedError, match=match):
        load_keras_model(tmp_path / "m.keras")


def test_regularizers_constraints_use_bias_and_trainable_both_ways(tmp_path):
    import cgru
    from cgru import constraints, regularizers
    kmodel = keras.Sequential([
        keras.Input((T, F)),
        keras.layers.GRU(3, use_bias=False, return_sequences=True,
                         kernel_regularizer=keras.regularizers.L2(0.02),
                         recurrent_constraint=keras.constraints.MaxNorm(1.5, axis=1),
                         activity_regularizer=keras.regularizers.L1(0.01)),
        keras.layers.GRU(2, trainable=False),
        keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L1L2(0.01, 0.03),
                           bias_constraint=keras.constraints.NonNeg())])
    kmodel.save(tmp_path / "k.keras")
    model = cgru.models.load_model(tmp_path / "k.keras")
    gru, frozen, dense = model.layers
    assert not gru.use_bias and gru.kernel_regularizer.l2 == pytest.approx(0.02)
    assert gru.recurrent_constraint.max_value == 1.5 and gru.recurrent_constraint.axis == 1
    assert isinstance(gru.activity_regularizer, regularizers.L1) and not frozen.trainable
    assert (dense.kernel_regularizer.l1, dense.kernel_regularizer.l2) == pytest.approx(
        (0.01, 0.03))
    assert isinstance(dense.bias_constraint, constraints.NonNeg)
    x = np.random.default_rng(0).standard_normal((4, T, F)).astype(np.float32)
    assert _max_diff(model.predict(x), kmodel.predict(x, verbose=0)) < 2e-6
    model.save(tmp_path / "c.keras")
    again = keras.models.load_model(tmp_path / "c.keras")
    k_gru = again.layers[0]
    assert not k_gru.use_bias and float(k_gru.kernel_regularizer.l2) == pytest.approx(0.02)
    assert float(k_gru.recurrent_constraint.max_value) == 1.5
    assert not again.layers[1].trainable
    assert _max_diff(again.predict(x, verbose=0), model.predict(x)) < 2e-6


def test_a_model_class_other_than_sequential_or_functional_is_refused(tmp_path):
    inputs = keras.Input((T, F))
    kmodel = keras.Model(inputs, keras.layers.GRU(2)(inputs))
    kmodel.save(tmp_path / "m.keras")
    # the functional model reads (tests/test_keras_file_functional.py); a model class whose
    # call() is code is refused, naming what cgru reads
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    config = json.loads(members["config.json"])
    config["class_name"] = "MyModel"
    config["config"] = {"name": "my_model"}
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "sub.keras", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(NotImplementedError, match="Sequential and functional models"):
        load_keras_model(tmp_path / "sub.keras")


def test_not_a_keras_file(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable Keras 3 .keras file"):
        load_keras_model(path)


def test_writer_errors_leave_no_file(tmp_path):
    unbuilt = Sequential([GRU(3)])
    with pytest.raises(ValueError, match="not built"):
        save_keras_model(unbuilt, tmp_path / "m.keras")
    assert list(tmp_path.iterdir()) == []


def test_missing_h5py_is_a_clear_import_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "h5py", None)
    model = Sequential([GRU(3, input_shape=(T, F))])
    with pytest.raises(ImportError, match=r"pip install .*h5py"):
        save_keras_model(model, tmp_path / "m.keras")
    with pytest.raises(ImportError, match="h5py"):
        load_keras_weights(model, tmp_path / "m.weights.h5")


# ---------------------------------------------------------------------------------------------
# the dispatch that model.save / load_model / save_weights / load_weights use
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, model_file, weights_file", [
    ("m.keras", True, False), ("dir/m.weights.h5", False, True),
    ("m.cgru", False, False), ("m.h5", False, False), ("keras", False, False),
])
def test_path_dispatch(path, model_file, weights_file, tmp_path):
    assert keras_file.is_keras_model_path(path) is model_file
    assert keras_file.is_keras_weights_path(tmp_path / path) is weights_file


def test_unbuilt_keras_model_loads_unbuilt(tmp_path):
    kmodel = keras.Sequential([keras.layers.GRU(3), keras.layers.Dense(1)])
    kmodel.save(tmp_path / "m.keras")
    model = load_keras_model(tmp_path / "m.keras")
    assert not model.built
    assert [type(layer).__name__ for layer in model.layers] == ["GRU", "Dense"]


def test_model_save_and_load_model_choose_the_format_by_name(tmp_path):
    import cgru
    from cgru import GRU, Dense, Sequential
    from cgru.callbacks import ModelCheckpoint
    model = Sequential([GRU(3, input_shape=(T, F)), Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).standard_normal((8, T, F)).astype(np.float32)
    model.fit(x, np.ones((8, 1)), epochs=2, verbose=0,
              callbacks=[ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.keras"))])
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    for name in ("m.keras", "ckpt-2.keras"):
        assert zipfile.is_zipfile(tmp_path / name)
        kmodel = keras.models.load_model(tmp_path / name)
        assert _max_diff(kmodel.predict(x, verbose=0), model.predict(x)) < 2e-6
        assert _max_diff(cgru.load_model(tmp_path / name).predict(x), model.predict(x)) < 2e-6
    other = Sequential([GRU(3, input_shape=(T, F)), Dense(1)])
    other.load_weights(tmp_path / "m.weights.h5")
    assert _max_diff(other.predict(x), model.predict(x)) == 0
    for name in ("m.h5", "m.hdf5"):        # never cgru's format under a Keras name
        with pytest.raises(ValueError, match="Legacy Keras .h5"):
            model.save(tmp_path / name)
    assert sorted(os.listdir(tmp_path)) == ["ckpt-1.keras", "ckpt-2.keras", "m.keras",
                                            "m.weights.h5"]


def test_loss_options_and_metric_objects_go_to_keras(tmp_path):
    from cgru import losses, metrics
    model = Sequential([GRU(3, input_shape=(T, F)), Dense(1)])
    model.compile(optimizer="adam", loss=losses.Huber(delta=0.5),
                  metrics=[metrics.RootMeanSquaredError(), "mae"])
    model.save(tmp_path / "m.keras")
    kmodel = keras.models.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).standard_normal((4, T, F)).astype(np.float32)
    y = np.ones((4, 1), np.float32)
    # errors near 1 exceed delta: the values differ unless delta=0.5 reached Keras
    np.testing.assert_allclose(kmodel.evaluate(x, y, verbose=0), model.evaluate(x, y),
                               rtol=1e-5)

"""Functional models in Keras 3 files, both ways, against real Keras 3.

A functional model's ``.keras`` config lists every layer with the calls that built the graph
(``inbound_nodes``, each input named by ``keras_history``: layer, call, output) and the
model's ``input_layers`` / ``output_layers``; its weights file has one group per layer of
``model.layers`` (InputLayers and merging layers included, with empty ``vars``). Each side
opens the other's file: same predictions, the same compile settings (History's names) and
optimizer state, so that training goes on alike.
"""
import json
import os
import zipfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")

import cgru  # noqa: E402
from cgru import layers as CL  # noqa: E402

TOL = 2e-6


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = {"seq": rng.standard_normal((n, 5, 3)).astype(np.float32),
         "vec": rng.standard_normal((n, 4)).astype(np.float32)}
    y = [rng.integers(0, 3, n), rng.standard_normal((n, 2)).astype(np.float32)]
    return x, y


def _build(lib, L):
    """Two inputs by name, a GRU and a Dense joined by Concatenate, a Dense called twice
    (shared), two outputs with their own losses, loss weights, metrics, weighted metrics."""
    seq = lib.Input(shape=(5, 3), name="seq")
    vec = lib.Input(shape=(4,), name="vec")
    joined = L.Concatenate()([L.GRU(6)(seq), L.Dense(4, activation="tanh")(vec)])
    shared = L.Dense(10, name="shared")
    once = shared(joined)
    twice = shared(once)
    outputs = [L.Dense(3, activation="softmax", name="classes")(twice),
               L.Dense(2, name="values")(L.Add()([once, twice]))]
    model = lib.Model({"seq": seq, "vec": vec}, outputs)
    model.compile(optimizer=lib.optimizers.Adam(0.01),
                  loss=["sparse_categorical_crossentropy", "mse"], loss_weights=[1.0, 0.5],
                  metrics={"classes": ["accuracy"]}, weighted_metrics={"values": ["mae"]})
    return model


def _close(a, b, tol=TOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=0, atol=tol)


def _check_same(cgru_model, keras_model, x, y):
    """Same layers, weights and predictions; then one more epoch on each: same History
    (names and values) and weights, so the optimizer state went across too."""
    assert [l.name for l in cgru_model.layers] == [l.name for l in keras_model.layers]
    for a, b in zip(cgru_model.get_weights(), keras_model.get_weights()):
        _close(a, b)
    for a, b in zip(cgru_model.predict(x), keras_model.predict(x, verbose=0)):
        _close(a, b)
    h_cgru = cgru_model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0).history
    h_keras = keras_model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0).history
    assert set(h_cgru) == set(h_keras) == {"loss", "classes_loss", "values_loss",
                                           "classes_accuracy", "values_mae"}
    for key, values in h_keras.items():
        _close(h_cgru[key], values, 1e-5)
    for a, b in zip(cgru_model.get_weights(), keras_model.get_weights()):
        _close(a, b, 1e-5)


def test_a_functional_model_cgru_writes_is_the_model_keras_opens(tmp_path):
    x, y = _data()
    model = _build(cgru, CL)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)       # optimizer state to carry over
    model.save(tmp_path / "c.keras")
    with zipfile.ZipFile(tmp_path / "c.keras") as archive:
        config = json.loads(archive.read("config.json"))
    assert config["class_name"] == "Functional"
    assert config["config"]["input_layers"] == {"seq": ["seq", 0, 0], "vec": ["vec", 0, 0]}
    assert config["config"]["output_layers"] == [["classes", 0, 0], ["values", 0, 0]]
    loaded = keras.models.load_model(tmp_path / "c.keras")
    assert loaded.optimizer.iterations.numpy() == model.optimizer.iterations == 4
    _check_same(model, loaded, x, y)


def test_a_functional_model_keras_writes_is_the_model_cgru_opens(tmp_path):
    x, y = _data(seed=1)
    kmodel = _build(keras, keras.layers)
    kmodel.fit(x, y, batch_size=4, epochs=2, verbose=0)
    kmodel.save(tmp_path / "k.keras")
    model = cgru.load_model(tmp_path / "k.keras")
    assert isinstance(model, cgru.Model) and not isinstance(model, cgru.Sequential)
    assert model.output_names == ["classes", "values"]
    assert model.optimizer.iterations == 4
    _check_same(model, kmodel, x, y)
    # and back: the file cgru writes from it opens in Keras as the same model
    model.save(tmp_path / "again.keras")
    again = keras.models.load_model(tmp_path / "again.keras")
    for a, b in zip(model.predict(x), again.predict(x, verbose=0)):
        _close(a, b)


def test_functional_weights_files_both_ways(tmp_path):
    x, _ = _data(seed=2)
    kmodel, model = _build(keras, keras.layers), _build(cgru, CL)
    kmodel.save_weights(tmp_path / "k.weights.h5")
    model.load_weights(tmp_path / "k.weights.h5")
    for a, b in zip(model.predict(x), kmodel.predict(x, verbose=0)):
        _close(a, b)
    fresh = _build(cgru, CL)
    model.save_weights(tmp_path / "c.weights.h5")
    other = _build(keras, keras.layers)
    other.load_weights(tmp_path / "c.weights.h5")
    for a, b in zip(fresh.predict(x), other.predict(x, verbose=0)):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3  # different weights before
    for a, b in zip(model.predict(x), other.predict(x, verbose=0)):
        _close(a, b)


def test_a_single_input_model_with_an_embedding_mask_op_reads_as_keras_built_it(tmp_path):
    """Keras records the mask an Embedding(mask_zero=True) computes as an op layer
    (``not_equal``) passed as ``mask=``; cgru passes masks along its graph itself, so the op
    is left out and the model predicts as Keras's."""
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    embedded = keras.layers.Embedding(10, 4, mask_zero=True)(ids)
    pooled = keras.layers.GlobalAveragePooling1D()(embedded)
    kmodel = keras.Model(ids, keras.layers.Dense(2)(pooled))
    kmodel.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        names = [e["name"] for e in json.loads(archive.read("config.json"))["config"]["layers"]]
    model = cgru.load_model(tmp_path / "m.keras")
    assert len(model.layers) < len(names)              # the op is not a cgru layer
    x = np.random.default_rng(3).integers(1, 10, (6, 7))
    x[:, 4:] = 0                                       # padding the mask leaves out
    _close(model.predict(x), kmodel.predict(x, verbose=0))
    model.save(tmp_path / "again.keras")
    again = keras.models.load_model(tmp_path / "again.keras")
    _close(again.predict(x, verbose=0), kmodel.predict(x, verbose=0))


def test_what_a_functional_keras_file_cannot_hold_raises_clearly(tmp_path):
    seq = cgru.Input(batch_shape=(2, 5, 3))
    model = cgru.Model(seq, cgru.GRU(4, stateful=True)(seq))
    with pytest.raises(NotImplementedError, match="stateful"):
        model.save(tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()


def test_loss_weights_and_weighted_metrics_go_across_for_a_sequential_too(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 5, 3)).astype(np.float32)
    y = rng.standard_normal((8, 2)).astype(np.float32)
    model = cgru.Sequential([cgru.GRU(4, input_shape=(5, 3)), cgru.Dense(2)])
    model.compile(optimizer="adam", loss="mse", loss_weights=0.5, metrics=["mse"],
                  weighted_metrics=["mae"])
    model.fit(x, y, batch_size=4, verbose=0)
    model.save(tmp_path / "s.keras")
    kmodel = keras.models.load_model(tmp_path / "s.keras")
    config = kmodel.get_compile_config()
    assert config["loss_weights"] == 0.5 and config["weighted_metrics"] == ["mae"]
    h_cgru = model.fit(x, y, batch_size=4, shuffle=False, verbose=0).history
    h_keras = kmodel.fit(x, y, batch_size=4, shuffle=False, verbose=0).history
    assert set(h_cgru) == set(h_keras) == {"loss", "mse", "mae"}
    for key, values in h_keras.items():
        _close(h_cgru[key], values, 1e-5)
    kmodel.save(tmp_path / "k.keras")
    again = cgru.load_model(tmp_path / "k.keras")
    assert again._loss_weights == [0.5] and again._output_weighted_metrics == [["mae"]]

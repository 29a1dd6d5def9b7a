import os
import zipfile

import numpy as np
import pytest

import cgru
from cgru import GRU, Bidirectional, Dense, Dropout, Sequential, load_model
from cgru.callbacks import ModelCheckpoint
from cgru.optimizers import Adam, RMSprop


def _model():
    model = Sequential([Bidirectional(GRU(6, return_sequences=True, dropout=0.1, seed=1),
                                      input_shape=(7, 3)),
                        GRU(5, reset_after=False, seed=2), Dropout(0.2, seed=3),
                        Dense(1, activation="sigmoid", seed=4)], seed=5)
    model.compile(loss="binary_crossentropy", optimizer=Adam(0.01, clipnorm=1.0),
                  metrics=["accuracy"])
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 7, 3)).astype(np.float32)
    return x, (x[:, 0, 0] > 0).astype(np.float32)


def test_save_load_roundtrip(tmp_path):
    x, y = _data()
    model = _model()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert [type(layer).__name__ for layer in loaded.layers] == \
        ["Bidirectional", "GRU", "Dropout", "Dense"]
    assert loaded.layers[1].reset_after is False
    assert isinstance(loaded.optimizer, Adam) and loaded.optimizer.clipnorm == 1.0
    assert loaded.optimizer.iterations == model.optimizer.iterations == 4
    assert loaded.loss.name == "binary_crossentropy" and loaded._metric_names == ["accuracy"]
    for a, b in zip(loaded.optimizer.variables(), model.optimizer.variables()):
        np.testing.assert_array_equal(a, b)
    with zipfile.ZipFile(path) as z:  # one plain archive, no pickles
        assert all(name.endswith(".npy") for name in z.namelist())


def test_resumed_training_is_bit_identical(tmp_path):
    x, y = _data()
    straight = _model()
    straight.fit(x, y, epochs=4, batch_size=16, verbose=0)

    first = _model()
    first.fit(x, y, epochs=2, batch_size=16, verbose=0)
    first.save(tmp_path / "half.npz")
    resumed = load_model(tmp_path / "half.npz")
    resumed.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_resume_with_initial_epoch(tmp_path):
    x, y = _data()
    straight = _model()
    straight.fit(x, y, epochs=3, batch_size=16, verbose=0)
    model = _model()
    ckpt = str(tmp_path / "ckpt-{epoch:02d}.npz")
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[ModelCheckpoint(ckpt)])
    assert sorted(os.listdir(tmp_path)) == ["ckpt-01.npz", "ckpt-02.npz", "ckpt-03.npz"]
    resumed = load_model(tmp_path / "ckpt-01.npz")
    h = resumed.fit(x, y, epochs=3, initial_epoch=1, batch_size=16, verbose=0)
    assert len(h.history["loss"]) == 2
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_uncompiled_and_rmsprop_models_roundtrip(tmp_path):
    model = Sequential([GRU(3, input_shape=(None, 2)), Dense(2, activation="softmax")])
    model.save(tmp_path / "plain.npz")
    loaded = load_model(tmp_path / "plain.npz")
    assert not loaded.compiled
    x = np.random.default_rng(0).standard_normal((4, 9, 2))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    model.compile(optimizer=RMSprop(0.002, rho=0.8), loss="sparse_categorical_crossentropy")
    model.save(tmp_path / "rms.npz")
    opt = load_model(tmp_path / "rms.npz").optimizer
    assert isinstance(opt, RMSprop) and opt.rho == 0.8 and opt.learning_rate == 0.002
    assert opt.iterations == 0


def test_corrupt_and_foreign_files_raise_clear_errors(tmp_path):
    model = _model()
    path = tmp_path / "m.npz"
    model.save(path)
    data = path.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.npz").write_text("hello")
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    np.save(tmp_path / "bare.npy", np.zeros(3))
    for name in ["truncated.npz", "text.npz", "foreign.npz", "bare.npy"]:
        with pytest.raises(ValueError, match="cgru"):
            load_model(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")
    model.save_weights(tmp_path / "w.npz")
    with pytest.raises(ValueError, match="cgru.model"):
        load_model(tmp_path / "w.npz")


def test_failed_save_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    model = _model()
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(cgru.saving.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]


def test_weights_only_roundtrip(tmp_path):
    a, b = _model(), _model()
    b.set_weights([w + 1 for w in b.get_weights()])
    a.save_weights(tmp_path / "w.npz")
    b.load_weights(tmp_path / "w.npz")
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_a_file_of_format_version_1_loads_and_resumes(tmp_path):
    """tests/data/model_v1.npz was written by cgru 0.1.0 (weights and Adam's slots in Keras's
    layout) after 2 epochs; model_v1_resumed.npz holds the data and what 2 more epochs gave
    there. The optimizer's slots are converted to the layers' layout on loading."""
    data_dir = os.path.join(os.path.dirname(__file__), "data")
    model = load_model(os.path.join(data_dir, "model_v1.npz"))
    with np.load(os.path.join(data_dir, "model_v1_resumed.npz")) as ref:
        x, y, expected_predict = ref["x"], ref["y"], ref["predict"]
        expected = [ref[f"arr_{i}"] for i in range(len(model.get_weights()))]
    assert model.optimizer.iterations == 6
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for w, e in zip(model.get_weights(), expected):
        np.testing.assert_allclose(w, e, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x), expected_predict, rtol=1e-5, atol=1e-6)

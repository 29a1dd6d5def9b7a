import io
import sys

import numpy as np
import pytest

from cgru import GRU, Bidirectional, Dense, Dropout, Sequential
from cgru.optimizers import Adam


def _data(n=64, T=10, I=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, T, I))
    return x, (x[:, 0, 0] > 0).astype(np.int64)


def _seed_model(seed=0):
    model = Sequential(seed=seed)
    model.add(GRU(units=32, input_shape=(10, 20), seed=seed))
    model.add(Dense(units=1, activation="sigmoid", seed=seed))
    return model


def test_issue_seed_example_runs_and_summary(capsys):
    x_train, y_train = _data()  # float64 x, int64 y: cast to the float32 model
    model = Sequential()
    model.add(GRU(units=32, input_shape=(10, 20)))
    model.add(Dense(units=1, activation='sigmoid'))
    model.compile(loss='binary_crossentropy', optimizer='adam', metrics=['accuracy'])
    history = model.fit(x_train, y_train, epochs=10, batch_size=32)
    assert sorted(history.history) == ["accuracy", "loss"]
    assert len(history.history["loss"]) == 10
    assert all(w.dtype == np.float32 for w in model.get_weights())
    capsys.readouterr()
    model.summary()
    text = capsys.readouterr().out
    assert "5,217" in text
    gru_line = next(line for line in text.splitlines() if "(GRU)" in line)
    dense_line = next(line for line in text.splitlines() if "(Dense)" in line)
    assert gru_line.split()[-1] == "5184" and "(None, 32)" in gru_line
    assert dense_line.split()[-1] == "33" and "(None, 1)" in dense_line


def test_built_on_add_with_input_shape_and_lazily_otherwise():
    assert _seed_model().built
    lazy = Sequential([GRU(4), Dense(1)])
    assert not lazy.built
    lazy.compile(loss="mse")
    lazy.fit(np.zeros((3, 5, 2)), np.zeros((3, 1)), verbose=0)
    assert lazy.built and lazy.count_params() == 3 * (2 * 4 + 4 * 4 + 2 * 4) + 5


def test_bad_inputs_raise_before_any_training_step():
    model = _seed_model()
    model.compile(loss="binary_crossentropy", optimizer="adam")
    before = model.get_weights()
    x, y = _data()
    with pytest.raises(ValueError, match=r"\(None, 10, 20\).*\(64, 10, 3\)"):
        model.fit(x[..., :3], y, verbose=0)
    with pytest.raises(ValueError, match=r"x has 64 samples.*\(63,\)"):
        model.fit(x, y[:-1], verbose=0)
    with pytest.raises(ValueError, match=r"\(64, 2\).*\(64, 1\)"):
        model.fit(x, np.zeros((64, 2)), verbose=0)
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(x, y, validation_data=(x[:5, :, :3], y[:5]), verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(TypeError, match="numeric"):
        model.fit(x, np.array(["a"] * 64), verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 0


def test_sparse_label_checks():
    model = Sequential([GRU(3, input_shape=(4, 2)), Dense(3, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.zeros((5, 4, 2))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model.fit(x, np.array([0, 1, 2, 3, 0]), verbose=0)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        model.fit(x, np.zeros((5, 3)), verbose=0)


def test_fit_requires_compile():
    with pytest.raises(RuntimeError, match="compile"):
        _seed_model().fit(*_data(), verbose=0)


def test_validation_split_takes_last_fraction_before_shuffling():
    x, y = _data(40)
    model = _seed_model()
    model.compile(loss="binary_crossentropy", optimizer=Adam(0.01), metrics=["accuracy"])
    h = model.fit(x, y, epochs=1, batch_size=8, validation_split=0.25, verbose=0)
    loss, acc = model.evaluate(x[30:], y[30:], batch_size=8)
    assert h.history["val_loss"][0] == pytest.approx(loss, rel=1e-6)
    assert h.history["val_accuracy"][0] == pytest.approx(acc)
    assert model.optimizer.iterations == 4  # 30 training samples in batches of 8


def test_epoch_loss_is_sample_weighted_mean_of_batch_losses_before_updates():
    x, y = _data(20)
    model = _seed_model()
    model.compile(loss="binary_crossentropy", optimizer=Adam(0.05))
    ref = _seed_model()
    ref.set_weights(model.get_weights())
    ref.compile(loss="binary_crossentropy", optimizer=Adam(0.05))
    h = model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    expected = 0.0
    for s in (slice(0, 8), slice(8, 16), slice(16, 20)):
        expected += ref.evaluate(x[s], y[s]) * len(y[s])
        ref._train_step(x[s].astype(np.float32), y[s].astype(np.float32))
    assert h.history["loss"][0] == pytest.approx(expected / 20, rel=1e-6)
    for a, b in zip(model.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_seeded_shuffling_is_reproducible_and_shuffles():
    x, y = _data(40)
    runs = []
    for shuffle in (True, True, False):
        model = _seed_model(seed=5)
        model.compile(loss="binary_crossentropy", optimizer="sgd")
        model.fit(x, y, epochs=2, batch_size=8, shuffle=shuffle, verbose=0)
        runs.append(model.get_weights())
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert not np.array_equal(runs[0][0], runs[2][0])


@pytest.mark.parametrize("stack", ["gru_gru_dense", "bidirectional_dense", "dropout",
                                   "sequence_dense"])
def test_stacks_train(stack):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8, 3)).astype(np.float32)
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.float32)
    if stack == "gru_gru_dense":
        layers = [GRU(8, return_sequences=True, input_shape=(8, 3), seed=1), GRU(8, seed=1),
                  Dense(1, activation="sigmoid", seed=1)]
    elif stack == "bidirectional_dense":
        layers = [Bidirectional(GRU(8, seed=1), input_shape=(8, 3)),
                  Dense(1, activation="sigmoid", seed=1)]
    elif stack == "dropout":
        layers = [GRU(8, dropout=0.1, input_shape=(8, 3), seed=1), Dropout(0.2, seed=1),
                  Dense(1, activation="sigmoid", seed=1)]
    else:
        layers = [GRU(8, return_sequences=True, input_shape=(8, 3), seed=1),
                  Dense(1, activation="sigmoid", seed=1)]
        y = (np.cumsum(x[:, :, 0], axis=1) > 0).astype(np.float32)[..., None]
    model = Sequential(layers, seed=0)
    model.compile(loss="binary_crossentropy", optimizer=Adam(0.02), metrics=["accuracy"])
    h = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < 0.8 * h.history["loss"][0]
    assert model.predict(x).shape == ((64, 8, 1) if stack == "sequence_dense" else (64, 1))


def test_sequential_rejects_multi_output_and_2d_into_gru():
    with pytest.raises(ValueError, match="return_state"):
        Sequential([GRU(3, return_state=True)])
    with pytest.raises(ValueError, match="return_sequences=True"):
        Sequential([GRU(3, input_shape=(4, 2)), GRU(3)])


def test_nan_loss_stops_training_with_message(capsys):
    x, y = _data(40)
    x[20, 3, 1] = np.nan
    model = _seed_model()
    model.compile(loss="binary_crossentropy", optimizer="adam")
    with pytest.warns(RuntimeWarning, match="Invalid loss"):
        h = model.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    assert len(h.history["loss"]) == 1 and np.isnan(h.history["loss"][0])
    assert model.optimizer.iterations == 2  # the batch with the NaN was not applied
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_evaluate_and_predict():
    x, y = _data(37)
    model = _seed_model()
    model.compile(loss="binary_crossentropy", metrics=["accuracy"])
    loss, acc = model.evaluate(x, y, batch_size=10)
    p = model.predict(x, batch_size=10)
    assert p.shape == (37, 1) and p.dtype == np.float32
    eps = 1e-7
    pc = np.clip(p[:, 0].astype(np.float64), eps, 1 - eps)
    expected = -np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    assert loss == pytest.approx(expected, rel=1e-5)
    assert acc == pytest.approx(np.mean((p[:, 0] > 0.5) == y))
    np.testing.assert_allclose(p, model.predict(x, batch_size=37), atol=1e-6)  # GEMM blocking
    model.compile(loss="binary_crossentropy")
    assert isinstance(model.evaluate(x, y), float)


def _fit_output(verbose, tty):
    class Stream(io.StringIO):
        def isatty(self):
            return tty
    x, y = _data(40)
    model = _seed_model()
    model.compile(loss="binary_crossentropy", metrics=["accuracy"])
    out, old = Stream(), sys.stdout
    sys.stdout = out
    try:
        model.fit(x, y, epochs=2, batch_size=8, verbose=verbose)
    finally:
        sys.stdout = old
    return out.getvalue()


def test_verbose_modes():
    assert _fit_output(0, tty=True) == ""
    # verbose=2, as Keras 3: an "Epoch i/N" header (when epochs > 1), then one line, no bar
    v2 = _fit_output(2, tty=False).splitlines()
    assert v2[0::2] == ["Epoch 1/2", "Epoch 2/2"] and len(v2) == 4
    assert all(line.startswith("5/5 - ") and "/step - loss:" in line and "[" not in line
               for line in v2[1::2])
    plain = _fit_output(1, tty=False)
    assert "\r" not in plain and "\x1b" not in plain
    assert "Epoch 1/2" in plain and "ETA:" in plain and "- accuracy:" in plain
    tty = _fit_output(1, tty=True)
    assert "\r" in tty and tty.count("\n") == 4  # two epoch headers, two finished bars

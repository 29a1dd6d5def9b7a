"""Callbacks against real Keras 3: the hooks and their order, and each callback's effect."""
import csv
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

import cgru  # noqa: E402
from cgru import GRU, Dense, Sequential, callbacks  # noqa: E402
from cgru import optimizers as copt  # noqa: E402

T, I, N = 5, 3, 20


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, T, I)).astype(np.float32)
    return x, (x[:, 0, 0] > 0).astype(np.float32)


def _twins(optimizer=lambda m: m.SGD(0.1)):
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([keras.Input((T, I)), keras.layers.GRU(3),
                                keras.layers.Dense(1, activation="sigmoid")])
    c_model = Sequential([GRU(3, input_shape=(T, I)), Dense(1, activation="sigmoid")])
    c_model.set_weights(k_model.get_weights())
    k_model.compile(optimizer=optimizer(keras.optimizers), loss="binary_crossentropy",
                    metrics=["accuracy"])
    c_model.compile(optimizer=optimizer(copt), loss="binary_crossentropy",
                    metrics=["accuracy"])
    return k_model, c_model


HOOKS = ["on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
         "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
         "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
         "on_predict_batch_begin", "on_predict_batch_end"]


def _recorder(base):
    """A callback class deriving from `base` that records (hook, index, sorted log keys)."""
    calls = []

    def make(hook):
        indexed = "batch" in hook or "epoch" in hook

        def method(self, *args, logs=None):
            index = args[0] if indexed else None
            if len(args) > int(indexed):          # logs passed by position
                logs = args[int(indexed)]
            keys = sorted(logs) if isinstance(logs, dict) and logs else None
            calls.append((hook, index, keys))
        return method

    cls = type("Recorder", (base,), {hook: make(hook) for hook in HOOKS})
    return cls(), calls


def test_hooks_are_called_in_keras_order_with_keras_logs():
    k_model, c_model = _twins()
    x, y = _data()
    k_rec, k_calls = _recorder(keras.callbacks.Callback)
    c_rec, c_calls = _recorder(callbacks.Callback)
    for model, rec in ((k_model, k_rec), (c_model, c_rec)):
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, validation_data=(x[:10], y[:10]),
                  callbacks=[rec], verbose=0)
        model.evaluate(x, y, batch_size=16, callbacks=[rec], verbose=0)
        model.predict(x, batch_size=16, callbacks=[rec], verbose=0)
    assert [c[:2] for c in c_calls] == [c[:2] for c in k_calls]
    # the log names each hook sees (predict's "outputs" included)
    assert [c[2] for c in c_calls] == [c[2] for c in k_calls]


def test_batch_hooks_reach_on_batch_end_like_keras():
    seen = []

    class OldStyle(callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append(batch)

    _, c_model = _twins()
    c_model.fit(*_data(), batch_size=8, epochs=1, verbose=0, callbacks=[OldStyle()])
    assert seen == [0, 1, 2]


def _same_training(k_model, c_model, make_callbacks, epochs=6, **fit_kw):
    x, y = _data()
    kh = k_model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=make_callbacks(keras.callbacks), **fit_kw)
    ch = c_model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=make_callbacks(callbacks), **fit_kw)
    assert set(ch.history) == set(kh.history)
    for key in kh.history:
        np.testing.assert_allclose(ch.history[key], kh.history[key], rtol=1e-4, err_msg=key)
    for cw, kw in zip(c_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(cw, kw, rtol=1e-4, atol=2e-6)
    return ch


def test_reduce_lr_on_plateau_matches_keras():
    k_model, c_model = _twins(lambda m: m.Adam(0.05))
    x, y = _data()
    history = _same_training(
        k_model, c_model, lambda m: [m.ReduceLROnPlateau(monitor="loss", factor=0.5,
                                                         patience=1, min_delta=0.05,
                                                         cooldown=1, min_lr=0.01)])
    assert len(set(history.history["learning_rate"])) > 1      # it did reduce


def test_learning_rate_scheduler_matches_keras():
    k_model, c_model = _twins()
    history = _same_training(
        k_model, c_model,
        lambda m: [m.LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch else lr)])
    np.testing.assert_allclose(history.history["learning_rate"],
                               [0.1, 0.05, 0.025, 0.0125, 0.00625, 0.003125], rtol=1e-6)


def test_csv_logger_writes_what_keras_writes(tmp_path):
    k_model, c_model = _twins()
    x, y = _data()
    rows = {}
    for name, model, module in (("k", k_model, keras.callbacks), ("c", c_model, callbacks)):
        path = tmp_path / f"{name}.csv"
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
                  validation_split=0.25, callbacks=[module.CSVLogger(str(path), separator=";")])
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
                  callbacks=[module.CSVLogger(str(path), separator=";", append=True)])
        with open(path, newline="") as f:
            rows[name] = list(csv.reader(f, delimiter=";"))
    assert rows["c"][0] == rows["k"][0]               # the header
    assert len(rows["c"]) == len(rows["k"]) == 4      # no second header when appending
    for c_row, k_row in zip(rows["c"][1:], rows["k"][1:]):
        assert c_row[0] == k_row[0]                   # the epoch
        for c_value, k_value in zip(c_row[1:], k_row[1:]):
            if k_value == "NA":
                assert c_value == "NA"
            else:
                assert float(c_value) == pytest.approx(float(k_value), rel=1e-4)


def test_terminate_on_nan_and_lambda_callback():
    _, c_model = _twins()
    stopped = callbacks.TerminateOnNaN()
    stopped.set_model(c_model)
    stopped.on_train_batch_end(3, {"loss": float("nan")})
    assert c_model.stop_training
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 1"):
        callbacks.TerminateOnNaN(raise_error=True).on_batch_end(1, {"loss": float("inf")})
    ends = []
    halt = callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: ends.append((epoch, sorted(logs))),
        on_train_batch_end=lambda batch, logs: setattr(c_model, "stop_training", batch == 1))
    history = c_model.fit(*_data(), batch_size=8, epochs=3, verbose=0, callbacks=[halt])
    assert ends == [(0, ["accuracy", "loss"])]        # stopped after the second step
    assert len(history.history["loss"]) == 1
    with pytest.raises(ValueError, match="not a callback hook"):
        callbacks.LambdaCallback(on_epoch_finish=print)


def test_backup_and_restore_resumes_an_interrupted_fit_exactly(tmp_path):
    x, y = _data()

    def model():
        m = Sequential([GRU(3, input_shape=(T, I), seed=1), Dense(1, seed=1)], seed=2)
        m.compile(optimizer="adam", loss="mse")
        return m

    straight = model()
    straight.fit(x, y, batch_size=8, epochs=4, verbose=0)

    class Crash(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    interrupted = model()
    backup = callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=[backup, Crash()])
    resumed = model()                   # a fresh process would build the model anew
    history = resumed.fit(x, y, batch_size=8, epochs=4, verbose=0,
                          callbacks=[callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    assert history.epoch == [2, 3]
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not os.path.exists(tmp_path / "backup")    # deleted after a finished fit


def test_model_checkpoint_makes_folders_and_formats_names(tmp_path):
    _, c_model = _twins()
    x, y = _data()
    pattern = str(tmp_path / "runs" / "a" / "ckpt-{epoch:02d}-{val_loss:.2f}.npz")
    history = c_model.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_split=0.25,
                          callbacks=[callbacks.ModelCheckpoint(pattern)])
    expected = sorted(f"ckpt-{e + 1:02d}-{v:.2f}.npz"
                      for e, v in enumerate(history.history["val_loss"]))
    assert sorted(os.listdir(tmp_path / "runs" / "a")) == expected
    assert cgru.load_model(tmp_path / "runs" / "a" / expected[-1]).optimizer.iterations == 4

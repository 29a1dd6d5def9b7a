"""Parity with real Keras 3: layer outputs and short training runs on identical batches.

Weights are copied from the Keras layers (``set_weights(keras_layer.get_weights())``),
so any difference in layout, gate order, merge, loss or optimizer rule shows up here.
"""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

import cgru  # noqa: E402
from cgru import GRU, Bidirectional, Dense, Sequential  # noqa: E402
from cgru import optimizers as copt  # noqa: E402

B, T, I, H = 6, 7, 5, 4
ATOL_FWD = 2e-6


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)


def _keras_gru(**kw):
    layer = keras.layers.GRU(H, **kw)
    layer.build((None, T, I))
    # non-zero biases so that bias layout mistakes cannot hide
    w = layer.get_weights()
    w[2] = np.random.default_rng(1).uniform(-0.5, 0.5, w[2].shape).astype(np.float32)
    layer.set_weights(w)
    return layer


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_gru_layer_matches_keras(x, reset_after, return_sequences, go_backwards):
    kw = dict(reset_after=reset_after, return_sequences=return_sequences,
              go_backwards=go_backwards, return_state=True)
    k = _keras_gru(**kw)
    c = GRU(H, **kw)
    c.build((T, I))
    c.set_weights(k.get_weights())
    k_out, k_h = [np.asarray(v) for v in k(x)]
    c_out, c_h = c(x)
    assert c_out.shape == k_out.shape
    np.testing.assert_allclose(c_out, k_out, rtol=0, atol=ATOL_FWD)
    np.testing.assert_allclose(c_h, k_h, rtol=0, atol=ATOL_FWD)


def test_gru_initial_state_matches_keras(x):
    k = _keras_gru(return_sequences=True)
    c = GRU(H, return_sequences=True, input_shape=(T, I))
    c.set_weights(k.get_weights())
    h0 = np.random.default_rng(2).standard_normal((B, H)).astype(np.float32)
    np.testing.assert_allclose(c(x, initial_state=[h0]),
                               np.asarray(k(x, initial_state=[h0])), atol=ATOL_FWD)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_matches_keras(x, merge_mode, return_sequences):
    k = keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=return_sequences),
                                   merge_mode=merge_mode)
    k.build((None, T, I))
    c = Bidirectional(GRU(H, return_sequences=return_sequences), merge_mode=merge_mode)
    c.build((T, I))
    c.set_weights(k.get_weights())
    k_out, c_out = k(x), c(x)
    if merge_mode is None:
        assert len(c_out) == 2
        for a, b in zip(c_out, k_out):
            np.testing.assert_allclose(a, np.asarray(b), atol=ATOL_FWD)
    else:
        np.testing.assert_allclose(c_out, np.asarray(k_out), atol=ATOL_FWD)


def test_bidirectional_return_state_matches_keras(x):
    k = keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True,
                                                    return_state=True))
    k.build((None, T, I))
    c = Bidirectional(GRU(H, return_sequences=True, return_state=True))
    c.build((T, I))
    c.set_weights(k.get_weights())
    k_out, c_out = k(x), c(x)
    assert len(c_out) == 3
    for a, b in zip(c_out, k_out):
        np.testing.assert_allclose(a, np.asarray(b), atol=ATOL_FWD)


def test_dense_on_sequences_matches_keras(x):
    k = keras.layers.Dense(3, activation="tanh")
    k.build((None, T, I))
    c = Dense(3, activation="tanh")
    c.build((T, I))
    c.set_weights(k.get_weights())
    np.testing.assert_allclose(c(x), np.asarray(k(x)), atol=1e-6)


# -- training parity ------------------------------------------------------------------------
N = 22  # with batch_size 8: batches of 8, 8, 6 (a partial last batch)


def _data(kind, seed=3):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((N, T, I)).astype(np.float32)
    if kind == "binary":
        return xs, (xs[:, 0, 0] > 0).astype(np.float32)
    if kind == "sparse":
        return xs, (xs[:, 0, :3].argmax(axis=1)).astype(np.int64)
    if kind == "categorical":
        return xs, np.eye(3, dtype=np.float32)[xs[:, 0, :3].argmax(axis=1)]
    return xs, rng.standard_normal((N, T, 2)).astype(np.float32)  # mse per step


def _twin_models(kind, reset_after=True):
    """The same architecture in Keras and cgru, cgru holding Keras' initial weights."""
    keras.utils.set_random_seed(0)
    if kind == "binary":
        k_layers = [keras.layers.GRU(H, reset_after=reset_after),
                    keras.layers.Dense(1, activation="sigmoid")]
        c_layers = [GRU(H, reset_after=reset_after, input_shape=(T, I)),
                    Dense(1, activation="sigmoid")]
    elif kind in ("sparse", "categorical"):
        k_layers = [keras.layers.GRU(H, return_sequences=True),
                    keras.layers.GRU(H),
                    keras.layers.Dense(3, activation="softmax")]
        c_layers = [GRU(H, return_sequences=True, input_shape=(T, I)), GRU(H),
                    Dense(3, activation="softmax")]
    else:
        k_layers = [keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True)),
                    keras.layers.Dense(2)]
        c_layers = [Bidirectional(GRU(H, return_sequences=True), input_shape=(T, I)),
                    Dense(2)]
    k_model = keras.Sequential([keras.Input((T, I))] + k_layers)
    c_model = Sequential(c_layers)
    c_model.set_weights(k_model.get_weights())
    return k_model, c_model


OPTIMIZERS = {
    "sgd": (lambda m: m.SGD(learning_rate=0.1)),
    "sgd_momentum": (lambda m: m.SGD(learning_rate=0.05, momentum=0.9)),
    "sgd_nesterov": (lambda m: m.SGD(learning_rate=0.05, momentum=0.9, nesterov=True)),
    "adam": (lambda m: m.Adam(learning_rate=0.01)),
    "rmsprop": (lambda m: m.RMSprop(learning_rate=0.01)),
    "adam_clipnorm": (lambda m: m.Adam(learning_rate=0.01, clipnorm=0.05)),
    "adamw_ema": (lambda m: m.AdamW(learning_rate=0.01, weight_decay=0.05, use_ema=True)),
    "nadam_schedule": (lambda m: m.Nadam(learning_rate=m.schedules.ExponentialDecay(
        0.02, decay_steps=3, decay_rate=0.5))),
    "lion": (lambda m: m.Lion(learning_rate=0.003)),
    "adagrad_global_clipnorm": (lambda m: m.Adagrad(learning_rate=0.1, global_clipnorm=0.1)),
}


def _assert_same_training(k_model, c_model, kind, loss, optimizer, metrics, epochs=3,
                          **fit_kw):
    xs, ys = _data(kind)
    k_model.compile(optimizer=OPTIMIZERS[optimizer](keras.optimizers), loss=loss,
                    metrics=metrics)
    c_model.compile(optimizer=OPTIMIZERS[optimizer](copt), loss=loss, metrics=metrics)
    kh = k_model.fit(xs, ys, batch_size=8, epochs=epochs, shuffle=False, verbose=0, **fit_kw)
    ch = c_model.fit(xs, ys, batch_size=8, epochs=epochs, shuffle=False, verbose=0, **fit_kw)
    assert set(ch.history) == set(kh.history)
    for key in kh.history:
        np.testing.assert_allclose(ch.history[key], kh.history[key], rtol=2e-5, atol=2e-6,
                                   err_msg=key)
    for cw, kw in zip(c_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(cw, kw, rtol=1e-4, atol=2e-6)
    return xs, ys


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_training_matches_keras(optimizer):
    k_model, c_model = _twin_models("binary")
    _assert_same_training(k_model, c_model, "binary", "binary_crossentropy", optimizer,
                          ["accuracy"])


def test_training_reset_after_false_and_validation_split_match_keras():
    k_model, c_model = _twin_models("binary", reset_after=False)
    _assert_same_training(k_model, c_model, "binary", "binary_crossentropy", "adam",
                          ["accuracy"], validation_split=0.25)


def test_default_optimizer_is_rmsprop_like_keras():
    k_model, c_model = _twin_models("binary")
    xs, ys = _data("binary")
    k_model.compile(loss="binary_crossentropy")
    c_model.compile(loss="binary_crossentropy")
    assert isinstance(c_model.optimizer, copt.RMSprop)
    k_model.fit(xs, ys, batch_size=8, epochs=2, shuffle=False, verbose=0)
    c_model.fit(xs, ys, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for cw, kw in zip(c_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(cw, kw, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("kind,loss", [("sparse", "sparse_categorical_crossentropy"),
                                       ("categorical", "categorical_crossentropy")])
def test_stacked_categorical_training_matches_keras(kind, loss):
    k_model, c_model = _twin_models(kind)
    xs, ys = _assert_same_training(k_model, c_model, kind, loss, "adam", ["accuracy"])
    k_eval = k_model.evaluate(xs, ys, batch_size=8, verbose=0)
    c_eval = c_model.evaluate(xs, ys, batch_size=8)
    np.testing.assert_allclose(c_eval, k_eval, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(c_model.predict(xs), k_model.predict(xs, verbose=0),
                               atol=2e-6)


def test_bidirectional_sequence_mse_training_matches_keras():
    k_model, c_model = _twin_models("mse")
    xs, ys = _data("mse")
    _assert_same_training(k_model, c_model, "mse", "mse", "rmsprop", None,
                          validation_data=(xs[:5], ys[:5]))


def test_binary_accuracy_threshold_matches_keras():
    y_true = np.array([[1.0], [0.0], [1.0], [0.0]], dtype=np.float32)
    y_pred = np.array([[0.5], [0.5], [0.51], [0.2]], dtype=np.float32)
    k = keras.metrics.BinaryAccuracy()
    k.update_state(y_true, y_pred)
    c = cgru.metrics.get("accuracy", y_true.shape, y_pred.shape)
    c.update_state(y_true, y_pred)
    assert c.result() == pytest.approx(float(k.result()))
    assert c.result() == pytest.approx(0.75)  # 0.5 is not > 0.5: rows 2, 3, 4 right


def test_binary_crossentropy_clipping_matches_keras():
    y_true = np.array([[1.0], [0.0], [1.0]], dtype=np.float32)
    y_pred = np.array([[0.0], [1.0], [0.3]], dtype=np.float32)
    k = float(keras.losses.BinaryCrossentropy()(y_true, y_pred))
    c = cgru.losses.get("binary_crossentropy")(y_true, y_pred)
    assert c == pytest.approx(k, rel=1e-6)

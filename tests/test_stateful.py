"""Input/InputLayer, stateful GRUs and the GRU arguments that change nothing, against Keras 3."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

import cgru  # noqa: E402
from cgru import GRU, Bidirectional, Dense, Input, InputLayer, Sequential  # noqa: E402
from cgru import optimizers as copt  # noqa: E402

B, T, I, H = 4, 5, 3, 3


def _twins(bidirectional=False):
    keras.utils.set_random_seed(1)

    def stack(m, inp):
        first = m.layers.GRU(H, stateful=True, return_sequences=True)
        if bidirectional:
            first = m.layers.Bidirectional(first)
        return [inp, first, m.layers.GRU(2, stateful=True, reset_after=False),
                m.layers.Dense(1, activation="sigmoid")]

    k_model = keras.Sequential(stack(keras, keras.Input(batch_shape=(B, T, I))))
    c_model = Sequential(stack(cgru, Input(batch_shape=(B, T, I))))
    rng = np.random.default_rng(4)
    weights = [w + rng.uniform(0, 0.2, w.shape).astype(np.float32)
               for w in k_model.get_weights()]
    k_model.set_weights(weights)
    c_model.set_weights(weights)
    return k_model, c_model


def _reset(model):
    for layer in model.layers:
        if hasattr(layer, "reset_states"):
            layer.reset_states()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_stateful_predict_carries_and_resets_like_keras(bidirectional):
    k_model, c_model = _twins(bidirectional)
    x = np.random.default_rng(0).standard_normal((2 * B, T, I)).astype(np.float32)
    for _ in range(2):          # the second call starts from the states the first left
        np.testing.assert_allclose(c_model.predict(x, batch_size=B),
                                   k_model.predict(x, batch_size=B, verbose=0), atol=2e-6)
    first = c_model.predict(x, batch_size=B)
    c_model.reset_states()
    _reset(k_model)
    again = c_model.predict(x, batch_size=B)
    np.testing.assert_allclose(again, k_model.predict(x, batch_size=B, verbose=0), atol=2e-6)
    assert not np.allclose(first, again)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_stateful_training_and_evaluation_match_keras(optimizer):
    k_model, c_model = _twins()
    make = {"sgd": lambda m: m.SGD(0.1), "adam": lambda m: m.Adam(0.01)}[optimizer]
    k_model.compile(optimizer=make(keras.optimizers), loss="binary_crossentropy",
                    metrics=["accuracy"])
    c_model.compile(optimizer=make(copt), loss="binary_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3 * B, T, I)).astype(np.float32)
    y = (x[:, 0, 0] > 0).astype(np.float32)
    kh = k_model.fit(x, y, batch_size=B, epochs=3, shuffle=False, verbose=0)
    ch = c_model.fit(x, y, batch_size=B, epochs=3, shuffle=False, verbose=0)
    for key in kh.history:
        np.testing.assert_allclose(ch.history[key], kh.history[key], rtol=1e-4, err_msg=key)
    for cw, kw in zip(c_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(cw, kw, rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(c_model.evaluate(x, y, batch_size=B),
                               k_model.evaluate(x, y, batch_size=B, verbose=0), rtol=1e-5)
    np.testing.assert_allclose(c_model.predict(x, batch_size=B),
                               k_model.predict(x, batch_size=B, verbose=0), atol=2e-6)


def test_stateful_needs_a_fixed_batch_and_keeps_it():
    with pytest.raises(ValueError, match="fixed batch size"):
        Sequential([GRU(2, stateful=True, input_shape=(T, I))])
    model = Sequential([GRU(2, stateful=True, batch_input_shape=(B, T, I)), Dense(1)])
    model.compile(loss="mse")
    with pytest.raises(ValueError, match=r"expected batch size 4.*\(3, 5, 3\)"):
        model.predict(np.zeros((3, T, I)), batch_size=3)
    with pytest.raises(ValueError, match="batch size"):
        model.fit(np.zeros((6, T, I)), np.zeros((6, 1)), batch_size=4, verbose=0)
    assert Sequential([GRU(2, stateful=True, batch_size=B, input_shape=(T, I))]).built
    layer = GRU(2, stateful=True)           # called directly: the first batch fixes it
    layer(np.ones((3, T, I)))
    assert layer.states.shape == (3, 2) and layer.states.any()
    layer.reset_state()
    assert not layer.states.any()


def test_input_layer_first_in_sequential():
    model = Sequential([InputLayer(shape=(T, I), name="tokens"), GRU(H), Dense(1)])
    assert model.built and len(model.layers) == 2
    assert model.input_shape == (None, T, I)
    with pytest.raises(ValueError, match=r"\(None, 5, 3\)"):
        model.predict(np.zeros((2, T, I + 1)))
    keras_model = keras.Sequential([keras.layers.InputLayer(shape=(T, I)),
                                    keras.layers.GRU(H), keras.layers.Dense(1)])
    model.set_weights(keras_model.get_weights())
    x = np.random.default_rng(0).standard_normal((2, T, I)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), keras_model.predict(x, verbose=0), atol=2e-6)
    with pytest.raises(ValueError, match="both `shape` and `batch_shape`"):
        Input(shape=(2,), batch_shape=(1, 2))
    with pytest.raises(ValueError, match="first element"):
        Sequential([GRU(2, input_shape=(T, I)), InputLayer(shape=(T, H))])


def test_input_and_stateful_round_trip_through_save(tmp_path):
    model = Sequential([Input(batch_shape=(B, T, I)), GRU(H, stateful=True), Dense(1)])
    model.compile(loss="mse", optimizer="adam")
    x = np.random.default_rng(0).standard_normal((B, T, I))
    model.fit(x, np.ones((B, 1)), batch_size=B, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = cgru.load_model(tmp_path / "m.npz")
    assert loaded.batch_size == B and loaded.layers[0].stateful
    model.reset_states()                # a loaded model starts from zero states
    np.testing.assert_array_equal(loaded.predict(x, batch_size=B),
                                  model.predict(x, batch_size=B))


def test_arguments_that_change_nothing_are_accepted_and_others_say_so():
    x = np.random.default_rng(0).standard_normal((2, T, I))
    plain = GRU(H, input_shape=(T, I), seed=0)
    same = GRU(H, input_shape=(T, I), seed=0, unroll=True, implementation=2,
               use_cudnn=False, activation="tanh", recurrent_activation="sigmoid",
               recurrent_dropout=0.0)
    np.testing.assert_array_equal(plain(x), same(x))
    with pytest.raises(ValueError, match="activation=<function"):
        GRU(H, activation=lambda v: np.maximum(v, 0))

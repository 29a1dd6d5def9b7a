"""Conv1D: parity with Keras 3 (outputs, training), gradients, configs, saving, errors."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from _layer_checks import (assert_config_round_trip, assert_forward_matches,  # noqa: E402
                           assert_gradients_numeric, assert_mask_matches,
                           assert_same_training, assert_save_load_round_trip,
                           assert_summary_matches)

from cgru import GRU, Dense, Sequential  # noqa: E402
from cgru.layers import Conv1D, Embedding  # noqa: E402

B, T, C = 4, 9, 3

CONFIGS = [
    dict(filters=5, kernel_size=3),
    dict(filters=2, kernel_size=1),
    dict(filters=4, kernel_size=3, strides=2),
    dict(filters=4, kernel_size=4, strides=3, padding="same"),
    dict(filters=4, kernel_size=2, padding="same"),
    dict(filters=3, kernel_size=3, padding="same", dilation_rate=2),
    dict(filters=3, kernel_size=3, padding="causal", dilation_rate=2),
    dict(filters=3, kernel_size=2, padding="causal", activation="relu"),
    dict(filters=3, kernel_size=(3,), padding="valid", dilation_rate=3, use_bias=False,
         activation="tanh"),
    dict(filters=2, kernel_size=9),
]


def _x(seed=0, shape=(B, T, C)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _pair(config, dtype=np.float32):
    name = np.dtype(dtype).name
    k = keras.layers.Conv1D(**config, dtype=name)
    k.build((None, T, C))
    if config.get("use_bias", True):      # non-zero biases, so layout mistakes show
        w = k.get_weights()
        w[1] = np.random.default_rng(1).uniform(-0.5, 0.5, w[1].shape).astype(name)
        k.set_weights(w)
    c = Conv1D(**config, dtype=dtype)
    c.build((T, C))
    return k, c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_forward_matches_keras(config, dtype):
    k, c = _pair(config, dtype)
    out = assert_forward_matches(c, k, _x().astype(dtype), dtype,
                                 atol=1e-5 if dtype == np.float32 else 1e-12)
    assert out.shape[1:] == c.compute_output_shape((T, C))
    assert tuple(k.compute_output_shape((None, T, C)))[1:] == out.shape[1:]
    assert c.get_weights()[0].shape == (c.kernel_size, C, c.filters)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_gradients_match_central_differences(config):
    k, c = _pair(config, np.float64)
    c.set_weights(k.get_weights())
    assert_gradients_numeric(c, _x(2).astype(np.float64))


def test_mask_is_dropped_like_keras():
    k, c = _pair(CONFIGS[0])
    mask = np.ones((B, T), bool)
    mask[:, -3:] = False
    assert_mask_matches(c, k, _x(), mask)


def _twins(padding):
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([
        keras.Input((T, C)),
        keras.layers.Conv1D(4, 3, padding=padding, activation="relu",
                            bias_initializer="random_uniform", kernel_regularizer="l2"),
        keras.layers.Conv1D(3, 2, strides=2, padding="same"),
        keras.layers.GRU(3), keras.layers.Dense(1, activation="sigmoid")])
    c_model = Sequential([
        Conv1D(4, 3, padding=padding, activation="relu", kernel_regularizer="l2",
               input_shape=(T, C)),
        Conv1D(3, 2, strides=2, padding="same"), GRU(3), Dense(1, activation="sigmoid")])
    return k_model, c_model


def _data(n=22):
    x = _x(5, (n, T, C))
    return x, (x[:, :, 0].mean(axis=1) > 0).astype(np.float32)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("padding", ["valid", "causal"])
def test_training_matches_keras(optimizer, padding):
    k_model, c_model = _twins(padding)
    x, y = _data()
    assert_same_training(k_model, c_model, x, y, "binary_crossentropy", optimizer,
                         metrics=["accuracy"])


def test_embedding_conv_training_matches_keras():
    keras.utils.set_random_seed(2)
    k_model = keras.Sequential([keras.Input((T,), dtype="int32"),
                                keras.layers.Embedding(7, 3),
                                keras.layers.Conv1D(2, 3, activation="tanh"),
                                keras.layers.Flatten(), keras.layers.Dense(1)])
    c_model = Sequential([Embedding(7, 3, input_shape=(T,)), Conv1D(2, 3, activation="tanh"),
                          __import__("cgru").layers.Flatten(), Dense(1)])
    ids = np.random.default_rng(1).integers(0, 7, (22, T))
    assert_same_training(k_model, c_model, ids, ids[:, 0] / 7.0, "mse", "sgd")


def test_summary_matches_keras(capsys):
    k_model, c_model = _twins("same")
    assert_summary_matches(k_model, c_model, capsys)
    assert c_model.layers[0].name.startswith("conv1d")


def test_config_round_trip_and_save_load(tmp_path):
    c = Conv1D(3, 2, strides=2, padding="causal", activation="tanh", use_bias=False,
               kernel_constraint="max_norm", input_shape=(T, C))
    assert_config_round_trip(c, _x())
    k_config = keras.layers.Conv1D(3, 2, strides=2, padding="causal").get_config()
    for key in ("filters", "padding"):
        assert c.get_config()[key] == k_config[key]
    model = Sequential([Conv1D(3, 3, input_shape=(T, C), seed=0), GRU(2, seed=0),
                        Dense(1, seed=0)], seed=0)
    model.compile(loss="mse", optimizer="adam")
    x, y = _data(8)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert_save_load_round_trip(model, x, y, tmp_path)


def test_bad_input_and_arguments_raise():
    with pytest.raises(ValueError, match=r"shorter than the kernel's span 5"):
        Conv1D(2, 3, dilation_rate=2, input_shape=(4, C))
    c = Conv1D(2, 3, input_shape=(T, C))
    with pytest.raises(ValueError, match=r"3 channels.*\(4, 9, 5\)"):
        c(_x(shape=(B, T, 5)))
    with pytest.raises(ValueError, match=r"\(batch, steps, channels\).*\(4, 9\)"):
        c(_x(shape=(B, T)))
    with pytest.raises(ValueError, match="padding"):
        Conv1D(2, 3, padding="full")
    with pytest.raises(ValueError, match="dilation_rate"):
        Conv1D(2, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="kernel_size"):
        Conv1D(2, 0)
    with pytest.raises(NotImplementedError, match="channels_first"):
        Conv1D(2, 3, data_format="channels_first")
    with pytest.raises(NotImplementedError, match="groups"):
        Conv1D(4, 3, groups=2)

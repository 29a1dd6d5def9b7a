"""Masking: parity with Keras 3 (outputs, masks, a masked model's training), gradients,
configs, saving, bad input."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from _layer_checks import (assert_config_round_trip, assert_gradients_numeric,  # noqa: E402
                           assert_same_training,
                           assert_save_load_round_trip, assert_summary_matches)

from cgru import Dense, Sequential  # noqa: E402
from cgru.layers import GlobalAveragePooling1D, LayerNormalization, Masking  # noqa: E402

B, T, F = 6, 7, 3


def _x(seed=0, n=B, mask_value=0.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, T, F)).astype(np.float32)
    lengths = rng.integers(1, T + 1, n)
    x[np.arange(T)[None, :] >= lengths[:, None]] = mask_value
    x[0, 1, 0] = mask_value           # one feature alone equal to mask_value: not masked
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask_value", [0.0, -1.0])
def test_forward_and_mask_match_keras(mask_value, dtype):
    k = keras.layers.Masking(mask_value, dtype=np.dtype(dtype).name)
    c = Masking(mask_value, dtype=dtype)
    x = _x(mask_value=mask_value).astype(dtype)
    np.testing.assert_array_equal(c(x), np.asarray(k(x)))
    np.testing.assert_array_equal(c.compute_mask(x), np.asarray(k.compute_mask(x)))


def test_input_gradient_matches_central_differences_and_tensorflow():
    """Central differences on kept steps (a masked step sits on the mask's jump: moving one
    feature off mask_value unmasks it); everywhere, TensorFlow's gradient of Keras's layer."""
    import tensorflow as tf
    x = _x(1, mask_value=-1.0).astype(np.float64)
    c = Masking(-1.0, dtype="float64", input_shape=(T, F))
    kept = x[c.compute_mask(x)][None]
    assert_gradients_numeric(c, kept)
    d_out = np.random.default_rng(5).standard_normal(x.shape)
    out, ctx = c.forward(x, need_grad=True)
    x_tf = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tf)
        loss = tf.reduce_sum(keras.layers.Masking(-1.0, dtype="float64")(x_tf) * d_out)
    np.testing.assert_array_equal(c.backward(d_out, ctx)[0], tape.gradient(loss, x_tf).numpy())


def _twins():
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([keras.Input((T, F)), keras.layers.Masking(),
                                keras.layers.LayerNormalization(),
                                keras.layers.GlobalAveragePooling1D(),
                                keras.layers.Dense(1, activation="sigmoid")])
    c_model = Sequential([Masking(input_shape=(T, F)), LayerNormalization(),
                          GlobalAveragePooling1D(), Dense(1, activation="sigmoid")])
    return k_model, c_model


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masked_training_matches_keras(optimizer):
    k_model, c_model = _twins()
    x = _x(2, n=22)
    assert_same_training(k_model, c_model, x, (x[:, 0, 0] > 0).astype(np.float32),
                         "binary_crossentropy", optimizer, metrics=["accuracy"])


def test_summary_config_and_saving(capsys, tmp_path):
    k_model, c_model = _twins()
    assert_summary_matches(k_model, c_model, capsys)
    assert_config_round_trip(Masking(-2.0, input_shape=(T, F)), _x())
    c_model.compile(loss="binary_crossentropy", optimizer="adam")
    x = _x(3, n=8)
    y = (x[:, 0, 0] > 0).astype(np.float32)
    c_model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert_save_load_round_trip(c_model, x, y, tmp_path)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="mask_value"):
        Masking("zero")
    with pytest.raises(ValueError, match=r"\(batch, \.\.\., features\).*\(4,\)"):
        Masking()(np.zeros(4))

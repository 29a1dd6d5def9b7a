"""MaxPooling1D, AveragePooling1D, GlobalMaxPooling1D, GlobalAveragePooling1D: parity with
Keras 3 (outputs, masks, training), gradients, configs, summaries, saving, bad input."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from _layer_checks import (assert_config_round_trip, assert_forward_matches,  # noqa: E402
                           assert_gradients_numeric, assert_mask_matches,
                           assert_same_training, assert_save_load_round_trip,
                           assert_summary_matches)

import cgru  # noqa: E402
from cgru import GRU, Dense, Sequential  # noqa: E402
from cgru.layers import (AveragePooling1D, Conv1D, Embedding,  # noqa: E402
                         GlobalAveragePooling1D, GlobalMaxPooling1D, MaxPooling1D)

B, T, F = 4, 9, 3

CASES = [
    ("MaxPooling1D", {}),
    ("MaxPooling1D", dict(pool_size=3)),
    ("MaxPooling1D", dict(pool_size=3, strides=2)),
    ("MaxPooling1D", dict(pool_size=4, strides=2, padding="same")),
    ("MaxPooling1D", dict(pool_size=2, strides=1, padding="same")),
    ("AveragePooling1D", dict(pool_size=2)),
    ("AveragePooling1D", dict(pool_size=3, strides=2)),
    ("AveragePooling1D", dict(pool_size=4, strides=2, padding="same")),
    ("AveragePooling1D", dict(pool_size=3, strides=1, padding="same")),
    ("GlobalMaxPooling1D", {}),
    ("GlobalMaxPooling1D", dict(keepdims=True)),
    ("GlobalAveragePooling1D", {}),
    ("GlobalAveragePooling1D", dict(keepdims=True)),
]
IDS = [f"{name}-{kw}" for name, kw in CASES]


def _x(seed=0, shape=(B, T, F)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _pair(case, dtype=np.float32):
    name, kw = case
    k = getattr(keras.layers, name)(**kw, dtype=np.dtype(dtype).name)
    c = getattr(cgru.layers, name)(**kw, dtype=dtype)
    c.build((T, F))
    return k, c


def _mask():
    mask = np.ones((B, T), bool)
    mask[:, -3:] = False
    mask[1, 2] = False
    return mask


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_keras(case, dtype):
    k, c = _pair(case, dtype)
    out = assert_forward_matches(c, k, _x().astype(dtype), dtype)
    assert out.shape[1:] == tuple(c.compute_output_shape((T, F)))
    assert tuple(k.compute_output_shape((None, T, F)))[1:] == out.shape[1:]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_masked_forward_and_output_mask_match_keras(case, dtype):
    k, c = _pair(case, dtype)
    x, mask = _x().astype(dtype), _mask()
    expected = np.asarray(k(x, mask=mask) if case[0] == "GlobalAveragePooling1D" else k(x))
    np.testing.assert_allclose(c.forward(x, mask=mask)[0], expected, rtol=0,
                               atol=2e-6 if dtype == np.float32 else 1e-12)
    assert_mask_matches(c, k, x, mask)


def test_global_average_of_a_fully_masked_sample_is_nan_like_keras():
    k, c = _pair(("GlobalAveragePooling1D", {}))
    mask = _mask()
    mask[2] = False
    x = _x()
    expected = np.asarray(k(x, mask=mask))
    got = c.forward(x, mask=mask)[0]
    assert np.isnan(expected[2]).all() and np.isnan(got[2]).all()
    np.testing.assert_allclose(got, expected, atol=2e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_input_gradient_matches_central_differences(case):
    _, c = _pair(case, np.float64)
    assert_gradients_numeric(c, _x(3).astype(np.float64))
    if case[0] == "GlobalAveragePooling1D":
        assert_gradients_numeric(c, _x(4).astype(np.float64), mask=_mask())


def test_global_max_splits_the_gradient_of_ties_like_tensorflow():
    import tensorflow as tf
    x = np.array([[[1.0], [3.0], [3.0], [0.0]]], np.float32)
    x_tf = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tf)
        out = keras.layers.GlobalMaxPooling1D()(x_tf)
    expected = tape.gradient(out, x_tf).numpy()
    c = GlobalMaxPooling1D()
    y, ctx = c.forward(x, need_grad=True)
    np.testing.assert_array_equal(c.backward(np.ones_like(y), ctx)[0], expected)


def _twins():
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([
        keras.Input((T, F)), keras.layers.Conv1D(4, 2, padding="same"),
        keras.layers.MaxPooling1D(2, padding="same"), keras.layers.GRU(4, return_sequences=True),
        keras.layers.AveragePooling1D(3, strides=2), keras.layers.GlobalMaxPooling1D(),
        keras.layers.Dense(3, activation="softmax")])
    c_model = Sequential([
        Conv1D(4, 2, padding="same", input_shape=(T, F)), MaxPooling1D(2, padding="same"),
        GRU(4, return_sequences=True), AveragePooling1D(3, strides=2), GlobalMaxPooling1D(),
        Dense(3, activation="softmax")])
    return k_model, c_model


def _data(n=22):
    x = _x(5, (n, T, F))
    return x, x[:, :3, 0].argmax(axis=1)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_matches_keras(optimizer):
    k_model, c_model = _twins()
    x, y = _data()
    assert_same_training(k_model, c_model, x, y, "sparse_categorical_crossentropy", optimizer,
                         metrics=["accuracy"])


V = 8


def _masked_twins():
    """Embedding(mask_zero) -> GlobalAveragePooling1D (consumes the mask) -> Dense."""
    keras.utils.set_random_seed(1)
    k_model = keras.Sequential([keras.Input((T,), dtype="int32"),
                                keras.layers.Embedding(V, 4, mask_zero=True),
                                keras.layers.GlobalAveragePooling1D(),
                                keras.layers.Dense(1, activation="sigmoid")])
    c_model = Sequential([Embedding(V, 4, mask_zero=True, input_shape=(T,)),
                          GlobalAveragePooling1D(), Dense(1, activation="sigmoid")])
    ids = np.random.default_rng(2).integers(1, V, (22, T))
    lengths = np.random.default_rng(3).integers(1, T + 1, 22)
    ids[np.arange(T)[None, :] >= lengths[:, None]] = 0
    return k_model, c_model, ids, (ids[:, 0] > V // 2).astype(np.float32)


def test_masked_average_training_matches_keras():
    k_model, c_model, ids, y = _masked_twins()
    assert_same_training(k_model, c_model, ids, y, "binary_crossentropy", "sgd",
                         metrics=["accuracy"])


def test_summary_matches_keras(capsys):
    k_model, c_model = _twins()
    assert_summary_matches(k_model, c_model, capsys)
    assert [layer.name.split("_")[0] for layer in c_model.layers[1:5:3]] == \
        ["max", "global"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_config_round_trip(case):
    _, c = _pair(case)
    assert_config_round_trip(c, _x())


def test_save_and_load(tmp_path):
    _, model, ids, y = _masked_twins()
    model.compile(loss="binary_crossentropy", optimizer="adam")
    model.fit(ids, y, epochs=1, batch_size=4, verbose=0)
    assert_save_load_round_trip(model, ids, y, tmp_path)


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"\(batch, steps, features\).*\(4, 9\)"):
        MaxPooling1D()(_x(shape=(B, T)))
    with pytest.raises(ValueError, match=r"2 steps are shorter than pool_size=3"):
        AveragePooling1D(3)(_x(shape=(B, 2, F)))
    with pytest.raises(ValueError, match="padding"):
        MaxPooling1D(padding="causal")
    with pytest.raises(ValueError, match="pool_size"):
        MaxPooling1D(0)
    with pytest.raises(ValueError, match=r"mask .*\(4, 5\).*\(4, 9\)"):
        GlobalAveragePooling1D().forward(_x(), mask=np.ones((B, 5), bool))
    with pytest.raises(NotImplementedError, match="channels_first"):
        GlobalMaxPooling1D(data_format="channels_first")

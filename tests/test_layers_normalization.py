"""BatchNormalization and LayerNormalization: parity with Keras 3 (outputs in both modes,
moving statistics, masks, training), exact gradients, configs, summaries, saving."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from _layer_checks import (assert_config_round_trip, assert_gradients_numeric,  # noqa: E402
                           assert_mask_matches, assert_same_training,
                           assert_save_load_round_trip, assert_summary_matches)

from cgru import GRU, Dense, Sequential  # noqa: E402
from cgru.layers import (BatchNormalization, Conv1D, Embedding,  # noqa: E402
                         GlobalAveragePooling1D, LayerNormalization, TimeDistributed)

B, T, F = 5, 6, 4
ATOL = {np.float32: 1e-5, np.float64: 1e-12}


def _x(seed=0, shape=(B, T, F)):
    rng = np.random.default_rng(seed)
    return (1.5 + 2 * rng.standard_normal(shape)).astype(np.float32)


def _mask():
    mask = np.ones((B, T), bool)
    mask[:, -2:] = False
    mask[3, 1] = False
    return mask


def _random_weights(k_layer, dtype, seed=1):
    """Keras's weights made non-trivial (positive variances), in ``dtype``."""
    rng = np.random.default_rng(seed)
    weights = []
    for w, v in zip(k_layer.weights, k_layer.get_weights()):
        low = 0.5 if "variance" in w.path else -0.5
        weights.append(rng.uniform(low, 1.5, v.shape).astype(dtype))
    k_layer.set_weights(weights)
    return weights


BN_CASES = [dict(), dict(axis=1), dict(center=False), dict(scale=False, momentum=0.9),
            dict(epsilon=0.1)]
BN_SHAPES = [(T, F), (F,)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("kw", BN_CASES, ids=str)
def test_batch_norm_forward_and_moving_statistics_match_keras(kw, shape, training, dtype):
    name = np.dtype(dtype).name
    k = keras.layers.BatchNormalization(**kw, dtype=name)
    k.build((None,) + shape)
    c = BatchNormalization(**kw, dtype=dtype, input_shape=shape)
    c.set_weights(_random_weights(k, dtype))
    x = _x(shape=(B,) + shape).astype(dtype)
    expected = np.asarray(k(x, training=training))
    got = c(x, training=training)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL[dtype])
    for mine, theirs in zip(c.get_weights(), k.get_weights()):   # moving statistics too
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=ATOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_masked_moments_match_keras(dtype):
    name = np.dtype(dtype).name
    k = keras.layers.BatchNormalization(dtype=name)
    k.build((None, T, F))
    c = BatchNormalization(dtype=dtype, input_shape=(T, F))
    c.set_weights(_random_weights(k, dtype))
    x = _x().astype(dtype)
    expected = np.asarray(k(x, training=True, mask=_mask()))
    np.testing.assert_allclose(c.forward(x, training=True, mask=_mask())[0], expected,
                               atol=ATOL[dtype])
    for mine, theirs in zip(c.get_weights(), k.get_weights()):
        np.testing.assert_allclose(mine, theirs, atol=ATOL[dtype])
    assert_mask_matches(c, k, x, _mask(), training=True)


def test_frozen_batch_norm_uses_moving_statistics_in_training_like_keras():
    k = keras.layers.BatchNormalization()
    k.build((None, T, F))
    k.trainable = False
    c = BatchNormalization(input_shape=(T, F), trainable=False)
    c.set_weights(_random_weights(k, np.float32))
    x = _x()
    np.testing.assert_allclose(c(x, training=True), np.asarray(k(x, training=True)),
                               atol=1e-5)
    for mine, theirs in zip(c.get_weights(), k.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("kw", BN_CASES, ids=str)
def test_batch_norm_gradients_match_central_differences(kw, training):
    c = BatchNormalization(**kw, dtype="float64", input_shape=(T, F))
    k = keras.layers.BatchNormalization(**kw, dtype="float64")
    k.build((None, T, F))
    c.set_weights(_random_weights(k, np.float64))
    assert_gradients_numeric(c, _x(2).astype(np.float64), training=training)


def test_batch_norm_masked_gradients_match_central_differences():
    c = BatchNormalization(dtype="float64", input_shape=(T, F))
    k = keras.layers.BatchNormalization(dtype="float64")
    k.build((None, T, F))
    c.set_weights(_random_weights(k, np.float64))
    assert_gradients_numeric(c, _x(3).astype(np.float64), training=True, mask=_mask())


LN_CASES = [dict(), dict(axis=[1, 2]), dict(axis=1), dict(center=False),
            dict(scale=False, epsilon=0.01), dict(axis=(-2, -1), epsilon=1e-5)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", LN_CASES, ids=str)
def test_layer_norm_forward_matches_keras(kw, dtype):
    name = np.dtype(dtype).name
    k = keras.layers.LayerNormalization(**kw, dtype=name)
    k.build((None, T, F))
    c = LayerNormalization(**kw, dtype=dtype, input_shape=(T, F))
    c.set_weights(_random_weights(k, dtype))
    x = _x().astype(dtype)
    np.testing.assert_allclose(c(x), np.asarray(k(x)), rtol=0, atol=ATOL[dtype])
    assert_mask_matches(c, k, x, _mask())


@pytest.mark.parametrize("kw", LN_CASES, ids=str)
def test_layer_norm_gradients_match_central_differences(kw):
    c = LayerNormalization(**kw, dtype="float64", input_shape=(T, F))
    k = keras.layers.LayerNormalization(**kw, dtype="float64")
    k.build((None, T, F))
    c.set_weights(_random_weights(k, np.float64))
    assert_gradients_numeric(c, _x(4).astype(np.float64))


def _data(n=22):
    x = _x(5, (n, T, F))
    return x, (x[:, :, 0].mean(axis=1) > 1.5).astype(np.float32)


def _twins():
    """No bias (nor LayerNormalization's beta) before a BatchNormalization: its gradient is
    zero but for rounding, which Adam would scale up to full steps."""
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([
        keras.Input((T, F)), keras.layers.Conv1D(4, 2, padding="causal", use_bias=False),
        keras.layers.BatchNormalization(momentum=0.8),
        keras.layers.GRU(3, return_sequences=True),
        keras.layers.LayerNormalization(center=False),
        keras.layers.GlobalAveragePooling1D(), keras.layers.BatchNormalization(),
        keras.layers.Dense(1, activation="sigmoid")])
    c_model = Sequential([
        Conv1D(4, 2, padding="causal", use_bias=False, input_shape=(T, F)),
        BatchNormalization(momentum=0.8),
        GRU(3, return_sequences=True), LayerNormalization(center=False),
        GlobalAveragePooling1D(),
        BatchNormalization(), Dense(1, activation="sigmoid")])
    return k_model, c_model


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_matches_keras(optimizer):
    k_model, c_model = _twins()
    x, y = _data()
    # Adam moves every weight by about its learning rate (1e-2) whatever the gradient's
    # size, so float32 rounding in a near-zero gradient shows as ~3e-6 in a weight: the
    # weights are compared to 1e-5, a thousandth of a step.
    assert_same_training(k_model, c_model, x, y, "binary_crossentropy", optimizer,
                         metrics=["accuracy"], weight_atol=1e-5)


def test_masked_batch_norm_training_matches_keras():
    keras.utils.set_random_seed(2)
    k_model = keras.Sequential([keras.Input((T,), dtype="int32"),
                                keras.layers.Embedding(9, 4, mask_zero=True),
                                keras.layers.BatchNormalization(),
                                keras.layers.LayerNormalization(),
                                keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    c_model = Sequential([Embedding(9, 4, mask_zero=True, input_shape=(T,)),
                          BatchNormalization(), LayerNormalization(),
                          GlobalAveragePooling1D(), Dense(1)])
    ids = np.random.default_rng(1).integers(1, 9, (22, T))
    ids[:, -2:] = 0
    ids[3, 2:] = 0
    # SGD: Keras's TensorFlow Adam treats an Embedding's gradient apart (see
    # test_layers_embedding.py)
    assert_same_training(k_model, c_model, ids, ids[:, 0] / 9.0, "mse", "sgd")


def test_summary_counts_non_trainable_statistics_like_keras(capsys):
    k_model, c_model = _twins()
    assert_summary_matches(k_model, c_model, capsys)
    text = capsys.readouterr().out
    c_model.summary()
    text = capsys.readouterr().out
    assert f"Non-trainable params: {2 * 4 + 2 * 3} (" in text
    assert f"Trainable params: {2 * 4 * 4 + 2 * 4 + 3 * 3 * (4 + 3 + 2) + 3 + 2 * 3 + 4} (" \
        in text


@pytest.mark.parametrize("layer", [BatchNormalization(axis=1, momentum=0.5, center=False,
                                                      gamma_regularizer="l2"),
                                   LayerNormalization(axis=[1, 2], epsilon=0.01)],
                         ids=["batch", "layer"])
def test_config_round_trip(layer):
    layer.build((T, F))
    assert_config_round_trip(layer, _x())


def test_save_and_load_keeps_moving_statistics(tmp_path):
    model = Sequential([GRU(3, return_sequences=True, input_shape=(T, F), seed=0),
                        BatchNormalization(), LayerNormalization(), GlobalAveragePooling1D(),
                        Dense(1, seed=0)], seed=0)
    model.compile(loss="mse", optimizer="adam")
    x, y = _data(8)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    loaded = assert_save_load_round_trip(model, x, y, tmp_path)
    assert not np.array_equal(loaded.layers[1].get_weights()[2], np.zeros(3))


def test_bad_input_and_arguments_raise():
    with pytest.raises(NotImplementedError, match="TimeDistributed"):
        TimeDistributed(BatchNormalization())
    with pytest.raises(ValueError, match=r"4 features on axis -1.*\(5, 6, 3\)"):
        BatchNormalization(input_shape=(T, F))(_x(shape=(B, T, 3)))
    with pytest.raises(ValueError, match="axis 3 is out of bounds"):
        BatchNormalization(axis=3, input_shape=(T, F))
    with pytest.raises(ValueError, match=r"mask.shape=\(5, 3\), inputs.shape=\(5, 6, 4\)"):
        BatchNormalization(input_shape=(T, F)).forward(_x(), training=True,
                                                      mask=np.ones((B, 3), bool))
    with pytest.raises(NotImplementedError, match="renorm"):
        BatchNormalization(renorm=True)
    with pytest.raises(ValueError, match="momentum"):
        BatchNormalization(momentum=2)
    with pytest.raises(ValueError, match="epsilon"):
        LayerNormalization(epsilon=0)
    with pytest.raises(TypeError, match="axis"):
        LayerNormalization(axis="last")
    with pytest.raises(ValueError, match=r"axes \[1, 2\] of size \(6, 4\)"):
        LayerNormalization(axis=[1, 2], input_shape=(T, F))(_x(shape=(B, 3, F)))

"""SpatialDropout1D, GaussianNoise, GaussianDropout: identity at inference (as Keras), the
noise's distribution against Keras's, exact gradients for the drawn noise, seeding, masks,
configs and saving (resumed training draws the same noise)."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from _layer_checks import (assert_config_round_trip, assert_gradients_numeric,  # noqa: E402
                           assert_mask_matches, assert_same_training,
                           assert_save_load_round_trip, assert_summary_matches)

import cgru  # noqa: E402
from cgru import GRU, Dense, Sequential  # noqa: E402
from cgru.layers import GaussianDropout, GaussianNoise, SpatialDropout1D  # noqa: E402

B, T, F = 6, 5, 4
CASES = [("SpatialDropout1D", dict(rate=0.3)), ("GaussianNoise", dict(stddev=0.4)),
         ("GaussianDropout", dict(rate=0.3))]
IDS = [name for name, _ in CASES]


def _x(seed=0, shape=(B, T, F)):
    return (2 + np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _pair(case, dtype=np.float32, **kw):
    name, args = case
    k = getattr(keras.layers, name)(**args, seed=1, dtype=np.dtype(dtype).name)
    c = getattr(cgru.layers, name)(**args, seed=1, dtype=dtype, **kw)
    c.build((T, F))
    return k, c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_inference_is_the_identity_like_keras(case, dtype):
    k, c = _pair(case, dtype)
    x = _x().astype(dtype)
    np.testing.assert_array_equal(c(x), np.asarray(k(x, training=False)))
    np.testing.assert_array_equal(c(x), x)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_training_noise_has_keras_distribution(case):
    k, c = _pair(case, np.float64)
    x = np.full((400, 50, 8), 2.0)
    mine = c(x, training=True)
    theirs = np.asarray(k(x, training=True))
    for stat in (np.mean, np.std):
        np.testing.assert_allclose(stat(mine), stat(theirs), rtol=0.03, atol=0.01)
    assert np.mean(mine == 0) == pytest.approx(np.mean(theirs == 0), abs=0.01)
    if case[0] == "SpatialDropout1D":           # whole channels, for every step
        dropped = mine == 0
        assert np.all(dropped == dropped[:, :1, :])
        np.testing.assert_allclose(mine[~dropped], 2.0 / 0.7)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_for_the_drawn_noise_matches_central_differences(case):
    _, c = _pair(case, np.float64)
    assert_gradients_numeric(c, _x(2).astype(np.float64), training=True)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_seed_reproduces_the_noise_and_training_draws_afresh(case):
    _, a = _pair(case)
    _, b = _pair(case)
    x = _x()
    first = a(x, training=True)
    np.testing.assert_array_equal(first, b(x, training=True))
    assert not np.array_equal(first, a(x, training=True))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mask_passes_on_like_keras(case):
    k, c = _pair(case)
    mask = np.ones((B, T), bool)
    mask[:, -2:] = False
    assert_mask_matches(c, k, _x(), mask, training=True)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_config_round_trip(case):
    _, c = _pair(case)
    clone = assert_config_round_trip(c, _x())
    assert clone.get_config()["seed"] == 1


def test_zero_noise_training_matches_keras():
    """With rate 0 and stddev 0 the layers are the identity in training too, as in Keras,
    so a whole training run agrees (the layers' backward included)."""
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([keras.Input((T, F)), keras.layers.GaussianNoise(0.0),
                                keras.layers.SpatialDropout1D(0.0), keras.layers.GRU(3),
                                keras.layers.GaussianDropout(0.0), keras.layers.Dense(1)])
    c_model = Sequential([GaussianNoise(0.0, input_shape=(T, F)), SpatialDropout1D(0.0),
                          GRU(3), GaussianDropout(0.0), Dense(1)])
    x = _x(3, (22, T, F))
    assert_same_training(k_model, c_model, x, x[:, 0, 0], "mse", "adam")


def test_summary_matches_keras(capsys):
    k_model = keras.Sequential([keras.Input((T, F)), keras.layers.GaussianNoise(0.1),
                                keras.layers.SpatialDropout1D(0.2), keras.layers.GRU(3),
                                keras.layers.GaussianDropout(0.2), keras.layers.Dense(1)])
    c_model = Sequential([GaussianNoise(0.1, input_shape=(T, F)), SpatialDropout1D(0.2),
                          GRU(3), GaussianDropout(0.2), Dense(1)])
    assert_summary_matches(k_model, c_model, capsys)


def test_save_load_resumes_the_same_noise(tmp_path):
    model = Sequential([GaussianNoise(0.3, input_shape=(T, F), seed=1),
                        SpatialDropout1D(0.3, seed=2), GRU(3, seed=0),
                        GaussianDropout(0.3, seed=3), Dense(1, seed=0)], seed=0)
    model.compile(loss="mse", optimizer="adam")
    x = _x(4, (8, T, F))
    model.fit(x, x[:, 0, 0], epochs=1, batch_size=4, verbose=0)
    assert_save_load_round_trip(model, x, x[:, 0, 0], tmp_path)


def test_bad_arguments_and_input_raise():
    with pytest.raises(ValueError, match="rate"):
        SpatialDropout1D(1.0)
    with pytest.raises(ValueError, match="rate"):
        GaussianDropout(-0.1)
    with pytest.raises(ValueError, match="stddev"):
        GaussianNoise(-1)
    with pytest.raises(ValueError, match=r"\(batch, steps, channels\).*\(6, 4\)"):
        SpatialDropout1D(0.2)(_x(shape=(B, F)))

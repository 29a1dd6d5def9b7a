"""Initializers, regularizers, constraints and use_bias against real Keras 3."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

import cgru  # noqa: E402
from cgru import GRU, Dense, Sequential, constraints, initializers, regularizers  # noqa: E402
from cgru import optimizers as copt  # noqa: E402

T, I, H, N = 6, 4, 3, 20


# -- initializers ---------------------------------------------------------------------------
RANDOM_INITIALIZERS = ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal",
                       "lecun_uniform", "lecun_normal", "random_normal", "random_uniform",
                       "truncated_normal", "variance_scaling", "orthogonal"]


@pytest.mark.parametrize("name", RANDOM_INITIALIZERS)
def test_random_initializers_draw_keras_distributions(name):
    shape = (120, 250)
    ours = initializers.get(name)(shape, "float64", np.random.default_rng(0))
    theirs = np.asarray(keras.initializers.get(name)(shape, dtype="float64"))
    assert ours.shape == theirs.shape and ours.dtype == np.float64
    # same bounds and spread (the random numbers themselves come from other generators)
    np.testing.assert_allclose(ours.std(), theirs.std(), rtol=0.03)
    for q in (50, 90, 99.9):
        np.testing.assert_allclose(np.percentile(np.abs(ours), q),
                                   np.percentile(np.abs(theirs), q), rtol=0.05, err_msg=q)
    assert np.abs(ours).max() <= 1.02 * np.abs(theirs).max() or name in (
        "random_normal", "orthogonal")      # only those two are unbounded
    assert abs(ours.mean()) < 4 * theirs.std() / np.sqrt(ours.size)


@pytest.mark.parametrize("init,shape", [("zeros", (3, 4)), ("ones", (2, 5)),
                                        (("Constant", {"value": 3.5}), (4,)),
                                        (("Identity", {"gain": 2.0}), (3, 5)),
                                        (("Identity", {"gain": 0.5}), (4, 2))])
def test_deterministic_initializers_equal_keras(init, shape):
    if isinstance(init, tuple):
        ours = getattr(initializers, init[0])(**init[1])
        theirs = getattr(keras.initializers, init[0])(**init[1])
    else:
        ours, theirs = initializers.get(init), keras.initializers.get(init)
    np.testing.assert_array_equal(ours(shape, "float32"), np.asarray(theirs(shape)))


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (2, 3, 4)])
def test_orthogonal_is_orthogonal_like_keras(shape):
    w = initializers.Orthogonal(gain=1.5, seed=1)(shape, "float64")
    flat = w.reshape(-1, shape[-1])
    small = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
    np.testing.assert_allclose(small, 1.5**2 * np.eye(len(small)), atol=1e-12)


def test_truncated_normal_stays_within_two_standard_deviations():
    w = initializers.TruncatedNormal(mean=1.0, stddev=0.1)((300, 300), "float64")
    assert np.abs(w - 1.0).max() <= 0.2


def test_seeded_initializer_repeats_and_layer_seed_decides_otherwise():
    init = initializers.HeNormal(seed=3)
    np.testing.assert_array_equal(init((4, 5)), init((4, 5)))
    a = GRU(3, kernel_initializer=initializers.HeNormal(), input_shape=(2, 4), seed=1)
    b = GRU(3, kernel_initializer="he_normal", input_shape=(2, 4), seed=1)
    np.testing.assert_array_equal(a.get_weights()[0], b.get_weights()[0])


def test_initializer_names_and_errors():
    for name in ("GlorotUniform", "glorot_uniform", "HeUniform", "identity"):
        assert isinstance(initializers.get(name), initializers.Initializer)
    with pytest.raises(ValueError, match="Unknown initializer"):
        initializers.get("glorot")
    with pytest.raises(ValueError, match="Unknown initializer"):
        GRU(3, kernel_initializer="nope")
    with pytest.raises(ValueError, match="Identity initializer requires a 2D shape"):
        initializers.Identity()((2, 2, 2))


# -- regularizers ---------------------------------------------------------------------------
REGULARIZERS = {
    "l1": (lambda m: m.L1(0.02)),
    "l2": (lambda m: m.L2(0.03)),
    "l1_l2": (lambda m: m.L1L2(l1=0.01, l2=0.02)),
    "orthogonal_rows": (lambda m: m.OrthogonalRegularizer(0.1, mode="rows")),
    "orthogonal_columns": (lambda m: m.OrthogonalRegularizer(0.2, mode="columns")),
}


@pytest.mark.parametrize("name", list(REGULARIZERS))
def test_regularizer_penalties_equal_keras_and_gradients_are_exact(name):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 7))
    ours, theirs = REGULARIZERS[name](regularizers), REGULARIZERS[name](keras.regularizers)
    w32 = w.astype(np.float32)
    # a tensor, as inside a model (Keras's NumPy path of `normalize` mishandles axis=0)
    assert ours(w32) == pytest.approx(float(theirs(keras.ops.convert_to_tensor(w32))), rel=1e-6)
    g = ours.gradient(w)
    numeric = np.zeros_like(w)
    eps = 1e-6
    for i in np.ndindex(w.shape):
        old = w[i]
        w[i] = old + eps
        plus = ours(w)
        w[i] = old - eps
        minus = ours(w)
        w[i] = old
        numeric[i] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-9)


def test_regularizer_names_like_keras():
    assert regularizers.get("l2").l2 == pytest.approx(keras.regularizers.get("l2").l2)
    assert regularizers.get("l1").l1 == pytest.approx(keras.regularizers.get("l1").l1)
    assert regularizers.l1_l2 is regularizers.L1L2      # as keras.regularizers.l1_l2
    both = regularizers.get("l1_l2")                   # Keras's documented defaults
    assert (both.l1, both.l2) == (0.01, 0.01)
    with pytest.raises(ValueError, match="Unknown regularizer"):
        regularizers.get(lambda w: 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        regularizers.L2(-1.0)


# -- constraints ----------------------------------------------------------------------------
CONSTRAINTS = {
    "max_norm0": (lambda m: m.MaxNorm(1.5, axis=0)),
    "max_norm1": (lambda m: m.MaxNorm(0.7, axis=1)),
    "min_max_norm": (lambda m: m.MinMaxNorm(0.5, 1.2, rate=0.7, axis=0)),
    "non_neg": (lambda m: m.NonNeg()),
    "unit_norm": (lambda m: m.UnitNorm(axis=1)),
}


@pytest.mark.parametrize("name", list(CONSTRAINTS))
def test_constraints_equal_keras(name):
    w = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)
    ours, theirs = CONSTRAINTS[name](constraints), CONSTRAINTS[name](keras.constraints)
    np.testing.assert_allclose(ours(w), np.asarray(theirs(w)), rtol=1e-6, atol=1e-7)


# -- training with all of them, against Keras -----------------------------------------------
def _twins(optimizer, use_bias=True, reset_after=True):
    keras.utils.set_random_seed(0)
    gru_kw = dict(use_bias=use_bias, reset_after=reset_after, return_sequences=True)
    reg_kw = dict(kernel_constraint="max_norm", recurrent_constraint="unit_norm")
    k_model = keras.Sequential([
        keras.Input((T, I)),
        keras.layers.GRU(H, kernel_regularizer=keras.regularizers.L2(0.05),
                         recurrent_regularizer=keras.regularizers.L1(0.02),
                         bias_regularizer=keras.regularizers.L2(0.1),
                         activity_regularizer=keras.regularizers.L2(0.05),
                         bias_constraint="non_neg" if use_bias else None, **gru_kw, **reg_kw),
        keras.layers.GRU(H, kernel_regularizer=keras.regularizers.OrthogonalRegularizer(0.3),
                         use_bias=use_bias, reset_after=reset_after),
        keras.layers.Dense(1, activation="sigmoid",
                           kernel_regularizer=keras.regularizers.L1L2(0.01, 0.02),
                           kernel_constraint=keras.constraints.MinMaxNorm(0.1, 0.5, axis=0))])
    c_model = Sequential([
        GRU(H, kernel_regularizer=regularizers.L2(0.05),
            recurrent_regularizer=regularizers.L1(0.02), bias_regularizer=regularizers.L2(0.1),
            activity_regularizer=regularizers.L2(0.05),
            bias_constraint="non_neg" if use_bias else None, input_shape=(T, I), **gru_kw,
            **reg_kw),
        GRU(H, kernel_regularizer=regularizers.OrthogonalRegularizer(0.3), use_bias=use_bias,
            reset_after=reset_after),
        Dense(1, activation="sigmoid", kernel_regularizer=regularizers.L1L2(0.01, 0.02),
              kernel_constraint=constraints.MinMaxNorm(0.1, 0.5, axis=0))])
    weights = k_model.get_weights()
    rng = np.random.default_rng(5)      # non-zero biases, so bias terms cannot hide
    weights = [w + rng.uniform(0, 0.2, w.shape).astype(np.float32) if w.ndim == 1
               or w.shape[0] == 2 else w for w in weights]
    k_model.set_weights(weights)
    c_model.set_weights(weights)
    k_model.compile(optimizer=optimizer(keras.optimizers), loss="binary_crossentropy",
                    metrics=["accuracy"])
    c_model.compile(optimizer=optimizer(copt), loss="binary_crossentropy",
                    metrics=["accuracy"])
    return k_model, c_model


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("use_bias,reset_after", [(True, True), (False, True), (True, False)])
def test_regularized_constrained_training_matches_keras(optimizer, use_bias, reset_after):
    make = {"sgd": lambda m: m.SGD(learning_rate=0.1), "adam": lambda m: m.Adam(0.02)}
    k_model, c_model = _twins(make[optimizer], use_bias, reset_after)
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((N, T, I)).astype(np.float32)
    ys = (xs[:, 0, 0] > 0).astype(np.float32)
    np.testing.assert_allclose(c_model.evaluate(xs, ys, batch_size=8)[0],
                               k_model.evaluate(xs, ys, batch_size=8, verbose=0)[0],
                               rtol=1e-5)
    kh = k_model.fit(xs, ys, batch_size=8, epochs=3, shuffle=False, verbose=0)
    ch = c_model.fit(xs, ys, batch_size=8, epochs=3, shuffle=False, verbose=0)
    for key in kh.history:
        np.testing.assert_allclose(ch.history[key], kh.history[key], rtol=1e-4, err_msg=key)
    for cw, kw in zip(c_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(cw, kw, rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(c_model.predict(xs), k_model.predict(xs, verbose=0), atol=2e-6)


def test_use_bias_false_has_no_bias_weight_like_keras():
    k = keras.layers.GRU(H, use_bias=False)
    k.build((None, T, I))
    c = GRU(H, use_bias=False, input_shape=(T, I))
    assert [w.shape for w in c.get_weights()] == [w.shape for w in k.get_weights()]
    c.set_weights(k.get_weights())
    x = np.random.default_rng(0).standard_normal((3, T, I)).astype(np.float32)
    np.testing.assert_allclose(c(x), np.asarray(k(x)), atol=2e-6)


def test_configs_round_trip_through_save_and_load(tmp_path):
    model = Sequential([
        GRU(H, input_shape=(T, I), kernel_initializer=initializers.HeNormal(seed=2),
            kernel_regularizer="l2", recurrent_constraint=constraints.MaxNorm(2.5, axis=1),
            activity_regularizer=regularizers.L1(0.3), use_bias=False),
        Dense(1, kernel_regularizer=regularizers.OrthogonalRegularizer(0.1, "columns"),
              bias_constraint="non_neg", trainable=False)])
    model.compile(loss="mse", optimizer="adam")
    xs = np.random.default_rng(0).standard_normal((8, T, I))
    model.fit(xs, np.ones((8, 1)), verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = cgru.load_model(tmp_path / "m.npz")
    gru, dense = loaded.layers
    assert isinstance(gru.kernel_regularizer, regularizers.L2)
    assert gru.recurrent_constraint.max_value == 2.5 and gru.recurrent_constraint.axis == 1
    assert gru.activity_regularizer.l1 == pytest.approx(0.3) and gru.use_bias is False
    assert dense.kernel_regularizer.mode == "columns" and not dense.trainable
    assert isinstance(dense.bias_constraint, constraints.NonNeg)
    np.testing.assert_array_equal(loaded.predict(xs), model.predict(xs))
    assert loaded.evaluate(xs, np.ones((8, 1))) == model.evaluate(xs, np.ones((8, 1)))

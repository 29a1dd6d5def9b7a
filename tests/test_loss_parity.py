"""Every loss against real Keras 3 (TensorFlow backend): values for each option and
reduction, with and without sample weights and masks, in float32; gradients against
float64 central differences of cgru's own loss and against TensorFlow's gradient of
Keras's loss (float64, tf.GradientTape)."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from cgru import losses  # noqa: E402

REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none"]

# (class name, options, kind of data)
CASES = [
    ("MeanSquaredError", {}, "real"),
    ("MeanAbsoluteError", {}, "real"),
    ("MeanAbsolutePercentageError", {}, "real"),
    ("MeanSquaredLogarithmicError", {}, "positive"),
    ("Huber", {}, "real"),
    ("Huber", {"delta": 0.3}, "real"),
    ("LogCosh", {}, "real"),
    ("KLDivergence", {}, "distribution"),
    ("Poisson", {}, "positive"),
    ("Hinge", {}, "binary_real"),
    ("Hinge", {}, "signs"),
    ("SquaredHinge", {}, "binary_real"),
    ("CategoricalHinge", {}, "onehot_real"),
    ("CosineSimilarity", {}, "real"),
    ("CosineSimilarity", {"axis": 1}, "real"),
    ("BinaryCrossentropy", {}, "binary"),
    ("BinaryCrossentropy", {"label_smoothing": 0.1}, "binary"),
    ("BinaryCrossentropy", {"from_logits": True}, "binary_logits"),
    ("BinaryCrossentropy", {"from_logits": True, "label_smoothing": 0.2}, "binary_logits"),
    ("BinaryFocalCrossentropy", {}, "binary"),
    ("BinaryFocalCrossentropy", {"apply_class_balancing": True, "alpha": 0.3, "gamma": 1.5},
     "binary"),
    ("BinaryFocalCrossentropy", {"from_logits": True, "gamma": 3.0, "label_smoothing": 0.1},
     "binary_logits"),
    ("CategoricalCrossentropy", {}, "onehot"),
    ("CategoricalCrossentropy", {"label_smoothing": 0.15}, "onehot"),
    ("CategoricalCrossentropy", {"from_logits": True}, "onehot_logits"),
    ("CategoricalCrossentropy", {"from_logits": True, "label_smoothing": 0.1},
     "onehot_logits"),
    ("SparseCategoricalCrossentropy", {}, "sparse"),
    ("SparseCategoricalCrossentropy", {"from_logits": True}, "sparse_logits"),
    ("SparseCategoricalCrossentropy", {"ignore_class": 1}, "sparse"),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in opts.items()) or 'default'}-{kind}"
       for name, opts, kind in CASES]


def _data(kind, shape, seed):
    """(y_true, y_pred) in float64 for one kind of loss; shape is y_pred's."""
    rng = np.random.default_rng(seed)
    c = shape[-1]

    def softmax(v):
        e = np.exp(v - v.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    if kind == "real":
        return rng.standard_normal(shape), rng.standard_normal(shape)
    if kind == "positive":
        return rng.uniform(0, 3, shape), rng.uniform(0.1, 3, shape)
    if kind == "distribution":
        return softmax(rng.standard_normal(shape)), softmax(rng.standard_normal(shape))
    if kind == "binary_real":
        return (rng.random(shape) > 0.5).astype(float), rng.standard_normal(shape)
    if kind == "signs":
        return np.where(rng.random(shape) > 0.5, 1.0, -1.0), rng.standard_normal(shape)
    if kind == "binary":
        return (rng.random(shape) > 0.5).astype(float), rng.uniform(0.05, 0.95, shape)
    if kind == "binary_logits":
        return (rng.random(shape) > 0.5).astype(float), 2 * rng.standard_normal(shape)
    labels = rng.integers(0, c, shape[:-1])
    onehot = np.eye(c)[labels]
    if kind == "onehot_real":
        return onehot, rng.standard_normal(shape)
    if kind == "onehot":
        return onehot, softmax(rng.standard_normal(shape))
    if kind == "onehot_logits":
        return onehot, 2 * rng.standard_normal(shape)
    if kind == "sparse":
        return labels, softmax(rng.standard_normal(shape))
    if kind == "sparse_logits":
        return labels, 2 * rng.standard_normal(shape)
    raise AssertionError(kind)


def _pair(name, opts, reduction, dtype="float32"):
    keras_loss = getattr(keras.losses, name)(reduction=reduction, dtype=dtype, **opts)
    cgru_loss = getattr(losses, name)(reduction=reduction, **opts)
    return keras_loss, cgru_loss


def _keras_value(keras_loss, y, p, sample_weight, mask, dtype):
    y_t = tf.constant(y.astype(dtype) if y.dtype.kind == "f" else y)
    p_t = tf.constant(p.astype(dtype))
    if mask is not None:
        p_t._keras_mask = tf.constant(mask)
    sw = None if sample_weight is None else tf.constant(sample_weight.astype(dtype))
    return keras_loss(y_t, p_t, sample_weight=sw)


def _weights(values_shape, which, seed):
    """(sample_weight, mask) for the per-sample values' shape."""
    rng = np.random.default_rng(seed + 100)
    sample_weight = rng.uniform(0, 2, values_shape) if "sw" in which else None
    mask = None
    if "mask" in which:
        mask = rng.random(values_shape) > 0.3
        mask.flat[0] = True
    return sample_weight, mask


SHAPES = [(6, 4), (4, 3, 5)]


@pytest.mark.parametrize("name,opts,kind", CASES, ids=IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_loss_values_match_keras(name, opts, kind, reduction):
    for seed, shape in enumerate(SHAPES):
        y, p = _data(kind, shape, seed)
        keras_loss, cgru_loss = _pair(name, opts, reduction)
        values_shape = cgru_loss.values(y, p.astype(np.float32)).shape
        for which in ["", "sw", "mask", "sw+mask"]:
            sample_weight, mask = _weights(values_shape, which, seed)
            expected = np.asarray(_keras_value(keras_loss, y, p, sample_weight, mask,
                                               "float32"))
            got = cgru_loss(y, p.astype(np.float32), sample_weight=sample_weight, mask=mask)
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6,
                                       err_msg=f"{shape} {which}")
            if reduction == "none":
                assert got.shape == values_shape


def _central_differences(f, p, eps=1e-6):
    grad = np.zeros_like(p)
    for i in np.ndindex(p.shape):
        step = np.zeros_like(p)
        step[i] = eps
        grad[i] = (np.sum(f(p + step)) - np.sum(f(p - step))) / (2 * eps)
    return grad


@pytest.mark.parametrize("name,opts,kind", CASES, ids=IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_loss_gradients_match_differences_and_tensorflow(name, opts, kind, reduction):
    for seed, shape in enumerate([(5, 3), (3, 2, 4)]):
        y, p = _data(kind, shape, seed)
        keras_loss, cgru_loss = _pair(name, opts, reduction, dtype="float64")
        values_shape = cgru_loss.values(y, p).shape
        for which in ["", "sw", "sw+mask"]:
            sample_weight, mask = _weights(values_shape, which, seed)
            got = cgru_loss.gradient(y, p, sample_weight=sample_weight, mask=mask)
            assert got.shape == p.shape and got.dtype == np.float64
            fd = _central_differences(
                lambda q: cgru_loss(y, q, sample_weight=sample_weight, mask=mask), p)
            np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-8, err_msg=which)
            p_var = tf.Variable(p)
            with tf.GradientTape() as tape:
                y_t = tf.constant(y)
                p_in = tf.identity(p_var)
                if mask is not None:
                    p_in._keras_mask = tf.constant(mask)
                sw = None if sample_weight is None else tf.constant(sample_weight)
                total = tf.reduce_sum(keras_loss(y_t, p_in, sample_weight=sw))
            expected = tape.gradient(total, p_var).numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=which)


LOGIT_CASES = [(n, o, k) for n, o, k in CASES
               if n in ("BinaryCrossentropy", "CategoricalCrossentropy",
                        "SparseCategoricalCrossentropy") and not o.get("from_logits")]


@pytest.mark.parametrize("name,opts,kind", LOGIT_CASES)
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum",
                                       "mean_with_sample_weight"])
def test_logits_gradient_matches_tensorflow_through_the_activation(name, opts, kind,
                                                                   reduction):
    keras_loss, cgru_loss = _pair(name, opts, reduction, dtype="float64")
    y, _ = _data(kind, (4, 3, 5), 3)
    z = np.random.default_rng(4).standard_normal((4, 3, 5))
    activation = tf.sigmoid if cgru_loss.logits_activation == "sigmoid" else tf.nn.softmax
    sample_weight, mask = _weights((4, 3), "sw+mask", 3)
    z_var = tf.Variable(z)
    with tf.GradientTape() as tape:
        p_in = activation(z_var)
        p_in._keras_mask = tf.constant(mask)
        total = keras_loss(tf.constant(y), p_in, sample_weight=tf.constant(sample_weight))
    expected = tape.gradient(total, z_var).numpy()
    got = cgru_loss.logits_gradient(y, activation(z).numpy(), sample_weight=sample_weight,
                                    mask=mask)
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("fn_name", [
    "mean_squared_error", "mean_absolute_error", "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error", "huber", "log_cosh", "kl_divergence", "poisson",
    "hinge", "squared_hinge", "categorical_hinge", "cosine_similarity",
    "binary_crossentropy", "binary_focal_crossentropy", "categorical_crossentropy",
    "sparse_categorical_crossentropy"])
def test_loss_functions_return_keras_per_sample_values(fn_name):
    kind = {"mean_squared_logarithmic_error": "positive", "poisson": "positive",
            "kl_divergence": "distribution", "categorical_hinge": "onehot_real",
            "binary_crossentropy": "binary", "binary_focal_crossentropy": "binary",
            "categorical_crossentropy": "onehot",
            "sparse_categorical_crossentropy": "sparse"}.get(fn_name, "real")
    y, p = _data(kind, (4, 3, 5), 7)
    y = y.astype(np.float32) if y.dtype.kind == "f" else y
    p = p.astype(np.float32)
    expected = np.asarray(getattr(keras.losses, fn_name)(y, p))
    got = getattr(losses, fn_name)(y, p)
    assert got.shape == expected.shape == (4, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert type(losses.get(getattr(losses, fn_name))).__name__ == \
        type(losses.get(fn_name)).__name__


def test_names_and_aliases_resolve_as_in_keras():
    for alias, cls in [("mae", "MeanAbsoluteError"), ("MAE", "MeanAbsoluteError"),
                       ("mean_absolute_error", "MeanAbsoluteError"),
                       ("MeanAbsoluteError", "MeanAbsoluteError"),
                       ("mape", "MeanAbsolutePercentageError"),
                       ("msle", "MeanSquaredLogarithmicError"), ("kld", "KLDivergence"),
                       ("bce", "BinaryCrossentropy"), ("huber", "Huber"),
                       ("log_cosh", "LogCosh"), ("Poisson", "Poisson"),
                       ("categorical_hinge", "CategoricalHinge"),
                       ("binary_focal_crossentropy", "BinaryFocalCrossentropy"),
                       ("cosine_similarity", "CosineSimilarity")]:
        assert type(losses.get(alias)).__name__ == cls, alias
        assert type(keras.losses.get(alias)).__name__ in (cls, "function"), alias
    for cls in ["MeanSquaredError", "Huber", "BinaryFocalCrossentropy",
                "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "CosineSimilarity"]:
        assert losses.get(cls).name == getattr(keras.losses, cls)().name


def test_serialize_round_trips_and_reads_keras_objects():
    original = losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.4,
                                              gamma=1.0, label_smoothing=0.1,
                                              reduction="sum", name="focal")
    again = losses.deserialize(losses.serialize(original))
    assert type(again) is losses.BinaryFocalCrossentropy
    assert again.get_config() == original.get_config()
    keras_loss = keras.losses.Huber(delta=0.7, reduction="sum")
    from_keras = losses.get(keras_loss)
    assert isinstance(from_keras, losses.Huber) and from_keras.delta == pytest.approx(0.7)
    assert from_keras.reduction == "sum"
    keras_bce = keras.losses.BinaryCrossentropy(label_smoothing=0.2, reduction="none")
    from_keras_config = losses.deserialize(keras.losses.serialize(keras_bce))
    assert from_keras_config.get_config() == losses.get(keras_bce).get_config()
    assert from_keras_config.label_smoothing == pytest.approx(0.2)
    assert isinstance(losses.deserialize(keras.losses.serialize(keras.losses.mean_absolute_error)),
                      losses.MeanAbsoluteError)
    assert isinstance(losses.get(keras.losses.mean_squared_logarithmic_error),
                      losses.MeanSquaredLogarithmicError)
    assert isinstance(losses.get({"class_name": "CategoricalCrossentropy",
                                  "config": {"from_logits": True}}),
                      losses.CategoricalCrossentropy)
    # a model's compile config stores the loss name; it resolves back
    for cls in losses._CLASSES:
        assert type(losses.get(cls().name)) is cls


def test_custom_function_is_refused_with_the_reason():
    def my_loss(y_true, y_pred):
        return np.mean((y_true - y_pred) ** 4, axis=-1)
    with pytest.raises(ValueError, match="no automatic differentiation.*MeanSquaredError"):
        losses.get(my_loss)
    with pytest.raises(ValueError, match="no automatic differentiation"):
        losses.get(lambda y, p: y - p)


def test_bad_weights_and_reduction_raise_clear_errors():
    loss = losses.MeanSquaredError()
    y = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"sample_weight.*\(5,\).*\(4,\)"):
        loss(y, y, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match="reduction"):
        losses.MeanSquaredError(reduction="avg")
    with pytest.raises(ValueError, match=r"\(4, 2\).*\(4, 3\)"):
        loss(np.zeros((4, 2)), y)
    with pytest.raises(ValueError, match="axis=-1 only"):
        losses.BinaryCrossentropy(axis=1)


def test_per_sample_weights_cover_every_step_of_a_sequence():
    """(B,) weights on (B, T) values weight each sample's steps (Keras 3 raises here)."""
    rng = np.random.default_rng(0)
    y, p = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 4, 2))
    w = np.array([1.0, 0.0, 2.0])
    loss = losses.MeanSquaredError()
    expected = loss(y, p, sample_weight=np.repeat(w[:, None], 4, axis=1))
    assert loss(y, p, sample_weight=w) == pytest.approx(expected)
    np.testing.assert_allclose(loss.gradient(y, p, sample_weight=w),
                               loss.gradient(y, p, sample_weight=np.repeat(w[:, None], 4, 1)))


def test_fully_masked_batch_gives_zero_loss_and_gradient():
    loss = losses.MeanAbsoluteError()
    y, p = np.zeros((2, 3, 1)), np.ones((2, 3, 1))
    mask = np.zeros((2, 3), bool)
    assert loss(y, p, mask=mask) == 0.0
    assert not np.any(loss.gradient(y, p, mask=mask))

"""Every metric against real Keras 3, accumulated over several update_state calls with and
without sample weights (and masks for the mean metrics)."""
import os
import re

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from cgru import metrics  # noqa: E402

C = 4


def _softmax(v):
    e = np.exp(v - v.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _batch(kind, shape, rng):
    """(y_true, y_pred) float32 for one kind of metric; shape is y_pred's."""
    if kind == "binary":
        return ((rng.random(shape[:-1]) > 0.5).astype(np.float32),
                rng.random(shape).astype(np.float32))
    if kind == "multilabel":
        return ((rng.random(shape) > 0.5).astype(np.float32),
                rng.random(shape).astype(np.float32))
    if kind == "logits":
        return ((rng.random(shape) > 0.5).astype(np.float32),
                (3 * rng.standard_normal(shape)).astype(np.float32))
    if kind == "real":
        return (rng.standard_normal(shape).astype(np.float32),
                rng.standard_normal(shape).astype(np.float32))
    if kind == "positive":
        return (rng.uniform(0, 3, shape).astype(np.float32),
                rng.uniform(0.1, 3, shape).astype(np.float32))
    labels = rng.integers(0, shape[-1], shape[:-1])
    probs = _softmax(rng.standard_normal(shape)).astype(np.float32)
    if kind == "sparse":
        return labels, probs
    if kind == "onehot":
        return np.eye(shape[-1], dtype=np.float32)[labels], probs
    if kind == "distribution":
        return _softmax(rng.standard_normal(shape)).astype(np.float32), probs
    raise AssertionError(kind)


# (class name, options, kind of data, shapes of y_pred to try)
MEAN_CASES = [
    ("BinaryAccuracy", {}, "binary", [(8, 1), (4, 3, 1)]),
    ("BinaryAccuracy", {"threshold": 0.3}, "multilabel", [(8, C)]),
    ("CategoricalAccuracy", {}, "onehot", [(8, C), (4, 3, C)]),
    ("SparseCategoricalAccuracy", {}, "sparse", [(8, C), (4, 3, C)]),
    ("TopKCategoricalAccuracy", {"k": 2}, "onehot", [(8, C), (4, 3, C)]),
    ("SparseTopKCategoricalAccuracy", {"k": 3}, "sparse", [(8, C)]),
    ("SparseTopKCategoricalAccuracy", {}, "sparse", [(8, 7)]),
    ("MeanSquaredError", {}, "real", [(8, C), (4, 3, C)]),
    ("MeanAbsoluteError", {}, "real", [(8, C), (4, 3, C)]),
    ("MeanAbsolutePercentageError", {}, "real", [(8, C)]),
    ("MeanSquaredLogarithmicError", {}, "positive", [(8, C)]),
    ("RootMeanSquaredError", {}, "real", [(8, C), (4, 3, C)]),
    ("BinaryCrossentropy", {}, "multilabel", [(8, C)]),
    ("BinaryCrossentropy", {"from_logits": True, "label_smoothing": 0.1}, "logits", [(8, C)]),
    ("CategoricalCrossentropy", {}, "onehot", [(8, C), (4, 3, C)]),
    ("SparseCategoricalCrossentropy", {}, "sparse", [(8, C)]),
    ("KLDivergence", {}, "distribution", [(8, C)]),
    ("Poisson", {}, "positive", [(8, C)]),
    ("Hinge", {}, "multilabel", [(8, C)]),
    ("SquaredHinge", {}, "multilabel", [(8, C)]),
    ("CategoricalHinge", {}, "onehot", [(8, C)]),
    ("CosineSimilarity", {}, "real", [(8, C)]),
    ("LogCoshError", {}, "real", [(8, C)]),
]
CONFUSION_CASES = [
    ("AUC", {}, "binary", [(16, 1)]),
    ("AUC", {"curve": "PR"}, "binary", [(16, 1)]),
    ("AUC", {"summation_method": "minoring"}, "binary", [(16, 1)]),
    ("AUC", {"curve": "PR", "summation_method": "majoring"}, "binary", [(16, 1)]),
    ("AUC", {"num_thresholds": 7}, "multilabel", [(8, C)]),
    ("AUC", {"thresholds": [0.1, 0.35, 0.5, 0.8]}, "binary", [(16, 1)]),
    ("AUC", {"from_logits": True}, "logits", [(8, C)]),
    ("AUC", {"label_weights": [0.5, 1.0, 2.0, 0.0]}, "multilabel", [(8, C)]),
    ("Precision", {}, "binary", [(16, 1)]),
    ("Precision", {"thresholds": [0.3, 0.6]}, "multilabel", [(8, C)]),
    ("Precision", {"thresholds": [0.0, 0.25, 0.5, 0.75, 1.0]}, "multilabel", [(8, C)]),
    ("Precision", {"top_k": 2}, "multilabel", [(8, C)]),
    ("Precision", {"class_id": 1}, "multilabel", [(8, C)]),
    ("Precision", {"top_k": 2, "class_id": 3, "thresholds": 0.2}, "multilabel", [(8, C)]),
    ("Recall", {}, "binary", [(16, 1)]),
    ("Recall", {"thresholds": [0.3, 0.6]}, "multilabel", [(8, C), (4, 3, C)]),
    ("Recall", {"top_k": 1}, "multilabel", [(8, C)]),
    ("Recall", {"class_id": 2}, "multilabel", [(8, C)]),
]
CASES = MEAN_CASES + CONFUSION_CASES
CONFUSION_NAMES = {n for n, *_ in CONFUSION_CASES}
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}" for n, o, *_ in CASES]


def _weights(kind, shape, which, rng):
    """Per-sample (B,) or per-step (B, T) weights, as a mask or sample weights."""
    values_shape = shape[:-1]
    if which == "per_sample":
        return rng.uniform(0, 2, values_shape[:1]).astype(np.float32)
    if which == "per_step":
        return rng.uniform(0, 2, values_shape).astype(np.float32)
    return None


@pytest.mark.parametrize("name,opts,kind,shapes", CASES, ids=IDS)
@pytest.mark.parametrize("which", ["none", "per_sample", "per_step"])
def test_metric_accumulates_like_keras(name, opts, kind, shapes, which):
    rng = np.random.default_rng(len(name) + len(opts))
    for shape in shapes:
        if which == "per_step" and len(shape) < 3:
            continue
        keras_metric = getattr(keras.metrics, name)(**opts)
        cgru_metric = getattr(metrics, name)(**opts)
        for _ in range(3):
            y, p = _batch(kind, shape, rng)
            sample_weight = _weights(kind, shape, which, rng)
            keras_weight = sample_weight
            if name in CONFUSION_NAMES and which == "per_sample" and len(shape) == 3:
                # Keras 3 cannot broadcast (B,) over (B, T, C); cgru weights every step
                keras_weight = np.repeat(sample_weight[:, None], shape[1], axis=1)
            keras_metric.update_state(y, p, sample_weight=keras_weight)
            cgru_metric.update_state(y, p, sample_weight=sample_weight)
        expected = np.asarray(keras_metric.result())
        got = cgru_metric.result()
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=str(shape))
        keras_metric.reset_state()
        cgru_metric.reset_state()
        y, p = _batch(kind, shape, rng)
        keras_metric.update_state(y, p)
        cgru_metric.update_state(y, p)
        np.testing.assert_allclose(cgru_metric.result(), np.asarray(keras_metric.result()),
                                   rtol=1e-6, atol=1e-6)


def test_auc_is_close_to_the_exact_area():
    """Keras's 200-threshold approximation, and cgru's, is near the exact ROC AUC."""
    rng = np.random.default_rng(0)
    y = (rng.random(400) > 0.5).astype(np.float32)
    p = np.clip(0.3 * y + 0.7 * rng.random(400), 0, 1).astype(np.float32)
    auc = metrics.AUC()
    auc.update_state(y, p)
    pos, neg = p[y == 1], p[y == 0]
    exact = np.mean(pos[:, None] > neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg[None, :])
    assert auc.result() == pytest.approx(exact, abs=5e-3)
    keras_auc = keras.metrics.AUC()
    keras_auc.update_state(y, p)
    assert auc.result() == pytest.approx(float(keras_auc.result()), abs=1e-6)


@pytest.mark.parametrize("name,kind", [("categorical_accuracy", "onehot"),
                                       ("mse", "real"), ("binary_crossentropy", "multilabel")])
def test_masked_mean_metrics_match_keras(name, kind):
    rng = np.random.default_rng(5)
    keras_metric = keras.metrics.get(name)
    keras_metric = keras_metric if isinstance(keras_metric, keras.metrics.Metric) else \
        keras.metrics.MeanMetricWrapper(keras_metric)
    cgru_metric = metrics.get(name, (4, 3, C), (4, 3, C))
    for _ in range(3):
        y, p = _batch(kind, (4, 3, C), rng)
        mask = rng.random((4, 3)) > 0.4
        sample_weight = rng.uniform(0, 2, (4, 3)).astype(np.float32)
        p_tensor = tf.constant(p)
        p_tensor._keras_mask = tf.constant(mask)
        keras_metric.update_state(tf.constant(y), p_tensor, sample_weight=sample_weight)
        cgru_metric.update_state(y, p, sample_weight=sample_weight, mask=mask)
    np.testing.assert_allclose(cgru_metric.result(), float(keras_metric.result()), rtol=1e-6)


@pytest.mark.parametrize("identifier", ["mse", "mae", "mape", "msle", "rmse", "auc", "AUC",
                                        "precision", "recall", "binary_crossentropy",
                                        "kl_divergence", "hinge", "top_k_categorical_accuracy",
                                        "RootMeanSquaredError"])
def test_string_metrics_keep_their_spelling_as_in_history(identifier):
    assert metrics.get(identifier, (8, C), (8, C)).name == identifier


@pytest.mark.parametrize("name", [n for n, *_ in CASES])
def test_default_names_are_keras_names(name):
    # Keras numbers the second instance of a name ("auc_1")
    keras_name = re.sub(r"_\d+$", "", getattr(keras.metrics, name)().name)
    assert getattr(metrics, name)().name == keras_name


def test_loss_names_and_functions_become_mean_metrics():
    rng = np.random.default_rng(2)
    y, p = _batch("real", (8, C), rng)
    for identifier in ["huber", "log_cosh", metrics.losses_mod.mean_absolute_error]:
        m = metrics.get(identifier, y.shape, p.shape)
        m.update_state(y, p)
        fn = metrics.losses_mod.get(identifier)
        assert m.result() == pytest.approx(float(np.mean(fn.values(y, p))), rel=1e-6)

    def fourth_power(y_true, y_pred):
        return np.mean((y_true - y_pred) ** 4, axis=-1)
    m = metrics.get(fourth_power, y.shape, p.shape)
    m.update_state(y, p, sample_weight=np.arange(8.0))
    assert m.name == "fourth_power"
    assert m.result() == pytest.approx(
        float(np.sum(fourth_power(y, p) * np.arange(8.0)) / np.sum(np.arange(8.0))))


def test_configs_round_trip_and_read_keras_configs():
    for m in [metrics.AUC(num_thresholds=50, curve="PR"), metrics.Precision(thresholds=[0.2],
              top_k=2, class_id=1), metrics.TopKCategoricalAccuracy(k=3, name="top3"),
              metrics.BinaryAccuracy(threshold=0.7), metrics.MeanSquaredError(name="m"),
              metrics.BinaryCrossentropy(from_logits=True)]:
        again = metrics.deserialize(metrics.serialize(m))
        assert type(again) is type(m) and again.get_config() == m.get_config()
    from_keras = metrics.deserialize(keras.metrics.serialize(keras.metrics.AUC(
        num_thresholds=33, curve="PR")))
    assert from_keras.num_thresholds == 33 and from_keras.curve == "PR"


def test_unsupported_options_raise_clear_errors():
    with pytest.raises(ValueError, match="multi_label"):
        metrics.AUC(multi_label=True)
    with pytest.raises(ValueError, match="PRGAIN"):
        metrics.AUC(curve="PRGAIN")
    with pytest.raises(ValueError, match="Unknown metric"):
        metrics.get("no_such_metric")
    with pytest.raises(ValueError, match=r"sample_weight.*\(5,\)"):
        metrics.get("mse").update_state(np.zeros((4, 2)), np.zeros((4, 2)),
                                        sample_weight=np.ones(5))


def test_get_gives_fresh_copies_and_reads_keras_metrics():
    auc = metrics.AUC(num_thresholds=20, name="my_auc")
    auc.update_state(np.array([1.0, 0.0]), np.array([0.9, 0.2]))
    fresh = metrics.get(auc)
    assert fresh is not auc and fresh.name == "my_auc" and fresh.result() == 0.0
    assert auc.result() == pytest.approx(1.0)
    from_keras = metrics.get(keras.metrics.Precision(thresholds=0.3, name="p"))
    assert isinstance(from_keras, metrics.Precision) and from_keras.name == "p"
    assert from_keras.thresholds == [pytest.approx(0.3)]

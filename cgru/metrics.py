"""Keras 3's metrics, accumulated over several batches with optional sample weights.

Mean metrics (accuracies, errors, losses used as metrics) follow Keras's
``MeanMetricWrapper``: per-sample values are reduced to one value per sample (the mean
over the axes the weights do not cover) and accumulated as ``total = sum(w * v)``,
``count = sum(w)`` (the number of samples without weights); ``result() = total / count``.
Confusion metrics (``AUC``, ``Precision``, ``Recall``) accumulate weighted true/false
positive and negative counts per threshold as Keras's ``update_confusion_matrix_variables``
does. A ``mask`` (the shape of the per-sample values) multiplies the sample weights.
"""
import copy
import inspect

import numpy as np

from . import losses as losses_mod

EPSILON = 1e-7
NEG_INF = -1e10     # Keras's score for predictions outside the top k


def _squeeze_or_expand(x1, x2, expand_rank_1=True):
    """Keras's squeeze_or_expand_to_same_rank."""
    if x1.ndim == x2.ndim + 1 and x1.shape[-1] == 1:
        if x2.ndim == 1 and expand_rank_1:
            x2 = x2[..., None]
        else:
            x1 = x1[..., 0]
    if x2.ndim == x1.ndim + 1 and x2.shape[-1] == 1:
        if x1.ndim == 1 and expand_rank_1:
            x1 = x1[..., None]
        else:
            x2 = x2[..., 0]
    return x1, x2


def _weights_with_mask(sample_weight, mask):
    """Keras's apply_mask with reduction "sum": the mask multiplies the weights."""
    if mask is None:
        return None if sample_weight is None else np.asarray(sample_weight, np.float64)
    float_mask = np.asarray(mask).astype(np.float64)
    if sample_weight is None:
        return float_mask
    float_mask, sample_weight = _squeeze_or_expand(float_mask,
                                                   np.asarray(sample_weight, np.float64))
    return sample_weight * float_mask


def _samplewise(values, sample_weight):
    """Keras's reduce_to_samplewise_values with the mean: ``(values (B,), weights (B,))``."""
    values = np.asarray(values, np.float64)
    if sample_weight is not None:
        given = sample_weight.shape
        values, sample_weight = _squeeze_or_expand(values, sample_weight)
        weight_ndim = sample_weight.ndim
        if values.ndim > weight_ndim:
            values = np.mean(values, axis=tuple(range(weight_ndim, values.ndim)))
        try:
            sample_weight = np.broadcast_to(sample_weight, values.shape)
        except ValueError:
            raise ValueError(f"`sample_weight` of shape {given} does not fit the metric's "
                             f"per-sample values of shape {values.shape}.") from None
        values = values * sample_weight
        if weight_ndim > 1:
            sample_weight = np.mean(sample_weight, axis=tuple(range(1, weight_ndim)))
    if values.ndim > 1:
        values = losses_mod._mean(values, tuple(range(1, values.ndim)))
    return values, sample_weight


class Metric:
    """Base class: ``update_state(y_true, y_pred, sample_weight=None)``, ``result()``,
    ``reset_state()``, ``get_config()``."""

    def __init__(self, name=None, dtype="float32"):
        self.name = name or type(self).__name__.lower()
        self.dtype = dtype
        self.reset_state()

    def reset_state(self):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None, mask=None):
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}>"


class MeanMetricWrapper(Metric):
    """The weighted mean of ``values(y_true, y_pred)`` over all samples seen."""

    def __init__(self, fn=None, name=None, dtype="float32", **fn_kwargs):
        self._fn = fn
        self._fn_kwargs = fn_kwargs
        super().__init__(name or getattr(fn, "__name__", None), dtype)

    def reset_state(self):
        self.total = 0.0
        self.count = 0.0

    def values(self, y_true, y_pred):
        """Per-sample values of the metric, before the mean."""
        return np.asarray(self._fn(y_true, y_pred, **self._fn_kwargs))

    def update_state(self, y_true, y_pred, sample_weight=None, mask=None):
        values = self.values(np.asarray(y_true), np.asarray(y_pred))
        weights = _weights_with_mask(sample_weight, mask)
        values, weights = _samplewise(values, weights)
        self.total += float(values.sum(dtype=np.float64))
        if weights is not None:
            self.count += float(weights.sum(dtype=np.float64))
        else:
            self.count += values.shape[0] if values.ndim >= 1 else 1

    def result(self):
        return self.total / self.count if self.count else 0.0


# -- accuracies -----------------------------------------------------------------------------
def binary_accuracy(y_true, y_pred, threshold=0.5):
    """1.0 where ``y_pred > threshold`` equals the label, elementwise."""
    y_true, y_pred = _squeeze_or_expand(np.asarray(y_true), np.asarray(y_pred))
    return (y_true == (y_pred > threshold)).astype(np.float32)


def categorical_accuracy(y_true, y_pred):
    """1.0 where the argmax of the prediction is the argmax of the one-hot label."""
    return (np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)).astype(np.float32)


def _sparse_labels(y_true, y_pred):
    y_true = np.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return y_true


def sparse_categorical_accuracy(y_true, y_pred):
    """1.0 where the argmax of the prediction is the integer label."""
    y_pred = np.asarray(y_pred)
    return (_sparse_labels(y_true, y_pred) == np.argmax(y_pred, axis=-1)).astype(np.float32)


def _in_top_k(labels, y_pred, k):
    """TensorFlow's in_top_k: fewer than k scores strictly above the label's score (ties
    at the boundary count as inside); False for rows with non-finite scores."""
    y_pred = np.asarray(y_pred, np.float64)
    picked = np.take_along_axis(y_pred, labels.astype(np.int64)[..., None], axis=-1)
    above = np.sum(y_pred > picked, axis=-1)
    finite = np.all(np.isfinite(y_pred), axis=-1)
    return ((above < k) & finite).astype(np.float32)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1.0 where the one-hot label's class is among the k highest scores."""
    return _in_top_k(np.argmax(y_true, axis=-1), y_pred, k)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1.0 where the integer label is among the k highest scores."""
    y_pred = np.asarray(y_pred)
    return _in_top_k(_sparse_labels(y_true, y_pred), y_pred, k)


class BinaryAccuracy(MeanMetricWrapper):
    def __init__(self, name="binary_accuracy", threshold=0.5, dtype="float32"):
        self.threshold = threshold
        super().__init__(binary_accuracy, name, dtype, threshold=threshold)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


class CategoricalAccuracy(MeanMetricWrapper):
    def __init__(self, name="categorical_accuracy", dtype="float32"):
        super().__init__(categorical_accuracy, name, dtype)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    def __init__(self, name="sparse_categorical_accuracy", dtype="float32"):
        super().__init__(sparse_categorical_accuracy, name, dtype)


class TopKCategoricalAccuracy(MeanMetricWrapper):
    def __init__(self, k=5, name="top_k_categorical_accuracy", dtype="float32"):
        self.k = int(k)
        super().__init__(top_k_categorical_accuracy, name, dtype, k=self.k)

    def get_config(self):
        return {**super().get_config(), "k": self.k}


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    def __init__(self, k=5, name="sparse_top_k_categorical_accuracy", dtype="float32"):
        self.k = int(k)
        super().__init__(sparse_top_k_categorical_accuracy, name, dtype, k=self.k)

    def get_config(self):
        return {**super().get_config(), "k": self.k}


# -- errors and losses as metrics ----------------------------------------------------------------
class LossMetric(MeanMetricWrapper):
    """The weighted mean of a loss's per-sample values (Keras's metric of the same name)."""

    def __init__(self, loss, name=None, dtype="float32"):
        self.loss = losses_mod.get(loss)
        super().__init__(None, name or self.loss.name, dtype)

    def values(self, y_true, y_pred):
        return self.loss.values(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "loss": losses_mod.serialize(self.loss)}


def _loss_metric_class(loss_cls, default_name):
    """A metric class named as Keras's, computing ``loss_cls``'s per-sample values."""
    params = [p for p in inspect.signature(loss_cls).parameters.values()
              if p.name not in ("reduction", "name")]

    def __init__(self, name=default_name, dtype="float32", **options):
        unknown = set(options) - {p.name for p in params}
        if unknown:
            raise TypeError(f"{loss_cls.__name__} metric got unexpected options "
                            f"{sorted(unknown)}.")
        self.options = options
        LossMetric.__init__(self, loss_cls(**options), name, dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, **self.options}
    return type(loss_cls.__name__, (LossMetric,), {
        "__init__": __init__, "get_config": get_config,
        "__doc__": f"Keras's ``{loss_cls.__name__}`` metric: the weighted mean of the "
                   "loss's per-sample values."})


MeanSquaredError = _loss_metric_class(losses_mod.MeanSquaredError, "mean_squared_error")
MeanAbsoluteError = _loss_metric_class(losses_mod.MeanAbsoluteError, "mean_absolute_error")
MeanAbsolutePercentageError = _loss_metric_class(losses_mod.MeanAbsolutePercentageError,
                                                 "mean_absolute_percentage_error")
MeanSquaredLogarithmicError = _loss_metric_class(losses_mod.MeanSquaredLogarithmicError,
                                                 "mean_squared_logarithmic_error")
BinaryCrossentropy = _loss_metric_class(losses_mod.BinaryCrossentropy, "binary_crossentropy")
CategoricalCrossentropy = _loss_metric_class(losses_mod.CategoricalCrossentropy,
                                             "categorical_crossentropy")
SparseCategoricalCrossentropy = _loss_metric_class(losses_mod.SparseCategoricalCrossentropy,
                                                   "sparse_categorical_crossentropy")
KLDivergence = _loss_metric_class(losses_mod.KLDivergence, "kl_divergence")
Poisson = _loss_metric_class(losses_mod.Poisson, "poisson")
Hinge = _loss_metric_class(losses_mod.Hinge, "hinge")
SquaredHinge = _loss_metric_class(losses_mod.SquaredHinge, "squared_hinge")
CategoricalHinge = _loss_metric_class(losses_mod.CategoricalHinge, "categorical_hinge")


class CosineSimilarity(MeanMetricWrapper):
    """The weighted mean cosine similarity along ``axis`` (Keras's metric: the negative of
    the loss of the same name)."""

    def __init__(self, name="cosine_similarity", dtype="float32", axis=-1):
        self.axis = axis
        self._loss = losses_mod.CosineSimilarity(axis=axis)
        super().__init__(None, name, dtype)

    def values(self, y_true, y_pred):
        return -self._loss.values(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class LogCoshError(LossMetric):
    """The weighted mean of per-sample log(cosh(y_pred - y_true))."""

    def __init__(self, name="logcosh", dtype="float32"):
        super().__init__(losses_mod.LogCosh(), name, dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


class RootMeanSquaredError(MeanMetricWrapper):
    """``sqrt`` of the weighted mean of per-sample mean squared errors."""

    def __init__(self, name="root_mean_squared_error", dtype="float32"):
        super().__init__(losses_mod.mean_squared_error, name, dtype)

    def result(self):
        return float(np.sqrt(super().result()))


# -- confusion metrics ---------------------------------------------------------------------------
def _evenly_spaced(thresholds):
    """Keras's is_evenly_distributed_thresholds."""
    n = len(thresholds)
    if n < 3:
        return False
    even = np.arange(n, dtype=np.float32) / (n - 1)
    return bool(np.allclose(thresholds, even, atol=EPSILON))


def _filter_top_k(y_pred, k):
    """Scores outside each row's top k become NEG_INF (first index wins ties)."""
    order = np.argsort(-y_pred, axis=-1, kind="stable")[..., :k]
    keep = np.zeros(y_pred.shape, bool)
    np.put_along_axis(keep, order, True, axis=-1)
    return np.where(keep, y_pred, np.float32(NEG_INF))


def _confusion_counts(y_true, y_pred, thresholds, evenly, sample_weight, top_k=None,
                      class_id=None, label_weights=None):
    """Weighted (tp, fp, tn, fn) per threshold, as Keras's
    update_confusion_matrix_variables computes them (float32 predictions)."""
    y_pred = np.asarray(y_pred, np.float32)
    y_true = np.asarray(y_true, np.float32)
    y_pred, y_true = _squeeze_or_expand(y_pred, y_true)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"`y_true` of shape {y_true.shape} does not match `y_pred` of "
                         f"shape {y_pred.shape}.")
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, np.float64)[..., None]
        _, sample_weight = _squeeze_or_expand(y_true, sample_weight, expand_rank_1=False)
    if top_k is not None:
        y_pred = _filter_top_k(y_pred, top_k)
    if class_id is not None:
        if y_pred.ndim == 1:
            raise ValueError("When class_id is provided, y_pred must be a 2D array with "
                             f"shape (num_samples, num_classes); found {y_pred.shape}.")
        y_true, y_pred = y_true[..., class_id, None], y_pred[..., class_id, None]
    weights = np.ones(y_pred.shape)
    if sample_weight is not None:
        if 0 < sample_weight.ndim < y_pred.ndim:   # (B,) weights on sequences: every step
            sample_weight = sample_weight.reshape(
                sample_weight.shape + (1,) * (y_pred.ndim - sample_weight.ndim))
        try:
            weights = weights * np.broadcast_to(sample_weight, y_pred.shape)
        except ValueError:
            raise ValueError(f"`sample_weight` of shape {sample_weight.shape} does not fit "
                             f"`y_pred` of shape {y_pred.shape}.") from None
    if label_weights is not None:
        weights = weights * np.broadcast_to(np.asarray(label_weights), y_pred.shape)
    positive = (y_true != 0).ravel()
    weights, scores = weights.ravel(), y_pred.ravel()
    n = len(thresholds)
    if evenly:                         # Keras's bucketed path
        with_epsilon = thresholds[0] < 0 or thresholds[-1] > 1
        scores = np.clip(scores, np.float32(0), np.float32(1))
        buckets = np.ceil(scores * np.float32(n - 1)) - np.float32(1)
        if with_epsilon:
            buckets = np.maximum(buckets, 0)
        buckets = buckets.astype(np.int64)
        inside = buckets >= 0
        tp_bucket = np.bincount(buckets[inside], (weights * positive)[inside], minlength=n)
        fp_bucket = np.bincount(buckets[inside], (weights * ~positive)[inside], minlength=n)
        tp = np.cumsum(tp_bucket[::-1])[::-1]
        fp = np.cumsum(fp_bucket[::-1])[::-1]
    else:
        above = scores[None, :] > np.asarray(thresholds, np.float32)[:, None]
        tp = np.sum(above * (weights * positive), axis=1)
        fp = np.sum(above * (weights * ~positive), axis=1)
    tn = np.sum(weights * ~positive) - fp
    fn = np.sum(weights * positive) - tp
    return tp, fp, tn, fn


def _divide(a, b):
    """divide_no_nan: 0 where the divisor is 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.where(b == 0, 0.0, a / np.where(b == 0, 1.0, b))


class _ConfusionMetric(Metric):
    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None,
                 dtype="float32"):
        self.init_thresholds = thresholds
        self.top_k = top_k
        self.class_id = class_id
        default = 0.5 if top_k is None else NEG_INF
        if thresholds is None:
            thresholds = [default]
        elif np.ndim(thresholds) == 0:
            thresholds = [thresholds]
        thresholds = [float(t) for t in thresholds]
        for t in thresholds:
            if not 0 <= t <= 1 and t != NEG_INF:
                raise ValueError(f"Threshold values must be in [0, 1]; received {t}.")
        self.thresholds = thresholds
        self._evenly = _evenly_spaced(thresholds)
        super().__init__(name, dtype)

    def reset_state(self):
        n = len(self.thresholds)
        self.true_positives = np.zeros(n)
        self.false_positives = np.zeros(n)
        self.true_negatives = np.zeros(n)
        self.false_negatives = np.zeros(n)

    def update_state(self, y_true, y_pred, sample_weight=None, mask=None):
        tp, fp, tn, fn = _confusion_counts(
            y_true, y_pred, self.thresholds, self._evenly,
            _weights_with_mask(sample_weight, mask), self.top_k, self.class_id)
        self.true_positives += tp
        self.false_positives += fp
        self.true_negatives += tn
        self.false_negatives += fn

    def _one_or_all(self, values):
        return float(values[0]) if len(self.thresholds) == 1 else values

    def get_config(self):
        return {**super().get_config(), "thresholds": self.init_thresholds,
                "top_k": self.top_k, "class_id": self.class_id}


class Precision(_ConfusionMetric):
    """``tp / (tp + fp)`` at each threshold (a float for one threshold)."""

    def __init__(self, thresholds=None, top_k=None, class_id=None, name="precision",
                 dtype="float32"):
        super().__init__(thresholds, top_k, class_id, name, dtype)

    def result(self):
        return self._one_or_all(_divide(self.true_positives,
                                        self.true_positives + self.false_positives))


class Recall(_ConfusionMetric):
    """``tp / (tp + fn)`` at each threshold (a float for one threshold)."""

    def __init__(self, thresholds=None, top_k=None, class_id=None, name="recall",
                 dtype="float32"):
        super().__init__(thresholds, top_k, class_id, name, dtype)

    def result(self):
        return self._one_or_all(_divide(self.true_positives,
                                        self.true_positives + self.false_negatives))


class AUC(Metric):
    """Area under the ROC or PR curve by a Riemann sum over ``num_thresholds`` thresholds,
    as Keras approximates it (PR with "interpolation" uses Davis & Goadrich's
    interpolation). ``multi_label=True`` is not supported."""

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation",
                 name="auc", dtype="float32", thresholds=None, multi_label=False,
                 num_labels=None, label_weights=None, from_logits=False):
        curve, summation_method = str(curve).upper(), str(summation_method).lower()
        if curve not in ("ROC", "PR"):
            raise ValueError(f"Invalid `curve` argument value {curve!r}: cgru's AUC "
                             "supports 'ROC' and 'PR' (Keras's 'PRGAIN' is not supported).")
        if summation_method not in ("interpolation", "minoring", "majoring"):
            raise ValueError(f"Invalid `summation_method` {summation_method!r}: expected "
                             "'interpolation', 'minoring' or 'majoring'.")
        if multi_label or num_labels is not None:
            raise ValueError("cgru's AUC does not support `multi_label=True` or "
                             "`num_labels` (Keras's multi-label AUC).")
        self.curve, self.summation_method = curve, summation_method
        self.init_thresholds = thresholds
        if thresholds is not None:
            thresholds = sorted(float(t) for t in thresholds)
            self.num_thresholds = len(thresholds) + 2
            self._evenly = _evenly_spaced(np.array([0.0] + thresholds + [1.0]))
        else:
            if num_thresholds <= 1:
                raise ValueError("Argument `num_thresholds` must be an integer > 1; "
                                 f"received num_thresholds={num_thresholds}.")
            self.num_thresholds = int(num_thresholds)
            thresholds = [(i + 1) * 1.0 / (num_thresholds - 1)
                          for i in range(num_thresholds - 2)]
            self._evenly = True
        self.thresholds = [0.0 - EPSILON] + thresholds + [1.0 + EPSILON]
        self.label_weights = None if label_weights is None else np.asarray(label_weights,
                                                                           np.float64)
        self.from_logits = bool(from_logits)
        super().__init__(name, dtype)

    def reset_state(self):
        n = self.num_thresholds
        self.true_positives = np.zeros(n)
        self.false_positives = np.zeros(n)
        self.true_negatives = np.zeros(n)
        self.false_negatives = np.zeros(n)

    def update_state(self, y_true, y_pred, sample_weight=None, mask=None):
        y_pred = np.asarray(y_pred, np.float32)
        if self.from_logits:
            y_pred = (1 / (1 + np.exp(-y_pred.astype(np.float64)))).astype(np.float32)
        tp, fp, tn, fn = _confusion_counts(
            y_true, y_pred, self.thresholds, self._evenly,
            _weights_with_mask(sample_weight, mask), label_weights=self.label_weights)
        self.true_positives += tp
        self.false_positives += fp
        self.true_negatives += tn
        self.false_negatives += fn

    def _interpolate_pr_auc(self):
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        dtp = tp[:-1] - tp[1:]
        p = tp + fp
        dp = p[:-1] - p[1:]
        slope = _divide(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - slope * p[1:]
        both = (p[:-1] > 0) & (p[1:] > 0)
        ratio = np.where(both, _divide(p[:-1], np.maximum(p[1:], 0)), 1.0)
        increment = _divide(slope * (dtp + intercept * np.log(ratio)),
                            np.maximum(tp[1:] + fn[1:], 0))
        return float(np.sum(increment))

    def result(self):
        if self.curve == "PR" and self.summation_method == "interpolation":
            return self._interpolate_pr_auc()
        tp, fp = self.true_positives, self.false_positives
        tn, fn = self.true_negatives, self.false_negatives
        recall = _divide(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _divide(fp, fp + tn), recall
        else:
            x, y = recall, _divide(tp, tp + fp)
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2
        elif self.summation_method == "minoring":
            heights = np.minimum(y[:-1], y[1:])
        else:
            heights = np.maximum(y[:-1], y[1:])
        return float(np.sum((x[:-1] - x[1:]) * heights))

    def get_config(self):
        config = {**super().get_config(), "num_thresholds": self.num_thresholds,
                  "curve": self.curve, "summation_method": self.summation_method,
                  "multi_label": False, "num_labels": None, "from_logits": self.from_logits,
                  "label_weights": None if self.label_weights is None
                  else self.label_weights.tolist()}
        if self.init_thresholds is not None:
            config["thresholds"] = list(self.thresholds[1:-1])
        return config


# -- look-up --------------------------------------------------------------------------------------
_CLASSES = (BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy,
            TopKCategoricalAccuracy, SparseTopKCategoricalAccuracy, MeanSquaredError,
            MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredLogarithmicError,
            RootMeanSquaredError, BinaryCrossentropy, CategoricalCrossentropy,
            SparseCategoricalCrossentropy, KLDivergence, Poisson, Hinge, SquaredHinge,
            CategoricalHinge, CosineSimilarity, LogCoshError, AUC, Precision, Recall)

_METRICS = {cls.__name__: cls for cls in _CLASSES}
_METRICS.update({inspect.signature(cls).parameters["name"].default: cls for cls in _CLASSES})
_METRICS.update({"log_cosh_error": LogCoshError, "kld": KLDivergence,
                 "mse": MeanSquaredError, "MSE": MeanSquaredError,
                 "mae": MeanAbsoluteError, "MAE": MeanAbsoluteError,
                 "mape": MeanAbsolutePercentageError, "MAPE": MeanAbsolutePercentageError,
                 "msle": MeanSquaredLogarithmicError, "MSLE": MeanSquaredLogarithmicError,
                 "bce": BinaryCrossentropy, "BCE": BinaryCrossentropy,
                 "rmse": RootMeanSquaredError})
_METRICS_LOWER = {key.lower(): cls for key, cls in _METRICS.items()}

_FUNCTIONS = {binary_accuracy: BinaryAccuracy, categorical_accuracy: CategoricalAccuracy,
              sparse_categorical_accuracy: SparseCategoricalAccuracy,
              top_k_categorical_accuracy: TopKCategoricalAccuracy,
              sparse_top_k_categorical_accuracy: SparseTopKCategoricalAccuracy}


def is_binary_or_sparse_categorical(y_true_shape, y_pred_shape):
    """Keras' rule for resolving "accuracy" from the label and output shapes."""
    is_binary = y_pred_shape[-1] == 1
    is_sparse = len(y_true_shape) < len(y_pred_shape) or (
        y_true_shape[-1] == 1 and y_pred_shape[-1] > 1)
    return is_binary, is_sparse


def get(identifier, y_true_shape=(1, 1), y_pred_shape=(1, 1)):
    """A fresh Metric for ``identifier`` (a Metric instance gives a reset copy), named as Keras's History shows it: a string keeps
    its spelling ("acc", "mse"); "accuracy"/"acc" resolve by shapes as in Keras; a loss
    name or loss function gives the mean of its per-sample values; a Python function of
    ``(y_true, y_pred)`` gives the mean of what it returns."""
    if isinstance(identifier, Metric):      # a copy: training and validation keep apart
        fresh = copy.deepcopy(identifier)
        fresh.reset_state()
        return fresh
    if type(identifier).__module__.startswith("keras") and hasattr(identifier, "get_config") \
            and type(identifier).__name__ in _METRICS:     # a Keras metric cgru has
        return deserialize({"class_name": type(identifier).__name__,
                            "config": identifier.get_config()})
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in ("accuracy", "acc"):
            is_binary, is_sparse = is_binary_or_sparse_categorical(y_true_shape,
                                                                   y_pred_shape)
            if is_binary:
                return BinaryAccuracy(name=identifier)
            if is_sparse:
                return SparseCategoricalAccuracy(name=identifier)
            return CategoricalAccuracy(name=identifier)
        cls = _METRICS.get(identifier) or _METRICS_LOWER.get(key)
        if cls is not None:
            return cls(name=identifier)
        try:
            return LossMetric(losses_mod.get(identifier), name=identifier)
        except ValueError:
            pass
        raise ValueError(
            f"Unknown metric: {identifier!r}. Expected 'accuracy' or one of "
            f"{sorted(_METRICS)}, or a loss name.")
    if identifier in _FUNCTIONS:
        return _FUNCTIONS[identifier](name=identifier.__name__)
    if identifier in losses_mod._FUNCTIONS.keys():
        return LossMetric(identifier, name=identifier.__name__)
    if isinstance(identifier, losses_mod.Loss):
        return LossMetric(identifier)
    if callable(identifier):
        return MeanMetricWrapper(identifier, name=getattr(identifier, "__name__", None))
    raise ValueError(f"Unknown metric: {identifier!r}.")


def serialize(metric):
    """Keras's serialized form: ``{"module", "class_name", "config", "registered_name"}``."""
    return {"module": "keras.metrics", "class_name": type(metric).__name__,
            "config": metric.get_config(), "registered_name": None}


def deserialize(config):
    """A Metric from ``serialize``'s output (or Keras's, for the classes cgru has)."""
    if isinstance(config, str):
        return get(config)
    class_name = config.get("class_name") if isinstance(config, dict) else None
    cls = _METRICS.get(class_name) if class_name else None
    if cls is None or cls.__name__ != class_name:
        raise ValueError(f"Cannot deserialize a metric from {config!r}: expected one of "
                         f"{sorted(c.__name__ for c in _CLASSES)}.")
    inner = dict(config.get("config") or {})
    accepted = inspect.signature(cls).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        inner = {k: v for k, v in inner.items() if k in accepted}
    return cls(**inner)

"""Training with the new losses and metrics matches Keras 3 epoch by epoch (same weights,
same batches): the losses' gradients are what Keras's training differentiates."""
import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

from test_keras_parity import _assert_same_training, _twin_models  # noqa: E402

from cgru import losses, metrics  # noqa: E402


@pytest.mark.parametrize("loss", ["mae", "huber", "log_cosh", "cosine_similarity"])
def test_sequence_regression_losses_train_as_keras(loss):
    k_model, c_model = _twin_models("mse")
    _assert_same_training(k_model, c_model, "mse", loss, "adam", ["mse", "mae"], epochs=2)


@pytest.mark.parametrize("loss", ["binary_focal_crossentropy", "hinge", "squared_hinge",
                                  "poisson"])
def test_binary_losses_and_confusion_metrics_train_as_keras(loss):
    k_model, c_model = _twin_models("binary")
    _assert_same_training(k_model, c_model, "binary", loss, "adam",
                          ["accuracy", "auc", "precision", "recall"], epochs=2)


@pytest.mark.parametrize("loss", ["kl_divergence", "categorical_hinge"])
def test_categorical_losses_and_top_k_train_as_keras(loss):
    k_model, c_model = _twin_models("categorical")
    _assert_same_training(k_model, c_model, "categorical", loss, "adam",
                          ["accuracy", "top_k_categorical_accuracy"], epochs=2)


def test_compiled_loss_and_metric_names_resolve_back():
    """A model's compile config keeps names; each loss's and metric's name resolves."""
    for cls in losses._CLASSES:
        assert type(losses.get(cls().name)) is cls
    for cls in metrics._CLASSES:
        assert type(metrics.get(cls().name)) is cls

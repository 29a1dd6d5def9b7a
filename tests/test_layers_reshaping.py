"""Activation, Flatten, Reshape, Permute, RepeatVector and TimeDistributed: parity with
Keras 3 (outputs, masks, training), gradients, configs, summaries, saving, bad input."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from _layer_checks import (assert_config_round_trip, assert_forward_matches,  # noqa: E402
                           assert_gradients_numeric, assert_mask_matches,
                           assert_same_training, assert_save_load_round_trip,
                           assert_summary_matches)

from cgru import GRU, Dense, Dropout, Sequential  # noqa: E402
from cgru.layers import (Activation, Flatten, Permute, RepeatVector, Reshape,  # noqa: E402
                         TimeDistributed)

B, T, F = 5, 6, 4

CASES = {
    "activation_tanh": (lambda m, **kw: m.Activation("tanh", **kw), (T, F)),
    "activation_softmax": (lambda m, **kw: m.Activation("softmax", **kw), (T, F)),
    "activation_relu": (lambda m, **kw: m.Activation("relu", **kw), (T, F)),
    "activation_sigmoid": (lambda m, **kw: m.Activation("sigmoid", **kw), (T, F)),
    "flatten": (lambda m, **kw: m.Flatten(**kw), (T, F)),
    "flatten_4d": (lambda m, **kw: m.Flatten(**kw), (T, 2, F)),
    "flatten_channels_first": (lambda m, **kw: m.Flatten(data_format="channels_first", **kw),
                               (T, 2, F)),
    "reshape": (lambda m, **kw: m.Reshape((F, T), **kw), (T, F)),
    "reshape_minus_one": (lambda m, **kw: m.Reshape((-1, 2), **kw), (T, F)),
    "permute": (lambda m, **kw: m.Permute((2, 1), **kw), (T, F)),
    "permute_3": (lambda m, **kw: m.Permute((3, 1, 2), **kw), (T, 2, F)),
    "repeat_vector": (lambda m, **kw: m.RepeatVector(3, **kw), (F,)),
    "time_distributed_dense": (
        lambda m, **kw: m.TimeDistributed(m.Dense(3, activation="tanh", **kw)), (T, F)),
    "time_distributed_flatten": (
        lambda m, **kw: m.TimeDistributed(m.Flatten(**kw)), (T, 2, F)),
}


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal((B,) + shape).astype(np.float32)


def _pair(case, dtype=np.float32):
    make, shape = CASES[case]
    name = np.dtype(dtype).name
    k_layer = make(keras.layers, dtype=name)
    k_layer.build((None,) + shape)
    c_layer = make(__import__("cgru").layers, dtype=name)
    c_layer.build(shape)
    return k_layer, c_layer, shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_keras(case, dtype):
    k_layer, c_layer, shape = _pair(case, dtype)
    x = _x(shape).astype(dtype)
    out = assert_forward_matches(c_layer, k_layer, x, dtype)
    assert out.shape[1:] == tuple(c_layer.compute_output_shape(shape))
    assert tuple(k_layer.compute_output_shape((None,) + shape))[1:] == out.shape[1:]


@pytest.mark.parametrize("case", list(CASES))
def test_input_gradient_matches_central_differences(case):
    _, c_layer, shape = _pair(case, np.float64)
    assert_gradients_numeric(c_layer, _x(shape, seed=1).astype(np.float64))


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][1] == (T, F)])
def test_masks_propagate_or_drop_like_keras(case):
    k_layer, c_layer, shape = _pair(case)
    mask = np.ones((B, T), bool)
    mask[:, -2:] = False
    mask[0, 1] = False
    assert_mask_matches(c_layer, k_layer, _x(shape), mask)


@pytest.mark.parametrize("case", list(CASES))
def test_config_round_trip(case):
    _, c_layer, shape = _pair(case)
    clone = assert_config_round_trip(c_layer, _x(shape))
    assert clone.compute_output_shape(shape) == c_layer.compute_output_shape(shape)


def _twin_models():
    """GRU(sequences) -> TimeDistributed(Dense) -> Permute -> Reshape(-1) -> RepeatVector
    -> Flatten -> Dense -> Activation(softmax), in Keras and cgru."""
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([
        keras.Input((T, F)), keras.layers.GRU(3, return_sequences=True),
        keras.layers.TimeDistributed(keras.layers.Dense(2, activation="tanh")),
        keras.layers.Permute((2, 1)), keras.layers.Reshape((-1,)),
        keras.layers.RepeatVector(2), keras.layers.Flatten(), keras.layers.Dense(3),
        keras.layers.Activation("softmax")])
    c_model = Sequential([
        GRU(3, return_sequences=True, input_shape=(T, F)),
        TimeDistributed(Dense(2, activation="tanh")), Permute((2, 1)), Reshape((-1,)),
        RepeatVector(2), Flatten(), Dense(3), Activation("softmax")])
    return k_model, c_model


def _data(n=22):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, T, F)).astype(np.float32)
    return x, x[:, 0, :3].argmax(axis=1)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_matches_keras(optimizer):
    k_model, c_model = _twin_models()
    x, y = _data()
    assert c_model.layers[-1].output_activation == "softmax"   # loss taken at the logits
    assert_same_training(k_model, c_model, x, y, "sparse_categorical_crossentropy",
                         optimizer, metrics=["accuracy"])


def test_time_distributed_sigmoid_at_logits_matches_keras():
    keras.utils.set_random_seed(1)
    k_model = keras.Sequential([
        keras.Input((T, F)), keras.layers.GRU(3, return_sequences=True),
        keras.layers.TimeDistributed(keras.layers.Dense(1, activation="sigmoid")),
        keras.layers.Flatten()])
    c_model = Sequential([GRU(3, return_sequences=True, input_shape=(T, F)),
                          TimeDistributed(Dense(1, activation="sigmoid")), Flatten()])
    x, _ = _data()
    y = (x[:, :, 0] > 0).astype(np.float32)
    assert_same_training(k_model, c_model, x, y, "mse", "adam")


def test_summary_matches_keras(capsys):
    k_model, c_model = _twin_models()
    assert_summary_matches(k_model, c_model, capsys)


def test_save_and_load_a_model_with_these_layers(tmp_path):
    model = Sequential([GRU(3, return_sequences=True, input_shape=(T, F), seed=0),
                        TimeDistributed(Dropout(0.3, seed=1)),
                        TimeDistributed(Dense(2, seed=0)), Permute((2, 1)), Flatten(),
                        RepeatVector(2), Reshape((-1,)), Dense(3, seed=0),
                        Activation("softmax")], seed=0)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    x, y = _data(8)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    loaded = assert_save_load_round_trip(model, x, y, tmp_path)
    assert isinstance(loaded.layers[1].layer, Dropout)


def test_time_distributed_weights_are_the_inner_layers_and_frozen_stays_frozen():
    inner = Dense(3, input_shape=(F,))
    wrapped = TimeDistributed(inner, input_shape=(T, F))
    assert wrapped.weights[0] is inner.weights[0]
    assert wrapped.count_params() == F * 3 + 3
    frozen = TimeDistributed(Dense(2, trainable=False))
    assert not frozen.trainable and not frozen.layer.trainable
    assert TimeDistributed(Dense(2), trainable=False).layer.trainable is False


def test_bad_input_raises_naming_shapes():
    with pytest.raises(ValueError, match=r"cannot reshape .*\(None, 6, 4\).*\(5, 5\)"):
        Reshape((5, 5), input_shape=(T, F))
    with pytest.raises(ValueError, match="target_shape"):
        Reshape((-1, -1))
    with pytest.raises(ValueError, match="dims"):
        Permute((1, 3))
    with pytest.raises(ValueError, match=r"\(batch, features\).*\(5, 6, 4\)"):
        RepeatVector(2)(_x((T, F)))
    with pytest.raises(ValueError, match=r"\(batch, time, \.\.\.\).*\(5, 4\)"):
        TimeDistributed(Dense(2))(_x((F,)))
    with pytest.raises(ValueError, match="4 features"):
        TimeDistributed(Dense(2), input_shape=(T, F))(_x((T, 3)))
    with pytest.raises(ValueError, match="Unknown activation"):
        Activation("swishy")
    with pytest.raises(TypeError, match="wraps a cgru layer"):
        TimeDistributed("dense")
    with pytest.raises(ValueError, match=r"Permute.*\(5, 6, 4\)|3 axes.*\(5, 6, 4\)"):
        Permute((1, 2, 3))(_x((T, F)))

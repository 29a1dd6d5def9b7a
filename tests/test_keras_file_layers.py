"""Keras 3 .keras and .weights.h5 files for every layer cgru implements, both ways, against
real Keras 3: a file Keras wrote predicts in cgru what Keras predicts, and a file cgru wrote
predicts in Keras what cgru predicts (2e-6, float32)."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")

import cgru  # noqa: E402
from cgru import layers as C  # noqa: E402
from cgru.keras_file import (load_keras_model, load_keras_weights,  # noqa: E402
                             save_keras_model, save_keras_weights)
from conftest import max_diff as _max_diff  # noqa: E402

TOL = 2e-6
B, T, F, VOCAB = 5, 8, 4, 12


def _random_arrays(named_shapes, seed):
    """Non-zero values in every weight; variances positive."""
    rng = np.random.default_rng(seed)
    out = []
    for name, shape in named_shapes:
        a = rng.uniform(-0.5, 0.5, shape)
        if "moving_variance" in name:
            a = np.abs(a) + 0.5
        out.append(a.astype(np.float32))
    return out


def _randomize_keras(kmodel, seed=1):
    kmodel.set_weights(_random_arrays([(w.path, w.shape) for w in kmodel.weights], seed))
    return kmodel


def _randomize_cgru(model, seed=2):
    named = [(v.name, v.shape) for layer in model.layers for v in layer.variables]
    # Keras's layout has the same shapes as get_weights(); take them from there
    shapes = [w.shape for w in model.get_weights()]
    model.set_weights(_random_arrays([(n, s) for (n, _), s in zip(named, shapes)], seed))
    return model


def _floats(seed=0):
    return np.random.default_rng(seed).standard_normal((B, T, F)).astype(np.float32)


def _ids(seed=0, holes=False):
    ids = np.random.default_rng(seed).integers(1, VOCAB, (B, T))
    if holes:               # zeros inside and at both ends, none of the rows all zero
        ids[0, :3] = 0
        ids[1, 2] = ids[1, 5] = 0
        ids[2, -2:] = 0
    return ids


def _masked_floats(seed=0, value=0.0):
    x = _floats(seed)
    x[0, :2] = value
    x[1, 4] = value
    x[3, -3:] = value
    return x


# name -> (input shape, input maker, layers maker); every Keras layer cgru has, and options
CASES = {
    "embedding_gru": ((T,), _ids, lambda L: [L.Embedding(VOCAB, 3), L.GRU(4)]),
    "embedding_mask_zero_average": ((T,), lambda s: _ids(s, holes=True), lambda L: [
        L.Embedding(VOCAB, 3, mask_zero=True), L.GlobalAveragePooling1D(), L.Dense(2)]),
    "masking_average": ((T, F), lambda s: _masked_floats(s, 0.5), lambda L: [
        L.Masking(0.5), L.TimeDistributed(L.Dense(3)), L.GlobalAveragePooling1D()]),
    "activations": ((T, F), _floats, lambda L: [
        L.Activation("tanh"), L.Dense(3), L.Activation("relu"), L.Activation("sigmoid"),
        L.Dense(3), L.Activation("softmax")]),
    "flatten_dense": ((T, F), _floats, lambda L: [L.Flatten(), L.Dense(3)]),
    "reshape_permute": ((T, F), _floats, lambda L: [
        L.Reshape((F, -1)), L.Permute((2, 1)), L.GRU(3, return_sequences=True),
        L.Reshape((-1,))]),
    "repeat_vector": ((T, F), _floats, lambda L: [
        L.GRU(3), L.RepeatVector(4), L.GRU(2, return_sequences=True)]),
    "time_distributed": ((T, F), _floats, lambda L: [
        L.TimeDistributed(L.Dense(3, activation="tanh")), L.GRU(2)]),
    "conv1d_valid": ((T, F), _floats, lambda L: [L.Conv1D(3, 3, activation="relu")]),
    "conv1d_same_strided": ((T, F), _floats, lambda L: [
        L.Conv1D(3, 4, strides=3, padding="same")]),
    "conv1d_causal_dilated": ((T, F), _floats, lambda L: [
        L.Conv1D(3, 3, padding="causal", dilation_rate=2, use_bias=False)]),
    "max_pooling": ((T, F), _floats, lambda L: [
        L.MaxPooling1D(2), L.MaxPooling1D(3, strides=2, padding="same")]),
    "average_pooling": ((T, F), _floats, lambda L: [
        L.AveragePooling1D(3, strides=2, padding="same"), L.AveragePooling1D(2)]),
    "global_pooling": ((T, F), _floats, lambda L: [
        L.Dense(3), L.GlobalMaxPooling1D(keepdims=True), L.Flatten()]),
    "global_average": ((T, F), _floats, lambda L: [L.GlobalAveragePooling1D(keepdims=True)]),
    "batch_normalization": ((T, F), _floats, lambda L: [
        L.BatchNormalization(), L.BatchNormalization(axis=1, center=False, epsilon=0.01)]),
    "layer_normalization": ((T, F), _floats, lambda L: [
        L.LayerNormalization(), L.LayerNormalization(axis=[1, 2], scale=False)]),
    "noise": ((T, F), _floats, lambda L: [
        L.SpatialDropout1D(0.3), L.GaussianNoise(0.2), L.GaussianDropout(0.2),
        L.Dropout(0.5), L.Dense(2)]),
}


def _keras_model(name):
    shape, _, make = CASES[name]
    dtype = "int32" if len(shape) == 1 else "float32"
    return keras.Sequential([keras.Input(shape, dtype=dtype)] + make(keras.layers))


@pytest.mark.parametrize("name", sorted(CASES))
def test_keras_file_of_each_layer_loads_in_cgru(name, tmp_path):
    kmodel = _randomize_keras(_keras_model(name))
    kmodel.save(tmp_path / "k.keras")
    model = load_keras_model(tmp_path / "k.keras")
    x = CASES[name][1](3)
    assert _max_diff(model.predict(x), kmodel.predict(x, verbose=0)) < TOL
    # the weights file too, into the same architecture
    kmodel.set_weights(_random_arrays([(w.path, w.shape) for w in kmodel.weights], 5))
    kmodel.save_weights(tmp_path / "k.weights.h5")
    load_keras_weights(model, tmp_path / "k.weights.h5")
    assert _max_diff(model.predict(x), kmodel.predict(x, verbose=0)) < TOL


@pytest.mark.parametrize("name", sorted(CASES))
def test_cgru_file_of_each_layer_opens_in_keras(name, tmp_path):
    _keras_model(name).save(tmp_path / "k.keras")
    model = _randomize_cgru(load_keras_model(tmp_path / "k.keras"), seed=7)
    save_keras_model(model, tmp_path / "c.keras")
    reopened = keras.models.load_model(tmp_path / "c.keras")
    assert [type(layer).__name__ for layer in reopened.layers] == \
        [type(layer).__name__ for layer in model.layers]
    x = CASES[name][1](4)
    assert _max_diff(reopened.predict(x, verbose=0), model.predict(x)) < TOL
    # the weights file into a fresh Keras model of the same architecture
    _randomize_cgru(model, seed=8)
    save_keras_weights(model, tmp_path / "c.weights.h5")
    kmodel = _keras_model(name)
    kmodel.load_weights(tmp_path / "c.weights.h5")
    assert _max_diff(kmodel.predict(x, verbose=0), model.predict(x)) < TOL


def test_layer_options_survive_both_ways(tmp_path):
    L = keras.layers
    kmodel = keras.Sequential([
        keras.Input((T, F)),
        L.Conv1D(3, 2, strides=2, padding="same", dilation_rate=1,
                 kernel_regularizer=keras.regularizers.L2(0.01),
                 bias_constraint=keras.constraints.NonNeg()),
        L.BatchNormalization(momentum=0.9, epsilon=0.01, trainable=False),
        L.LayerNormalization(epsilon=0.02, center=False),
        L.GaussianNoise(0.3, seed=4),
        L.Activation("linear"),
    ])
    kmodel.save(tmp_path / "k.keras")
    model = load_keras_model(tmp_path / "k.keras")
    conv, bn, ln, noise, _ = model.layers
    assert (conv.filters, conv.kernel_size, conv.strides, conv.padding) == (3, 2, 2, "same")
    assert conv.kernel_regularizer.l2 == pytest.approx(0.01)
    assert type(conv.bias_constraint).__name__ == "NonNeg"
    assert (bn.momentum, bn.epsilon, bn.trainable) == (0.9, 0.01, False)
    assert (ln.epsilon, ln.center) == (0.02, False)
    assert (noise.stddev, noise.seed) == (0.3, 4)
    model.save(tmp_path / "c.keras")
    again = keras.models.load_model(tmp_path / "c.keras")
    k_conv, k_bn, k_ln, k_noise, _ = again.layers
    assert (k_conv.strides, k_conv.padding) == ((2,), "same")
    assert float(k_conv.kernel_regularizer.l2) == pytest.approx(0.01)
    assert not k_bn.trainable and k_bn.momentum == 0.9
    assert not k_ln.center and k_noise.seed == 4


def test_embedding_model_built_in_cgru_keeps_time_free(tmp_path):
    from cgru import Sequential
    model = Sequential([C.Embedding(VOCAB, 3, mask_zero=False), C.GRU(4)])
    model.build((T,))           # built for one length: the file still takes any
    _randomize_cgru(model)
    save_keras_model(model, tmp_path / "c.keras")
    kmodel = keras.models.load_model(tmp_path / "c.keras")
    assert kmodel.input_shape == (None, None)
    for steps in (3, 11):
        x = np.random.default_rng(steps).integers(0, VOCAB, (2, steps))
        assert _max_diff(kmodel.predict(x, verbose=0), model.predict(x)) < TOL


def test_flatten_model_built_from_data_keeps_its_time_axis(tmp_path):
    from cgru import Sequential
    model = Sequential([C.Conv1D(3, 2), C.Flatten(), C.Dense(2)])
    x = _floats()
    model.predict(x)            # built from the data: no input_shape given
    save_keras_model(model, tmp_path / "c.keras")
    kmodel = keras.models.load_model(tmp_path / "c.keras")
    assert kmodel.input_shape == (None, T, F)
    assert _max_diff(kmodel.predict(x, verbose=0), model.predict(x)) < TOL


# ---------------------------------------------------------------------------------------------
# a realistic model, with its optimizer state, both ways
# ---------------------------------------------------------------------------------------------
def _realistic(module, optimizer):
    L = module.layers
    first = [keras.Input((T,), dtype="int32")] if module is keras else []
    model = module.Sequential(first + [
        L.Embedding(VOCAB, 6, **({} if module is keras else {"input_shape": (T,)})),
        L.Conv1D(5, 3, padding="same", activation="relu"),
        L.BatchNormalization(),
        L.GRU(4),
        L.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizer(module.optimizers), loss="categorical_crossentropy",
                  metrics=["accuracy"], **({"run_eagerly": True} if module is keras else {}))
    return model


def _data(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, VOCAB, (16, T)), np.eye(3, dtype=np.float32)[rng.integers(0, 3, 16)]


# Keras's TensorFlow backend gives Adam one embedding row per occurrence (see the README), so
# the training continuation is compared with SGD; Adam's slots with the model below
def _sgd(m):
    return m.SGD(learning_rate=0.05, momentum=0.9)


def test_realistic_keras_model_loads_with_optimizer_state(tmp_path):
    kmodel = _realistic(keras, _sgd)
    _randomize_keras(kmodel, seed=3)
    x, y = _data(0)
    kmodel.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    kmodel.save(tmp_path / "k.keras")
    model = cgru.load_model(tmp_path / "k.keras")
    assert [type(layer).__name__ for layer in model.layers] == \
        ["Embedding", "Conv1D", "BatchNormalization", "GRU", "Dense"]
    assert _max_diff(model.predict(x), kmodel.predict(x, verbose=0)) < TOL
    assert model.optimizer.iterations == 4
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    kmodel.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for mine, theirs in zip(model.get_weights(), kmodel.get_weights()):
        assert _max_diff(mine, theirs) < 1e-5


def test_realistic_cgru_model_opens_in_keras_with_optimizer_state(tmp_path):
    model = _realistic(cgru, _sgd)
    _randomize_cgru(model, seed=4)
    x, y = _data(1)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    model.save(tmp_path / "c.keras")
    kmodel = keras.models.load_model(tmp_path / "c.keras")
    kmodel.run_eagerly = True
    assert _max_diff(kmodel.predict(x, verbose=0), model.predict(x)) < TOL
    assert int(kmodel.optimizer.iterations) == 4
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    kmodel.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for mine, theirs in zip(model.get_weights(), kmodel.get_weights()):
        assert _max_diff(mine, theirs) < 1e-5


def _adam_model(module):
    L = module.layers
    first = [keras.Input((T, F))] if module is keras else []
    shape = {} if module is keras else {"input_shape": (T, F)}
    model = module.Sequential(first + [
        L.Conv1D(4, 2, padding="causal", **shape), L.BatchNormalization(),
        L.TimeDistributed(L.Dense(3)), L.LayerNormalization(), L.GRU(3),
        L.Dense(2, activation="softmax")])
    model.compile(optimizer=(module.optimizers.Adam(learning_rate=0.01)),
                  loss="categorical_crossentropy",
                  **({"run_eagerly": True} if module is keras else {}))
    return model


@pytest.mark.parametrize("writer", ["keras", "cgru"])
def test_adam_slots_with_moving_statistics_and_a_gru_both_ways(writer, tmp_path):
    rng = np.random.default_rng(5)
    x, y = _floats(5), np.eye(2, dtype=np.float32)[rng.integers(0, 2, B)]
    source = _adam_model(keras if writer == "keras" else cgru)
    if writer == "keras":
        _randomize_keras(source, seed=6)
    else:
        _randomize_cgru(source, seed=6)
    source.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0)
    source.save(tmp_path / "m.keras")
    if writer == "keras":
        target = cgru.load_model(tmp_path / "m.keras")
    else:
        target = keras.models.load_model(tmp_path / "m.keras")
        target.run_eagerly = True
    assert _max_diff(target.predict(x, verbose=0) if writer == "cgru" else target.predict(x),
                     source.predict(x, verbose=0) if writer == "keras" else source.predict(x)) \
        < TOL
    source.fit(x, y, batch_size=5, epochs=1, shuffle=False, verbose=0)
    target.fit(x, y, batch_size=5, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(source.get_weights(), target.get_weights()):
        assert _max_diff(a, b) < 1e-5


# ---------------------------------------------------------------------------------------------
# what cannot go across gets an error naming it
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, layers, match", [
    ((T, F, 2), lambda L: [L.Conv2D(2, 2)], r"'Conv2D' has no cgru equivalent"),
    ((T, F), lambda L: [L.Conv1D(2, 2, groups=2)], "groups"),
    ((T, F), lambda L: [L.SimpleRNN(2)], r"'SimpleRNN' has no cgru equivalent"),
    ((T, F), lambda L: [L.Activation("gelu")], "activation='gelu'"),
    ((T, F), lambda L: [L.Conv1D(4, 2, activation="softplus")], "activation='softplus'"),
    ((T, F, 2), lambda L: [L.TimeDistributed(L.LSTM(2))], "LSTM"),
    ((T, F), lambda L: [L.LayerNormalization(rms_scaling=True)], "rms_scaling"),
])
def test_keras_layers_and_options_cgru_lacks_are_named(shape, layers, match, tmp_path):
    kmodel = keras.Sequential([keras.Input(shape)] + layers(keras.layers))
    kmodel.save(tmp_path / "m.keras")
    with pytest.raises(NotImplementedError, match=match):
        load_keras_model(tmp_path / "m.keras")


def test_cgru_layer_without_keras_equivalent_is_named(tmp_path):
    from cgru import Sequential

    class Scale(C.Layer):
        supports_masking = True

    model = Sequential([C.Dense(2, input_shape=(F,)), Scale()])
    with pytest.raises(NotImplementedError, match=r"'scale.*\(Scale\) has no Keras file"):
        save_keras_model(model, tmp_path / "m.keras")
    assert list(tmp_path.iterdir()) == []


def test_gru_zero_output_for_mask_is_kept_or_named(tmp_path):
    """Keras's zero_output_for_mask changes a masked GRU's outputs: a loaded GRU keeps it, or
    the load fails naming it; never dropped."""
    kmodel = keras.Sequential([keras.Input((T, F)), keras.layers.Masking(),
                               keras.layers.GRU(3, zero_output_for_mask=True,
                                                return_sequences=True)])
    kmodel.save(tmp_path / "k.keras")
    try:
        model = load_keras_model(tmp_path / "k.keras")
    except NotImplementedError as e:
        assert "zero_output_for_mask=True" in str(e)
    else:
        assert model.layers[1].zero_output_for_mask is True


# ---------------------------------------------------------------------------------------------
# every optimizer's state, both ways
# ---------------------------------------------------------------------------------------------
ALL_OPTIMIZERS = {
    "adam_amsgrad": lambda m: m.Adam(learning_rate=0.01, amsgrad=True),
    "adamw": lambda m: m.AdamW(learning_rate=0.01, weight_decay=0.01),
    "nadam": lambda m: m.Nadam(learning_rate=0.01),
    "adamax": lambda m: m.Adamax(learning_rate=0.01),
    "adagrad": lambda m: m.Adagrad(learning_rate=0.05),
    "adadelta": lambda m: m.Adadelta(learning_rate=0.5),
    "lion": lambda m: m.Lion(learning_rate=0.001),
    "rmsprop_centered": lambda m: m.RMSprop(learning_rate=0.01, momentum=0.5, centered=True),
    "sgd_schedule": lambda m: m.SGD(
        learning_rate=m.schedules.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.5),
        momentum=0.9, nesterov=True, clipnorm=1.0),
}


def _small(module, optimizer):
    L = module.layers
    first = [keras.Input((T, F))] if module is keras else []
    shape = {} if module is keras else {"input_shape": (T, F)}
    model = module.Sequential(first + [L.GRU(4, **shape), L.BatchNormalization(),
                                       L.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizer(module.optimizers), loss="categorical_crossentropy",
                  **({"run_eagerly": True} if module is keras else {}))
    return model


@pytest.mark.parametrize("writer", ["keras", "cgru"])
@pytest.mark.parametrize("optimizer", sorted(ALL_OPTIMIZERS))
def test_every_optimizer_state_both_ways(optimizer, writer, tmp_path):
    rng = np.random.default_rng(9)
    x, y = _floats(9), np.eye(3, dtype=np.float32)[rng.integers(0, 3, B)]
    module = keras if writer == "keras" else cgru
    source = _small(module, ALL_OPTIMIZERS[optimizer])
    (_randomize_keras if writer == "keras" else _randomize_cgru)(source, 10)
    source.fit(x, y, batch_size=B, epochs=3, shuffle=False, verbose=0)
    source.save(tmp_path / "m.keras")
    if writer == "keras":
        target = cgru.load_model(tmp_path / "m.keras")
        assert type(target.optimizer).__name__ == type(source.optimizer).__name__
    else:
        target = keras.models.load_model(tmp_path / "m.keras")
        target.run_eagerly = True
    assert int(target.optimizer.iterations) == int(source.optimizer.iterations) == 3
    source.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0)
    target.fit(x, y, batch_size=B, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(source.get_weights(), target.get_weights()):
        assert _max_diff(a, b) < 1e-5


def test_optimizer_options_with_other_state_orders_are_named(tmp_path):
    kmodel = _small(keras, lambda m: m.Adam(use_ema=True))
    kmodel.save(tmp_path / "k.keras")
    with pytest.raises(NotImplementedError, match="use_ema=True"):
        cgru.load_model(tmp_path / "k.keras")
    model = _small(cgru, lambda m: m.SGD(gradient_accumulation_steps=2))
    with pytest.raises(NotImplementedError, match="gradient_accumulation_steps=2"):
        model.save(tmp_path / "c.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.keras"]

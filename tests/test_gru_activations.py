"""GRU `activation` and `recurrent_activation`: the fused cell against NumPy, central
differences and Keras 3 (outputs, training, Bidirectional, stacking), the names through
configs and files, and the errors for what the cell does not compute."""
import os

import numpy as np
import pytest
from scipy.special import erfc

import cgru
from cgru import _reference, activations
from cgru._native import _loops, _twins
from cgru.functional import ACTIVATIONS, GRUCell
from conftest import make_gru_inputs
from test_gradients import central_differences

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# every activation as the candidate's (gates sigmoid) and as the gates' (candidate tanh),
# and some pairs of two non-default ones
PAIRS = ([(a, "sigmoid") for a in ACTIVATIONS if a != "tanh"]
         + [("tanh", r) for r in ACTIVATIONS]
         + [("relu", "hard_sigmoid"), ("gelu", "silu"), ("elu", "softsign"),
            ("selu", "linear"), ("swish", "gelu"), ("softsign", "relu")])
MIXED = [("relu", "hard_sigmoid"), ("gelu", "silu"), ("elu", "softsign"), ("selu", "tanh")]


def _scale(pair):
    # unbounded gates (silu, linear, relu, ...) can blow the state up over the steps: keep
    # the weights small enough that every value stays of order one
    return 0.5 if pair[1] in ("sigmoid", "hard_sigmoid", "tanh", "softsign") else 0.2


# ---------------------------------------------------------------------------------------------
# the activations themselves: the cell's C code, cgru.activations (NumPy), Keras
# ---------------------------------------------------------------------------------------------
def _grid(dtype):
    v = np.concatenate([np.linspace(-12, 12, 4001), [-3.0, 3.0, 0.0, 1e-4, -1e-4]])
    return v.astype(dtype)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cell_activations_match_numpy(name, dtype):
    v = _grid(dtype)
    out, deriv = _twins.activation_for_tests(_loops.ACTIVATION_CODES[name], v)
    fn = activations.get(name)
    v64 = v.astype(np.float64)
    want = fn(v64)
    want_d = fn.backward(np.ones_like(v64), want, v64)
    tol = dict(rtol=1e-6, atol=5e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    assert out.dtype == dtype and deriv.dtype == dtype
    np.testing.assert_allclose(out, want, **tol)
    np.testing.assert_allclose(deriv, want_d, **tol)


def test_float32_gelu_error_bound():
    # the cell's float32 gelu uses a polynomial erf (3e-7 from erf): within 2e-7 |x| + a
    # rounding of gelu's exact value on the whole line
    v = np.linspace(-10, 10, 200001).astype(np.float32)
    out, _ = _twins.activation_for_tests(_loops.ACTIVATION_CODES["gelu"], v)
    v64 = v.astype(np.float64)
    exact = 0.5 * v64 * erfc(-v64 * activations.GELU_C)
    assert np.max(np.abs(out - exact) / np.maximum(1, np.abs(v64))) < 2e-7


@pytest.mark.parametrize("name", [a for a in ACTIVATIONS] + ["swish"])
def test_numpy_activations_match_keras(name):
    keras = pytest.importorskip("keras")
    fn, kfn = activations.get(name), keras.activations.get(name)
    import tensorflow as tf
    # TensorFlow's float32 tanh and erfc are approximations of their own (within 3e-7 and
    # 6e-7 here)
    for dtype, tol in ((np.float32, dict(rtol=2e-6, atol=1e-6)),
                       (np.float64, dict(rtol=1e-12, atol=1e-14))):
        v = _grid(dtype)
        v = v[np.abs(np.abs(v.astype(np.float64)) - 3) > 1e-9] if name == "hard_sigmoid" else v
        tv = tf.constant(v)
        with tf.GradientTape() as tape:
            tape.watch(tv)
            k_out = kfn(tv)
        k_grad = tape.gradient(k_out, tv).numpy()
        out = fn(v)
        assert out.dtype == dtype
        np.testing.assert_allclose(out, k_out.numpy(), **tol)
        np.testing.assert_allclose(fn.backward(np.ones_like(v), out, v), k_grad, **tol)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_numpy_derivatives_by_central_differences(name):
    fn = activations.get(name)
    v = np.random.default_rng(5).uniform(-5, 5, 400)
    v = v[np.abs(v) > 1e-3]
    v = v[np.abs(np.abs(v) - 3) > 1e-3]                # hard_sigmoid's corners
    eps = 1e-6
    numeric = (fn(v + eps) - fn(v - eps)) / (2 * eps)
    np.testing.assert_allclose(fn.backward(np.ones_like(v), fn(v), v), numeric, rtol=1e-7,
                               atol=1e-8)


# ---------------------------------------------------------------------------------------------
# the functional API against the NumPy reference and central differences
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_functional_matches_reference(pair, reset_after, dtype, rng):
    T, B, I, H = 6, 9, 4, 16
    x, h0, *weights = make_gru_inputs(rng, T, B, I, H, dtype, scale=_scale(pair))
    lengths = rng.integers(0, T + 1, B)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh = rng.standard_normal((B, H)).astype(dtype)
    kw = dict(reset_after=reset_after, lengths=lengths, activation=pair[0],
              recurrent_activation=pair[1])
    y, h_n, cache = cgru.gru_forward(x, h0, *weights, **kw)
    grads = cgru.gru_backward(dy, dh, cache)
    # the reference in float64: the float32 run's error is its own rounding alone
    as64 = [a.astype(np.float64) for a in (x, h0, *weights, dy, dh)]
    want_y, want_h, want_cache = _reference.gru_forward(*as64[:6], **kw)
    want = _reference.gru_backward(as64[6], as64[7], want_cache)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(y, want_y, **tol)
    np.testing.assert_allclose(h_n, want_h, **tol)
    for name, got, expected in zip(grads._fields, grads, want):
        scale = max(1.0, float(np.max(np.abs(expected))))
        np.testing.assert_allclose(got / scale, expected / scale, err_msg=name, **tol)
    # inference runs the same cell without keeping anything
    y_inf, h_inf, none = cgru.gru_forward(x, h0, *weights, training=False, **kw)
    assert none is None
    np.testing.assert_array_equal(h_inf, h_n)


def test_pre_activations_are_kept_only_for_gelu_and_silu(rng):
    T, B, I, H = 3, 4, 2, 5
    x, h0, *weights = make_gru_inputs(rng, T, B, I, H)
    sizes = {}
    for pair in [("tanh", "sigmoid"), ("relu", "hard_sigmoid"), ("gelu", "sigmoid"),
                 ("tanh", "silu"), ("gelu", "swish")]:
        cache = cgru.gru_forward(x, h0, *weights, activation=pair[0],
                                 recurrent_activation=pair[1])[2]
        sizes[pair] = None if cache.pre is None else cache.pre.shape
    assert sizes == {("tanh", "sigmoid"): None, ("relu", "hard_sigmoid"): None,
                     ("gelu", "sigmoid"): (T, B, H), ("tanh", "silu"): (T, B, 2 * H),
                     ("gelu", "swish"): (T, B, 3 * H)}


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("reset_after", [True, False])
def test_functional_gradients_by_central_differences(pair, reset_after, rng):
    T, B, I, H = 3, 2, 3, 4
    args = make_gru_inputs(rng, T, B, I, H, np.float64, scale=_scale(pair) + 0.2)
    dy = rng.standard_normal((T, B, H))
    dh = rng.standard_normal((B, H))
    kw = dict(reset_after=reset_after, activation=pair[0], recurrent_activation=pair[1])

    def loss(values):
        y, h_n, _ = cgru.gru_forward(*values, training=False, **kw)
        return np.sum(y * dy) + np.sum(h_n * dh)

    grads = cgru.gru_backward(dy, dh, cgru.gru_forward(*args, **kw)[2])
    for name, got, numeric in zip(grads._fields, grads, central_differences(loss, args)):
        np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("pair", MIXED)
@pytest.mark.parametrize("reset_after", [True, False])
def test_layer_gradients_by_central_differences(pair, reset_after, rng):
    B, T, I, H = 2, 3, 3, 4
    layer = cgru.GRU(H, activation=pair[0], recurrent_activation=pair[1], dtype="float64",
                     return_sequences=True, reset_after=reset_after, seed=3,
                     bias_initializer="glorot_uniform", input_shape=(T, I))
    x = rng.standard_normal((B, T, I))
    d_out = rng.standard_normal((B, T, H))

    def loss(values):
        layer.set_weights(values[1:])
        return np.sum(layer.forward(values[0])[0] * d_out)

    args = [x] + layer.get_weights()
    layer.set_weights(args[1:])
    out, ctx = layer.forward(x, need_grad=True)
    dx, grads = layer.backward(d_out, ctx)
    numeric = central_differences(loss, args)
    # the layer's gradients are in its own (kernel) layout: compare in Keras's
    got = [dx] + layer.weights_to_keras(grads)
    for k, (g, n) in enumerate(zip(got, numeric)):
        np.testing.assert_allclose(g, n, rtol=1e-6, atol=1e-8, err_msg=str(k))


@pytest.mark.parametrize("pair", MIXED)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grucell_steps_match_gru_forward(pair, reset_after, dtype, rng):
    T, B, I, H = 4, 5, 3, 7
    x, h0, *weights = make_gru_inputs(rng, T, B, I, H, dtype)
    kw = dict(reset_after=reset_after, activation=pair[0], recurrent_activation=pair[1])
    cell = GRUCell(*weights, **kw)
    assert (cell.activation, cell.recurrent_activation) == (
        activations.get(pair[0]).name, pair[1])
    h = h0
    for t in range(T):
        _, one_step, _ = cgru.gru_forward(x[t][None], h, *weights, training=False, **kw)
        h = cell(x[t], h)
        np.testing.assert_array_equal(h, one_step)
    want = _reference.gru_forward(x, h0, *weights, **kw)[1]
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h, want, **tol)


# ---------------------------------------------------------------------------------------------
# names, objects, configs, files, errors
# ---------------------------------------------------------------------------------------------
def test_layer_takes_names_functions_and_keras_objects():
    keras = pytest.importorskip("keras")
    for value, name in [("relu", "relu"), ("swish", "silu"), (activations.gelu, "gelu"),
                        (keras.activations.hard_sigmoid, "hard_sigmoid"),
                        (keras.activations.swish, "silu"), (None, "linear"),
                        ({"module": "keras.activations", "class_name": "function",
                          "config": "elu", "registered_name": "elu"}, "elu")]:
        layer = cgru.GRU(3, activation=value, recurrent_activation=value)
        assert layer.activation == layer.recurrent_activation == name
        assert layer.get_config()["activation"] == name


@pytest.mark.parametrize("value", [lambda v: np.maximum(v, 0), np.tanh, "softmax",
                                   "no_such_activation", 3])
def test_other_activations_are_a_clear_error(value):
    with pytest.raises(ValueError, match="natively: tanh, sigmoid, hard_sigmoid"):
        cgru.GRU(3, activation=value)
    with pytest.raises(ValueError, match="recurrent_activation="):
        cgru.GRU(3, recurrent_activation=value)


def test_functional_names_are_checked_before_native_code(rng):
    x, h0, *weights = make_gru_inputs(rng, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="`activation`.*'gelu'.*got 'Gelu!'"):
        cgru.gru_forward(x, h0, *weights, activation="Gelu!")
    with pytest.raises(ValueError, match="`recurrent_activation`.*got <function"):
        GRUCell(*weights, recurrent_activation=lambda v: v)


def test_keras_serialization_functions():
    keras = pytest.importorskip("keras")
    assert activations.serialize(keras.activations.silu) == "silu"
    assert activations.serialize("swish") == keras.activations.serialize(
        keras.activations.get("swish"))
    assert activations.deserialize("hard_sigmoid") is activations.hard_sigmoid
    assert activations.deserialize(keras.saving.serialize_keras_object(
        keras.activations.selu)) is activations.selu
    assert activations.deserialize("mine", custom_objects={"mine": "elu"}) is activations.elu
    assert activations.get(activations.swish) is activations.silu
    with pytest.raises(ValueError, match="Unknown activation"):
        activations.get(lambda v: v)


def test_dense_rejects_activations_that_need_their_input():
    with pytest.raises(ValueError, match="gelu needs its input"):
        cgru.Dense(3, activation="gelu")
    dense = cgru.Dense(3, activation="elu", input_shape=(4,), seed=0, dtype="float64")
    x = np.random.default_rng(0).standard_normal((5, 4))
    np.testing.assert_allclose(dense(x), activations.elu(x @ dense.get_weights()[0]))


def test_config_and_file_round_trips_keep_the_names(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, 5, 3)).astype(np.float32)
    model = cgru.Sequential([
        cgru.Bidirectional(cgru.GRU(4, activation="relu", recurrent_activation="hard_sigmoid",
                                    return_sequences=True, seed=1), input_shape=(5, 3)),
        cgru.GRU(3, activation="gelu", recurrent_activation="swish", seed=2),
        cgru.Dense(1)])
    want = model.predict(x)
    config = model.layers[1].get_config()
    assert (config["activation"], config["recurrent_activation"]) == ("gelu", "silu")
    again = cgru.GRU.from_config(config)
    assert (again.activation, again.recurrent_activation) == ("gelu", "silu")
    inner = model.layers[0].get_config()["layer"]
    assert (inner["activation"], inner["recurrent_activation"]) == ("relu", "hard_sigmoid")
    model.save(tmp_path / "m.cgru")
    loaded = cgru.load_model(tmp_path / "m.cgru")
    assert loaded.layers[1].activation == "gelu"
    assert loaded.layers[0].forward_layer.recurrent_activation == "hard_sigmoid"
    np.testing.assert_array_equal(loaded.predict(x), want)
    # a Keras file: Keras reads the names and computes the same numbers
    keras = pytest.importorskip("keras")
    model.save(tmp_path / "m.keras")
    k_model = keras.models.load_model(tmp_path / "m.keras")
    assert k_model.layers[1].get_config()["activation"] == "gelu"
    np.testing.assert_allclose(k_model.predict(x, verbose=0), want, atol=2e-6)


def test_exports_without_the_activations_say_so(tmp_path):
    """torch.nn.GRU is tanh/sigmoid only, so to_torch refuses other pairs; ONNX exports every
    pair (tests/test_onnx_activations.py), so this model now exports and runs."""
    from cgru.interop import to_onnx, to_torch
    layer = cgru.GRU(3, activation="relu", input_shape=(4, 2))
    model = cgru.Sequential([cgru.GRU(3, recurrent_activation="hard_sigmoid",
                                      input_shape=(4, 2))])
    if pytest.importorskip("onnx"):
        ort = pytest.importorskip("onnxruntime")
        to_onnx(model, tmp_path / "m.onnx")
        session = ort.InferenceSession(str(tmp_path / "m.onnx"),
                                       providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((3, 4, 2)).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"x": x})[0], model.predict(x),
                                   rtol=0, atol=2e-6)
    if pytest.importorskip("torch"):
        with pytest.raises(NotImplementedError, match="activation='relu'"):
            to_torch(layer)


# ---------------------------------------------------------------------------------------------
# parity with Keras 3 on copied weights
# ---------------------------------------------------------------------------------------------
B, T, I, H = 6, 7, 5, 4


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gru_layer_matches_keras(pair, reset_after, dtype):
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((B, H))).astype(dtype)
    kw = dict(activation=pair[0], recurrent_activation=pair[1], reset_after=reset_after,
              return_sequences=True, return_state=True, dtype=dtype)
    k = keras.layers.GRU(H, **kw)
    k.build((None, T, I))
    weights = [(_scale(pair) * rng.standard_normal(w.shape)).astype(dtype)
               for w in k.get_weights()]
    k.set_weights(weights)
    c = cgru.GRU(H, input_shape=(T, I), **kw)
    c.set_weights(k.get_weights())
    k_y, k_h = [np.asarray(v) for v in k(x, initial_state=[h0])]
    c_y, c_h = c(x, initial_state=[h0])
    atol = 2e-6 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(c_y, k_y, rtol=0, atol=atol)
    np.testing.assert_allclose(c_h, k_h, rtol=0, atol=atol)
    assert c_y.dtype == dtype


N = 22


def _twin_models(pairs, optimizer, keras):
    """Bidirectional GRU -> GRU -> Dense(1, sigmoid) in Keras and cgru, same weights."""
    keras.utils.set_random_seed(0)
    (a1, r1), (a2, r2) = pairs
    k_model = keras.Sequential([
        keras.Input((T, I)),
        keras.layers.Bidirectional(keras.layers.GRU(H, activation=a1, recurrent_activation=r1,
                                                    return_sequences=True)),
        keras.layers.GRU(H, activation=a2, recurrent_activation=r2, reset_after=False),
        keras.layers.Dense(1, activation="sigmoid")])
    c_model = cgru.Sequential([
        cgru.Bidirectional(cgru.GRU(H, activation=a1, recurrent_activation=r1,
                                    return_sequences=True), input_shape=(T, I)),
        cgru.GRU(H, activation=a2, recurrent_activation=r2, reset_after=False),
        cgru.Dense(1, activation="sigmoid")])
    weights = [0.6 * w for w in k_model.get_weights()]
    k_model.set_weights(weights)
    c_model.set_weights(weights)
    from cgru import optimizers as copt
    make = {"sgd": lambda m: m.SGD(learning_rate=0.1),
            "adam": lambda m: m.Adam(learning_rate=0.01)}[optimizer]
    k_model.compile(optimizer=make(keras.optimizers), loss="binary_crossentropy",
                    metrics=["accuracy"])
    c_model.compile(optimizer=make(copt), loss="binary_crossentropy", metrics=["accuracy"])
    return k_model, c_model


@pytest.mark.parametrize("pairs", [
    (("relu", "hard_sigmoid"), ("gelu", "silu")),
    (("elu", "softsign"), ("selu", "sigmoid")),
    (("linear", "sigmoid"), ("tanh", "relu")),
    (("softsign", "gelu"), ("swish", "hard_sigmoid")),
])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_matches_keras(pairs, optimizer):
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((N, T, I)).astype(np.float32)
    ys = (xs[:, 0, 0] > 0).astype(np.float32)
    k_model, c_model = _twin_models(pairs, optimizer, keras)
    kh = k_model.fit(xs, ys, batch_size=8, epochs=3, shuffle=False, verbose=0)
    ch = c_model.fit(xs, ys, batch_size=8, epochs=3, shuffle=False, verbose=0)
    assert set(ch.history) == set(kh.history)
    for key in kh.history:
        np.testing.assert_allclose(ch.history[key], kh.history[key], rtol=1e-4, atol=2e-6,
                                   err_msg=key)
    for cw, kw in zip(c_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(cw, kw, rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(c_model.predict(xs), k_model.predict(xs, verbose=0), atol=2e-6)

"""Checks shared by the tests of the layers around a GRU (tests/test_layers_*.py): Keras 3
parity of outputs, masks and short training runs, central-difference gradients, configs,
summaries and saving."""
import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cgru  # noqa: E402
from cgru import optimizers as copt  # noqa: E402
from cgru import saving  # noqa: E402

ATOL_FWD = {np.float32: 2e-6, np.float64: 1e-12}

OPTIMIZERS = {
    "sgd": (lambda m: m.SGD(learning_rate=0.1)),
    "adam": (lambda m: m.Adam(learning_rate=0.01)),
}


def keras():
    import keras as k
    return k


def assert_forward_matches(c_layer, k_layer, x, dtype=np.float32, training=False,
                           atol=None, mask=None):
    """cgru's layer (weights copied from ``k_layer``) gives Keras's output; returns it."""
    if k_layer.weights:
        c_layer.set_weights([w.astype(dtype) for w in k_layer.get_weights()])
    kwargs = {} if mask is None else {"mask": mask}
    expected = np.asarray(k_layer(x, training=training, **kwargs))
    x_in = c_layer.cast(x)
    got = c_layer.forward(x_in, training=training, mask=mask)[0]
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, expected, rtol=0,
                               atol=ATOL_FWD[dtype] if atol is None else atol)
    return got


def _loss_and_grads(layer, x, weights_probe, training, mask):
    out, ctx = layer.forward(x, training=training, mask=mask, need_grad=True)
    d_out = weights_probe(out.shape)
    loss = float(np.sum(out * d_out))
    d_x, grads = layer.backward(d_out, ctx, need_input_grad=True)
    return loss, d_x, grads


def assert_gradients_numeric(layer, x, training=False, mask=None, eps=1e-6, rtol=1e-6,
                             atol=1e-8, check_weights=True, max_entries=60):
    """Central differences of sum(out * R) for a float64 ``layer`` agree with its backward:
    the input gradient, and each trainable weight's gradient. The layer's dropout generator
    is rewound before every forward, so random layers draw the same noise each time."""
    assert layer.dtype == np.float64
    rng = np.random.default_rng(7)
    probes = {}

    def probe(shape):
        if shape not in probes:
            probes[shape] = rng.standard_normal(shape)
        return probes[shape]

    rng_state = layer.rng_state()

    def loss_at(x_now):
        layer.set_rng_state(rng_state)
        out = layer.forward(x_now, training=training, mask=mask)[0]
        return float(np.sum(out * probe(out.shape)))

    x = np.array(x, dtype=np.float64)
    layer.set_rng_state(rng_state)
    _, d_x, grads = _loss_and_grads(layer, x, probe, training, mask)
    assert d_x.shape == x.shape and d_x.dtype == np.float64
    pick = np.random.default_rng(3)
    flat = pick.permutation(x.size)[:max_entries]
    for i in flat:
        idx = np.unravel_index(i, x.shape)
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric = (loss_at(plus) - loss_at(minus)) / (2 * eps)
        np.testing.assert_allclose(d_x[idx], numeric, rtol=rtol, atol=atol,
                                   err_msg=f"input gradient at {idx}")
    if not check_weights:
        return
    assert len(grads) == len(layer.trainable_weights)
    for w, g in zip(layer.trainable_weights, grads):
        assert g.shape == w.shape
        for i in pick.permutation(w.size)[:max_entries]:
            idx = np.unravel_index(i, w.shape)
            saved = w[idx]
            w[idx] = saved + eps
            up = loss_at(x)
            w[idx] = saved - eps
            down = loss_at(x)
            w[idx] = saved
            np.testing.assert_allclose(g[idx], (up - down) / (2 * eps), rtol=rtol,
                                       atol=atol, err_msg=f"weight gradient at {idx}")


def assert_same_training(k_model, c_model, xs, ys, loss, optimizer, epochs=3,
                         batch_size=8, metrics=None, weight_atol=2e-6):
    """Three epochs (shuffle=False) of Keras and of cgru from the same weights give the same
    History (rtol 1e-4) and the same weights (rtol 1e-4, ``weight_atol``)."""
    k = keras()
    c_model.set_weights(k_model.get_weights())
    k_model.compile(optimizer=OPTIMIZERS[optimizer](k.optimizers), loss=loss, metrics=metrics)
    c_model.compile(optimizer=OPTIMIZERS[optimizer](copt), loss=loss, metrics=metrics)
    kh = k_model.fit(xs, ys, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    ch = c_model.fit(xs, ys, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    assert set(ch.history) == set(kh.history)
    for key in kh.history:
        np.testing.assert_allclose(ch.history[key], kh.history[key], rtol=1e-4, atol=1e-6,
                                   err_msg=key)
    k_weights = k_model.get_weights()
    c_weights = c_model.get_weights()
    assert len(c_weights) == len(k_weights)
    for cw, kw in zip(c_weights, k_weights):
        np.testing.assert_allclose(cw, kw, rtol=1e-4, atol=weight_atol)
    np.testing.assert_allclose(c_model.predict(xs), k_model.predict(xs, verbose=0),
                               rtol=1e-4, atol=1e-5)


def assert_summary_matches(k_model, c_model, capsys):
    """Each layer's output shape (as printed by summary) and parameter count equal Keras's."""
    capsys.readouterr()
    c_model.summary(line_length=120)
    text = capsys.readouterr().out
    for k_layer, c_layer in zip(k_model.layers, c_model.layers):
        line = next(ln for ln in text.splitlines() if f" {c_layer.name} (" in ln)
        k_shape = tuple(k_layer.output.shape)
        shape = "(" + ", ".join("None" if d is None else str(d) for d in k_shape) + \
            ("," if len(k_shape) == 1 else "") + ")"
        assert shape in line, (shape, line)
        assert line.split()[-1] == str(k_layer.count_params()), line
    total = sum(layer.count_params() for layer in k_model.layers)
    assert f"Total params: {total:,} (" in text


def assert_config_round_trip(layer, x=None):
    """from_config(get_config()) rebuilds a layer of the same config (and outputs)."""
    entry = saving.serialize(layer)
    clone = saving.deserialize(entry)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()
    if x is not None:
        if not clone.built:
            clone.ensure_built(np.asarray(x).shape[1:])
        if layer.weights:
            clone.set_weights(layer.get_weights())
        np.testing.assert_array_equal(clone(x), layer(x))
    return clone


def assert_save_load_round_trip(model, x, y, tmp_path):
    """A compiled model holding the layer saves and loads with the same predictions, and
    training resumed after loading ends where uninterrupted training ends."""
    path = tmp_path / "model.cgru"
    model.save(path)
    loaded = cgru.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    model.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    return loaded


def keras_output_mask(k_layer, x, mask, **call_kw):
    """The mask Keras attaches to ``k_layer``'s output when its input carries ``mask``
    (None when the layer drops it)."""
    import tensorflow as tf
    from keras.src import backend
    tensor = tf.convert_to_tensor(x)
    backend.set_keras_mask(tensor, tf.convert_to_tensor(mask))
    out = k_layer(tensor, **call_kw)
    found = backend.get_keras_mask(out)
    return None if found is None else np.asarray(found)


def assert_mask_matches(c_layer, k_layer, x, mask, **call_kw):
    """cgru's ``compute_mask`` equals the mask Keras propagates (or drops)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # Keras warns when a layer drops a mask
        expected = keras_output_mask(k_layer, x, mask, **call_kw)
    got = c_layer.compute_mask(c_layer.cast(x), mask)
    if expected is None:
        assert got is None
    else:
        np.testing.assert_array_equal(got, expected)

"""Encoder-decoder functional models: a recurrent layer's ``initial_state`` taken from the
graph (an encoder GRU's or Bidirectional's states starting a decoder), against real Keras 3
on copied weights: predict, 3 epochs of fit with SGD and Adam, the state's gradient flowing
back into the encoder (central differences), and Keras 3 ``.keras`` files both ways."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

import cgru  # noqa: E402
from cgru import layers as CL  # noqa: E402
from _layer_checks import OPTIMIZERS  # noqa: E402
from test_gradients import central_differences  # noqa: E402

TOL = 2e-6


def _gru_to_gru(lib, L, reset_after=True, **kw):
    """The Keras encoder-decoder: the encoder GRU's last state starts the decoder GRU."""
    enc_in = lib.Input((5, 3), name="enc_in", **kw)
    _, state = L.GRU(8, return_state=True, reset_after=reset_after, name="encoder", **kw)(
        enc_in)
    dec_in = lib.Input((4, 2), name="dec_in", **kw)
    y = L.GRU(8, return_sequences=True, reset_after=reset_after, name="decoder", **kw)(
        dec_in, initial_state=state)
    return lib.Model([enc_in, dec_in], L.Dense(1, name="head", **kw)(y))


def _bidirectional(lib, L, **kw):
    """Bidirectional -> Bidirectional: the encoder's two states start the decoder's two
    directions (Keras: initial_state=[h_forward, h_backward])."""
    enc_in = lib.Input((5, 3), name="enc_in", **kw)
    _, h_fwd, h_bwd = L.Bidirectional(L.GRU(6, return_state=True, **kw), name="encoder")(
        enc_in)
    dec_in = lib.Input((4, 2), name="dec_in", **kw)
    y = L.Bidirectional(L.GRU(6, return_sequences=True, **kw), name="decoder")(
        dec_in, initial_state=[h_fwd, h_bwd])
    return lib.Model([enc_in, dec_in], L.Dense(1, name="head", **kw)(y))


def _state_used_twice(lib, L, **kw):
    """The state starts the decoder and also feeds the head (its gradients summed). The
    decoder's input carries a mask, which Keras 3 does not pass to a layer called with two
    tensor arguments (sequence and initial_state): the decoder runs unmasked."""
    enc_in = lib.Input((5, 3), name="enc_in", **kw)
    _, state = L.GRU(6, return_state=True, name="encoder", **kw)(enc_in)
    dec_in = lib.Input((4, 2), name="dec_in", **kw)
    masked = L.Masking(0.0, name="mask", **kw)(dec_in)
    last = L.GRU(6, name="decoder", **kw)(masked, initial_state=[state])
    joined = L.concatenate([last, state], name="joined", **kw)
    return lib.Model([enc_in, dec_in], L.Dense(2, activation="tanh", name="head", **kw)(joined))


def _masked_sequences(lib, L, **kw):
    """Keras 3: the decoder (given initial_state) runs unmasked, but its output sequence
    still carries its input's mask, through the head to the loss."""
    enc_in = lib.Input((5, 3), name="enc_in", **kw)
    _, state = L.GRU(6, return_state=True, name="encoder", **kw)(enc_in)
    dec_in = lib.Input((4, 2), name="dec_in", **kw)
    masked = L.Masking(0.0, name="mask", **kw)(dec_in)
    y = L.GRU(6, return_sequences=True, name="decoder", **kw)(masked, initial_state=state)
    return lib.Model([enc_in, dec_in], L.Dense(1, name="head", **kw)(y))


MODELS = {"gru": _gru_to_gru,
          "reset_after_false": lambda lib, L, **kw: _gru_to_gru(lib, L, False, **kw),
          "bidirectional": _bidirectional,
          "state_used_twice": _state_used_twice,
          "masked_sequences": _masked_sequences}


def _data(kind, n=12, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    enc = rng.standard_normal((n, 5, 3)).astype(dtype)
    dec = rng.standard_normal((n, 4, 2)).astype(dtype)
    dec[1, 2:] = 0.0                        # padding (masked where the model masks)
    dec[3, :] = 0.0                         # a row of padding only
    dec[5, 1] = 0.0                         # a hole
    units = 2 if kind == "state_used_twice" else 1
    shape = (n, units) if kind == "state_used_twice" else (n, 4, units)
    return [enc, dec], rng.standard_normal(shape).astype(dtype)


def _pair(kind):
    k_model = MODELS[kind](keras, keras.layers)
    c_model = MODELS[kind](cgru, CL)
    assert [l.name for l in c_model.layers] == [l.name for l in k_model.layers]
    c_model.set_weights(k_model.get_weights())
    return k_model, c_model


@pytest.mark.parametrize("kind", list(MODELS))
def test_predict_as_keras(kind):
    k_model, c_model = _pair(kind)
    xs, _ = _data(kind)
    np.testing.assert_allclose(c_model.predict(xs, verbose=0), k_model.predict(xs, verbose=0),
                               rtol=TOL, atol=TOL)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("kind", list(MODELS))
def test_fit_as_keras(kind, optimizer):
    k_model, c_model = _pair(kind)
    xs, y = _data(kind, seed=1)
    encoder_before = c_model.get_layer("encoder").get_weights()[0]
    for m, mod in ((k_model, keras), (c_model, cgru)):
        m.compile(optimizer=OPTIMIZERS[optimizer](mod.optimizers), loss="mse",
                  metrics=["mae"])
    kh = k_model.fit(xs, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
                     validation_data=([a[:4] for a in xs], y[:4]))
    ch = c_model.fit(xs, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
                     validation_data=([a[:4] for a in xs], y[:4]))
    assert set(ch.history) == set(kh.history)
    for key in kh.history:
        np.testing.assert_allclose(ch.history[key], kh.history[key], rtol=1e-4, atol=1e-6,
                                   err_msg=key)
    # the encoder trains only through the state it hands the decoder
    assert np.abs(c_model.get_layer("encoder").get_weights()[0] - encoder_before).max() > 1e-4
    for cw, kw in zip(c_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(cw, kw, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("kind", list(MODELS))
def test_weight_gradients_through_the_state_match_central_differences(kind):
    """Every weight's gradient (the encoder's reach the loss only through the state, and
    with ``state_used_twice`` also through the head) by central differences, float64."""
    model = MODELS[kind](cgru, CL, dtype="float64")
    model.compile(loss="mse")
    rng = np.random.default_rng(3)
    for w in model.weights:
        w += rng.uniform(-0.3, 0.3, w.shape)
    xs, y = _data(kind, n=6, seed=4, dtype=np.float64)
    ys_pred, trace = model._run_graph(xs, need_grad=True)
    grads = model._gradients([y], ys_pred, trace)
    weights = model.trainable_weights
    assert len(grads) == len(weights)

    def loss(arrays):
        saved = [w.copy() for w in weights]
        for w, a in zip(weights, arrays):
            w[...] = a
        preds, tr = model._run_graph(xs)
        value = model._compute_loss([y], preds, None, tr)[0]
        for w, a in zip(weights, saved):
            w[...] = a
        return value

    expected = central_differences(loss, [w.copy() for w in weights])
    for g, e in zip(grads, expected):
        assert np.abs(e).max() > 0
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("layer", ["gru", "gru_reset_before", "bidirectional"])
def test_layer_backward_gives_the_initial_state_gradients(layer):
    """The protocol: forward(..., initial_state=[...]) and backward(...,
    need_state_grad=True) -> ((dx, [d_state, ...]), grads), by central differences."""
    rng = np.random.default_rng(7)
    if layer == "bidirectional":
        lay = CL.Bidirectional(CL.GRU(3, return_sequences=True, dtype="float64"))
    else:
        lay = CL.GRU(3, return_sequences=True, reset_after=layer == "gru", dtype="float64")
    x = rng.standard_normal((2, 4, 2))
    lay(x)
    for w in lay.weights:
        w += rng.uniform(-0.3, 0.3, w.shape)
    states = [rng.standard_normal((2, 3)) for _ in lay.initial_state_shapes((4, 2))]
    mask = np.array([[True, True, False, True], [False, False, False, False]])
    out, ctx = lay.forward(x, mask=mask, need_grad=True, initial_state=states)
    d_out = rng.standard_normal(out.shape)
    (dx, d_states), _ = lay.backward(d_out, ctx, need_input_grad=True, need_state_grad=True)

    def loss(args):
        return float(np.sum(lay.forward(args[0], mask=mask, initial_state=args[1:])[0]
                            * d_out))

    expected = central_differences(loss, [x] + states)
    for got, want in zip([dx] + list(d_states), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    # only the input gradient left out
    (dx, d_states2), _ = lay.backward(d_out, ctx, need_input_grad=False, need_state_grad=True)
    assert dx is None
    for a, b in zip(d_states, d_states2):
        np.testing.assert_array_equal(a, b)


def test_graph_states_are_checked_when_the_graph_is_built():
    seq = cgru.Input((4, 3))
    _, state = cgru.GRU(5, return_state=True)(seq)
    with pytest.raises(ValueError, match=r"initial_state.*\(None, 2\).*\(None, 5\)"):
        CL.GRU(2)(seq, initial_state=state)
    with pytest.raises(ValueError, match="initial_state.*2 tensor"):
        CL.Bidirectional(CL.GRU(5))(seq, initial_state=[state])
    with pytest.raises(TypeError, match="initial_state"):
        CL.GRU(5)(seq, initial_state=[state, np.zeros((1, 5))])


def test_states_that_are_model_inputs():
    """A state given as an Input of the model (no gradient is computed for it)."""
    k_seq, k_h = keras.Input((4, 3)), keras.Input((5,))
    k_model = keras.Model([k_seq, k_h], keras.layers.GRU(5)(k_seq, initial_state=k_h))
    c_seq, c_h = cgru.Input((4, 3)), cgru.Input((5,))
    c_model = cgru.Model([c_seq, c_h], CL.GRU(5)(c_seq, initial_state=c_h))
    c_model.set_weights(k_model.get_weights())
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((6, 4, 3)).astype(np.float32),
          rng.standard_normal((6, 5)).astype(np.float32)]
    np.testing.assert_allclose(c_model.predict(xs, verbose=0), k_model.predict(xs, verbose=0),
                               rtol=TOL, atol=TOL)
    c_model.compile(optimizer="sgd", loss="mse")
    k_model.compile(optimizer="sgd", loss="mse")
    y = rng.standard_normal((6, 5)).astype(np.float32)
    ch = c_model.fit(xs, y, epochs=2, batch_size=3, shuffle=False, verbose=0)
    kh = k_model.fit(xs, y, epochs=2, batch_size=3, shuffle=False, verbose=0)
    np.testing.assert_allclose(ch.history["loss"], kh.history["loss"], rtol=1e-4)


@pytest.mark.parametrize("kind", ["gru", "bidirectional"])
def test_cgru_format_round_trip(kind, tmp_path):
    model = MODELS[kind](cgru, CL)
    xs, _ = _data(kind)
    path = tmp_path / "model.cgru"
    model.save(path)
    loaded = cgru.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(xs), model.predict(xs))


@pytest.mark.parametrize("kind", list(MODELS))
def test_keras_file_saved_by_keras_loads_and_predicts_as_keras(kind, tmp_path):
    pytest.importorskip("h5py")
    k_model = MODELS[kind](keras, keras.layers)
    k_model.compile(optimizer="adam", loss="mse")
    xs, y = _data(kind)
    k_model.fit(xs, y, epochs=1, batch_size=4, verbose=0)     # weights and optimizer state
    path = str(tmp_path / "model.keras")
    k_model.save(path)
    c_model = cgru.models.load_model(path)
    assert [l.name for l in c_model.layers] == [l.name for l in k_model.layers]
    np.testing.assert_allclose(c_model.predict(xs), k_model.predict(xs, verbose=0),
                               rtol=TOL, atol=TOL)
    # training goes on alike
    kh = k_model.fit(xs, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    ch = c_model.fit(xs, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    np.testing.assert_allclose(ch.history["loss"], kh.history["loss"], rtol=1e-4)


@pytest.mark.parametrize("kind", list(MODELS))
def test_keras_file_saved_by_cgru_opens_in_keras_and_predicts_the_same(kind, tmp_path):
    pytest.importorskip("h5py")
    c_model = MODELS[kind](cgru, CL)
    c_model.compile(optimizer="adam", loss="mse")
    xs, y = _data(kind)
    c_model.fit(xs, y, epochs=1, batch_size=4, verbose=0)
    path = str(tmp_path / "model.keras")
    c_model.save(path)
    k_model = keras.models.load_model(path)
    np.testing.assert_allclose(k_model.predict(xs, verbose=0), c_model.predict(xs),
                               rtol=TOL, atol=TOL)
    ch = c_model.fit(xs, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    kh = k_model.fit(xs, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    np.testing.assert_allclose(ch.history["loss"], kh.history["loss"], rtol=1e-4)

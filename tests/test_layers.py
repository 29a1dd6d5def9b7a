import numpy as np
import pytest

from cgru import GRU, Bidirectional, Dense, Dropout, Sequential


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def keras_formula_gru(x, kernel, recurrent_kernel, bias, reset_after=True):
    """Keras' GRU cell written from its documented equations, gate order z, r, h."""
    B, T, _ = x.shape
    H = recurrent_kernel.shape[0]
    h = np.zeros((B, H))
    b_in, b_rec = (bias[0], bias[1]) if reset_after else (bias, np.zeros(3 * H))
    ys = []
    for t in range(T):
        xz, xr, xh = np.split(x[:, t] @ kernel + b_in, 3, axis=1)
        if reset_after:
            rz, rr, rh = np.split(h @ recurrent_kernel + b_rec, 3, axis=1)
            z, r = _sigmoid(xz + rz), _sigmoid(xr + rr)
            hh = np.tanh(xh + r * rh)
        else:
            z = _sigmoid(xz + h @ recurrent_kernel[:, :H])
            r = _sigmoid(xr + h @ recurrent_kernel[:, H:2 * H])
            hh = np.tanh(xh + (r * h) @ recurrent_kernel[:, 2 * H:])
        h = z * h + (1 - z) * hh
        ys.append(h)
    return np.stack(ys, axis=1)


def test_issue_first_snippet_shape():
    layer = GRU(units=32, return_sequences=True, input_shape=(10, 20))
    out = layer(np.random.rand(1, 10, 20))
    assert out.shape == (1, 10, 32)
    assert out.dtype == np.float32
    assert layer.count_params() == 5184  # 3 * (20 * 32 + 32 * 32 + 2 * 32)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_matches_keras_equations_in_keras_layout(reset_after):
    rng = np.random.default_rng(0)
    layer = GRU(3, return_sequences=True, reset_after=reset_after, dtype="float64")
    x = rng.standard_normal((2, 6, 4))
    layer(x)
    w = [rng.uniform(-0.7, 0.7, p.shape) for p in layer.get_weights()]
    layer.set_weights(w)
    np.testing.assert_allclose(layer(x), keras_formula_gru(x, *w, reset_after=reset_after),
                               rtol=1e-12, atol=1e-12)


def test_go_backwards_reverses_processing_and_output_order():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 3))
    fwd = GRU(4, return_sequences=True, dtype="float64", seed=0)
    bwd = GRU(4, return_sequences=True, go_backwards=True, dtype="float64", seed=0)
    fwd(x)
    bwd(x)
    bwd.set_weights(fwd.get_weights())
    np.testing.assert_allclose(bwd(x), fwd(x[:, ::-1]), rtol=1e-12)


def test_return_state_and_initial_state():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 2))
    layer = GRU(5, return_sequences=True, return_state=True, dtype="float64", seed=1)
    y, h = layer(x)
    np.testing.assert_array_equal(y[:, -1], h)
    # running the two halves with the state carried over equals one run
    y1, h1 = layer(x[:, :2])
    y2, _ = layer(x[:, 2:], initial_state=[h1])
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), y, rtol=1e-12)
    y2b, _ = layer(x[:, 2:], initial_state=h1)  # bare array also accepted
    np.testing.assert_array_equal(y2b, y2)
    with pytest.raises(ValueError, match=r"initial_state.*\(3, 5\).*\(3, 4\)"):
        layer(x, initial_state=np.zeros((3, 4)))


def test_initializers_follow_keras():
    I, H = 20, 32
    layer = GRU(H, input_shape=(10, I), seed=0)
    kernel, recurrent, bias = layer.get_weights()
    assert bias.shape == (2, 3 * H) and not bias.any()
    limit = np.sqrt(6 / (I + 3 * H))  # glorot over the whole (I, 3H) kernel
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.95 * limit
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(H), atol=1e-5)
    assert GRU(H, reset_after=False, input_shape=(10, I)).get_weights()[2].shape == (3 * H,)


def test_seed_makes_weights_reproducible():
    a = GRU(4, input_shape=(3, 2), seed=7).get_weights()
    b = GRU(4, input_shape=(3, 2), seed=7).get_weights()
    c = GRU(4, input_shape=(3, 2), seed=8).get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a[0], c[0])
    np.random.seed(5)
    d = Dense(3, input_shape=(4,)).get_weights()
    np.random.seed(5)
    e = Dense(3, input_shape=(4,)).get_weights()
    np.testing.assert_array_equal(d[0], e[0])


def test_input_validation_messages():
    layer = GRU(4, input_shape=(10, 20))
    with pytest.raises(ValueError, match=r"\(batch, 10, 20\).*\(2, 10, 7\)"):
        layer(np.zeros((2, 10, 7)))
    with pytest.raises(ValueError, match=r"\(batch, timesteps, features\).*\(10, 20\)"):
        layer(np.zeros((10, 20)))
    with pytest.raises(ValueError, match="units=0"):
        GRU(0)
    with pytest.raises(ValueError, match="dropout"):
        GRU(3, dropout=1.5)
    with pytest.raises(TypeError, match="numeric"):
        layer(np.array([["a"]]))
    with pytest.raises(ValueError, match="merge_mode"):
        Bidirectional(GRU(3), merge_mode="max")
    with pytest.raises(ValueError, match="activation"):
        Dense(3, activation="swish")


def test_casts_inputs_to_layer_dtype():
    x64 = np.random.default_rng(0).standard_normal((2, 3, 4))
    layer = GRU(3, seed=0)
    assert layer(x64).dtype == np.float32
    assert layer(x64.astype(np.int64)).dtype == np.float32
    assert GRU(3, dtype="float64")(x64).dtype == np.float64


def test_weights_are_copies_and_set_weights_checks_shapes():
    layer = GRU(2, input_shape=(3, 2), seed=0)
    w = layer.get_weights()
    w[0][...] = 99
    assert not (layer.get_weights()[0] == 99).any()
    with pytest.raises(ValueError, match=r"\(2, 6\).*\(3, 6\)"):
        layer.set_weights([np.zeros((3, 6)), w[1], w[2]])
    with pytest.raises(ValueError, match="3 weight arrays"):
        layer.set_weights(w[:2])


def test_inputs_not_modified_and_non_contiguous_inputs_work():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((4, 6, 3)).astype(np.float32)
    x = base[:, ::2]  # non-contiguous view
    x.flags.writeable = False
    layer = GRU(3, return_sequences=True, seed=0)
    np.testing.assert_array_equal(layer(x), layer(np.ascontiguousarray(x)))


def test_bidirectional_weights_and_merge():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 3))
    inner = GRU(4, return_sequences=True, dtype="float64", seed=0)
    bi = Bidirectional(inner, merge_mode="concat")
    out = bi(x)
    assert out.shape == (2, 5, 8)
    assert bi.count_params() == 2 * GRU(4, input_shape=(5, 3)).count_params()
    wf, wb = bi.get_weights()[:3], bi.get_weights()[3:]
    f = GRU(4, return_sequences=True, dtype="float64")
    f(x)
    f.set_weights(wf)
    b = GRU(4, return_sequences=True, dtype="float64")
    b(x)
    b.set_weights(wb)
    np.testing.assert_allclose(out[..., :4], f(x), rtol=1e-12)
    np.testing.assert_allclose(out[..., 4:], b(x[:, ::-1])[:, ::-1], rtol=1e-12)
    bi.merge_mode = "ave"
    np.testing.assert_allclose(bi(x), (f(x) + b(x[:, ::-1])[:, ::-1]) / 2, rtol=1e-12)


def test_dense_acts_on_last_axis():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 3))
    d = Dense(5, activation="softmax", dtype="float64")
    y = d(x)
    assert y.shape == (2, 4, 5)
    k, b = d.get_weights()
    z = np.einsum("bti,io->bto", x, k) + b
    expected = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    np.testing.assert_allclose(y, expected, rtol=1e-12)


def test_dropout_layer():
    x = np.ones((200, 50), dtype=np.float32)
    d = Dropout(0.3, seed=1)
    np.testing.assert_array_equal(d(x), x)  # inference: identity
    y = d(x, training=True)
    kept = y != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(Dropout(0.3, seed=1)(x, training=True), y)


def test_gru_dropout_mask_shared_over_time():
    x = np.ones((40, 5, 3), dtype=np.float64)
    layer = GRU(3, dropout=0.5, dtype="float64", seed=0, return_sequences=True)
    layer(x)
    kernel = np.zeros((3, 9))
    kernel[np.arange(3), 6 + np.arange(3)] = 1  # feature i feeds candidate i only
    layer.set_weights([kernel, np.zeros((3, 9)), np.zeros((2, 9))])
    # z = 0.5, candidate = tanh(mask_i * x_i): h_t = (1 - 0.5**(t+1)) * tanh(mask_i)
    np.testing.assert_allclose(layer(x)[:, -1], (1 - 0.5**5) * np.tanh(1.0), rtol=1e-12)
    y = layer(x, training=True)
    scaled = y / (1 - 0.5 ** np.arange(1, 6))[None, :, None]
    np.testing.assert_allclose(scaled, scaled[:, :1].repeat(5, axis=1), rtol=1e-12)
    values = np.unique(np.round(scaled, 12))
    np.testing.assert_allclose(values, [0.0, np.tanh(2.0)], rtol=1e-12)  # kept: x / (1-0.5)


def _numeric_grads(model, x, y, eps=1e-6):
    out = []
    for w in model.weights:
        g = np.zeros_like(w)
        flat, gflat = w.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            lp = model.loss(y, model._forward(x)[0])
            flat[i] = old - eps
            lm = model.loss(y, model._forward(x)[0])
            flat[i] = old
            gflat[i] = (lp - lm) / (2 * eps)
        out.append(g)
    return out


@pytest.mark.parametrize("case", ["gru_dense", "reset_after_false_backwards",
                                  "bidirectional_stack_mse", "softmax_sequence",
                                  "bidirectional_sum_relu"])
def test_model_gradients_match_finite_differences(case):
    rng = np.random.default_rng(6)
    f64 = dict(dtype="float64")
    if case == "gru_dense":
        layers = [GRU(4, input_shape=(5, 2), **f64), Dense(1, activation="sigmoid", **f64)]
        loss, y = "binary_crossentropy", (rng.random((3, 1)) > 0.5).astype(float)
    elif case == "reset_after_false_backwards":
        layers = [GRU(4, input_shape=(5, 2), reset_after=False, go_backwards=True, **f64),
                  Dense(1, activation="sigmoid", **f64)]
        loss, y = "binary_crossentropy", (rng.random(3) > 0.5).astype(float)
    elif case == "bidirectional_stack_mse":
        layers = [Bidirectional(GRU(3, return_sequences=True, **f64), merge_mode="mul",
                                input_shape=(5, 2)),
                  GRU(3, **f64), Dense(2, activation="tanh", **f64)]
        loss, y = "mse", rng.standard_normal((3, 2))
    elif case == "softmax_sequence":
        layers = [GRU(3, return_sequences=True, input_shape=(5, 2), **f64),
                  Dense(4, activation="softmax", **f64)]
        loss, y = "sparse_categorical_crossentropy", rng.integers(0, 4, (3, 5))
    else:
        layers = [Bidirectional(GRU(3, **f64), merge_mode="sum", input_shape=(5, 2)),
                  Dense(3, activation="relu", **f64), Dense(1, **f64)]
        loss, y = "mse", rng.standard_normal((3, 1))
    model = Sequential(layers)
    model.compile(loss=loss)
    for w in model.weights:  # non-zero biases
        w += rng.uniform(-0.3, 0.3, w.shape)
    x = rng.standard_normal((3, 5, 2))
    y_pred, ctxs = model._forward(x, need_grad=True)
    grads = model._backward(y, y_pred, ctxs)
    for g, n in zip(grads, _numeric_grads(model, x, y)):
        np.testing.assert_allclose(g, n, rtol=1e-5, atol=1e-8)

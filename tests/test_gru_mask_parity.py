"""GRU and Bidirectional with masks and recurrent dropout: parity with real Keras 3 (weights
copied with set_weights(keras_layer.get_weights())), layer gradients by central differences,
and 3-epoch training runs with masks from Masking and Embedding(mask_zero=True)."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from _layer_checks import assert_gradients_numeric, assert_same_training  # noqa: E402
from test_layers_embedding import _DenseGradientEmbedding  # noqa: E402

import tensorflow as tf  # noqa: E402

from cgru import GRU, Bidirectional, Dense, Sequential  # noqa: E402
from cgru.layers import Embedding, Masking, TimeDistributed  # noqa: E402

B, T, I, H = 6, 7, 5, 4
ATOL = {np.float32: 2e-6, np.float64: 1e-10}


def _mask():
    """Holes, left padding, a row masked entirely, right padding, a row all valid."""
    rng = np.random.default_rng(5)
    mask = rng.random((B, T)) < 0.6
    mask[0] = False                                     # masked entirely
    mask[1] = True
    mask[2, :4], mask[2, 4:] = False, True              # left padding
    mask[3] = np.arange(T) < T - 2                      # right padding
    mask[4, -1] = False                                 # last step masked
    mask[5, 0] = False
    return mask


def _x(dtype, seed=0):
    return np.random.default_rng(seed).standard_normal((B, T, I)).astype(dtype)


def _keras_gru(dtype, **kw):
    layer = keras.layers.GRU(H, dtype=np.dtype(dtype).name, **kw)
    layer.build((None, T, I))
    w = layer.get_weights()
    w[-1] = np.random.default_rng(1).uniform(-0.5, 0.5, w[-1].shape).astype(dtype)
    layer.set_weights(w)
    return layer


def _twin_gru(dtype, **kw):
    k = _keras_gru(dtype, **kw)
    c = GRU(H, dtype=dtype, **kw)
    c.build((T, I))
    c.set_weights(k.get_weights())
    return k, c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
def test_gru_with_a_mask_argument_matches_keras(dtype, reset_after, return_sequences,
                                                go_backwards, zero_output_for_mask):
    kw = dict(reset_after=reset_after, return_sequences=return_sequences,
              go_backwards=go_backwards, zero_output_for_mask=zero_output_for_mask,
              return_state=True)
    k, c = _twin_gru(dtype, **kw)
    x, mask = _x(dtype), _mask()
    h0 = np.random.default_rng(2).standard_normal((B, H)).astype(dtype)
    k_out, k_h = [np.asarray(v) for v in k(x, mask=mask, initial_state=h0)]
    c_out, c_h = c(x, mask=mask, initial_state=h0)
    assert c_out.shape == k_out.shape and c_out.dtype == dtype
    np.testing.assert_allclose(c_out, k_out, rtol=0, atol=ATOL[dtype])
    np.testing.assert_allclose(c_h, k_h, rtol=0, atol=ATOL[dtype])
    # the row masked entirely returns its initial state and zero outputs
    np.testing.assert_array_equal(c_h[0], h0[0])
    np.testing.assert_array_equal(c_out[0], 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_with_a_mask_matches_keras(dtype, merge_mode, return_sequences):
    name = np.dtype(dtype).name
    k = keras.layers.Bidirectional(
        keras.layers.GRU(H, return_sequences=return_sequences, return_state=True, dtype=name),
        merge_mode=merge_mode, dtype=name)
    k.build((None, T, I))
    c = Bidirectional(GRU(H, return_sequences=return_sequences, return_state=True,
                          dtype=dtype), merge_mode=merge_mode)
    c.build((T, I))
    weights = [w.astype(dtype) for w in k.get_weights()]
    rng = np.random.default_rng(3)
    weights = [w + rng.uniform(-0.3, 0.3, w.shape).astype(dtype) for w in weights]
    k.set_weights(weights)
    c.set_weights(weights)
    x, mask = _x(dtype), _mask()
    k_out = [np.asarray(v) for v in k(x, mask=mask)]
    c_out = c(x, mask=mask)
    assert len(c_out) == len(k_out)
    for a, b in zip(c_out, k_out):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL[dtype])


def test_output_masks_match_keras():
    mask = _mask()
    x = _x(np.float32)
    for kw in (dict(return_sequences=True), dict(return_sequences=False),
               dict(return_sequences=True, return_state=True),
               dict(return_sequences=True, go_backwards=True)):
        k, c = keras.layers.GRU(H, **kw), GRU(H, **kw)
        want, got = k.compute_mask(x, mask), c.compute_mask(x, mask)
        if isinstance(want, list):
            assert len(got) == len(want)
            assert want[1] is None and got[1] is None
            want, got = want[0], got[0]
        if want is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, np.asarray(want))
    for merge_mode in ("concat", None):
        for rs in (True, False):
            k = keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=rs),
                                           merge_mode=merge_mode)
            c = Bidirectional(GRU(H, return_sequences=rs), merge_mode=merge_mode)
            want, got = k.compute_mask(x, mask), c.compute_mask(x, mask)
            want = list(want) if isinstance(want, tuple) else [want]
            got = list(got) if isinstance(got, list) else [got]
            assert len(got) == len(want)
            for a, b in zip(got, want):
                assert (a is None) == (b is None)
                if a is not None:
                    np.testing.assert_array_equal(a, np.asarray(b))
            assert c.forward_layer.zero_output_for_mask is rs
            assert k.forward_layer.zero_output_for_mask is rs


def test_a_bad_mask_is_named():
    c = GRU(H, input_shape=(T, I))
    with pytest.raises(ValueError, match=r"mask of shape \(7, 6\).*\(6, 7\)"):
        c(_x(np.float32), mask=_mask().T)


# -- recurrent dropout against Keras's cell with the same masks ------------------------------
def _inject(k, c, keep, rec):
    """Gives Keras's cell and cgru's layer the same dropout masks for the next call: keep
    (3, B, I) or None and rec (3, B, H), in Keras's gate order (z, r, h)."""
    k.cell._dropout_mask = None if keep is None else [tf.constant(m) for m in keep]
    k.cell._recurrent_dropout_mask = [tf.constant(m) for m in rec]
    order = [1, 0, 2]       # cgru's kernels take (r, z, n)
    c._dropout_masks = lambda batch, features: (
        None if keep is None else keep[order], np.ascontiguousarray(rec[order]))


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_recurrent_dropout_matches_keras_cell_with_the_same_masks(reset_after, dropout,
                                                                  masked, return_sequences):
    dtype = np.float64
    kw = dict(reset_after=reset_after, return_sequences=return_sequences, dropout=dropout,
              recurrent_dropout=0.4)
    k, c = _twin_gru(dtype, **kw)
    rng = np.random.default_rng(9)
    keep = ((rng.random((3, B, I)) >= 0.3) / 0.7) if dropout else None
    rec = (rng.random((3, B, H)) >= 0.4) / 0.6
    x = _x(dtype)
    mask = _mask() if masked else None
    dy = rng.standard_normal((B, T, H) if return_sequences else (B, H))

    _inject(k, c, keep, rec)
    x_tf = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tf)
        out = k(x_tf, training=True, mask=mask)
        loss = tf.reduce_sum(out * dy)
    k_grads = tape.gradient(loss, [x_tf] + k.trainable_weights)
    out_c, ctx = c.forward(x, training=True, mask=mask, need_grad=True)
    np.testing.assert_allclose(out_c, np.asarray(out), rtol=0, atol=1e-10)
    dx, grads = c.backward(dy, ctx)
    np.testing.assert_allclose(dx, np.asarray(k_grads[0]), rtol=0, atol=1e-10)
    for got, want in zip(c.weights_to_keras(grads), k_grads[1:]):
        np.testing.assert_allclose(got, np.asarray(want), rtol=0, atol=1e-10)
    # inference ignores both dropouts, as in Keras
    np.testing.assert_allclose(c(x, mask=mask), np.asarray(k(x, mask=mask)), atol=1e-10)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_layer_gradients_with_masks_and_dropouts(reset_after, go_backwards):
    layer = GRU(3, return_sequences=True, dropout=0.3, recurrent_dropout=0.4,
                reset_after=reset_after, go_backwards=go_backwards, dtype="float64",
                input_shape=(T, 2), seed=4)
    x = np.random.default_rng(6).standard_normal((B, T, 2))
    assert_gradients_numeric(layer, x, training=True, mask=_mask())
    last = GRU(3, dropout=0.3, recurrent_dropout=0.4, zero_output_for_mask=True,
               dtype="float64", input_shape=(T, 2), seed=5)
    assert_gradients_numeric(last, x, training=True, mask=_mask())


def test_recurrent_dropout_draws_one_mask_per_call_from_the_seed():
    x = _x(np.float32)
    a = GRU(H, recurrent_dropout=0.5, return_sequences=True, seed=3, input_shape=(T, I))
    b = GRU(H, recurrent_dropout=0.5, return_sequences=True, seed=3, input_shape=(T, I))
    first = a(x, training=True)
    np.testing.assert_array_equal(first, b(x, training=True))
    assert not np.allclose(first, a(x, training=True))     # a new mask each call
    assert not np.allclose(first, a(x))                     # none in inference


# -- training: masks from Masking and Embedding(mask_zero=True) ------------------------------
N = 24


def _padded(seed=3):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((N, T, I)).astype(np.float32)
    pattern = rng.random((N, T)) < 0.3
    pattern[0] = True                       # a sample masked entirely
    pattern[1, :3] = True                   # left padding
    xs[pattern] = 0.0
    return xs


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masking_stacked_gru_training_matches_keras(optimizer):
    xs = _padded()
    ys = (xs[:, :, 0].sum(axis=1) > 0).astype(np.float32)
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([keras.Input((T, I)), keras.layers.Masking(0.0),
                                keras.layers.GRU(H, return_sequences=True),
                                keras.layers.GRU(H, go_backwards=True),
                                keras.layers.Dense(1, activation="sigmoid")])
    c_model = Sequential([Masking(0.0, input_shape=(T, I)), GRU(H, return_sequences=True),
                          GRU(H, go_backwards=True), Dense(1, activation="sigmoid")])
    assert_same_training(k_model, c_model, xs, ys, "binary_crossentropy", optimizer,
                         metrics=["accuracy"])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("merge_mode", ["concat", "ave"])
def test_masking_bidirectional_sequence_training_matches_keras(optimizer, merge_mode):
    xs = _padded(4)
    ys = np.random.default_rng(8).standard_normal((N, T, 2)).astype(np.float32)
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([
        keras.Input((T, I)), keras.layers.Masking(0.0),
        keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True),
                                   merge_mode=merge_mode),
        keras.layers.GRU(H, return_sequences=True),
        keras.layers.TimeDistributed(keras.layers.Dense(2))])
    c_model = Sequential([Masking(0.0, input_shape=(T, I)),
                          Bidirectional(GRU(H, return_sequences=True), merge_mode=merge_mode),
                          GRU(H, return_sequences=True), TimeDistributed(Dense(2))])
    assert_same_training(k_model, c_model, xs, ys, "mse", optimizer)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_embedding_mask_zero_training_matches_keras(optimizer):
    V, D = 9, 3
    rng = np.random.default_rng(10)
    ids = rng.integers(1, V, (N, T))
    ids[rng.random((N, T)) < 0.3] = 0
    ids[0] = 0
    ids[1, :4] = 0
    ys = (ids[:, -1] > V // 2).astype(np.float32)
    embedding = keras.layers.Embedding if optimizer == "sgd" else _DenseGradientEmbedding
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([
        keras.Input((T,), dtype="int32"), embedding(V, D, mask_zero=True),
        keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True)),
        keras.layers.GRU(H, reset_after=False),
        keras.layers.Dense(1, activation="sigmoid")])
    c_model = Sequential([Embedding(V, D, mask_zero=True, input_shape=(T,)),
                          Bidirectional(GRU(H, return_sequences=True)),
                          GRU(H, reset_after=False), Dense(1, activation="sigmoid")])
    assert_same_training(k_model, c_model, ids, ys, "binary_crossentropy", optimizer,
                         metrics=["accuracy"])


def test_keras_files_carry_recurrent_dropout_and_zero_output_for_mask(tmp_path):
    import cgru
    from cgru.keras_file import load_keras_model
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([keras.Input((T, I)),
                                keras.layers.GRU(H, recurrent_dropout=0.2, dropout=0.1,
                                                 zero_output_for_mask=True,
                                                 return_sequences=True)])
    k_model.save(tmp_path / "k.keras")
    c_model = load_keras_model(tmp_path / "k.keras")
    gru = c_model.layers[-1]
    assert (gru.recurrent_dropout, gru.dropout, gru.zero_output_for_mask) == (0.2, 0.1, True)
    xs = _x(np.float32)
    np.testing.assert_allclose(c_model.predict(xs), k_model.predict(xs, verbose=0),
                               atol=2e-6)
    c_model.save(tmp_path / "c.keras")
    again = keras.models.load_model(tmp_path / "c.keras")
    config = again.layers[-1].get_config()
    assert (config["recurrent_dropout"], config["zero_output_for_mask"]) == (0.2, True)
    assert isinstance(cgru.load_model(tmp_path / "c.keras").layers[-1], GRU)

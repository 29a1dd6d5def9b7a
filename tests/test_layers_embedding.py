"""Embedding: parity with Keras 3 (outputs, masks, training), gradients, configs, saving."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from _layer_checks import (assert_config_round_trip, assert_same_training,  # noqa: E402
                           assert_save_load_round_trip, assert_summary_matches)

from cgru import GRU, Dense, Sequential  # noqa: E402
from cgru.layers import Embedding  # noqa: E402

V, D, B, T = 11, 4, 6, 7


def _ids(seed=0, shape=(B, T)):
    ids = np.random.default_rng(seed).integers(0, V, shape)
    ids[:, -2:] = 0           # trailing padding, for masks
    return ids


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64, np.uint8, np.float32])
def test_forward_and_mask_match_keras(dtype, id_dtype):
    k = keras.layers.Embedding(V, D, mask_zero=True, dtype=np.dtype(dtype).name)
    k.build((None, T))
    c = Embedding(V, D, mask_zero=True, dtype=dtype)
    c.build((T,))
    c.set_weights(k.get_weights())
    ids = _ids().astype(id_dtype)
    got = c(ids)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.asarray(k(ids)))
    np.testing.assert_array_equal(c.compute_mask(ids), np.asarray(k.compute_mask(ids)))
    assert Embedding(V, D).compute_mask(ids) is None


def test_float_ids_are_truncated_like_keras_and_any_rank_works():
    k = keras.layers.Embedding(V, D)
    k.build((None, 2, 3))
    c = Embedding(V, D, input_shape=(2, 3))
    c.set_weights(k.get_weights())
    ids = np.array([[[1.0, 2.7, 3.2], [0.0, 9.9, 10.0]]])
    np.testing.assert_array_equal(c(ids), np.asarray(k(ids)))
    assert c(ids).shape == (1, 2, 3, D)


def test_weight_gradient_accumulates_repeated_ids():
    c = Embedding(V, D, dtype="float64", input_shape=(T,), seed=1)
    ids = np.array([[1, 1, 1, 2, 0, 0, 5]] * 2)
    out, ctx = c.forward(ids.astype(np.float64), need_grad=True)
    d_out = np.random.default_rng(0).standard_normal(out.shape)
    d_x, (d_table,) = c.backward(d_out, ctx, need_input_grad=False)
    assert d_x is None                   # the first layer computes no input gradient
    expected = np.zeros((V, D))
    for b in range(2):
        for t in range(T):
            expected[ids[b, t]] += d_out[b, t]
    np.testing.assert_allclose(d_table, expected, rtol=1e-12, atol=1e-12)
    # central differences of sum(out * d_out) in the table
    eps = 1e-6
    for row, col in [(1, 0), (2, 3), (0, 1), (7, 2)]:
        saved = c.embeddings[row, col]
        c.embeddings[row, col] = saved + eps
        up = np.sum(c.forward(ids)[0] * d_out)
        c.embeddings[row, col] = saved - eps
        down = np.sum(c.forward(ids)[0] * d_out)
        c.embeddings[row, col] = saved
        np.testing.assert_allclose(d_table[row, col], (up - down) / (2 * eps), rtol=1e-6,
                                   atol=1e-9)


def test_weights_argument_sets_the_table_like_keras():
    table = np.arange(V * D, dtype=np.float32).reshape(V, D)
    k = keras.layers.Embedding(V, D, weights=[table])
    c = Embedding(V, D, weights=[table])
    ids = _ids()
    np.testing.assert_array_equal(c(ids), np.asarray(k(ids)))
    np.testing.assert_array_equal(c(ids), table[ids])


def test_uniform_initializer_is_keras_random_uniform():
    w = Embedding(200, 50, input_shape=(3,), seed=0).get_weights()[0]
    assert w.min() >= -0.05 and w.max() <= 0.05 and w.std() > 0.02
    assert Embedding(3, 2, seed=0, input_shape=(1,)).get_config()[
        "embeddings_initializer"] == "uniform"


class _DenseGradientEmbedding(keras.layers.Embedding):
    """Keras's Embedding computed as one_hot(ids) @ table, so that TensorFlow hands the
    optimizer a dense gradient, as Keras's JAX and PyTorch backends do. With
    ``ops.take``, TensorFlow gives an IndexedSlices holding one row per occurrence, and
    Keras's Adam then squares the rows before summing repeated ids (sum of squares, not
    the square of the summed gradient); cgru's gradient is the dense one."""

    def call(self, inputs):
        one_hot = keras.ops.one_hot(keras.ops.cast(inputs, "int32"), self.input_dim,
                                    dtype=self.embeddings.dtype)
        return keras.ops.matmul(one_hot, self.embeddings)


def _twins(embedding=keras.layers.Embedding):
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([keras.Input((T,), dtype="int32"),
                                embedding(V, D),
                                keras.layers.GRU(3),
                                keras.layers.Dense(1, activation="sigmoid")])
    c_model = Sequential([Embedding(V, D, input_shape=(T,)), GRU(3),
                          Dense(1, activation="sigmoid")])
    return k_model, c_model


def _data(n=22):
    ids = np.random.default_rng(4).integers(0, V, (n, T))
    return ids, (ids[:, 0] > V // 2).astype(np.float32)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_embedding_gru_dense_training_matches_keras(optimizer):
    # SGD is linear in the gradient, so Keras's own Embedding agrees as it is
    k_model, c_model = _twins(keras.layers.Embedding if optimizer == "sgd"
                              else _DenseGradientEmbedding)
    ids, y = _data()
    assert_same_training(k_model, c_model, ids, y, "binary_crossentropy", optimizer,
                         metrics=["accuracy"])


def test_summary_matches_keras(capsys):
    k_model, c_model = _twins()
    assert_summary_matches(k_model, c_model, capsys)


def test_config_round_trip_and_keras_arguments():
    c = Embedding(V, D, mask_zero=True, input_length=T, embeddings_regularizer="l2",
                  embeddings_constraint="non_neg", input_shape=(T,), name="emb")
    clone = assert_config_round_trip(c, _ids())
    assert clone.mask_zero and clone.name == "emb"
    k_config = keras.layers.Embedding(V, D, mask_zero=True).get_config()
    for key in ("input_dim", "output_dim", "mask_zero"):
        assert c.get_config()[key] == k_config[key]


def test_save_and_load_a_model_with_an_embedding(tmp_path):
    model = Sequential([Embedding(V, D, input_shape=(T,), seed=0), GRU(3, seed=0),
                        Dense(1, seed=0)], seed=0)
    model.compile(loss="mse", optimizer="adam")
    ids, y = _data(8)
    model.fit(ids, y, epochs=1, batch_size=4, verbose=0)
    assert_save_load_round_trip(model, ids, y, tmp_path)


def test_regularizer_enters_the_loss_like_keras():
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([keras.Input((T,), dtype="int32"),
                                keras.layers.Embedding(V, D, embeddings_regularizer="l2"),
                                keras.layers.GRU(3), keras.layers.Dense(1)])
    c_model = Sequential([Embedding(V, D, input_shape=(T,), embeddings_regularizer="l2"),
                          GRU(3), Dense(1)])
    ids, y = _data()
    assert_same_training(k_model, c_model, ids, y, "mse", "sgd")


@pytest.mark.parametrize("bad", [V, 99, -1])
def test_out_of_range_ids_raise_naming_value_and_input_dim(bad):
    c = Embedding(V, D, input_shape=(T,))
    ids = _ids()
    ids[2, 3] = bad
    with pytest.raises(ValueError, match=rf"id {bad}\b.*input_dim={V}"):
        c(ids)
    model = Sequential([Embedding(V, D, input_shape=(T,)), GRU(2)])
    with pytest.raises(ValueError, match=rf"input_dim={V}"):
        model.predict(ids)


def test_ids_beyond_float32_precision_raise():
    big = Embedding(2 ** 24 + 10, 1, input_shape=(1,), embeddings_initializer="zeros")
    with pytest.raises(ValueError, match=r"2\*\*24.*float64"):
        big(np.array([[2 ** 24 + 2]], np.float32))
    assert big(np.array([[2 ** 24 + 2]], np.int64)).shape == (1, 1, 1)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="input_dim"):
        Embedding(0, 3)
    with pytest.raises(ValueError, match="output_dim"):
        Embedding(3, 2.5)
    with pytest.raises(ValueError, match="non-finite"):
        Embedding(3, 2, input_shape=(1,))(np.array([[np.nan]]))
    with pytest.raises(TypeError, match="integer ids"):
        Embedding(3, 2, input_shape=(1,))(np.array([["a"]]))
    with pytest.raises(NotImplementedError, match="lora_rank"):
        Embedding(3, 2, lora_rank=2)

"""fit/evaluate/predict on generators, iterables and PyDatasets, steps, validation_freq and the
*_on_batch methods, against real Keras 3."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

from cgru import GRU, Dense, Sequential, utils  # noqa: E402
from cgru import optimizers as copt  # noqa: E402

T, I, N, BATCH = 5, 3, 24, 8


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, T, I)).astype(np.float32)
    return x, (x[:, 0, 0] > 0).astype(np.float32)


def _twins():
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([keras.Input((T, I)), keras.layers.GRU(3),
                                keras.layers.Dense(1, activation="sigmoid")])
    c_model = Sequential([GRU(3, input_shape=(T, I)), Dense(1, activation="sigmoid")])
    c_model.set_weights(k_model.get_weights())
    for model, module in ((k_model, keras.optimizers), (c_model, copt)):
        model.compile(optimizer=module.Adam(0.01), loss="binary_crossentropy",
                      metrics=["accuracy"])
    return k_model, c_model


def _batches(x, y, forever=False):
    while True:
        for start in range(0, len(x), BATCH):
            yield x[start:start + BATCH], y[start:start + BATCH]
        if not forever:
            return


def _dataset_class(base):
    class Batches(base):
        def __init__(self, x, y, **kwargs):
            super().__init__(**kwargs)
            self.x, self.y, self.epochs_ended = x, y, 0

        def __len__(self):
            return -(-len(self.x) // BATCH)

        def __getitem__(self, index):
            rows = slice(index * BATCH, (index + 1) * BATCH)
            return self.x[rows], self.y[rows]

        def on_epoch_end(self):
            self.epochs_ended += 1
    return Batches


def _assert_same(kh, ch, k_model, c_model):
    assert set(ch.history) == set(kh.history)
    for key in kh.history:
        np.testing.assert_allclose(ch.history[key], kh.history[key], rtol=1e-4, err_msg=key)
    for cw, kw in zip(c_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(cw, kw, rtol=1e-4, atol=2e-6)


def test_generator_with_steps_per_epoch_and_validation_freq_match_keras():
    x, y = _data()
    k_model, c_model = _twins()
    kw = dict(steps_per_epoch=2, epochs=4, validation_freq=2, verbose=0)
    kh = k_model.fit(_batches(x, y, forever=True), validation_data=(x[:8], y[:8]), **kw)
    ch = c_model.fit(_batches(x, y, forever=True), validation_data=(x[:8], y[:8]), **kw)
    _assert_same(kh, ch, k_model, c_model)
    assert len(ch.history["val_loss"]) == 2            # epochs 2 and 4 only


def test_pydataset_fit_evaluate_predict_match_keras():
    x, y = _data()
    k_model, c_model = _twins()
    k_data = _dataset_class(keras.utils.PyDataset)(x, y)
    c_data = _dataset_class(utils.PyDataset)(x, y)
    kh = k_model.fit(k_data, epochs=3, verbose=0, shuffle=False)
    ch = c_model.fit(c_data, epochs=3, verbose=0, shuffle=False)
    _assert_same(kh, ch, k_model, c_model)
    assert c_data.epochs_ended >= 3
    np.testing.assert_allclose(c_model.evaluate(c_data), k_model.evaluate(k_data, verbose=0),
                               rtol=1e-5)
    assert c_model.evaluate(c_data, return_dict=True).keys() == {"loss", "accuracy"}
    np.testing.assert_allclose(c_model.predict(c_data), k_model.predict(k_data, verbose=0),
                               atol=2e-6)


def test_plain_generator_runs_one_pass_an_epoch_and_predict_takes_x_batches():
    x, y = _data()
    _, c_model = _twins()
    history = c_model.fit(_batches(x, y), epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1
    predictions = c_model.predict((xb for xb, _ in _batches(x, y)))
    np.testing.assert_array_equal(predictions, c_model.predict(x, batch_size=BATCH))
    with pytest.warns(UserWarning, match="ran out of data"):
        history = c_model.fit(_batches(x, y), steps_per_epoch=2, epochs=5, verbose=0)
    assert len(history.history["loss"]) == 2           # 3 batches: the second epoch ends it
    with pytest.raises(ValueError, match="`y` and `sample_weight` must not be given"):
        c_model.fit(_batches(x, y), y, verbose=0)
    with pytest.raises(ValueError, match=r"y \(a batch\)"):
        c_model.fit(iter([(x[:4], y[:3])]), verbose=0)


def test_on_batch_methods_match_keras():
    x, y = _data()
    k_model, c_model = _twins()
    for start in (0, 8):
        rows = slice(start, start + 8)
        np.testing.assert_allclose(c_model.train_on_batch(x[rows], y[rows]),
                                   k_model.train_on_batch(x[rows], y[rows]), rtol=1e-5)
    np.testing.assert_allclose(c_model.test_on_batch(x[:8], y[:8]),
                               k_model.test_on_batch(x[:8], y[:8]), rtol=1e-5)
    assert c_model.test_on_batch(x[:8], y[:8], return_dict=True).keys() == \
        k_model.test_on_batch(x[:8], y[:8], return_dict=True).keys()
    np.testing.assert_allclose(c_model.predict_on_batch(x[:8]),
                               np.asarray(k_model.predict_on_batch(x[:8])), atol=2e-6)
    for cw, kw in zip(c_model.get_weights(), k_model.get_weights()):
        np.testing.assert_allclose(cw, kw, rtol=1e-4, atol=2e-6)


def test_sample_and_class_weights_match_keras():
    x, y = _data()
    weights = np.random.default_rng(1).uniform(0.2, 2.0, N).astype(np.float32)
    for fit_kw in (dict(sample_weight=weights), dict(class_weight={0: 0.5, 1: 2.0})):
        k_model, c_model = _twins()
        kh = k_model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                         validation_data=(x[:8], y[:8], weights[:8]), **fit_kw)
        ch = c_model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                         validation_data=(x[:8], y[:8], weights[:8]), **fit_kw)
        _assert_same(kh, ch, k_model, c_model)
    np.testing.assert_allclose(
        c_model.evaluate(x, y, sample_weight=weights, batch_size=BATCH),
        k_model.evaluate(x, y, sample_weight=weights, batch_size=BATCH, verbose=0), rtol=1e-5)
    with pytest.raises(ValueError, match=r"sample_weight.*\(3,\)"):
        c_model.fit(x, y, sample_weight=np.ones(3), verbose=0)


def test_a_mask_reaching_the_loss_weights_it_like_keras():
    """Embedding(mask_zero) -> TimeDistributed(Dense): the mask reaches the loss and the
    metrics, which average over the valid steps only."""
    from cgru.layers import Embedding, TimeDistributed
    rng = np.random.default_rng(2)
    ids = rng.integers(1, 9, (N, T))
    ids[:, 3:] *= rng.random((N, T - 3)) > 0.5          # zeros: masked steps
    targets = (ids % 2).astype(np.float32)[..., None]
    keras.utils.set_random_seed(0)
    k_model = keras.Sequential([keras.Input((T,), dtype="int32"),
                                keras.layers.Embedding(10, 4, mask_zero=True),
                                keras.layers.TimeDistributed(
                                    keras.layers.Dense(1, activation="sigmoid"))])
    c_model = Sequential([Embedding(10, 4, mask_zero=True, input_shape=(T,)),
                          TimeDistributed(Dense(1, activation="sigmoid"))])
    c_model.set_weights(k_model.get_weights())
    for model, module in ((k_model, keras.optimizers), (c_model, copt)):
        model.compile(optimizer=module.SGD(0.5), loss="binary_crossentropy",
                      metrics=["accuracy"])
    kh = k_model.fit(ids, targets, batch_size=BATCH, epochs=3, shuffle=False, verbose=0)
    ch = c_model.fit(ids, targets, batch_size=BATCH, epochs=3, shuffle=False, verbose=0)
    _assert_same(kh, ch, k_model, c_model)


def test_metrics_by_class_and_instance_match_keras(tmp_path):
    import cgru
    from cgru import metrics
    x, y = _data()
    k_model, c_model = _twins()
    k_model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy",
                    metrics=[keras.metrics.AUC(name="auc"), keras.metrics.Precision(),
                             "mae"])
    c_model.compile(optimizer=copt.Adam(0.01), loss="binary_crossentropy",
                    metrics=[metrics.AUC(name="auc"), metrics.Precision, "mae"])
    kh = k_model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
                     validation_data=(x[:8], y[:8]))
    ch = c_model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
                     validation_data=(x[:8], y[:8]))
    _assert_same(kh, ch, k_model, c_model)
    np.testing.assert_allclose(c_model.evaluate(x, y), k_model.evaluate(x, y, verbose=0),
                               rtol=1e-5)
    c_model.save(tmp_path / "m.npz")
    loaded = cgru.load_model(tmp_path / "m.npz")
    assert loaded.evaluate(x, y, return_dict=True) == c_model.evaluate(x, y, return_dict=True)

"""Layers with several outputs in Keras 3 files, both ways, against real Keras 3.

``GRU(return_state=True)`` returns [output, state]; ``Bidirectional`` returns [y_fwd, y_bwd]
with ``merge_mode=None`` and adds [h_fwd, h_bwd] with ``return_state=True``. A functional
model's config names each of these tensors by ``keras_history`` [layer, call, output index].
Each model is built in Keras and in cgru with the same weights; each side opens the file the
other writes (``.keras`` and ``.weights.h5``) and predicts what the other predicts.
"""
import json
import os
import zipfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")

import cgru  # noqa: E402
from cgru import layers as CL  # noqa: E402

TOL = 2e-6
T, F = 6, 3


def _gru_state_two_outputs(lib, L):
    """out, state = GRU(return_sequences, return_state): a head on each."""
    x = lib.Input(shape=(T, F), name="x")
    out, state = L.GRU(8, return_sequences=True, return_state=True, name="gru")(x)
    return lib.Model(x, [L.Dense(1, name="on_state")(state),
                         L.Dense(1, name="on_sequence")(out)])


def _gru_state_concatenated(lib, L):
    x = lib.Input(shape=(T, F), name="x")
    out, state = L.GRU(8, return_state=True, reset_after=False, name="gru")(x)
    return lib.Model(x, L.Dense(1, name="head")(L.Concatenate()([out, state])))


def _gru_raw_outputs(lib, L):
    """The GRU's two outputs are the model's outputs."""
    x = lib.Input(shape=(T, F), name="x")
    return lib.Model(x, L.GRU(8, return_state=True, go_backwards=True, name="gru")(x))


def _bidirectional_states(lib, L):
    """[y, h_fwd, h_bwd]: the merged sequence pooled, the states concatenated beside it."""
    x = lib.Input(shape=(T, F), name="x")
    y, h_fwd, h_bwd = L.Bidirectional(L.GRU(8, return_sequences=True, return_state=True),
                                      name="bidirectional")(x)
    joined = L.Concatenate()([L.GlobalAveragePooling1D()(y), h_fwd, h_bwd])
    return lib.Model(x, [L.Dense(1, name="head")(joined), h_bwd])


def _bidirectional_unmerged(lib, L):
    """merge_mode=None: [y_fwd, y_bwd], two heads."""
    x = lib.Input(shape=(T, F), name="x")
    y_fwd, y_bwd = L.Bidirectional(L.GRU(8), merge_mode=None, name="bidirectional")(x)
    return lib.Model(x, [L.Dense(1, name="fwd")(y_fwd), L.Dense(2, name="bwd")(y_bwd)])


def _bidirectional_unmerged_states_masked(lib, L):
    """merge_mode=None with return_state, after a Masking layer: four outputs, masks on the
    sequences only."""
    x = lib.Input(shape=(T, F), name="x")
    masked = L.Masking(0.0)(x)
    y_fwd, y_bwd, h_fwd, h_bwd = L.Bidirectional(
        L.GRU(4, return_sequences=True, return_state=True), merge_mode=None,
        name="bidirectional")(masked)
    pooled = L.GlobalAveragePooling1D()(L.Subtract()([y_fwd, y_bwd]))
    return lib.Model(x, [L.Dense(1, name="head")(L.Add()([h_fwd, h_bwd])), pooled])


def _shared_gru_second_call(lib, L):
    """A GRU with return_state called on two inputs: the state of its second call
    ([gru, 1, 1]) feeds the head."""
    a = lib.Input(shape=(T, F), name="a")
    b = lib.Input(shape=(T, F), name="b")
    gru = L.GRU(5, return_state=True, name="gru")
    out_a, _ = gru(a)
    _, state_b = gru(b)
    return lib.Model([a, b], L.Dense(2, name="head")(L.Multiply()([out_a, state_b])))


MODELS = {f.__name__.lstrip("_"): f for f in (
    _gru_state_two_outputs, _gru_state_concatenated, _gru_raw_outputs,
    _bidirectional_states, _bidirectional_unmerged, _bidirectional_unmerged_states_masked,
    _shared_gru_second_call)}


def _inputs(model_name, seed=0, batch=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, T, F)).astype(np.float32)
    if model_name == "bidirectional_unmerged_states_masked":
        x[0, 4:] = 0.0                  # padding at the end
        x[1, :2] = 0.0                  # and at the start
        x[2, 3] = 0.0                   # a hole
    if model_name == "shared_gru_second_call":
        return [x, rng.standard_normal((batch, T, F)).astype(np.float32)]
    return x


def _randomized_keras(build, seed=1):
    """The Keras model with non-zero values in every weight (biases included)."""
    kmodel = build(keras, keras.layers)
    rng = np.random.default_rng(seed)
    kmodel.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(w.dtype)
                        for w in kmodel.get_weights()])
    return kmodel


def _as_list(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


def _assert_same_predictions(a, b, tol=TOL):
    a, b = _as_list(a), _as_list(b)
    assert len(a) == len(b)
    for p, q in zip(a, b):
        p, q = np.asarray(p), np.asarray(q)
        assert p.shape == q.shape, (p.shape, q.shape)
        np.testing.assert_allclose(p, q, rtol=0, atol=tol)


def _config(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))


def _history_refs(config):
    """The keras_history entries in a functional config's inbound nodes and its
    output_layers that name a tensor of the layer with several outputs (named "gru" or
    "bidirectional" by every builder)."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                found.append(value["config"]["keras_history"])
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for entry in config["config"]["layers"]:
        walk(entry.get("inbound_nodes", []))
    outputs = config["config"]["output_layers"]
    found += [outputs] if isinstance(outputs[0], str) else outputs
    return sorted(r for r in found if r[0] in ("gru", "bidirectional"))


def _save(kmodel, tmp_path):
    path = tmp_path / "reference.keras"
    kmodel.save(path)
    return path


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_keras_file_with_several_outputs_per_layer_loads_as_keras_built_it(name, tmp_path):
    kmodel = _randomized_keras(MODELS[name])
    kmodel.save(tmp_path / "k.keras")
    model = cgru.load_model(tmp_path / "k.keras")
    assert isinstance(model, cgru.Model)
    assert [l.name for l in model.layers] == [l.name for l in kmodel.layers]
    x = _inputs(name)
    keras_y = kmodel.predict(x, verbose=0)
    assert len(_as_list(model.predict(x))) == len(_as_list(keras_y))
    _assert_same_predictions(model.predict(x), keras_y)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_cgru_model_with_several_outputs_per_layer_saves_a_file_keras_opens(name, tmp_path):
    kmodel = _randomized_keras(MODELS[name])
    model = MODELS[name](cgru, CL)
    model.set_weights(kmodel.get_weights())
    x = _inputs(name, seed=2)
    cgru_y = model.predict(x)
    _assert_same_predictions(cgru_y, kmodel.predict(x, verbose=0))   # the copy is exact
    model.save(tmp_path / "c.keras")
    # the outputs past the first are referenced by their index, as Keras writes them
    config = _config(tmp_path / "c.keras")
    assert config["class_name"] == "Functional"
    refs = _history_refs(config)
    assert refs and refs == _history_refs(_config(_save(kmodel, tmp_path)))
    loaded = keras.models.load_model(tmp_path / "c.keras")
    _assert_same_predictions(loaded.predict(x, verbose=0), cgru_y)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_weights_files_with_several_outputs_per_layer_go_both_ways(name, tmp_path):
    x = _inputs(name, seed=3)
    kmodel = _randomized_keras(MODELS[name], seed=4)
    kmodel.save_weights(tmp_path / "k.weights.h5")
    model = MODELS[name](cgru, CL)
    model.load_weights(tmp_path / "k.weights.h5")
    _assert_same_predictions(model.predict(x), kmodel.predict(x, verbose=0))
    # and back into a fresh Keras model whose own weights predict otherwise
    model.set_weights([w * np.float32(0.5) for w in model.get_weights()])
    model.save_weights(tmp_path / "c.weights.h5")
    other = _randomized_keras(MODELS[name], seed=5)
    other.load_weights(tmp_path / "c.weights.h5")
    _assert_same_predictions(other.predict(x, verbose=0), model.predict(x))


def _compile(model, lib):
    model.compile(optimizer=lib.optimizers.Adam(0.01), loss=["mse", "mse"],
                  loss_weights=[1.0, 0.5])


def _training_data(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, T, F)).astype(np.float32)
    return x, [rng.standard_normal((8, 1)).astype(np.float32),
               rng.standard_normal((8, T, 1)).astype(np.float32)]


def _assert_trains_alike(model, kmodel, x, y):
    """One more epoch on each: the same loss and weights, so the optimizer state (Adam's
    moments of every weight, iterations) went across."""
    h_cgru = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0).history
    h_keras = kmodel.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0).history
    np.testing.assert_allclose(h_cgru["loss"], h_keras["loss"], rtol=0, atol=1e-5)
    for a, b in zip(model.get_weights(), kmodel.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_optimizer_state_of_a_return_state_model_comes_from_keras(tmp_path):
    x, y = _training_data(6)
    kmodel = _randomized_keras(_gru_state_two_outputs)
    _compile(kmodel, keras)
    kmodel.fit(x, y, batch_size=4, epochs=2, verbose=0)
    kmodel.save(tmp_path / "k.keras")
    model = cgru.load_model(tmp_path / "k.keras")
    assert model.optimizer.iterations == int(kmodel.optimizer.iterations.numpy()) == 4
    _assert_same_predictions(model.predict(x), kmodel.predict(x, verbose=0))
    _assert_trains_alike(model, kmodel, x, y)


def test_optimizer_state_of_a_return_state_model_goes_to_keras(tmp_path):
    x, y = _training_data(7)
    kmodel = _randomized_keras(_gru_state_two_outputs)
    model = _gru_state_two_outputs(cgru, CL)
    model.set_weights(kmodel.get_weights())
    _compile(model, cgru)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    model.save(tmp_path / "c.keras")
    loaded = keras.models.load_model(tmp_path / "c.keras")
    assert int(loaded.optimizer.iterations.numpy()) == model.optimizer.iterations == 4
    _assert_same_predictions(loaded.predict(x, verbose=0), model.predict(x))
    _assert_trains_alike(model, loaded, x, y)


def test_an_initial_state_from_the_graph_goes_across(tmp_path):
    """An encoder's state starting a decoder GRU (``initial_state=`` a graph tensor) loads
    and predicts as Keras does (tests/test_functional_initial_state.py covers it fully)."""
    L = keras.layers
    encoder_in = keras.Input(shape=(T, F))
    decoder_in = keras.Input(shape=(4, 2))
    _, state = L.GRU(8, return_state=True)(encoder_in)
    decoded = L.GRU(8, return_sequences=True)(decoder_in, initial_state=state)
    k_model = keras.Model([encoder_in, decoder_in], L.Dense(1)(decoded))
    k_model.save(tmp_path / "ed.keras")
    loaded = cgru.load_model(tmp_path / "ed.keras")
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((3, T, F)).astype(np.float32),
          rng.standard_normal((3, 4, 2)).astype(np.float32)]
    np.testing.assert_allclose(loaded.predict(xs), k_model.predict(xs, verbose=0),
                               rtol=2e-6, atol=2e-6)


def test_loss_weights_by_name_beside_a_list_of_losses_weigh_as_keras_weighs_them(tmp_path):
    """Keras pairs a list of losses with a dict of loss weights in the dict's sorted key
    order, not by output name ("on_sequence" before "on_state" here): the loaded model's
    loss is Keras's, and the file cgru writes back gives Keras the same loss."""
    x, y = _training_data(8)
    kmodel = _randomized_keras(_gru_state_two_outputs)
    kmodel.compile(optimizer="sgd", loss=["mse", "mse"],
                   loss_weights={"on_state": 1.0, "on_sequence": 0.25})
    kmodel.save(tmp_path / "k.keras")
    keras_loss = kmodel.evaluate(x, y, verbose=0)[0]
    model = cgru.load_model(tmp_path / "k.keras")
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0)[0], keras_loss, rtol=1e-6)
    model.save(tmp_path / "c.keras")
    again = keras.models.load_model(tmp_path / "c.keras")
    np.testing.assert_allclose(again.evaluate(x, y, verbose=0)[0], keras_loss, rtol=1e-6)

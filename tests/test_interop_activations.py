"""cgru.interop.to_torch with every activation cgru's Dense and Activation take, against
cgru (2e-6 float32, 1e-12 float64); and the clear refusal of GRUs torch.nn.GRU cannot run."""
import numpy as np
import pytest

from cgru import GRU, Activation, Bidirectional, Dense, Sequential
from cgru.functional import ACTIVATIONS
from cgru.interop import to_torch
from conftest import max_diff as _max_diff  # noqa: E402

torch = pytest.importorskip("torch")

TOL = {"float32": 2e-6, "float64": 1e-12}
LAYER_ACTIVATIONS = ["linear", "sigmoid", "tanh", "relu", "softmax", "hard_sigmoid",
                     "softsign", "elu", "selu"]
TORCH_MODULES = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "ReLU", "softmax": "Softmax",
                 "hard_sigmoid": "Hardsigmoid", "softsign": "Softsign", "elu": "ELU",
                 "selu": "SELU"}


def _inputs(shape, dtype, seed=0, scale=3.0):
    # scale 3: both sides of hard_sigmoid's clip at -3 and 3, of elu's and selu's bend at 0
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def _torch_run(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_the_list_is_what_dense_takes():
    from cgru import activations
    accepted = []
    for name in sorted(activations._ACTIVATIONS):
        try:
            Dense(2, activation=name)
        except ValueError:
            continue
        accepted.append(name)
    assert accepted == sorted(LAYER_ACTIVATIONS)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", LAYER_ACTIVATIONS)
def test_dense_activation_to_torch(activation, dtype):
    dense = Dense(5, activation=activation, input_shape=(6,), seed=3, dtype=dtype,
                  bias_initializer="glorot_uniform")
    module = to_torch(dense)
    if activation == "linear":
        assert isinstance(module, torch.nn.Linear)
    else:
        assert type(module[1]).__name__ == TORCH_MODULES[activation]
    assert not module.training
    x = _inputs((16, 6), dtype)
    assert _max_diff(_torch_run(module, x), dense(x)) < TOL[dtype]
    x3 = _inputs((4, 7, 6), dtype, seed=1)       # on the last axis of a sequence
    assert _max_diff(_torch_run(module, x3), dense(x3)) < TOL[dtype]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", LAYER_ACTIVATIONS)
def test_activation_layer_to_torch(activation, dtype):
    layer = Activation(activation, input_shape=(None, 6), dtype=dtype)
    x = _inputs((4, 7, 6), dtype, seed=2, scale=4.0)
    assert _max_diff(_torch_run(to_torch(layer), x), layer(x)) < TOL[dtype]


def test_sequential_with_activations_to_torch():
    model = Sequential([GRU(5, return_sequences=True, input_shape=(None, 3), seed=1),
                        Dense(4, activation="hard_sigmoid", seed=2), Activation("elu"),
                        GRU(4, seed=3), Dense(3, activation="selu", seed=4),
                        Activation("softsign")])
    x = _inputs((6, 8, 3), np.float32, seed=3, scale=1.0)
    assert _max_diff(_torch_run(to_torch(model), x), model.predict(x)) < TOL["float32"]


@pytest.mark.parametrize("activation, recurrent_activation",
                         [(a, "sigmoid") for a in ACTIVATIONS if a != "tanh"]
                         + [("tanh", r) for r in ACTIVATIONS if r != "sigmoid"])
def test_gru_with_other_activations_is_refused(activation, recurrent_activation):
    """torch.nn.GRU is tanh/sigmoid only: the error names the layer's arguments."""
    match = (rf"activation={activation!r}, recurrent_activation={recurrent_activation!r}\) "
             r"has no torch.nn.GRU equivalent")
    gru = GRU(3, activation=activation, recurrent_activation=recurrent_activation,
              input_shape=(None, 2))
    with pytest.raises(NotImplementedError, match=match):
        to_torch(gru)
    with pytest.raises(NotImplementedError, match=match):
        to_torch(Bidirectional(GRU(3, activation=activation,
                                   recurrent_activation=recurrent_activation),
                               input_shape=(None, 2)))
    with pytest.raises(NotImplementedError, match=match):
        to_torch(Sequential([GRU(3, return_sequences=True, input_shape=(None, 2)),
                             GRU(3, activation=activation,
                                 recurrent_activation=recurrent_activation)]))

"""Parity with real Keras 3 optimizers and schedules on identical weights and gradients.

Each case applies the same 5 steps of random float32 gradients to the same 3 weights of
different shapes with ``keras.optimizers.X(...).apply(grads, variables)`` and with cgru,
then compares the weights (rtol 1e-5) and the changes of the weights (so that a wrong
rule cannot hide behind weights of size one).
"""
import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

from cgru import optimizers as copt  # noqa: E402
from cgru.optimizers import schedules as csched  # noqa: E402

SHAPES = [(4, 6), (6,), (2, 3, 5)]
STEPS = 5


def _problem(seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES]
             for _ in range(steps)]
    return weights, grads


def _run_keras(optimizer, weights, grads, finalize=False):
    variables = [keras.Variable(w.copy()) for w in weights]
    for step_grads in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in step_grads], variables)
    if finalize:
        optimizer.finalize_variable_values(variables)
    return [np.asarray(v.numpy()) for v in variables]


def _run_cgru(optimizer, weights, grads, finalize=False):
    params = [w.copy() for w in weights]
    for step_grads in grads:
        optimizer.apply(params, step_grads)
    if finalize:
        optimizer.finalize_variable_values(params)
    return params


def _assert_same(cgru_weights, keras_weights, initial):
    for c, k, w0 in zip(cgru_weights, keras_weights, initial):
        np.testing.assert_allclose(c, k, rtol=1e-5, atol=0)
        np.testing.assert_allclose(c - w0, k - w0, rtol=1e-4, atol=2e-7)
        assert np.abs(k - w0).max() > 1e-3  # the steps moved the weights


CASES = [
    ("SGD", dict(learning_rate=0.1)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(learning_rate=0.1, weight_decay=0.05)),
    ("SGD", dict(learning_rate=0.1, momentum=0.5, clipvalue=0.5)),
    ("SGD", dict(learning_rate=0.1, use_ema=True, ema_momentum=0.9)),
    ("Adam", dict(learning_rate=0.05)),
    ("Adam", dict(learning_rate=0.05, amsgrad=True)),
    ("Adam", dict(learning_rate=0.05, beta_1=0.8, beta_2=0.95, epsilon=1e-3)),
    ("Adam", dict(learning_rate=0.05, weight_decay=0.1)),
    ("Adam", dict(learning_rate=0.05, clipnorm=1.0)),
    ("Adam", dict(learning_rate=0.05, global_clipnorm=2.0)),
    ("Adam", dict(learning_rate=0.05, clipvalue=0.3)),
    ("Adam", dict(learning_rate=0.05, use_ema=True, ema_momentum=0.8)),
    ("Adam", dict(learning_rate=0.05, use_ema=True, ema_momentum=0.7,
                  ema_overwrite_frequency=2)),
    ("Adam", dict(learning_rate=0.05, loss_scale_factor=8.0, clipnorm=0.5)),
    ("AdamW", dict(learning_rate=0.05)),
    ("AdamW", dict(learning_rate=0.05, weight_decay=0.2, amsgrad=True, global_clipnorm=1.5)),
    ("Nadam", dict(learning_rate=0.05)),
    ("Nadam", dict(learning_rate=0.05, beta_1=0.8, weight_decay=0.1, clipnorm=0.7)),
    ("Adamax", dict(learning_rate=0.05)),
    ("Adamax", dict(learning_rate=0.05, beta_2=0.9, clipvalue=0.4, use_ema=True)),
    ("Adagrad", dict(learning_rate=0.1)),
    ("Adagrad", dict(learning_rate=0.1, initial_accumulator_value=0.5, epsilon=1e-4,
                     weight_decay=0.05)),
    ("Adadelta", dict(learning_rate=1.0)),
    ("Adadelta", dict(learning_rate=1.0, rho=0.8, global_clipnorm=1.0)),
    ("Lion", dict(learning_rate=0.01)),
    ("Lion", dict(learning_rate=0.01, beta_1=0.7, beta_2=0.9, weight_decay=0.5)),
    ("RMSprop", dict(learning_rate=0.01)),
    ("RMSprop", dict(learning_rate=0.01, momentum=0.9)),
    ("RMSprop", dict(learning_rate=0.01, centered=True)),
    ("RMSprop", dict(learning_rate=0.01, momentum=0.5, centered=True, rho=0.8,
                     clipnorm=1.0, use_ema=True, ema_overwrite_frequency=3)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9, gradient_accumulation_steps=2)),
    ("Adam", dict(learning_rate=0.05, gradient_accumulation_steps=2, clipnorm=0.5,
                  use_ema=True, ema_momentum=0.6, ema_overwrite_frequency=2)),
    ("Nadam", dict(learning_rate=0.05, gradient_accumulation_steps=3, weight_decay=0.1,
                   loss_scale_factor=4.0)),
]


@pytest.mark.parametrize("name,kwargs", CASES,
                         ids=[f"{n}-{'-'.join(k)}" for n, k in CASES])
def test_update_matches_keras(name, kwargs):
    weights, grads = _problem()
    keras_weights = _run_keras(getattr(keras.optimizers, name)(**kwargs), weights, grads)
    cgru_weights = _run_cgru(getattr(copt, name)(**kwargs), weights, grads)
    _assert_same(cgru_weights, keras_weights, weights)


@pytest.mark.parametrize("name,kwargs", [
    ("Adam", dict(learning_rate=0.05, use_ema=True, ema_momentum=0.8)),
    ("SGD", dict(learning_rate=0.1, momentum=0.9, use_ema=True)),
])
def test_finalize_variable_values_writes_ema_like_keras(name, kwargs):
    weights, grads = _problem(1)
    keras_weights = _run_keras(getattr(keras.optimizers, name)(**kwargs), weights, grads,
                               finalize=True)
    cgru_opt = getattr(copt, name)(**kwargs)
    cgru_weights = _run_cgru(cgru_opt, weights, grads, finalize=True)
    _assert_same(cgru_weights, keras_weights, weights)
    averages = cgru_opt.variables()[-len(SHAPES):]
    for w, average in zip(cgru_weights, averages):
        np.testing.assert_array_equal(w, average)


def test_exclude_from_weight_decay_matches_keras():
    weights, grads = _problem(4)
    keras_opt = keras.optimizers.AdamW(0.05, weight_decay=0.3)
    variables = [keras.Variable(w.copy()) for w in weights]
    keras_opt.exclude_from_weight_decay(var_list=[variables[1]])
    for step_grads in grads:
        keras_opt.apply([keras.ops.convert_to_tensor(g) for g in step_grads], variables)
    cgru_opt = copt.AdamW(0.05, weight_decay=0.3)
    params = [w.copy() for w in weights]
    cgru_opt.exclude_from_weight_decay(var_list=[params[1]])
    for step_grads in grads:
        cgru_opt.apply(params, step_grads)
    _assert_same(params, [v.numpy() for v in variables], weights)
    undecayed = _run_cgru(copt.AdamW(0.05, weight_decay=0.0), weights, grads)
    np.testing.assert_array_equal(params[1], undecayed[1])
    assert not np.array_equal(params[0], undecayed[0])


def test_finalize_without_ema_changes_nothing():
    weights, grads = _problem(2)
    optimizer = copt.Adam(0.05)
    params = _run_cgru(optimizer, weights, grads)
    before = [p.copy() for p in params]
    optimizer.finalize_variable_values(params)
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)


def _schedules(module):
    return {
        "exponential": module.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5),
        "exponential_staircase": module.ExponentialDecay(0.1, 3, 0.5, staircase=True),
        "piecewise": module.PiecewiseConstantDecay([2, 5, 9], [0.1, 0.05, 0.02, 0.01]),
        "cosine": module.CosineDecay(0.1, decay_steps=10, alpha=0.1),
        "cosine_warmup": module.CosineDecay(0.0, decay_steps=8, warmup_target=0.2,
                                            warmup_steps=4),
        "inverse_time": module.InverseTimeDecay(0.1, decay_steps=2, decay_rate=0.7),
        "inverse_time_staircase": module.InverseTimeDecay(0.1, 2, 0.7, staircase=True),
        "polynomial": module.PolynomialDecay(0.1, decay_steps=10, end_learning_rate=0.01,
                                             power=2.0),
        "polynomial_cycle": module.PolynomialDecay(0.1, decay_steps=4, power=0.5,
                                                   cycle=True),
    }


@pytest.mark.parametrize("name", list(_schedules(csched)))
def test_schedule_values_match_keras(name):
    keras_schedule = _schedules(keras.optimizers.schedules)[name]
    cgru_schedule = _schedules(csched)[name]
    steps = list(range(0, 30)) + [57, 100, 1000]
    keras_values = [float(keras.ops.convert_to_numpy(keras_schedule(s))) for s in steps]
    cgru_values = [float(cgru_schedule(s)) for s in steps]
    np.testing.assert_allclose(cgru_values, keras_values, rtol=1e-6, atol=1e-9)
    assert len(set(np.round(keras_values, 7))) > 2  # the schedule does change


@pytest.mark.parametrize("name,accumulate", [("exponential", None), ("piecewise", None),
                                             ("cosine_warmup", None),
                                             ("polynomial_cycle", None), ("cosine", 2)])
def test_optimizer_with_schedule_matches_keras(name, accumulate):
    weights, grads = _problem(3, steps=8)
    keras_opt = keras.optimizers.Adam(_schedules(keras.optimizers.schedules)[name],
                                      weight_decay=0.1, gradient_accumulation_steps=accumulate)
    cgru_opt = copt.Adam(_schedules(csched)[name], weight_decay=0.1,
                         gradient_accumulation_steps=accumulate)
    keras_weights = _run_keras(keras_opt, weights, grads)
    cgru_weights = _run_cgru(cgru_opt, weights, grads)
    _assert_same(cgru_weights, keras_weights, weights)
    np.testing.assert_allclose(float(cgru_opt.learning_rate),
                               float(keras.ops.convert_to_numpy(keras_opt.learning_rate)),
                               rtol=1e-6)


def test_defaults_match_keras():
    for name in ["SGD", "Adam", "AdamW", "Nadam", "Adamax", "Adagrad", "Adadelta", "Lion",
                 "RMSprop"]:
        keras_config = getattr(keras.optimizers, name)().get_config()
        cgru_config = getattr(copt, name)().get_config()
        for key, value in cgru_config.items():
            if key == "name":
                continue
            assert key in keras_config, (name, key)
            if isinstance(value, float):
                assert value == pytest.approx(keras_config[key], rel=1e-6), (name, key)
            else:
                assert value == keras_config[key], (name, key)
        missing = set(keras_config) - set(cgru_config)
        assert not missing, (name, missing)


def test_legacy_decay_warns_and_unknown_arguments_raise_like_keras():
    with pytest.warns(UserWarning, match="decay"):
        keras.optimizers.Adam(decay=0.1)
    with pytest.warns(UserWarning, match="decay"):
        copt.Adam(decay=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        copt.Adam(decay=None)
    for module in (keras.optimizers, copt):
        with pytest.raises(ValueError, match="not recognized"):
            module.SGD(lr=0.1)

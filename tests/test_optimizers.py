"""Optimizer rules checked against hand-derived float64 steps (Keras 3's formulas)."""
import numpy as np
import pytest

from cgru import optimizers as opt


def _run(optimizer, grads, w0=1.0):
    w = np.array([w0], dtype=np.float64)
    for g in grads:
        optimizer.apply([w], [np.array([g])])
    return w[0]


def test_sgd_plain_momentum_nesterov():
    assert _run(opt.SGD(0.1), [0.5, -1.0]) == pytest.approx(1 - 0.05 + 0.1)
    # m1 = -0.05 ; m2 = 0.9 * -0.05 + 0.1 = 0.055 ; w = 1 - 0.05 + 0.055
    assert _run(opt.SGD(0.1, momentum=0.9), [0.5, -1.0]) == pytest.approx(1.005)
    # nesterov: w += momentum * m - lr * g  ->  1 + (0.9*-0.05 - 0.05) + (0.9*0.055 + 0.1)
    assert _run(opt.SGD(0.1, momentum=0.9, nesterov=True), [0.5, -1.0]) == \
        pytest.approx(1 - 0.095 + 0.1495)


def test_adam_bias_corrected_step_and_epsilon_outside_sqrt():
    a = opt.Adam(learning_rate=0.1, epsilon=1e-3)
    w = _run(a, [0.2, 0.2])
    m1, v1 = 0.1 * 0.2, 0.001 * 0.04
    w1 = 1 - m1 * (0.1 * np.sqrt(1 - 0.999) / (1 - 0.9)) / (np.sqrt(v1) + 1e-3)
    m2, v2 = m1 + (0.2 - m1) * 0.1, v1 + (0.04 - v1) * 0.001
    w2 = w1 - m2 * (0.1 * np.sqrt(1 - 0.999**2) / (1 - 0.9**2)) / (np.sqrt(v2) + 1e-3)
    assert w == pytest.approx(w2, rel=1e-12)
    assert a.iterations == 2


def test_rmsprop_epsilon_inside_sqrt():
    g, eps, lr = 1e-4, 1e-7, 0.01
    w = _run(opt.RMSprop(learning_rate=lr, epsilon=eps), [g])
    v = 0.1 * g * g
    assert w == pytest.approx(1 - lr * g / np.sqrt(v + eps), rel=1e-12)
    assert abs((1 - w) - lr * g / (np.sqrt(v) + eps)) > 1e-4  # epsilon outside differs


def test_rmsprop_momentum_and_centered():
    w = _run(opt.RMSprop(0.01, momentum=0.5, centered=True), [1.0, 1.0])
    v1, a1 = 0.1, 0.1
    inc1 = 0.01 / np.sqrt(v1 - a1**2 + 1e-7)
    v2, a2 = 0.9 * v1 + 0.1, 0.9 * a1 + 0.1
    inc2 = 0.01 / np.sqrt(v2 - a2**2 + 1e-7)
    assert w == pytest.approx(1 - inc1 - (0.5 * inc1 + inc2), rel=1e-12)


def test_clipnorm_is_per_weight():
    w1, w2 = np.zeros(2), np.zeros(2)
    opt.SGD(1.0, clipnorm=1.0).apply([w1, w2], [np.array([3.0, 4.0]), np.array([0.3, 0.4])])
    np.testing.assert_allclose(w1, [-0.6, -0.8])
    np.testing.assert_allclose(w2, [-0.3, -0.4])


def test_float32_weights_stay_float32():
    w = np.ones(3, dtype=np.float32)
    opt.Adam().apply([w], [np.ones(3, dtype=np.float64)])
    assert w.dtype == np.float32


def test_get_and_validation():
    assert isinstance(opt.get("adam"), opt.Adam)
    assert isinstance(opt.get("SGD"), opt.SGD)
    assert isinstance(opt.get("rmsprop"), opt.RMSprop)
    assert opt.Adam().epsilon == 1e-7 and opt.RMSprop().rho == 0.9
    assert opt.SGD().learning_rate == 0.01 and opt.Adam().learning_rate == 0.001
    with pytest.raises(ValueError, match="adafactor"):  # a Keras optimizer cgru lacks
        opt.get("adafactor")
    with pytest.raises(ValueError, match="learning_rate"):
        opt.Adam(learning_rate=-1)
    with pytest.raises(ValueError, match="clipnorm"):
        opt.SGD(clipnorm=0)


# -- state, saving, flat layout, schedules, validation (cgru's own contract) ----------------
import json  # noqa: E402
import warnings  # noqa: E402

from cgru.optimizers import schedules  # noqa: E402

SHAPES = [(4, 6), (6,), (2, 3, 5)]

STATEFUL = [
    opt.SGD(0.1, weight_decay=0.01, clipnorm=0.5),
    opt.SGD(0.1, momentum=0.9, nesterov=True, use_ema=True, ema_overwrite_frequency=2),
    opt.Adam(0.05, amsgrad=True, use_ema=True, ema_momentum=0.8),
    opt.AdamW(schedules.ExponentialDecay(0.05, 2, 0.5), amsgrad=True, clipnorm=1.0),
    opt.Nadam(0.05, weight_decay=0.1),
    opt.Lion(0.01, weight_decay=0.2),
    opt.Adamax(0.05, global_clipnorm=1.0),
    opt.Adagrad(0.1, initial_accumulator_value=0.3, clipvalue=0.5),
    opt.Adadelta(1.0, loss_scale_factor=4.0),
    opt.Lion(0.01, use_ema=True),
    opt.RMSprop(0.01, momentum=0.5, centered=True),
    opt.Adam(schedules.CosineDecay(0.0, 6, warmup_target=0.1, warmup_steps=3)),
    opt.Adam(0.05, gradient_accumulation_steps=2, use_ema=True, clipnorm=0.5),
    opt.Nadam(schedules.ExponentialDecay(0.05, 2, 0.5), gradient_accumulation_steps=4),
]


def _problem(seed=0, steps=6, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(steps)]
    return weights, grads


def _fresh(optimizer):
    return opt.deserialize(json.loads(json.dumps(opt.serialize(optimizer))))


@pytest.mark.parametrize("optimizer", STATEFUL, ids=lambda o: type(o).__name__)
def test_resumed_run_matches_uninterrupted(optimizer):
    weights, grads = _problem()
    straight = _fresh(optimizer)
    params = [w.copy() for w in weights]
    for g in grads:
        straight.apply(params, g)

    first = _fresh(optimizer)
    resumed_params = [w.copy() for w in weights]
    for g in grads[:3]:
        first.apply(resumed_params, g)
    state = [v.copy() for v in first.variables()]
    second = _fresh(first)  # config and iterations through JSON
    assert opt.serialize(second)["iterations"] == 3  # apply calls
    assert second.iterations == 3 // (optimizer.gradient_accumulation_steps or 1)
    second.set_variables(state, resumed_params)
    for g in grads[3:]:
        second.apply(resumed_params, g)
    for a, b in zip(resumed_params, params):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(second.variables(), straight.variables()):
        np.testing.assert_array_equal(a, b)


def test_variables_cover_amsgrad_ema_and_nadam_state():
    params = [np.zeros(s, np.float32) for s in SHAPES]
    counts = {opt.Adam(): 2, opt.Adam(amsgrad=True): 3, opt.Adam(use_ema=True): 3,
              opt.SGD(): 0, opt.SGD(momentum=0.5): 1, opt.RMSprop(momentum=0.1, centered=True): 3}
    for optimizer, per_weight in counts.items():
        optimizer.build(params)
        assert len(optimizer.variables()) == per_weight * len(SHAPES)
    nadam = opt.Nadam()
    nadam.build(params)
    assert len(nadam.variables()) == 2 * len(SHAPES) + 1  # the running product u
    adagrad = opt.Adagrad(initial_accumulator_value=0.25)
    adagrad.build(params)
    assert all((v == 0.25).all() for v in adagrad.variables())
    with pytest.raises(ValueError, match="shape"):
        opt.Adam().set_variables([np.zeros((2, 2))] * 6, params)
    with pytest.raises(ValueError, match="has 1 arrays, expected 6"):
        opt.Adam().set_variables([np.zeros((4, 6))], params)


@pytest.mark.parametrize("optimizer", STATEFUL, ids=lambda o: type(o).__name__)
def test_flat_buffers_give_the_same_bits_as_separate_arrays(optimizer):
    weights, grads = _problem(1)
    separate = [w.copy() for w in weights]
    flat_params, flat_grads = opt.flat_arrays(SHAPES), opt.flat_arrays(SHAPES)
    for p, w in zip(flat_params, weights):
        p[...] = w
    by_list, by_buffer, separate_opt = _fresh(optimizer), _fresh(optimizer), _fresh(optimizer)
    listed_flat = opt.flat_arrays(SHAPES)
    for p, w in zip(listed_flat, weights):
        p[...] = w
    for g in grads:
        separate_opt.apply(separate, g)
        by_list.apply(listed_flat, g)  # flat weights, separate gradients
        for dst, src in zip(flat_grads, g):
            dst[...] = src
        by_buffer.apply(flat_params, flat_grads)  # flat weights and gradients
    for a, b, c in zip(separate, listed_flat, flat_params):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert by_buffer._groups[0].params is by_buffer._groups[0].units[0][0]  # one pass
    assert by_buffer._groups[0].gathered is None  # over the caller's buffer
    assert (separate_opt._groups[0].gathered is not None) == separate_opt._gather_weights


def test_gradients_are_not_modified_and_may_be_float64():
    weights, grads = _problem(2, steps=2)
    flat_grads = opt.flat_arrays(SHAPES)
    for dst, src in zip(flat_grads, grads[0]):
        dst[...] = src
    before = flat_grads.flat.copy()
    params = opt.flat_arrays(SHAPES)
    opt.Adam(clipnorm=0.1, loss_scale_factor=2.0).apply(params, flat_grads)
    np.testing.assert_array_equal(flat_grads.flat, before)
    as32 = [w.copy() for w in weights]
    as64 = [w.copy() for w in weights]
    opt.RMSprop().apply(as32, grads[1])
    opt.RMSprop().apply(as64, [g.astype(np.float64) for g in grads[1]])
    for a, b in zip(as32, as64):
        assert b.dtype == np.float32
        np.testing.assert_array_equal(a, b)


def test_mixed_weight_dtypes_follow_each_weight_dtype():
    w32, w64 = np.ones(3, np.float32), np.ones(3, np.float64)
    optimizer = opt.Adam(0.1)
    optimizer.apply([w32, w64], [np.full(3, 0.5), np.full(3, 0.5)])
    assert w32.dtype == np.float32 and w64.dtype == np.float64
    m, v = 0.1 * 0.5, 0.001 * 0.25
    expected = 1 - m * (0.1 * np.sqrt(1 - 0.999) / (1 - 0.9)) / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(w64, expected, rtol=1e-12)
    np.testing.assert_allclose(w32, expected, rtol=2e-6)
    assert abs(w64[0] - expected) < abs(np.float64(w32[0]) - expected)  # float32 rounds more


def test_learning_rate_reads_current_value_and_is_settable():
    optimizer = opt.SGD(0.5)
    optimizer.learning_rate = 0.25
    assert optimizer.learning_rate == 0.25
    w = np.ones(1)
    optimizer.apply([w], [np.ones(1)])
    assert w[0] == pytest.approx(0.75)
    scheduled = opt.SGD(schedules.PiecewiseConstantDecay([1], [0.5, 0.1]))
    assert scheduled.learning_rate == pytest.approx(0.5)
    for _ in range(2):
        scheduled.apply([w], [np.ones(1)])
    assert scheduled.iterations == 2 and scheduled.learning_rate == pytest.approx(0.1)
    with pytest.raises(TypeError, match="not settable"):
        scheduled.learning_rate = 0.3
    scheduled.learning_rate = schedules.ExponentialDecay(1.0, 1, 0.5)
    assert scheduled.learning_rate == pytest.approx(0.25)  # 0.5 ** 2 at step 2
    called = opt.SGD(lambda: 0.125)  # a callable without arguments, as in Keras
    called.apply([w], [np.ones(1)])
    assert called.learning_rate == 0.125
    with pytest.raises(ValueError, match="plain callable"):
        opt.serialize(called)


class _HalvingEvery(schedules.LearningRateSchedule):
    def __init__(self, start, every):
        self.start, self.every = start, every

    def __call__(self, step):
        return self.start * 0.5 ** (step // self.every)

    def get_config(self):
        return {"start": self.start, "every": self.every}


def test_schedules_and_optimizers_round_trip_through_json():
    built_in = [schedules.ExponentialDecay(0.1, 3, 0.5, staircase=True),
                schedules.PiecewiseConstantDecay([2, 5], [0.1, 0.05, 0.01]),
                schedules.CosineDecay(0.1, 10, alpha=0.1, warmup_target=0.2, warmup_steps=2),
                schedules.InverseTimeDecay(0.1, 2, 0.7),
                schedules.PolynomialDecay(0.1, 4, power=0.5, cycle=True),
                _HalvingEvery(0.4, 3)]
    for s in built_in:
        again = schedules.deserialize(json.loads(json.dumps(schedules.serialize(s))))
        assert type(again) is type(s) and again.get_config() == s.get_config()
        assert [again(k) for k in range(12)] == [s(k) for k in range(12)]
    for name in ["sgd", "adam", "adamw", "nadam", "adamax", "adagrad", "adadelta", "lion",
                 "rmsprop"]:
        optimizer = opt.get(name)
        optimizer.iterations = 7
        again = _fresh(optimizer)
        assert type(again) is type(optimizer) and again.iterations == 7
        assert again.get_config() == optimizer.get_config()
    custom = _fresh(opt.Adam(_HalvingEvery(0.4, 3), clipnorm=2.0, use_ema=True))
    assert isinstance(custom._learning_rate, _HalvingEvery) and custom.clipnorm == 2.0
    with pytest.raises(ValueError, match="Unknown learning rate schedule"):
        schedules.deserialize({"class_name": "NoSuchSchedule", "config": {}})


def test_keras_argument_checks():
    with pytest.raises(ValueError, match="Only one of"):
        opt.Adam(clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(ValueError, match="ema_momentum"):
        opt.Adam(use_ema=True, ema_momentum=1.5)
    with pytest.raises(ValueError, match="ema_overwrite_frequency"):
        opt.Adam(use_ema=True, ema_overwrite_frequency=0.5)
    with pytest.raises(ValueError, match="weight_decay"):
        opt.AdamW(weight_decay=None)
    with pytest.raises(ValueError, match="beta_1"):
        opt.Lion(beta_1=0.0)
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        opt.SGD(gradient_accumulation_steps=1)
    with pytest.raises(ValueError, match="decay_steps"):
        schedules.ExponentialDecay(0.1, 0, 0.5)
    with pytest.raises(ValueError, match="boundaries"):
        schedules.PiecewiseConstantDecay([1, 2], [0.1, 0.2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.RMSprop(decay=None)
    with pytest.raises(ValueError, match="var_names"):
        opt.AdamW().exclude_from_weight_decay(var_names=["bias"])
    built = opt.AdamW()
    built.build([np.zeros(2)])
    with pytest.raises(ValueError, match="before the optimizer is built"):
        built.exclude_from_weight_decay(var_list=[])


def test_bad_gradients_raise_naming_the_argument_and_shapes():
    params = [np.zeros((2, 3), np.float32), np.zeros(3, np.float32)]
    optimizer = opt.Adam()
    with pytest.raises(ValueError, match=r"`grads\[1\]` has shape \(4,\).*\(3,\)"):
        optimizer.apply(params, [np.zeros((2, 3)), np.zeros(4)])
    with pytest.raises(ValueError, match="`grads` has 1 arrays but `params` has 2"):
        optimizer.apply(params, [np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"`grads\[0\]` is None"):
        optimizer.apply(params, [None, np.zeros(3)])
    with pytest.raises(TypeError, match="dtype complex"):
        optimizer.apply(params, [np.zeros((2, 3), complex), np.zeros(3)])
    with pytest.raises(ValueError, match="built for"):
        optimizer.apply([np.zeros((3, 2), np.float32), np.zeros(3, np.float32)],
                        [np.zeros((3, 2)), np.zeros(3)])
    with pytest.raises(TypeError, match="float NumPy arrays"):
        opt.SGD().apply([np.zeros(3, np.int64)], [np.zeros(3)])
    assert optimizer.iterations == 0
    np.testing.assert_array_equal(params[0], 0)
    optimizer.apply([], [])  # no weights: no step, as Keras
    assert optimizer.iterations == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("learning_rate", [1e-3, 0.5])
def test_adams_native_pass_gives_the_numpy_rules_bits(dtype, learning_rate, monkeypatch):
    """Adam's fused native step (one pass per weight) against its NumPy rule (eleven whole-
    array passes), bit for bit over 60 steps, on weights of several shapes and dtypes."""
    from cgru.optimizers import Adam
    shapes = [(20, 96), (32, 96), (2, 96), (32, 1), (1,), (7, 3, 5)]
    rng = np.random.default_rng(11)
    start = [rng.standard_normal(s).astype(dtype) for s in shapes]
    steps = [[(rng.standard_normal(s) * 10.0 ** rng.integers(-6, 2)).astype(dtype)
              for s in shapes] for _ in range(60)]
    results, fused = [], []
    for native in (True, False):
        opt = Adam(learning_rate=learning_rate)
        weights = [w.copy() for w in start]
        ran = []
        original = Adam._fused_step

        def spy(self, params, grads, native=native, ran=ran):
            ran.append(native and original(self, params, grads))
            return ran[-1]
        monkeypatch.setattr(Adam, "_fused_step", spy)
        for grads in steps:
            opt.apply(weights, grads)
        results.append((weights, [np.array(v) for v in opt.variables()]))
        fused.append(all(ran))
    assert fused == [True, False]       # the native pass ran, then the NumPy rule did
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        np.testing.assert_array_equal(a, b)


def test_adam_keeps_its_numpy_rule_where_the_native_pass_does_not_apply():
    """amsgrad, clipping, weight decay (AdamW) and gradients that need a cast take the
    NumPy rule; each still updates the weights."""
    from cgru.optimizers import Adam, AdamW
    w = np.ones((4, 3), np.float32)
    for opt, g in [(Adam(amsgrad=True), np.ones((4, 3), np.float32)),
                   (Adam(clipnorm=1.0), np.ones((4, 3), np.float32)),
                   (AdamW(), np.ones((4, 3), np.float32)),
                   (Adam(), np.ones((4, 3), np.float64)),
                   (Adam(), np.asfortranarray(np.ones((4, 3), np.float32)))]:
        opt.build([w])
        assert not opt._fused_step([w], [g])
        before = w.copy()
        opt.apply([w], [g])
        assert np.all(w < before)

"""Learning-rate schedules with Keras 3's formulas, names and defaults.

A schedule maps the optimizer's step count (the number of updates applied so far, a Python
int) to a learning rate. The optimizer calls it once per ``apply``, before any weight is
touched. The built-in schedules compute in float32 when their initial learning rate is a
Python number, as Keras does (it converts Python floats to float32 tensors), so the values
agree with Keras's to float32 rounding; a float64 initial rate computes in float64.

Users subclass :class:`LearningRateSchedule` and write ``__call__(self, step)`` in plain
Python; ``get_config`` makes the subclass serialisable, and a subclass defined before a
model is loaded is found by its class name.
"""
import math

import numpy as np


class LearningRateSchedule:
    """Base class: ``__call__(step) -> learning rate``, ``get_config``, ``from_config``."""

    _registry = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        LearningRateSchedule._registry.setdefault(cls.__name__, cls)

    def __call__(self, step):
        raise NotImplementedError(
            f"Learning rate schedule '{type(self).__name__}' must override "
            "`__call__(self, step)`.")

    def get_config(self):
        raise NotImplementedError(
            f"Learning rate schedule '{type(self).__name__}' must override `get_config()` "
            "in order to be serializable.")

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _compute_dtype(initial_learning_rate):
    """float32 for Python numbers (Keras's floatx), else the value's own float dtype."""
    if isinstance(initial_learning_rate, (int, float)):
        return np.float32
    dtype = np.asarray(initial_learning_rate).dtype
    return dtype.type if dtype.kind == "f" else np.float32


def _check_decay_steps(name, value):
    if not value > 0:
        raise ValueError(f"Argument `{name}` must be > 0. Received: {name}={value}")


class _RateDecay(LearningRateSchedule):
    """What ExponentialDecay and InverseTimeDecay share: their arguments, and the progress
    ``step / decay_steps`` in the learning rate's dtype (floored with ``staircase``)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False,
                 name=None):
        _check_decay_steps("decay_steps", decay_steps)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.staircase = staircase
        self.name = type(self).__name__ if name is None else name

    def __call__(self, step):
        t = _compute_dtype(self.initial_learning_rate)
        p = t(step) / t(self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return self._decay(t, t(self.initial_learning_rate), t(self.decay_rate), p)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase, "name": self.name}


class ExponentialDecay(_RateDecay):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (floored with
    ``staircase``)."""

    @staticmethod
    def _decay(t, initial, rate, p):
        return initial * np.power(rate, p)


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the last boundary."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        if len(boundaries) != len(values) - 1:
            raise ValueError(
                "The length of boundaries should be 1 less than the length of values. "
                f"Received: boundaries={boundaries} of length {len(boundaries)}, and "
                f"values={values} of length {len(values)}.")
        self.boundaries = list(boundaries)
        self.values = list(values)
        self.name = name

    def __call__(self, step):
        t = _compute_dtype(self.values[0])
        index = int(np.searchsorted(np.asarray(self.boundaries), step, side="left"))
        return t(self.values[index])

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class PolynomialDecay(LearningRateSchedule):
    """``(initial - end) * (1 - step / decay_steps) ** power + end``; with ``cycle`` the decay
    restarts with ``decay_steps`` multiplied by ``ceil(step / decay_steps)``."""

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001,
                 power=1.0, cycle=False, name="PolynomialDecay"):
        _check_decay_steps("decay_steps", decay_steps)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.end_learning_rate = end_learning_rate
        self.power = power
        self.cycle = cycle
        self.name = name

    def __call__(self, step):
        t = _compute_dtype(self.initial_learning_rate)
        initial, end = t(self.initial_learning_rate), t(self.end_learning_rate)
        step_t, decay_steps = t(step), t(self.decay_steps)
        if self.cycle:
            multiplier = t(1.0) if step_t == 0 else np.ceil(step_t / decay_steps)
            decay_steps = decay_steps * multiplier
        else:
            step_t = np.minimum(step_t, decay_steps)
        p = step_t / decay_steps
        return (initial - end) * np.power(t(1) - p, t(self.power)) + end

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "end_learning_rate": self.end_learning_rate,
                "power": self.power, "cycle": self.cycle, "name": self.name}


class InverseTimeDecay(_RateDecay):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)`` (floored with
    ``staircase``)."""

    @staticmethod
    def _decay(t, initial, rate, p):
        return initial / (t(1) + rate * p)


class CosineDecay(LearningRateSchedule):
    """Cosine decay from ``initial_learning_rate`` to ``alpha`` times it over ``decay_steps``;
    with ``warmup_target``, first a linear warmup from ``initial_learning_rate`` to
    ``warmup_target`` over ``warmup_steps``, then the cosine decay from ``warmup_target``."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay",
                 warmup_target=None, warmup_steps=0):
        _check_decay_steps("decay_steps", decay_steps)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.alpha = alpha
        self.name = name
        self.warmup_steps = warmup_steps
        self.warmup_target = warmup_target

    def _decay(self, step, decay_steps, decay_from, t):
        completed_fraction = step / decay_steps
        cosine_decayed = t(0.5) * (t(1.0) + np.cos(t(math.pi) * completed_fraction))
        decayed = t(1 - self.alpha) * cosine_decayed + t(self.alpha)
        return decay_from * decayed

    def __call__(self, step):
        t = _compute_dtype(self.initial_learning_rate)
        initial, decay_steps, step_t = t(self.initial_learning_rate), t(self.decay_steps), t(step)
        if self.warmup_target is None:
            return self._decay(np.minimum(step_t, decay_steps), decay_steps, initial, t)
        target, warmup_steps = t(self.warmup_target), t(self.warmup_steps)
        step_t = np.minimum(step_t, decay_steps + warmup_steps)
        if step_t < warmup_steps:
            return (target - initial) * (step_t / warmup_steps) + initial
        return self._decay(step_t - warmup_steps, decay_steps, target, t)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha, "name": self.name,
                "warmup_target": self.warmup_target, "warmup_steps": self.warmup_steps}


_BUILT_IN = {cls.__name__: cls for cls in (
    ExponentialDecay, PiecewiseConstantDecay, PolynomialDecay, InverseTimeDecay, CosineDecay)}


def serialize(schedule):
    """``{"class_name": ..., "config": ...}`` of a schedule (JSON-friendly)."""
    if not isinstance(schedule, LearningRateSchedule):
        raise TypeError("Only a LearningRateSchedule can be serialized; received "
                        f"{schedule!r}.")
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config, custom_objects=None):
    """The schedule that ``serialize`` described; ``custom_objects`` maps class names to
    user classes (a LearningRateSchedule subclass is also found by its name)."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"Not a serialized learning rate schedule: {config!r}.")
    name = config["class_name"]
    cls = ((custom_objects or {}).get(name) or _BUILT_IN.get(name)
           or LearningRateSchedule._registry.get(name))
    if cls is None:
        raise ValueError(f"Unknown learning rate schedule class {name!r}: pass it in "
                         "`custom_objects` or define it before loading.")
    return cls.from_config(dict(config.get("config", {})))

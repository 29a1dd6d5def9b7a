"""Weight initializers with Keras 3's names, arguments and distributions.

An initializer is called as ``init(shape, dtype=None, rng=None)``. A layer passes its own
seeded generator as ``rng``, so a layer ``seed`` makes its initial weights reproducible; an
initializer built with ``seed=`` uses that seed instead, and then, as in Keras, gives the
same values at every call. Keras computes fan-in and fan-out over the whole weight, so a GRU
kernel ``(I, 3H)`` uses ``limit = sqrt(6 / (I + 3H))``, not per-gate limits.

Keras draws its random numbers from its backend's generator, so only the distributions, not
the values, can agree with Keras.
"""
import math

import numpy as np

from . import _objects

__all__ = ["Initializer", "Zeros", "Ones", "Constant", "Identity", "RandomNormal",
           "RandomUniform", "TruncatedNormal", "VarianceScaling", "GlorotUniform",
           "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform", "LecunNormal",
           "Orthogonal", "get", "serialize", "deserialize"]

# Keras's TruncatedNormal keeps values within two standard deviations; this is the standard
# deviation of a unit normal truncated there, which VarianceScaling divides out.
_TRUNCATED_STDDEV = 0.87962566103423978


def compute_fans(shape):
    """(fan_in, fan_out) of a weight of ``shape``, as Keras computes them."""
    shape = tuple(shape)
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer(_objects.Configurable):
    """Base class: ``__call__(shape, dtype=None, rng=None)`` returns a new array."""

    def __call__(self, shape, dtype=None, rng=None):
        raise NotImplementedError


def _dtype(dtype):
    return np.dtype("float32" if dtype is None else dtype)


class Zeros(Initializer):
    def __call__(self, shape, dtype=None, rng=None):
        return np.zeros(shape, _dtype(dtype))


class Ones(Initializer):
    def __call__(self, shape, dtype=None, rng=None):
        return np.ones(shape, _dtype(dtype))


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, dtype=None, rng=None):
        return np.full(shape, self.value, _dtype(dtype))

    def get_config(self):
        return {"value": self.value}


class Identity(Initializer):
    """``gain`` times the identity matrix (2-D shapes only, as in Keras)."""

    def __init__(self, gain=1.0):
        self.gain = gain

    def __call__(self, shape, dtype=None, rng=None):
        if len(shape) != 2:
            raise ValueError("Identity initializer requires a 2D shape. "
                             f"Received: shape={tuple(shape)}")
        return (self.gain * np.eye(*shape)).astype(_dtype(dtype))

    def get_config(self):
        return {"gain": self.gain}


class RandomInitializer(Initializer):
    """An initializer that draws random numbers: from ``seed`` when given (the same values
    at every call, as Keras), else from the caller's ``rng`` (a layer's seeded generator),
    else from a seed drawn once from NumPy's global generator."""

    def __init__(self, seed=None):
        if seed is not None and (isinstance(seed, bool)
                                 or not isinstance(seed, (int, np.integer))):
            raise ValueError("`seed` argument should be an integer or None. "
                             f"Received: seed={seed!r}")
        self.seed = None if seed is None else int(seed)
        self._default_seed = int(np.random.randint(0, 2**31 - 1)) if seed is None else None

    def _generator(self, rng):
        if self.seed is not None:
            return np.random.default_rng(self.seed)
        if rng is not None:
            return rng
        return np.random.default_rng(self._default_seed)

    def get_config(self):
        return {"seed": self.seed}


def _truncated_normal(rng, shape, stddev):
    """Normal numbers within two standard deviations of 0, redrawn until they are."""
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2
    return values * stddev


class RandomNormal(RandomInitializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev = mean, stddev
        super().__init__(seed)

    def __call__(self, shape, dtype=None, rng=None):
        values = self._generator(rng).normal(self.mean, self.stddev, size=shape)
        return values.astype(_dtype(dtype))

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class RandomUniform(RandomInitializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval = minval, maxval
        super().__init__(seed)

    def __call__(self, shape, dtype=None, rng=None):
        values = self._generator(rng).uniform(self.minval, self.maxval, size=shape)
        return values.astype(_dtype(dtype))

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, **super().get_config()}


class TruncatedNormal(RandomInitializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev = mean, stddev
        super().__init__(seed)

    def __call__(self, shape, dtype=None, rng=None):
        values = self.mean + _truncated_normal(self._generator(rng), shape, self.stddev)
        return values.astype(_dtype(dtype))

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class VarianceScaling(RandomInitializer):
    """Variance ``scale / n`` with n the fan-in, the fan-out or their mean (``mode``), from a
    truncated normal, a normal or a uniform distribution (Keras 3's rules)."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if scale <= 0.0:
            raise ValueError("Argument `scale` must be positive float. "
                             f"Received: scale={scale}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"Invalid `mode` argument: {mode}. Please use one of "
                             "{'fan_in', 'fan_out', 'fan_avg'}")
        distribution = distribution.lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in ("uniform", "truncated_normal", "untruncated_normal"):
            raise ValueError(f"Invalid `distribution` argument: {distribution}. Please use "
                             "one of {'uniform', 'truncated_normal', 'untruncated_normal'}")
        self.scale, self.mode, self.distribution = scale, mode, distribution
        super().__init__(seed)

    def __call__(self, shape, dtype=None, rng=None):
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        scale = self.scale / max(1.0, n[self.mode])
        rng = self._generator(rng)
        if self.distribution == "truncated_normal":
            values = _truncated_normal(rng, shape, math.sqrt(scale) / _TRUNCATED_STDDEV)
        elif self.distribution == "untruncated_normal":
            values = rng.normal(0.0, math.sqrt(scale), size=shape)
        else:
            limit = math.sqrt(3.0 * scale)
            values = rng.uniform(-limit, limit, size=shape)
        return values.astype(_dtype(dtype))

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                **super().get_config()}


def _variance_scaling_class(name, scale, mode, distribution):
    def __init__(self, seed=None):
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    def get_config(self):
        return {"seed": self.seed}

    return type(name, (VarianceScaling,), {
        "__init__": __init__, "get_config": get_config,
        "__doc__": f"VarianceScaling(scale={scale}, mode={mode!r}, "
                   f"distribution={distribution!r}), as Keras's {name}."})


GlorotUniform = _variance_scaling_class("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _variance_scaling_class("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _variance_scaling_class("HeUniform", 2.0, "fan_in", "uniform")
HeNormal = _variance_scaling_class("HeNormal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _variance_scaling_class("LecunUniform", 1.0, "fan_in", "uniform")
LecunNormal = _variance_scaling_class("LecunNormal", 1.0, "fan_in", "truncated_normal")
for _cls in (GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal):
    _cls.__module__ = __name__


class Orthogonal(RandomInitializer):
    """Keras's Orthogonal: QR of a normal matrix, signs fixed by diag(R), times ``gain``."""

    def __init__(self, gain=1.0, seed=None):
        self.gain = gain
        super().__init__(seed)

    def __call__(self, shape, dtype=None, rng=None):
        if len(shape) < 2:
            raise ValueError("Orthogonal initializer requires a shape of rank >= 2. "
                             f"Received: shape={tuple(shape)}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = self._generator(rng).standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return np.ascontiguousarray((self.gain * q).reshape(shape), dtype=_dtype(dtype))

    def get_config(self):
        return {"gain": self.gain, **super().get_config()}


_CLASSES = {cls.__name__: cls for cls in (
    Zeros, Ones, Constant, Identity, RandomNormal, RandomUniform, TruncatedNormal,
    VarianceScaling, GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform,
    LecunNormal, Orthogonal)}
# Keras's string names (and a few of its aliases)
_NAMES = {
    "zeros": Zeros, "ones": Ones, "constant": Constant, "identity": Identity,
    "random_normal": RandomNormal, "random_uniform": RandomUniform,
    "truncated_normal": TruncatedNormal, "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform, "he_normal": HeNormal, "lecun_uniform": LecunUniform,
    "lecun_normal": LecunNormal, "orthogonal": Orthogonal,
    "uniform": RandomUniform, "normal": RandomNormal,
}


def get(identifier):
    """An Initializer from a Keras name ("glorot_uniform" or "GlorotUniform"), a config
    dict (``serialize``), a class, or an Initializer as is."""
    return _objects.get(identifier, Initializer, _NAMES, _CLASSES, "initializer",
                        " (Arbitrary callables cannot be saved; subclass "
                        "cgru.initializers.Initializer.)")


def serialize(identifier):
    """What a layer's config stores: the name as given, or a class name with its config."""
    if isinstance(identifier, str):
        get(identifier)          # unknown names fail here, not at build time
        return identifier
    return _objects.serialize(get(identifier))


def deserialize(config):
    if isinstance(config, str):
        return get(config)
    return _objects.deserialize(config, _CLASSES, "initializer")

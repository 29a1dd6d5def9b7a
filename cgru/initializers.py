"""Weight initializers with Keras 3's distributions.

Each takes ``(shape, dtype, rng)`` where ``rng`` is a ``numpy.random.Generator``; the
layer owns the generator, so a layer ``seed`` makes its initial weights reproducible.
Keras computes fan-in/fan-out over the whole weight, so a GRU kernel ``(I, 3H)`` uses
``limit = sqrt(6 / (I + 3H))``, not per-gate limits.
"""
import numpy as np


def _fans(shape):
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def glorot_uniform(shape, dtype, rng):
    fan_in, fan_out = _fans(shape)
    limit = np.sqrt(6.0 / max(1.0, fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def orthogonal(shape, dtype, rng, gain=1.0):
    """Keras' Orthogonal: QR of a normal matrix, signs fixed by diag(R)."""
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    cols = shape[-1]
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return np.ascontiguousarray((gain * q).reshape(shape), dtype=dtype)


def zeros(shape, dtype, rng=None):
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype, rng=None):
    return np.ones(shape, dtype=dtype)


_INITIALIZERS = {
    "glorot_uniform": glorot_uniform,
    "orthogonal": orthogonal,
    "zeros": zeros,
    "ones": ones,
}


def get(identifier):
    """Return the initializer function named ``identifier`` (or a callable as is)."""
    if callable(identifier):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _INITIALIZERS:
        return _INITIALIZERS[identifier.lower()]
    raise ValueError(
        f"Unknown initializer: {identifier!r}. Expected one of "
        f"{sorted(_INITIALIZERS)} or a callable (shape, dtype, rng) -> array."
    )


def name_of(identifier):
    """Serializable name of an initializer given by name (callables cannot be saved)."""
    if isinstance(identifier, str):
        return identifier.lower()
    for name, fn in _INITIALIZERS.items():
        if fn is identifier:
            return name
    raise ValueError(f"Cannot serialize a custom initializer {identifier!r}; use a name.")

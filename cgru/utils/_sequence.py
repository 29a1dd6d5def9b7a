"""pad_sequences: ragged sequences to one (samples, maxlen, ...) array, as Keras 3 does."""
import numpy as np

__all__ = ["pad_sequences"]

_SIDES = ("pre", "post")


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre",
                  value=0.0):
    """Pads (or truncates) each sequence to ``maxlen`` steps: a ``(len(sequences), maxlen) +
    sample_shape`` array of ``dtype``, as ``keras.utils.pad_sequences``.

    ``sequences`` is a list of sequences (lists or arrays, empty ones allowed); every step
    has the shape of a step of the first non-empty sequence (``sample_shape``, ``()`` for
    numbers). ``maxlen`` defaults to the longest length. ``padding``/``truncating`` ("pre" or
    "post") say which end gets ``value`` or loses steps. For strings use ``dtype=object`` (or
    a string dtype) and a string ``value``.

    Unlike Keras, ``maxlen=0`` gives a ``(len(sequences), 0)`` array (Keras fails on it).
    """
    _check_side("padding", padding)
    _check_side("truncating", truncating)
    dtype = _as_dtype(dtype)
    _check_value_fits_dtype(value, dtype)
    sequences, lengths = _sized_sequences(sequences)
    maxlen = _resolve_maxlen(maxlen, lengths)
    sample_shape = _sample_shape(sequences, lengths)
    padded = np.full((len(sequences), maxlen) + sample_shape, value, dtype=dtype)
    if maxlen == 0:
        return padded
    for row, (sequence, length) in enumerate(zip(sequences, lengths)):
        if length == 0:
            continue
        kept = sequence[-maxlen:] if truncating == "pre" else sequence[:maxlen]
        kept = np.asarray(kept, dtype=dtype)
        if kept.shape[1:] != sample_shape:
            raise ValueError(f"Shape of sample {kept.shape[1:]} of sequence at position {row} "
                             f"is different from expected shape {sample_shape}")
        if padding == "pre":
            padded[row, maxlen - len(kept):] = kept
        else:
            padded[row, :len(kept)] = kept
    return padded


def _check_side(name, side):
    if not isinstance(side, str) or side not in _SIDES:
        raise ValueError(f'{name.capitalize()} type "{side}" not understood: `{name}` must be '
                         f'"pre" or "post". Received: {name}={side!r}')


def _as_dtype(dtype):
    try:
        return np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"`dtype` must be a NumPy dtype. Received: dtype={dtype!r}") from error


def _check_value_fits_dtype(value, dtype):
    if isinstance(value, str) and dtype.kind not in "OUS":
        raise ValueError(f"`dtype` {dtype} is not compatible with `value`'s type: {type(value)}. "
                         "Use dtype=object for variable length strings.")


def _sized_sequences(sequences):
    """The sequences and their lengths; ValueError unless each has a length."""
    if not hasattr(sequences, "__len__"):
        raise ValueError("`sequences` must be iterable (a list of sequences). "
                         f"Received: sequences of type {type(sequences).__name__}")
    lengths = []
    for sequence in sequences:
        try:
            lengths.append(len(sequence))
        except TypeError as error:
            raise ValueError("`sequences` must be a list of iterables. "
                             f"Found non-iterable: {sequence!r}") from error
    return sequences, lengths


def _resolve_maxlen(maxlen, lengths):
    if maxlen is None:
        if not lengths:
            raise ValueError("`sequences` is empty and `maxlen` is None: give `maxlen` to pad "
                             "an empty list of sequences")
        return max(lengths)
    if isinstance(maxlen, bool) or not isinstance(maxlen, (int, np.integer)):
        raise TypeError(f"`maxlen` must be an integer or None. Received: maxlen={maxlen!r}")
    if maxlen < 0:
        raise ValueError(f"`maxlen` must be >= 0. Received: maxlen={maxlen}")
    return int(maxlen)


def _sample_shape(sequences, lengths):
    """The shape of one step of the first non-empty sequence (() for scalars)."""
    for sequence, length in zip(sequences, lengths):
        if length:
            return np.asarray(sequence).shape[1:]
    return ()

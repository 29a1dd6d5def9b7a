"""Keras's global settings (``keras.backend``/``keras.config``) that cgru has.

``floatx()`` is the dtype name new layers default to, ``epsilon()`` the fuzz factor of numeric
expressions (1e-7, as Keras), ``image_data_format()`` always "channels_last" (cgru has no
image layers), and ``clear_session()`` restarts the automatic layer names.
"""
import gc
import math
import numbers

__all__ = ["clear_session", "epsilon", "floatx", "image_data_format", "set_epsilon",
           "set_floatx", "set_image_data_format"]

_SUPPORTED_FLOATX = ("float32", "float64")
_floatx = "float32"
_epsilon = 1e-7


def floatx():
    """The default float dtype name of new layers: "float32" (the default) or "float64"."""
    return _floatx


def set_floatx(value):
    """Sets the default float dtype of new layers; "float32" or "float64" (cgru's kernels
    have no float16 or bfloat16), else ValueError."""
    global _floatx
    if not isinstance(value, str) or value not in _SUPPORTED_FLOATX:
        raise ValueError(f"Unknown `floatx` value: {value!r}. cgru supports "
                         f"{' and '.join(_SUPPORTED_FLOATX)} only")
    _floatx = value


def epsilon():
    """The fuzz factor used in numeric expressions (1e-7 unless set)."""
    return _epsilon


def set_epsilon(value):
    """Sets the fuzz factor; a finite number >= 0, else ValueError."""
    global _epsilon
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"`epsilon` must be a finite number >= 0. Received: {value!r}")
    _epsilon = float(value)


def image_data_format():
    """Always "channels_last" (cgru has no image layers; Keras's default)."""
    return "channels_last"


def set_image_data_format(data_format):
    """Accepts "channels_last" only: cgru has no "channels_first" layout."""
    if data_format != "channels_last":
        raise ValueError(f"cgru supports data_format='channels_last' only. Received: "
                         f"data_format={data_format!r}")


def clear_session(free_memory=True):
    """Restarts the automatic layer names ("gru", "gru_1", ... start again at "gru"), as
    Keras's clear_session does; with ``free_memory`` also runs Python's garbage collector and
    lets the kernels' idle work buffers go."""
    # Imported here: cgru.layers imports this module.
    from cgru.layers import base
    from cgru._pool import POOL
    base._name_counts.clear()
    if free_memory:
        gc.collect()
        POOL.clear()

"""Keras's ``keras.preprocessing`` names that cgru has: ``sequence.pad_sequences``."""
from . import sequence

__all__ = ["sequence"]

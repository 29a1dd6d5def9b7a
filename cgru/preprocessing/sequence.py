"""``keras.preprocessing.sequence``: pad_sequences (the same function as cgru.utils')."""
from cgru.utils import pad_sequences

__all__ = ["pad_sequences"]

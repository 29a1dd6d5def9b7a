"""Keras's small utilities (``keras.utils``), NumPy in and out: so that ``from keras.utils
import pad_sequences`` can become ``from cgru.utils import pad_sequences``."""
from ._dataset import PyDataset, Sequence
from ._numerical import normalize, to_categorical
from ._plot import model_to_dot, plot_model
from ._random import set_random_seed
from ._sequence import pad_sequences

__all__ = ["PyDataset", "Sequence", "model_to_dot", "normalize", "pad_sequences",
           "plot_model", "set_random_seed", "to_categorical"]

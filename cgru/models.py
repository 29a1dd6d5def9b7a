"""Models (tier 3): the functional ``Model``, ``Sequential`` (its one-path case), and
``load_model``. They live in ``cgru.engine``: the graph in ``functional``, the chain in
``sequential``, and the training loop both share in ``trainer``."""
from . import keras_file, saving
from .engine.functional import Model
from .engine.sequential import Sequential

__all__ = ["Model", "Sequential", "load_model"]


def load_model(filepath, compile=True):
    """Restores a saved model: a Keras 3 ``.keras`` file (``cgru.keras_file``), or cgru's own
    format (``cgru.saving``) for any other name."""
    if keras_file.is_keras_model_path(filepath):
        return keras_file.load_keras_model(filepath, compile=compile)
    return saving.load_model(filepath)

"""set_random_seed: seeds the generators cgru draws from."""
import random

import numpy as np

__all__ = ["set_random_seed"]


def set_random_seed(seed):
    """Seeds Python's ``random`` and NumPy's global generator (``np.random.seed``), as
    ``keras.utils.set_random_seed`` does. cgru layers without a ``seed`` draw theirs from
    NumPy's global generator, so this makes their initial weights and dropout masks repeat.
    (Keras also seeds TensorFlow or PyTorch; cgru uses neither.)

    ``seed`` is an integer in ``0..2**32 - 1`` (NumPy's range).
    """
    if not isinstance(seed, int):
        raise ValueError("Expected `seed` argument to be an integer. "
                         f"Received: seed={seed!r} (of type {type(seed)})")
    if not 0 <= seed < 2**32:
        raise ValueError(f"`seed` must be between 0 and 2**32 - 1 (NumPy's range). "
                         f"Received: seed={seed}")
    random.seed(seed)
    np.random.seed(seed)

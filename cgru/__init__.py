"""cgru: a fast GRU for CPUs. Typed Cython kernels over BLAS, with a Keras-style training API."""
from cgru.functional import (  # noqa: F401
    GRUGrads, get_num_threads, gru_backward, gru_forward, set_num_threads)

__version__ = "0.1.0"

# Training API (Keras-style layers and models)
from . import (activations, callbacks, constraints, initializers, layers, losses,  # noqa: E402,F401
               metrics, models, optimizers, regularizers)
from .layers import GRU, Bidirectional, Dense, Dropout, Input, InputLayer  # noqa: E402,F401
from .layers import (Activation, Embedding, Flatten, Permute, RepeatVector,  # noqa: E402,F401
                     Reshape, TimeDistributed)
from .layers import (AveragePooling1D, Conv1D, GlobalAveragePooling1D,  # noqa: E402,F401
                     GlobalMaxPooling1D, MaxPooling1D)
from .layers import BatchNormalization, LayerNormalization  # noqa: E402,F401
from .layers import GaussianDropout, GaussianNoise, SpatialDropout1D  # noqa: E402,F401
from .layers import Masking  # noqa: E402,F401
from .layers import (Add, Average, Concatenate, Dot, Maximum, Minimum,  # noqa: E402,F401
                     Multiply, Subtract)
from .models import Model, Sequential  # noqa: E402,F401
from .models import load_model  # noqa: E402,F401
from . import backend, preprocessing, utils  # noqa: E402,F401
from . import distributed  # noqa: E402,F401  (mpi4py is imported by MPIStrategy())

"""cgru: a fast GRU for CPUs. Typed Cython kernels over BLAS, with a Keras-style training API."""
from cgru.functional import GRUGrads, gru_backward, gru_forward

__version__ = "0.1.0"

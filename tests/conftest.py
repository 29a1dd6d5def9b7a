import numpy as np
import pytest


def make_gru_inputs(rng, T, B, I, H, dtype=np.float32, scale=0.5):
    """x, h0, w_ih, w_hh, b_ih, b_hh drawn from a normal distribution (PyTorch layout)."""
    shapes = [(T, B, I), (B, H), (3 * H, I), (3 * H, H), (3 * H,), (3 * H,)]
    return [(scale * rng.standard_normal(shape)).astype(dtype) for shape in shapes]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

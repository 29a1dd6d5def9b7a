"""Parity with torch.nn.GRU (weights copied): outputs and every gradient, with and without
packed variable lengths. Runs when torch is installed (CI installs torch==2.13.0, CPU)."""
import numpy as np
import pytest

import cgru
from conftest import make_gru_inputs

torch = pytest.importorskip("torch")


def torch_gru(args, lengths, dy, dh_n):
    """y, h_n and the gradients of sum(y * dy) + sum(h_n * dh_n) from torch.nn.GRU."""
    x, h0, w_ih, w_hh, b_ih, b_hh = [torch.tensor(a, requires_grad=True) for a in args]
    T, B, I = x.shape
    H = w_hh.shape[1]
    gru = torch.nn.GRU(I, H).to(x.dtype)
    with torch.no_grad():
        for name, value in zip(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"],
                               args[2:]):
            getattr(gru, name).copy_(torch.tensor(value))
    inputs = x
    if lengths is not None:
        inputs = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths),
                                                         enforce_sorted=False)
    y, h_n = gru(inputs, h0[None])
    if lengths is not None:
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, total_length=T)
    h_n = h_n[0]
    loss = (y * torch.tensor(dy)).sum() + (h_n * torch.tensor(dh_n)).sum()
    params = [gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0]
    grads = torch.autograd.grad(loss, [x, h0] + params)
    return y.detach().numpy(), h_n.detach().numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize("dtype,tol", [(np.float32, dict(rtol=1e-4, atol=1e-4)),
                                       (np.float64, dict(rtol=1e-10, atol=1e-12))])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (7, 5, 3, 4), (20, 16, 24, 48)])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_matches_torch(dtype, tol, shape, with_lengths, rng):
    T, B, I, H = shape
    args = make_gru_inputs(rng, T, B, I, H, dtype)
    lengths = None
    if with_lengths:       # torch packs lengths 1..T only; any order
        lengths = rng.permutation(np.r_[T, rng.integers(1, T + 1, size=B - 1)])
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh_n = rng.standard_normal((B, H)).astype(dtype)

    y_t, h_t, grads_t = torch_gru(args, lengths, dy, dh_n)
    y, h_n, cache = cgru.gru_forward(*args, lengths=lengths)
    np.testing.assert_allclose(y, y_t, **tol)
    np.testing.assert_allclose(h_n, h_t, **tol)
    grads = cgru.gru_backward(dy, dh_n, cache)
    for name, got, want in zip(cgru.GRUGrads._fields, grads, grads_t):
        np.testing.assert_allclose(got, want, err_msg=name, **tol)

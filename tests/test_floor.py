"""The GEMM floor does the products it claims to do (so the benchmark's floor is real work)."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import build_floor  # noqa: E402


@pytest.fixture(scope="module")
def floor(tmp_path_factory):
    """The floor, compiled for this test run into a temporary folder (never skipped)."""
    return build_floor.load(str(tmp_path_factory.mktemp("floor")))


def close(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("m,n,k", [(1, 7, 5), (3, 7, 5), (16, 192, 64), (1, 384, 128)])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_matmul_shim(floor, m, n, k, ta, tb):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    close(floor.matmul(a, b, ta, tb), want)


@pytest.mark.parametrize("shape", [(1, 1, 3, 4), (5, 3, 7, 6), (4, 16, 20, 32)])
def test_forward_and_train_products(floor, shape):
    T, B, I, H = shape
    f = floor.GRUFloor(T, B, I, H, seed=1)
    a = {k: v.astype(np.float64) for k, v in f.arrays.items()}
    assert (f.T, f.B, f.I, f.H) == shape
    close(a["w_ih_t"], a["w_ih"].T)
    close(a["w_hh_t"], a["w_hh"].T)

    assert f.forward(1) >= 0.0
    a_now = f.arrays
    close(a_now["gx"], a["x"] @ a["w_ih"].T)
    # inference reuses one step's buffer: it holds the last step's product
    close(a_now["gh"][:B], a["hs"][(T - 1) * B:T * B] @ a["w_hh"].T)

    assert f.train(1) >= 0.0
    a_now = f.arrays
    hs = a["hs"]
    for t in range(T):
        close(a_now["gh"][t * B:(t + 1) * B], hs[t * B:(t + 1) * B] @ a["w_hh"].T)
    # the last backward step (t = 0) wrote dh into slot 0
    close(a_now["dh"][:B], a["dgh"][:B] @ a["w_hh"])
    if T > 1:
        close(a_now["dh"][B:], a["dgh"][B:2 * B] @ a["w_hh"])
    close(a_now["dw_hh"], a["dgh"].T @ hs[:T * B])
    close(a_now["dw_ih"], a["dgx"].T @ a["x"])
    close(a_now["dx"], a["dgx"] @ a["w_ih"])


@pytest.mark.parametrize("B", [1, 2])
def test_stream_products(floor, B):
    T, I, H = 6, 5, 8
    f = floor.GRUFloor(T, B, I, H, seed=2)
    a = {k: v.astype(np.float64) for k, v in f.arrays.items()}
    assert f.stream(2) >= 0.0
    a_now = f.arrays
    close(a_now["gx"], a["x"] @ a["w_ih"].T)
    close(a_now["gh"], a["hs"][:T * B] @ a["w_hh"].T)


def test_rejects_empty_sizes(floor):
    with pytest.raises(ValueError):
        floor.GRUFloor(0, 1, 1, 1)

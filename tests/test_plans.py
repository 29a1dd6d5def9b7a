"""The kernels' ways of doing the products: BLAS, the small GEMM (cgru/_gemm_template.h), and
the small GEMM on parts of the batch in threads of their own. Each must give the reference's
numbers, whatever the machine's own choice (functional._plan) would be."""
import itertools

import numpy as np
import pytest

import cgru
from cgru import _reference, functional
from cgru._native import _twins as _gru
from conftest import assert_concurrent_calls_match_sequential, make_gru_inputs

PLANS = [(False, 1), (True, 1), (True, 2), (True, 3), (True, 16)]
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
needs_small_gemm = pytest.mark.skipif(not _gru.SMALL_GEMM_AVAILABLE,
                                      reason="no AVX-512 or AVX2 on this CPU: BLAS does every "
                                             "product")
# The small GEMM's forms this CPU runs: 2 (AVX-512) and 1 (AVX2); each is tested where it runs.
LEVELS = [level for level in (2, 1) if level <= _gru.SMALL_GEMM_LEVEL] or [0]


@pytest.fixture(params=LEVELS, ids=lambda level: {2: "avx512", 1: "avx2", 0: "blas"}[level])
def gemm_level(request):
    before = functional._set_small_gemm_level(request.param)
    yield request.param
    functional._set_small_gemm_level(before)


@pytest.fixture(params=PLANS, ids=lambda plan: f"small{int(plan[0])}-parts{plan[1]}")
def plan(request, monkeypatch):
    monkeypatch.setattr(functional, "_PLAN_OVERRIDE", request.param)
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (5, 3, 4, 5), (6, 17, 3, 13), (4, 40, 20, 32),
                                   (3, 9, 7, 40), (40, 33, 5, 16)])   # the last: T*B > 2 blocks
@pytest.mark.parametrize("with_lengths", [False, True])
def test_every_plan_matches_the_reference(plan, gemm_level, dtype, reset_after, shape,
                                          with_lengths, rng):
    T, B, I, H = shape
    args = make_gru_inputs(rng, T, B, I, H, dtype)
    lengths = None
    if with_lengths:
        lengths = rng.integers(0, T + 1, size=B)
        lengths[0] = T
        lengths[-1] = 0
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dh_n = rng.standard_normal((B, H)).astype(dtype)
    y, h_n, cache = cgru.gru_forward(*args, reset_after=reset_after, lengths=lengths)
    y_ref, h_n_ref, cache_ref = _reference.gru_forward(*args, reset_after=reset_after,
                                                       lengths=lengths)
    np.testing.assert_allclose(y, y_ref, **TOL[dtype])
    np.testing.assert_allclose(h_n, h_n_ref, **TOL[dtype])
    y_infer, h_n_infer, _ = cgru.gru_forward(*args, reset_after=reset_after, lengths=lengths,
                                             training=False)
    np.testing.assert_allclose(y_infer, y_ref, **TOL[dtype])
    np.testing.assert_allclose(h_n_infer, h_n_ref, **TOL[dtype])
    grads = cgru.gru_backward(dy, dh_n, cache)
    grads_ref = _reference.gru_backward(dy, dh_n, cache_ref)
    for name in cgru.GRUGrads._fields:
        np.testing.assert_allclose(getattr(grads, name), getattr(grads_ref, name),
                                   err_msg=name, **TOL[dtype])


@needs_small_gemm
@pytest.mark.parametrize("reset_after", [True, False])
def test_parts_give_the_numbers_of_one_part(gemm_level, reset_after, rng, monkeypatch):
    """The rows of a batch never meet: cutting it changes no bit."""
    args = make_gru_inputs(rng, 7, 37, 6, 24)
    lengths = rng.integers(0, 8, size=37)
    dy = rng.standard_normal((7, 37, 24)).astype(np.float32)
    results = []
    for parts in (1, 2, 5):
        monkeypatch.setattr(functional, "_PLAN_OVERRIDE", (True, parts))
        y, h_n, cache = cgru.gru_forward(*args, reset_after=reset_after, lengths=lengths)
        results.append([y, h_n] + list(cgru.gru_backward(dy, None, cache)))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@needs_small_gemm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_gemm_matches_numpy(gemm_level, dtype, rng):
    """Rows around the register tiles (8 and 6), columns around a panel (32 or 16 floats, 16
    or 8 doubles)."""
    sizes_m, sizes_n = [1, 2, 5, 6, 7, 8, 9, 13, 17, 64], [1, 5, 8, 16, 17, 31, 32, 33, 100]
    sizes_k = [1, 3, 129]
    for m, n, k in itertools.product(sizes_m, sizes_n, sizes_k):
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        for beta in (0.0, 1.0, 0.5):
            c = rng.standard_normal((m, n)).astype(dtype)
            want = a.astype(np.float64) @ b + beta * c
            _gru.small_gemm_for_tests(a, b, c, beta, level=gemm_level)
            np.testing.assert_allclose(c, want, err_msg=f"{m}x{k} @ {k}x{n}, beta {beta}",
                                       **TOL[dtype])


@needs_small_gemm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transposed_small_gemm_matches_numpy(gemm_level, dtype, rng):
    """The weight gradients' product a^T @ b (a stored (K, M))."""
    for m, n, k in [(1, 1, 1), (9, 33, 70), (24, 5, 513), (8, 32, 3), (13, 17, 40)]:
        a = rng.standard_normal((k, m)).astype(dtype)
        b = rng.standard_normal((k, n)).astype(dtype)
        c = rng.standard_normal((m, n)).astype(dtype)
        want = a.T.astype(np.float64) @ b + 0.5 * c
        _gru.small_gemm_for_tests(a, b, c, 0.5, trans_a=True, level=gemm_level)
        np.testing.assert_allclose(c, want, err_msg=f"{m}, {n}, {k}", **TOL[dtype])


def test_plan_rules(monkeypatch):
    """The rules of level 2 (AVX-512), where they were measured: set here on any CPU (only the
    plan is asked, no product runs)."""
    small = _gru.SMALL_GEMM_AVAILABLE
    monkeypatch.setattr(functional, "_small_gemm_level", 2 if small else 0)
    monkeypatch.setattr(functional, "_PLAN_OVERRIDE", None)
    monkeypatch.setattr(functional, "blas_threads", lambda: 1)
    assert functional._plan(100, 64, 128, 256) == (small, 1)
    assert functional._plan(10, 32, 20, 32) == (False, 1)       # weights too small to pack
    assert functional._plan(50, 4, 32, 64) == (False, 1)        # batch below the tile
    monkeypatch.setattr(functional, "blas_threads", lambda: 2)
    assert functional._plan(100, 64, 128, 256) == ((True, 2) if small else (False, 1))
    assert functional._plan(1000, 16, 32, 64) == ((True, 2) if small else (False, 1))
    assert functional._plan(10, 32, 20, 32) == (False, 1)       # too short to start a thread
    assert functional._plan(100, 12, 128, 256) == (False, 1)    # too few rows to cut
    monkeypatch.setattr(functional, "blas_threads", lambda: 8)
    assert functional._plan(100, 24, 128, 256) == ((True, 3) if small else (False, 1))


def test_avx2_plan_rules(monkeypatch):
    """Level 1 (AVX2): the small GEMM from two rows on, at any thread count; parts of four
    rows or more from _AVX2_PARTS_MIN_FLOPS (benchmarks/README.md, "Plan rules per level")."""
    monkeypatch.setattr(functional, "_small_gemm_level", 1)
    monkeypatch.setattr(functional, "_PLAN_OVERRIDE", None)
    monkeypatch.setattr(functional, "blas_threads", lambda: 1)
    assert functional._plan(10, 32, 20, 32) == (True, 1)
    assert functional._plan(100, 64, 256, 512) == (True, 1)
    assert functional._plan(50, 4, 32, 64) == (True, 1)
    assert functional._plan(50, 2, 32, 64) == (True, 1)
    assert functional._plan(10, 1, 32, 128) == (False, 1)       # one row: BLAS's GEMV
    assert functional._plan(1, 32, 20, 32) == (False, 1)        # one step: as GRUCell
    assert functional._plan(10, 32, 20, 32, small_gemm=False) == (False, 1)
    monkeypatch.setattr(functional, "blas_threads", lambda: 2)
    assert functional._plan(10, 32, 20, 32) == (True, 2)        # 3.2 MFLOP
    assert functional._plan(5, 16, 20, 32) == (True, 1)         # 0.8 MFLOP: too short to cut
    assert functional._plan(100, 64, 128, 256) == (True, 2)
    assert functional._plan(100, 12, 128, 256) == (True, 2)     # parts of 6 rows
    assert functional._plan(100, 7, 128, 256) == (True, 1)      # too few rows to cut
    monkeypatch.setattr(functional, "_small_gemm_level", 0)     # CGRU_SMALL_GEMM=0
    assert functional._plan(10, 32, 20, 32) == (False, 1)


def test_calls_from_several_threads_each_with_parts(gemm_level, monkeypatch):
    """Kernel calls running at once, each cutting its batch over threads of its own."""
    monkeypatch.setattr(functional, "_PLAN_OVERRIDE", (True, 3))
    jobs = [make_gru_inputs(np.random.default_rng(seed), 12, 40, 6, 24) for seed in range(4)]
    assert_concurrent_calls_match_sequential(jobs, repeats=4)


def test_levels_are_bounded_by_the_cpu():
    before = functional._set_small_gemm_level(5)
    try:
        assert functional._set_small_gemm_level(0) == _gru.SMALL_GEMM_LEVEL
        assert functional._set_small_gemm_level(-3) == 0
    finally:
        functional._set_small_gemm_level(before)


def test_thread_count_follows_threadpoolctl_and_the_environment(monkeypatch):
    from cgru import _threads
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if _threads._get_num_threads is not None:      # SciPy's OpenBLAS found: its own count
        with threadpoolctl.threadpool_limits(1):
            assert _threads.blas_threads() == 1
    monkeypatch.setattr(_threads, "_get_num_threads", None)   # another BLAS: the environment
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert _threads.blas_threads() == 3
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "5,2")
    assert _threads.blas_threads() == 5
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert _threads.blas_threads() >= 1

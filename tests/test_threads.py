"""cgru's own threads: one OpenMP team reused by every call, sized by set_num_threads (else by
BLAS's count), giving the same bits at any count, and safe across fork."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cgru
from cgru import functional
from cgru._native import _twins
from conftest import make_gru_inputs

TESTS = os.path.dirname(os.path.abspath(__file__))


def _run_script(script, **environment):
    """Runs ``script`` in a new interpreter that imports the same cgru as this process (the
    installed package, or the source tree built in place) and finds tests/conftest.py."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(cgru.__file__)))
    env = dict(os.environ, **environment)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, TESTS,
                                                    env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-c", script], cwd=package_parent, env=env,
                          timeout=240, capture_output=True, text=True)


@pytest.fixture
def restore_threads():
    yield
    cgru.set_num_threads(None)


def run(args, reset_after):
    y, h_n, cache = cgru.gru_forward(*args, reset_after=reset_after)
    grads = cgru.gru_backward(np.ones_like(y), h_n, cache)
    return [y, h_n] + list(grads)


def test_set_num_threads_is_public_and_read_back(restore_threads, monkeypatch):
    assert cgru.set_num_threads is functional.set_num_threads
    assert cgru.get_num_threads is functional.get_num_threads
    cgru.set_num_threads(3)
    assert cgru.get_num_threads() == 3
    monkeypatch.setattr(functional, "blas_threads", lambda: 7)
    assert cgru.get_num_threads() == 3             # the explicit count wins over BLAS's
    cgru.set_num_threads(None)
    assert cgru.get_num_threads() == 7             # then BLAS's count again


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_set_num_threads_rejects_bad_counts(bad, restore_threads):
    with pytest.raises(ValueError, match="`n`"):
        cgru.set_num_threads(bad)


@pytest.mark.skipif(not _twins.SMALL_GEMM_AVAILABLE, reason="threads cut the batch only with "
                    "the small GEMM (no AVX2 or AVX-512 on this CPU)")
@pytest.mark.parametrize("reset_after", [True, False])
def test_same_bits_at_one_two_and_three_threads(reset_after, restore_threads, monkeypatch):
    monkeypatch.setattr(functional, "_PARTS_MIN_FLOPS", 0)
    args = make_gru_inputs(np.random.default_rng(5), 9, 48, 20, 64)
    results = []
    for threads in (1, 2, 3):
        cgru.set_num_threads(threads)
        assert functional._plan(9, 48, 20, 64) == (True, threads)
        results.append(run(args, reset_after))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_count_is_honoured(threads, restore_threads):
    cgru.set_num_threads(threads)
    parts = functional._plan(100, 64, 128, 256)[1]
    assert 1 <= parts <= threads
    # the parts run as the loops run them: `parts` OpenMP threads, one part each
    owner = _twins.threads_for_tests(threads, 64)
    assert sorted(set(owner.tolist())) == list(range(threads))
    starts = _twins.part_starts_for_tests(64, threads)
    for part in range(threads):
        assert np.all(owner[starts[part]:starts[part + 1]] == part)


def test_a_forked_child_does_not_hang():
    """GNU OpenMP's threads do not survive fork: a child entering a parallel region after its
    parent ran one hangs. cgru's children run on their own thread and finish, with the same
    numbers."""
    script = textwrap.dedent("""
        import multiprocessing, sys
        import numpy as np
        import cgru
        from cgru import functional
        from conftest import make_gru_inputs
        functional._PLAN_OVERRIDE = (True, 2)
        args = make_gru_inputs(np.random.default_rng(0), 5, 16, 4, 8)

        def run(seed):
            y, h, cache = cgru.gru_forward(*args)
            return cgru.gru_backward(np.ones_like(y), None, cache).dw_ih.tobytes()

        want = run(0)
        with multiprocessing.get_context("fork").Pool(2) as pool:
            got = pool.map(run, range(4))
        assert got == [want] * 4
        print("done")
    """)
    result = _run_script(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


def test_the_small_gemm_switches_off(monkeypatch):
    """CGRU_SMALL_GEMM=0 (read at import) and the plan's argument keep every product on BLAS,
    with the same numbers as the reference."""
    monkeypatch.setattr(functional, "_PLAN_OVERRIDE", None)
    monkeypatch.setattr(functional, "blas_threads", lambda: 1)
    assert functional._plan(100, 64, 128, 256, small_gemm=False) == (False, 1)
    script = textwrap.dedent("""
        import numpy as np, sys
        import cgru
        from cgru import _reference, functional
        from conftest import make_gru_inputs
        assert functional._small_gemm_level == 0
        assert functional._plan(100, 64, 128, 256) == (False, 1)
        args = make_gru_inputs(np.random.default_rng(3), 6, 16, 5, 64, np.float64)
        y, h_n, cache = cgru.gru_forward(*args)
        assert cache.level == 0
        y_ref, h_ref, _ = _reference.gru_forward(*args)
        np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
        print("done")
    """)
    result = _run_script(script, CGRU_SMALL_GEMM="0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


class _RecordingLoops:
    """functional's view of the compiled loops, recording BLAS's thread count at each call."""

    def __init__(self, loops):
        self._loops = loops
        self.seen = []

    def __getattr__(self, name):
        return getattr(self._loops, name)

    def forward(self, *args):
        from cgru import _threads
        self.seen.append(("forward", _threads.blas_threads()))
        return self._loops.forward(*args)

    def backward(self, *args):
        from cgru import _threads
        self.seen.append(("backward", _threads.blas_threads()))
        return self._loops.backward(*args)


def test_small_calls_on_blas_run_it_on_one_thread(monkeypatch):
    from cgru import _threads
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if _threads._set_num_threads is None:
        pytest.skip("SciPy's BLAS is not OpenBLAS: its thread count cannot be set")
    recording = _RecordingLoops(functional._loops)
    monkeypatch.setattr(functional, "_loops", recording)
    monkeypatch.setattr(functional, "_PLAN_OVERRIDE", (False, 1))
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _threads.blas_threads()
        x, h0, w_ih, w_hh, b_ih, b_hh = make_gru_inputs(np.random.default_rng(3), 10, 32, 20, 32)
        y, h_n, cache = functional.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh)
        functional.gru_backward(y, h_n, cache)
        small = list(recording.seen)
        recording.seen.clear()
        # a call above the bound keeps BLAS's count
        x, h0, w_ih, w_hh, b_ih, b_hh = make_gru_inputs(np.random.default_rng(3), 20, 64, 128, 256)
        y, h_n, cache = functional.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh)
        functional.gru_backward(y, h_n, cache)
        large = list(recording.seen)
        after = _threads.blas_threads()
    assert small == [("forward", 1), ("backward", 1)]
    assert large == [("forward", before), ("backward", before)]
    assert after == before


def test_one_thread_blocks_nest_and_overlap_without_losing_the_count():
    import threading
    from cgru import _threads
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if _threads._set_num_threads is None:
        pytest.skip("SciPy's BLAS is not OpenBLAS: its thread count cannot be set")
    with threadpoolctl.threadpool_limits(3, user_api="blas"):
        before = _threads.blas_threads()
        with _threads.blas_on_one_thread:
            with _threads.blas_on_one_thread:
                assert _threads.blas_threads() == 1
            assert _threads.blas_threads() == 1
        assert _threads.blas_threads() == before
        inside, release = threading.Barrier(2), threading.Event()

        def worker():
            with _threads.blas_on_one_thread:
                inside.wait()
                release.wait()

        other = threading.Thread(target=worker)
        other.start()
        with _threads.blas_on_one_thread:
            inside.wait()
        assert _threads.blas_threads() == 1        # the other block is still inside
        release.set()
        other.join()
        assert _threads.blas_threads() == before

import numpy as np
import pytest


def make_gru_inputs(rng, T, B, I, H, dtype=np.float32, scale=0.5):
    """x, h0, w_ih, w_hh, b_ih, b_hh drawn from a normal distribution (PyTorch layout)."""
    shapes = [(T, B, I), (B, H), (3 * H, I), (3 * H, H), (3 * H,), (3 * H,)]
    return [(scale * rng.standard_normal(shape)).astype(dtype) for shape in shapes]


def max_diff(a, b):
    """The largest absolute difference of two arrays of one shape (asserted)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def forward_backward(args):
    """y, h_n and the six gradients of cgru's functional GRU on args (ones as dy, h_n as dh_n)."""
    import cgru
    y, h_n, cache = cgru.gru_forward(*args)
    return (y, h_n) + tuple(cgru.gru_backward(np.ones_like(y), h_n, cache))


def assert_concurrent_calls_match_sequential(jobs, repeats):
    """forward_backward of each job, run `repeats` times in a thread per job all at once,
    equals the sequential result bit for bit."""
    import threading
    sequential = [forward_backward(args) for args in jobs]
    results = [[] for _ in jobs]

    def worker(i):
        for _ in range(repeats):
            results[i].append(forward_backward(jobs[i]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seq, runs in zip(sequential, results):
        assert len(runs) == repeats
        for run in runs:
            for a, b in zip(seq, run):
                np.testing.assert_array_equal(a, b)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

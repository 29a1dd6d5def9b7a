"""Whole inference and training steps on one thread: the small GEMM (each level this CPU runs)
against BLAS only (SciPy's cython_blas), in PyTorch's weight layout (gru_forward/gru_backward)
and in the layers' transposed layout (functional._layer_forward/_layer_backward).

    python benchmarks/small_gemm_vs_blas.py --cases medium,large --reps 7

Configurations alternate within each repetition; the figure is the minimum CPU time of the
calling thread (on a shared machine less disturbed than wall time), in milliseconds.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CASES = {"seed": (10, 32, 20, 32), "small": (50, 32, 64, 128), "medium": (100, 64, 128, 256),
         "large": (100, 64, 256, 512), "long": (1000, 16, 32, 64)}
MODES = ("infer", "train", "layer-infer", "layer-train")


def steps(cgru, functional, shape, rng):
    """The four modes' calls for one shape, as functions of no argument."""
    T, B, I, H = shape

    def draw(*dims):
        return (0.3 * rng.standard_normal(dims)).astype(np.float32)
    x, h0, w_ih, w_hh = draw(T, B, I), draw(B, H), draw(3 * H, I), draw(3 * H, H)
    b_ih, b_hh, dy = draw(3 * H), draw(3 * H), draw(T, B, H)
    kernel, recurrent = np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T)

    def train():
        y, h_n, cache = cgru.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh)
        cgru.gru_backward(dy, h_n, cache)

    def layer_train():
        y, h_n, cache = functional._layer_forward(x, h0, kernel, recurrent, b_ih, b_hh, True,
                                                  True)
        functional._layer_backward(dy, h_n, cache)
    return {"infer": lambda: cgru.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, training=False),
            "train": train,
            "layer-infer": lambda: functional._layer_forward(x, h0, kernel, recurrent, b_ih,
                                                             b_hh, True, False),
            "layer-train": layer_train}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="medium,large")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    import cgru
    from cgru import functional
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)        # after cgru's import, which loads SciPy's BLAS
    cgru.set_num_threads(1)
    levels = sorted({0, 1, functional._loops.SMALL_GEMM_LEVEL})
    rng = np.random.default_rng(0)
    for case in args.cases.split(","):
        calls = steps(cgru, functional, CASES[case], rng)
        times = {(mode, level): [] for mode in MODES for level in levels}
        for _ in range(args.reps):
            for mode, level in times:
                functional._PLAN_OVERRIDE = (level > 0, 1)
                before = functional._set_small_gemm_level(level)
                calls[mode]()
                start = time.thread_time()
                calls[mode]()
                times[(mode, level)].append(time.thread_time() - start)
                functional._set_small_gemm_level(before)
        functional._PLAN_OVERRIDE = None
        for mode in MODES:
            best = {level: min(times[(mode, level)]) * 1e3 for level in levels}
            small = min(best[level] for level in levels if level > 0)
            print(f"{case:6s} {mode:12s} " + "  ".join(
                f"level {level}: {ms:8.2f} ms" for level, ms in best.items())
                + f"   BLAS / small GEMM = {best[0] / small:.2f}", flush=True)


if __name__ == "__main__":
    main()

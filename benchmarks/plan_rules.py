"""The kernels' ways of doing a call's products, side by side, for the rules of
`cgru.functional._plan`: BLAS (SciPy's cython_blas), the small GEMM on one part, and the small
GEMM on two parts (one OpenMP thread each), on whole inference and training calls in the
layers' weight layout.

    python benchmarks/plan_rules.py --threads 1 --shapes "10,32,20,32;100,64,128,256"
    python benchmarks/plan_rules.py --threads 2

Configurations alternate within each repetition, with a pause before each (OpenBLAS's threads
spin for a while after a call and would slow the next configuration). Each figure is BLAS's
time over the configuration's (above 1: faster than BLAS), minima over the repetitions.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from small_gemm_vs_blas import steps    # noqa: E402  (the calls, in the layers' layout)

SHAPES = "10,32,20,32;50,32,64,128;100,64,128,256;1000,16,32,64;20,8,32,64;20,16,64,128"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shapes", default=SHAPES, help="T,B,I,H;T,B,I,H;...")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--target", type=float, default=0.05, help="seconds per repetition")
    args = parser.parse_args(argv)
    import cgru
    from cgru import functional
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)     # after cgru's import, which loads SciPy's BLAS
    cgru.set_num_threads(args.threads)
    plans = [(False, 1), (True, 1)] + ([(True, 2)] if args.threads >= 2 else [])
    names = {(False, 1): "blas", (True, 1): "small", (True, 2): "small x2"}
    rng = np.random.default_rng(0)
    print(f"threads {args.threads}, small GEMM level {functional._small_gemm_level}; "
          "BLAS's time over each (above 1: faster than BLAS), minima of "
          f"{args.reps} repetitions")
    for text in args.shapes.split(";"):
        shape = tuple(int(v) for v in text.split(","))
        calls = steps(cgru, functional, shape, rng)
        for mode, call in (("infer", calls["layer-infer"]), ("train", calls["layer-train"])):
            start = time.perf_counter()
            call()
            n = max(1, int(args.target / max(1e-6, time.perf_counter() - start)))
            times = {plan: [] for plan in plans}
            for _ in range(args.reps):
                for plan in plans:
                    functional._PLAN_OVERRIDE = plan
                    time.sleep(0.15)
                    call()
                    start = time.perf_counter()
                    for _ in range(n):
                        call()
                    times[plan].append((time.perf_counter() - start) / n)
            functional._PLAN_OVERRIDE = None
            blas = min(times[(False, 1)])
            ratios = "  ".join(f"{names[p]} {blas / min(v):.2f}" for p, v in times.items())
            print(f"{shape} {mode:5s}: blas {blas * 1e6:9.1f} us  {ratios}  "
                  f"(plan {functional._plan(*shape)})", flush=True)


if __name__ == "__main__":
    main()

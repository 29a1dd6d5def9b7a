#!/usr/bin/env python
"""Data-parallel training over MPI (cgru.distributed): samples per second against ranks.

    python benchmarks/data_parallel.py                  # after build_ext --inplace, from the root
    python benchmarks/data_parallel.py --ranks 1,2 --cases medium,large --steps 8

For each case (the medium and large shapes of bench.py: (T, B, I, H) = (100, 64, 128, 256)
and (100, 64, 256, 512)) the model is GRU(H) on (T, I) inputs + Dense(1), mse, SGD. Each
rank count N is one ``mpiexec -n N`` job; the cores of the machine are split between the
ranks (``cgru.set_num_threads(cores // N)`` and as many BLAS threads; ``--threads T`` sets
T per rank instead). In each job, after a warm-up fit of two steps:

- ``samples/s``: ``fit`` over ``--steps`` global batches of B rows (one epoch, no shuffle),
  B * steps / the wall time of the fit, the best of ``--reps`` fits;
- ``step``: the wall time per step of that fit;
- ``allreduce``: one in-place ``Allreduce`` of the model's gradient (all weights, float32),
  the median of 30, timed alone.

Needs mpi4py and an MPI (``pip install ".[mpi]"``). Prints a table and, with ``--json``,
writes the figures.

    python benchmarks/data_parallel.py --cost-model     # no MPI needed

prints the cost model of benchmarks/README.md ("Data parallel at N machines"): a ring
allreduce of S bytes over N machines takes ``2 (N - 1) / N * S / bandwidth + 2 (N - 1) *
latency``; it is set against the measured step time of one machine.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

CASES = {"medium": (100, 64, 128, 256), "large": (100, 64, 256, 512)}
# train step (forward + backward, batch 64) on one 2-core machine, from bench.py at 2 threads
# (README, "Speed"), seconds; and the networks of the cost model: (name, bytes/s, latency s)
STEP_SECONDS = {"medium": 66.38e-3, "large": 241.68e-3}
NETWORKS = [("10 Gb/s Ethernet", 10e9 / 8, 10e-6), ("100 Gb/s InfiniBand", 100e9 / 8, 2e-6)]


def gradient_bytes(case):
    """float32 bytes of GRU(H) on I features + Dense(1): 3H(I + H) + 2 x 3H + H + 1 numbers."""
    _, _, I, H = CASES[case]
    return 4 * (3 * H * (I + H) + 6 * H + H + 1)


def ring_allreduce_seconds(n, size, bandwidth, latency):
    return 2 * (n - 1) / n * size / bandwidth + 2 * (n - 1) * latency


def crossover(step, size, bandwidth, latency, global_batch=None):
    """The smallest N at which the allreduce takes at least the compute of a step: each
    machine computing 64 rows (``global_batch`` None) or its 1/N of ``global_batch`` rows
    (compute taken as proportional to rows)."""
    n = 2
    while n < 10 ** 6:
        compute = step if global_batch is None else step * global_batch / (64 * n)
        if ring_allreduce_seconds(n, size, bandwidth, latency) >= compute:
            return n
        n += 1
    return None


def cost_model():
    print("| case | gradient | network | allreduce N=2 / 8 / 64 | x step (64 rows per "
          "machine) at N=64 | allreduce = compute at N: 64 rows per machine | "
          "global batch 1024 |")
    print("|---|---|---|---|---|---|---|")
    for case, step in STEP_SECONDS.items():
        size = gradient_bytes(case)
        for name, bandwidth, latency in NETWORKS:
            times = [ring_allreduce_seconds(n, size, bandwidth, latency) for n in (2, 8, 64)]
            print(f"| {case} | {size / 1e6:.2f} MB | {name} | "
                  + " / ".join(f"{t * 1e3:.2f}" for t in times) + " ms | "
                  f"{times[2] / step:.1%} | {crossover(step, size, bandwidth, latency)} | "
                  f"{crossover(step, size, bandwidth, latency, 1024)} |")


def worker(case, steps, reps, threads=None):
    import numpy as np
    from mpi4py import MPI

    import cgru
    strategy = cgru.distributed.MPIStrategy()
    cores = os.cpu_count() or 1
    cgru.set_num_threads(threads or max(1, cores // strategy.local_size))
    T, B, I, H = CASES[case]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B * steps, T, I)).astype(np.float32)
    y = rng.standard_normal((B * steps, 1)).astype(np.float32)
    model = cgru.Sequential([cgru.GRU(H, input_shape=(T, I), seed=1), cgru.Dense(1, seed=2)])
    model.compile(optimizer=cgru.optimizers.SGD(1e-4), loss="mse")
    model.fit(x[:2 * B], y[:2 * B], batch_size=B, epochs=1, shuffle=False, verbose=0,
              distribute=strategy)
    best = float("inf")
    for _ in range(reps):
        strategy.comm.Barrier()
        start = time.perf_counter()
        model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0, distribute=strategy)
        best = min(best, strategy.comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
    n_params = sum(w.size for w in model.trainable_weights)
    buffer = np.ones(n_params, np.float32)
    times = []
    for _ in range(30):
        strategy.comm.Barrier()
        start = time.perf_counter()
        strategy.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        times.append(time.perf_counter() - start)
    allreduce = strategy.comm.allreduce(float(np.median(times)), op=MPI.MAX)
    if strategy.rank == 0:
        print(json.dumps({"case": case, "ranks": strategy.size,
                          "threads": cgru.get_num_threads(), "params": int(n_params),
                          "samples_per_s": B * steps / best, "step_s": best / steps,
                          "allreduce_s": allreduce}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--cases", default="medium,large")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int,
                        help="threads per rank (default: the cores / the ranks)")
    parser.add_argument("--json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--cost-model", action="store_true")
    args = parser.parse_args()
    if args.cost_model:
        return cost_model()
    if args.worker:
        return worker(args.worker, args.steps, args.reps, args.threads)
    search = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    mpiexec = shutil.which("mpiexec", path=search)
    if mpiexec is None:
        sys.exit("no mpiexec: pip install \".[mpi]\" (mpi4py and mpich)")
    rows = []
    for case in args.cases.split(","):
        for n in map(int, args.ranks.split(",")):
            threads = str(args.threads or max(1, (os.cpu_count() or 1) // n))
            env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
            out = subprocess.run([mpiexec, "-n", str(n), sys.executable, "-m", "mpi4py",
                                  os.path.abspath(__file__), "--worker", case,
                                  "--steps", str(args.steps), "--reps", str(args.reps),
                                  "--threads", threads],
                                 env=env, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| case | ranks x threads | params | samples/s | step | allreduce | allreduce/step |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['ranks']} x {r['threads']} | {r['params']:,} | "
              f"{r['samples_per_s']:.0f} | {r['step_s'] * 1e3:.1f} ms | "
              f"{r['allreduce_s'] * 1e3:.2f} ms | "
              f"{100 * r['allreduce_s'] / r['step_s']:.1f}% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

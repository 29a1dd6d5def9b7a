#!/usr/bin/env python
"""Time one ``empty()`` of cgru's buffer pool and the release of its array, with N other
pooled arrays in use, as the kernels' calls leave them (a cache, results, a user's views).

    python benchmarks/pool_cost.py                     # cgru/_pool.py of this checkout
    python benchmarks/pool_cost.py --pool other_pool.py --in-use 10,30

``--pool`` times another version of the module (for instance one taken with ``git show
REV:cgru/_pool.py > other_pool.py``), so that two versions can be compared in one run.
Printed: the best of several repeats, in microseconds per empty() + release.
"""
import argparse
import importlib.util
import os
import timeit

import numpy as np

MIB = 1 << 20


def load_pool_module(path):
    """The module at path (a _pool.py), imported under a name of its own."""
    name = "pool_under_test_%d" % abs(hash(path))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pool_with_arrays_in_use(pool_class, in_use):
    """A pool, and `in_use` arrays from it (of sizes 1 to 2 MiB, each its own) held."""
    pool = pool_class(max_idle_bytes=1 << 30, max_buffers=max(32, 2 * in_use))
    held = [pool.empty((MIB + i * MIB // (in_use + 1),), np.uint8) for i in range(in_use)]
    return pool, held


def take_and_drop(pool):
    """One empty() whose array dies at once (its buffer goes back to the pool)."""
    pool.empty((MIB // 4,), np.float32)


def best_costs(pools, number, repeat):
    """Microseconds per take_and_drop, the best of `repeat` runs; the pools take turns in each
    run, so that load from elsewhere on the machine hits them alike."""
    best = [float("inf")] * len(pools)
    for _ in range(repeat):
        for i, pool in enumerate(pools):
            seconds = timeit.timeit(lambda: take_and_drop(pool), number=number)
            best[i] = min(best[i], seconds / number * 1e6)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    default_pool = os.path.join(here, os.pardir, "cgru", "_pool.py")
    parser.add_argument("--pool", action="append",
                        help="a _pool.py to time (repeatable; default: this checkout's)")
    parser.add_argument("--in-use", default="10,30", help="numbers of arrays held meanwhile")
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    paths = args.pool or [default_pool]
    counts = [int(n) for n in args.in_use.split(",")]
    classes = [load_pool_module(os.path.abspath(path)).BufferPool for path in paths]
    table = []                                  # table[count][path]
    for count in counts:
        pools_and_arrays = [pool_with_arrays_in_use(cls, count) for cls in classes]
        table.append(best_costs([pool for pool, _ in pools_and_arrays], args.number,
                                args.repeat))
    print("in use  " + "  ".join(f"{n:>8}" for n in counts) + "   (us per empty + release)")
    for i, path in enumerate(paths):
        print(f"{'':8}" + "  ".join(f"{row[i]:8.2f}" for row in table)
              + f"   {os.path.relpath(path)}")


if __name__ == "__main__":
    main()

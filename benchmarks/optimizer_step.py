#!/usr/bin/env python
"""Time one optimizer step (``optimizer.apply``) on the quickstart model's weights.

    python benchmarks/optimizer_step.py            # after build_ext --inplace, from the root
    python benchmarks/optimizer_step.py --repeat 500

The quickstart model (GRU(32) on 20 features + Dense(1)) has 5 weights: (20, 96), (32, 96),
(2, 96), (32, 1), (1,). Three layouts are timed, float32:
  separate     5 independent arrays for weights and gradients;
  flat weights the weights are views into one buffer (``cgru.optimizers.flat_arrays``), the
               gradients separate arrays;
  flat both    weights and gradients both from ``flat_arrays`` (the gradient list's ``flat``
               buffer is read directly).
Reported: the minimum and the median over repetitions of the thread CPU time per step (the
machine is shared; the minimum is the steadier figure). Compare rows only within one run.
"""
import argparse
import time
import timeit

import numpy as np

from cgru import optimizers

SHAPES = [(20, 96), (32, 96), (2, 96), (32, 1), (1,)]
CASES = {
    "SGD": lambda: optimizers.SGD(),
    "SGD(momentum=0.9)": lambda: optimizers.SGD(momentum=0.9),
    "Adam": lambda: optimizers.Adam(),
    "Adam(clipnorm=1)": lambda: optimizers.Adam(clipnorm=1.0),
    "RMSprop": lambda: optimizers.RMSprop(),
}


def _arrays(layout, rng):
    """(weights, gradients) for one layout, filled with random numbers."""
    if layout == "separate":
        return tuple([rng.standard_normal(s).astype(np.float32) for s in SHAPES]
                     for _ in range(2))
    weights, grads = optimizers.flat_arrays(SHAPES), optimizers.flat_arrays(SHAPES)
    weights.flat[:] = rng.standard_normal(weights.flat.size)
    grads.flat[:] = rng.standard_normal(grads.flat.size)
    return weights, (grads if layout == "flat both" else list(grads))


def _time_step(optimizer, weights, grads, repeat, number=50):
    optimizer.apply(weights, grads)
    timer = timeit.Timer(lambda: optimizer.apply(weights, grads), timer=time.thread_time)
    per_step = np.array(timer.repeat(number=number, repeat=repeat)) / number * 1e6
    return per_step.min(), np.median(per_step)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    layouts = ("separate", "flat weights", "flat both")
    print(f"{'us per step: min (median)':26s}" + "".join(f"{name:>20s}" for name in layouts))
    for name, make in CASES.items():
        cells = [_time_step(make(), *_arrays(layout, rng), args.repeat) for layout in layouts]
        print(f"{name:26s}" + "".join(f"{lo:11.1f} ({med:5.1f})" for lo, med in cells))


if __name__ == "__main__":
    main()

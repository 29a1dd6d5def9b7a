#!/usr/bin/env python
"""The cost of the GRU layer's options over the plain call: cgru's GRU layer against Keras 3's
(TensorFlow), on the CPU, in one run.

    python setup.py build_ext --inplace
    python benchmarks/options.py                        # medium case, 1 thread
    python benchmarks/options.py --threads 2 --reps 9 --options plain,mask,recurrent_dropout

Options (each a GRU(H, return_sequences=True) layer on (B, T, I) float32 inputs):
  plain              no mask, no dropout;
  mask               a (B, T) mask with random holes (each step masked with probability
                     --holes), passed as the call's `mask=`;
  recurrent_dropout  recurrent_dropout=0.2 (training only: cgru's inference is the plain
                     call; Keras's runs its implementation 1, a product per gate, anyway);
  dropout            dropout=0.2 (with recurrent_dropout: one input mask per gate, as Keras);
  activations        a non-default pair: activation="relu", recurrent_activation="hard_sigmoid";
  options joined by "+" combine.
Modes: infer (the layer's forward) and train (forward and backward of sum(y * gy) with
respect to the input and every weight: cgru's layer protocol, forward(need_grad=True) then
backward; Keras through tf.GradientTape in a tf.function).

Each system runs in its own process with the thread count set before the libraries load.
`--clock cpu` times the process's CPU time instead of the elapsed time: on a machine that
other work shares, a process waiting for a core does not count, so the ratios hold better.
Inside a process the options take turns, one timed repetition each in a rotating order, so
that the ratios to the plain call (the figures this script is for) see the same machine
load; printed: the median and (in brackets) the minimum time per call, and option / plain
on the medians.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CASES = {"small": (50, 32, 64, 128), "medium": (100, 64, 128, 256)}     # (T, B, I, H)
OPTIONS = ("plain", "mask", "recurrent_dropout", "mask+recurrent_dropout",
           "mask+dropout+recurrent_dropout", "activations",
           "activations+mask+recurrent_dropout")
# the non-default activation pair of the "activations" option
PAIR = dict(activation="relu", recurrent_activation="hard_sigmoid")
MODES = ("infer", "train")


def data(case, holes):
    import numpy as np
    T, B, I, H = CASES[case]
    rng = np.random.default_rng([7, T, B, I, H])
    x = rng.standard_normal((B, T, I)).astype("float32")
    gy = rng.standard_normal((B, T, H)).astype("float32")
    mask = rng.random((B, T)) >= holes
    return x, gy, mask


def cgru_runners(case, holes):
    sys.path.insert(0, ROOT)
    import cgru
    x, gy, mask = data(case, holes)
    H = CASES[case][3]
    runners = {}
    for option in OPTIONS:
        flags = option.split("+")
        layer = cgru.GRU(H, return_sequences=True, seed=0,
                         dropout=0.2 if "dropout" in flags else 0.0,
                         recurrent_dropout=0.2 if "recurrent_dropout" in flags else 0.0,
                         **(PAIR if "activations" in flags else {}))
        layer.build(x.shape[1:])
        m = mask if "mask" in flags else None

        def infer(layer=layer, m=m):
            layer.forward(x, training=False, mask=m)

        def train(layer=layer, m=m):
            _, ctx = layer.forward(x, training=True, mask=m, need_grad=True)
            layer.backward(gy, ctx)

        runners[option] = {"infer": infer, "train": train}
    return runners, {"cgru": cgru.__version__}


def keras_runners(case, holes, threads):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras
    x, gy, mask = data(case, holes)
    H = CASES[case][3]
    x, gy, mask_t = tf.constant(x), tf.constant(gy), tf.constant(mask)
    runners = {}
    for option in OPTIONS:
        flags = option.split("+")
        layer = keras.layers.GRU(H, return_sequences=True, seed=0,
                                 dropout=0.2 if "dropout" in flags else 0.0,
                                 recurrent_dropout=0.2 if "recurrent_dropout" in flags else 0.0,
                                 **(PAIR if "activations" in flags else {}))
        layer.build(x.shape)
        m = mask_t if "mask" in flags else None

        @tf.function
        def infer(layer=layer, m=m):
            return layer(x, training=False, mask=m)

        @tf.function
        def train(layer=layer, m=m):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x, training=True, mask=m) * gy)
            return tape.gradient(loss, [x] + layer.trainable_weights)

        runners[option] = {"infer": infer, "train": train}
    return runners, {"keras": keras.__version__, "tensorflow": tf.__version__}


def worker(system, case, holes, threads, reps, target, modes, options, clock):
    if system == "cgru":
        runners, versions = cgru_runners(case, holes)
    else:
        runners, versions = keras_runners(case, holes, threads)
    try:
        import threadpoolctl
        threadpoolctl.threadpool_limits(threads)
    except ImportError:
        pass
    now = time.process_time if clock == "cpu" else time.perf_counter
    results = {}
    for mode in modes:
        calls = {}
        for option in options:      # warm up, and calls per repetition for `target` seconds
            run = runners[option][mode]
            run()
            t0 = now()
            run()
            calls[option] = max(1, round(target / max(now() - t0, 1e-6)))
        times = {option: [] for option in options}
        for rep in range(reps):
            turn = options[rep % len(options):] + options[:rep % len(options)]
            for option in turn:
                run, n = runners[option][mode], calls[option]
                t0 = now()
                for _ in range(n):
                    run()
                times[option].append((now() - t0) / n)
        results[mode] = times
    return {"versions": versions, "times": results}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="medium", choices=sorted(CASES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--target", type=float, default=0.5, help="seconds per repetition")
    p.add_argument("--holes", type=float, default=0.2,
                   help="probability that a step is masked (mask options)")
    p.add_argument("--systems", default="cgru,keras")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--options", default=",".join(OPTIONS))
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time; cpu: the process's CPU time (all its threads), "
                        "steadier than wall time on a machine that other work shares")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    modes, options = args.modes.split(","), args.options.split(",")
    if args.worker:
        out = worker(args.worker, args.case, args.holes, args.threads, args.reps, args.target,
                     modes, options, args.clock)
        print("RESULT " + json.dumps(out))
        return
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    T, B, I, H = CASES[args.case]
    print(f"case {args.case} (T, B, I, H) = {(T, B, I, H)}, threads {args.threads}, "
          f"holes {args.holes}, reps {args.reps}, clock {args.clock}")
    rows = []
    for system in args.systems.split(","):
        proc = subprocess.run([sys.executable, __file__, "--worker", system] + [
            a for a in (argv if argv is not None else sys.argv[1:])], env=env,
            capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(f"{system}: failed\n{proc.stderr[-2000:]}")
            continue
        out = json.loads(line[-1][len("RESULT "):])
        print(f"{system}: {out['versions']}")
        for mode in modes:
            times = out["times"][mode]
            plain = statistics.median(times["plain"]) if "plain" in times else None
            for option in options:
                med, low = statistics.median(times[option]), min(times[option])
                rows.append((mode, system, option, med, low,
                             None if plain is None else med / plain))
    print("\n| mode | system | option | median ms (min) | x plain |")
    print("|---|---|---|---|---|")
    for mode, system, option, med, low, r in sorted(rows, key=lambda r: (r[0], r[1])):
        ratio = "" if r is None else f"{r:.2f}"
        print(f"| {mode} | {system} | {option} | {med * 1e3:.2f} ({low * 1e3:.2f}) | {ratio} |")


if __name__ == "__main__":
    main()

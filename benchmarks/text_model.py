#!/usr/bin/env python
"""The layers around the GRU: their share of a training step, in cgru, PyTorch and Keras.

    python benchmarks/text_model.py                      # 2 threads, 15 repetitions
    python benchmarks/text_model.py --threads 1 --reps 25

A text model as public Keras scripts write it, Embedding -> Conv1D -> GRU -> Dense:

    Embedding(VOCAB, EMBED) -> Conv1D(FILTERS, KERNEL, padding="same", activation="relu")
        -> GRU(UNITS) -> Dense(1, activation="sigmoid"),  binary crossentropy, Adam

and the same model without its first two layers (GRU -> Dense on the Conv1D's output shape).
Each system runs in its own worker process, with the thread count set before its libraries
load; the parent asks the workers in turn, in a rotating order, for one training step
(forward, backward, optimizer update) of one of the two models. The share of Embedding and
Conv1D is 1 - t(GRU -> Dense) / t(full), from medians. Only ratios within one run mean
anything on a shared machine.
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
SHAPE = dict(batch=64, steps=100, vocab=10000, embed=128, filters=128, kernel=5, units=256)
SYSTEMS = ("cgru", "torch", "keras")


def data():
    import numpy as np
    rng = np.random.default_rng(11)
    B, T = SHAPE["batch"], SHAPE["steps"]
    ids = rng.integers(1, SHAPE["vocab"], (B, T)).astype("int64")
    features = rng.standard_normal((B, T, SHAPE["filters"])).astype("float32")
    y = (rng.random((B, 1)) > 0.5).astype("float32")
    return ids, features, y


def keras_style_steps(lib):
    """Training steps of the two models for a library with Keras's API (cgru or keras)."""
    L = lib.layers
    ids, features, y = data()

    def build(full):
        layers = ([L.Input((SHAPE["steps"],)),
                   L.Embedding(SHAPE["vocab"], SHAPE["embed"]),
                   L.Conv1D(SHAPE["filters"], SHAPE["kernel"], padding="same",
                            activation="relu")] if full else
                  [L.Input((SHAPE["steps"], SHAPE["filters"]))])
        model = lib.Sequential(layers + [L.GRU(SHAPE["units"]),
                                         L.Dense(1, activation="sigmoid")])
        model.compile(optimizer="adam", loss="binary_crossentropy")
        return model

    full, rnn_only = build(True), build(False)
    return (lambda: full.train_on_batch(ids, y)), (lambda: rnn_only.train_on_batch(features, y))


def torch_steps():
    import numpy as np
    import torch
    ids, features, y = data()
    ids, features, y = torch.from_numpy(ids), torch.from_numpy(features), torch.from_numpy(y)

    class Model(torch.nn.Module):
        def __init__(self, full):
            super().__init__()
            self.full = full
            if full:
                self.embedding = torch.nn.Embedding(SHAPE["vocab"], SHAPE["embed"])
                self.conv = torch.nn.Conv1d(SHAPE["embed"], SHAPE["filters"], SHAPE["kernel"],
                                            padding="same")
            self.gru = torch.nn.GRU(SHAPE["filters"], SHAPE["units"], batch_first=True)
            self.dense = torch.nn.Linear(SHAPE["units"], 1)

        def forward(self, x):
            if self.full:
                # Conv1d is channels-first: (B, C, T)
                x = torch.relu(self.conv(self.embedding(x).transpose(1, 2))).transpose(1, 2)
            _, h_n = self.gru(x)
            return self.dense(h_n[0])

    def step_of(model, x):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()

        def step():
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        return step

    del np
    return step_of(Model(True), ids), step_of(Model(False), features)


def worker(system, threads):
    """Runs in its own process: builds the two models, warms them up, then times one step of
    the model the parent names on each line of stdin ("full" or "rnn_only")."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if system == "cgru":
        sys.path.insert(0, ROOT)
        import cgru
        cgru.set_num_threads(threads)
        steps = keras_style_steps(cgru)
    elif system == "keras":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        import keras
        steps = keras_style_steps(keras)
    else:
        import torch
        torch.set_num_threads(threads)
        steps = torch_steps()
    steps = dict(zip(("full", "rnn_only"), steps))
    for _ in range(3):
        steps["full"](), steps["rnn_only"]()
    print("ready", flush=True)
    for line in sys.stdin:
        start = time.perf_counter()
        steps[line.strip()]()
        print(time.perf_counter() - start, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads)
        return
    workers = {}
    for system in args.systems.split(","):
        proc = subprocess.Popen([sys.executable, __file__, "--worker", system, "--threads",
                                 str(args.threads)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        if proc.stdout.readline().strip() != "ready":
            print(f"{system}: failed to start")
            continue
        workers[system] = proc
    # one step at a time, the systems and models taking turns in a rotating order, so that
    # a busy moment of a shared machine falls on all of them alike
    times = {system: {"full": [], "rnn_only": []} for system in workers}
    order = [(system, model) for system in workers for model in ("full", "rnn_only")]
    for rep in range(args.reps):
        for system, model in order[rep % len(order):] + order[:rep % len(order)]:
            proc = workers[system]
            proc.stdin.write(model + "\n")
            proc.stdin.flush()
            times[system][model].append(float(proc.stdout.readline()))
            time.sleep(0.1)
    for proc in workers.values():
        proc.stdin.close()
        proc.wait()
    results = {system: {m: statistics.median(v) for m, v in t.items()}
               for system, t in times.items()}
    print(f"shape {SHAPE}, {args.threads} threads, median of {args.reps} steps")
    print(f"{'system':8s} {'full step ms':>13s} {'GRU->Dense ms':>14s} "
          f"{'Embedding+Conv1D share':>23s} {'full step vs cgru':>18s}")
    for system, r in results.items():
        share = 1 - r["rnn_only"] / r["full"]
        ratio = r["full"] / results["cgru"]["full"] if "cgru" in results else float("nan")
        print(f"{system:8s} {1e3 * r['full']:13.2f} {1e3 * r['rnn_only']:14.2f} "
              f"{100 * share:22.1f}% {ratio:17.2f}x")


if __name__ == "__main__":
    main()

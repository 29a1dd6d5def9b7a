"""Scenarios for tests/test_distributed.py, run under ``mpiexec -n 2 python -m mpi4py``.

``python -m mpi4py _mpi_worker.py SCENARIO OUT_DIR [OPTIMIZER]``: every rank writes what it
ends with to ``OUT_DIR/<scenario>-rank<r>.npz``. ``make_model`` and ``make_data`` are shared
with the test, which computes the one-process references.
"""
import os
import sys

import numpy as np

import cgru
from cgru import callbacks as cb

N_SAMPLES, BATCH, EPOCHS = 37, 8, 6         # 37 = 4 x 8 + 5: an uneven last batch


def make_data(seed=0, n=N_SAMPLES):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=(n,))
    x_val = rng.standard_normal((11, 5, 3)).astype(np.float32)
    y_val = rng.integers(0, 3, size=(11,))
    return x, y, x_val, y_val


def make_model(optimizer="adam", dropout=0.25):
    layers = [cgru.GRU(6, input_shape=(5, 3), seed=1, dropout=dropout)]
    if dropout:
        layers.append(cgru.Dropout(dropout, seed=2))
    layers.append(cgru.Dense(3, activation="softmax", seed=4))
    model = cgru.Sequential(layers, seed=3)
    opt = (cgru.optimizers.Adam(0.01) if optimizer == "adam"
           else cgru.optimizers.SGD(0.1, momentum=0.9))
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def make_two_input_data(seed=1, n=N_SAMPLES):
    """Inputs by name (a sequence and a vector per sample) and targets of two outputs."""
    rng = np.random.default_rng(seed)
    x = {"seq": rng.standard_normal((n, 5, 3)).astype(np.float32),
         "vec": rng.standard_normal((n, 4)).astype(np.float32)}
    y = [rng.integers(0, 3, size=(n,)), rng.standard_normal((n, 2)).astype(np.float32)]
    sample_weight = rng.uniform(0.5, 2.0, size=(n,))
    return x, y, sample_weight


def make_two_input_model(optimizer="adam"):
    """A functional model: two inputs (a GRU over one, a Dense over the other) concatenated,
    two outputs with their own losses, loss weights and metrics."""
    seq = cgru.Input(shape=(5, 3), name="seq")
    vec = cgru.Input(shape=(4,), name="vec")
    joined = cgru.layers.Concatenate()([cgru.GRU(6, seed=11)(seq),
                                        cgru.Dense(4, activation="tanh", seed=12)(vec)])
    classes = cgru.Dense(3, activation="softmax", seed=13, name="classes")(joined)
    values = cgru.Dense(2, seed=14, name="values")(joined)
    model = cgru.Model({"seq": seq, "vec": vec}, [classes, values], seed=15)
    opt = (cgru.optimizers.Adam(0.01) if optimizer == "adam"
           else cgru.optimizers.SGD(0.1, momentum=0.9))
    model.compile(optimizer=opt, loss=["sparse_categorical_crossentropy", "mse"],
                  loss_weights=[1.0, 0.5], metrics={"classes": ["accuracy"]},
                  weighted_metrics={"values": ["mae"]})
    return model


def fit_callbacks(out_dir):
    """EarlyStopping that stops after epoch index 3 (no later epoch improves by 10) and a
    checkpoint of the best validation loss."""
    return [cb.EarlyStopping(monitor="val_loss", min_delta=10.0, patience=0,
                             start_from_epoch=3),
            cb.ModelCheckpoint(os.path.join(out_dir, "best.npz"), monitor="val_loss",
                               save_best_only=True)]


class Batches(cgru.utils.PyDataset):
    """The global batches of (x, y), ``BATCH`` rows each (the last one shorter)."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return -(-len(self.x) // BATCH)

    def __getitem__(self, i):
        return self.x[i * BATCH:(i + 1) * BATCH], self.y[i * BATCH:(i + 1) * BATCH]


def main():
    scenario, out_dir = sys.argv[1], sys.argv[2]
    optimizer = sys.argv[3] if len(sys.argv) > 3 else "adam"
    strategy = cgru.distributed.MPIStrategy()
    rank = strategy.rank
    out = {"size": strategy.size}
    x, y, x_val, y_val = make_data()
    if scenario == "fit":
        model = make_model(optimizer)
        history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS,
                            validation_data=(x_val, y_val), callbacks=fit_callbacks(out_dir),
                            verbose=2, distribute=strategy)
        for key, values in history.history.items():
            out["history_" + key] = np.array(values)
        out["evaluate"] = np.array(model.evaluate(x_val, y_val, batch_size=4,
                                                  distribute=strategy))
        out["predict"] = model.predict(x_val, batch_size=4, distribute=strategy)
        root_only = model.predict(x_val, batch_size=4, distribute=cgru.distributed.MPIStrategy(
            predict_on="root"))
        out["predict_root_is_none"] = root_only is None
        if root_only is not None:
            out["predict_root"] = root_only
    elif scenario == "bitwise":
        model = make_model(optimizer, dropout=0.0)
        model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, distribute=strategy)
    elif scenario == "two_inputs":
        model = make_two_input_model(optimizer)
        x2, y2, sw2 = make_two_input_data()
        history = model.fit(x2, y2, sample_weight=sw2, batch_size=BATCH, epochs=2, verbose=0,
                            distribute=strategy)
        for key, values in history.history.items():
            out["history_" + key] = np.array(values)
        out["evaluate"] = np.array(model.evaluate(x2, y2, sample_weight=sw2, batch_size=4,
                                                  distribute=strategy))
        for i, y_pred in enumerate(model.predict(x2, batch_size=4, distribute=strategy)):
            out[f"predict{i}"] = y_pred
    elif scenario == "fail":
        model = make_model(optimizer)

        def fail(epoch, logs):
            if rank == 1 and epoch == 1:
                raise RuntimeError("rank 1 fails on purpose")
        model.fit(x, y, batch_size=BATCH, epochs=50, verbose=0, distribute=strategy,
                  callbacks=[cb.LambdaCallback(on_epoch_end=fail)])
    elif scenario == "shapes":
        model = make_model(optimizer)
        rows = N_SAMPLES - rank                # rank 1 passes one row less
        try:
            model.fit(x[:rows], y[:rows], batch_size=BATCH, verbose=0, distribute=strategy)
            out["error"] = ""
        except ValueError as e:
            out["error"] = str(e)
    elif scenario == "more":
        # a PyDataset of the global batches, shuffled by batch with the shared generator
        model = make_model(optimizer)
        model.fit(Batches(x, y), epochs=2, verbose=0, distribute=strategy)
        out["dataset_weights"] = np.concatenate([w.ravel() for w in model.get_weights()])
        # a non-finite loss on one rank's share stops every rank, before the update
        model = make_model(optimizer)
        bad = x.copy()
        bad[BATCH - 1] = np.nan                 # the last row of the first batch: rank 1's
        history = model.fit(bad, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                            distribute=strategy)
        out["nan_loss"] = np.array(history.history["loss"])
    elif scenario == "tiny":
        # 9 rows in batches of 4 on 3 ranks: the last batch's single row leaves two ranks
        # without rows
        model = make_model(optimizer)
        model.fit(x[:9], y[:9], batch_size=4, epochs=3, verbose=0, distribute=strategy)
    elif scenario == "threads":
        import warnings
        cgru.set_num_threads(os.cpu_count())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            threads, ranks, cores, _ = strategy.check_threads()
        out.update(threads=threads, local_size=ranks, cores=cores,
                   warning=" ".join(str(w.message) for w in caught))
    else:
        raise ValueError(f"unknown scenario {scenario!r}")
    if scenario not in ("shapes", "threads", "more"):
        for i, w in enumerate(model.get_weights()):
            out[f"w{i}"] = w
    np.savez(os.path.join(out_dir, f"{scenario}-rank{rank}.npz"), **out)


if __name__ == "__main__":
    main()

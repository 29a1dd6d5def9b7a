"""The README's data-parallel example: run with `mpiexec -n 4 python -m mpi4py train_mpi.py`,
`srun --ntasks=4 python -m mpi4py train_mpi.py`, or `python train_mpi.py` (one process)."""
import numpy as np
import cgru
from cgru import Sequential, GRU, Dense, Dropout
from cgru.callbacks import EarlyStopping, ModelCheckpoint

strategy = cgru.distributed.MPIStrategy()   # rank 0 of 1 when run without MPI
rng = np.random.default_rng(0)              # every rank passes the same arrays
x = rng.standard_normal((4096, 50, 16)).astype(np.float32)
y = (x[:, :, 0].mean(axis=1) > 0).astype(np.float32)[:, None]
x_val, y_val = x[-512:], y[-512:]

model = Sequential([GRU(64, input_shape=(50, 16), dropout=0.1, seed=1),
                    Dropout(0.2, seed=2), Dense(1, activation="sigmoid", seed=3)], seed=4)
model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
model.fit(x[:-512], y[:-512], batch_size=256, epochs=20,     # batch_size: the global batch
          validation_data=(x_val, y_val), distribute=strategy,
          callbacks=[EarlyStopping(patience=3, restore_best_weights=True),
                     ModelCheckpoint("best.npz", save_best_only=True)])   # written by rank 0
loss, accuracy = model.evaluate(x_val, y_val, distribute=strategy)
y_pred = model.predict(x_val, distribute=strategy)             # the full array on every rank
if strategy.rank == 0:
    print(f"{strategy.size} ranks: validation accuracy {accuracy:.4f}")

"""A task that needs memory: the label is the sign of the first step's first feature,
followed by 29 steps of noise. A GRU must carry one bit across 30 steps."""
import numpy as np

from cgru import GRU, Dense, Sequential
from cgru.callbacks import Callback
from cgru.optimizers import Adam

T, I = 30, 1


def _task(n, rng):
    x = rng.standard_normal((n, T, I)).astype(np.float32)
    y = (x[:, 0, 0] > 0).astype(np.float32)
    return x, y


class StopAtAccuracy(Callback):
    def __init__(self, target):
        super().__init__()
        self.target = target

    def on_epoch_end(self, epoch, logs=None):
        if logs["val_accuracy"] >= self.target:
            self.model.stop_training = True


def test_gru_learns_to_remember_the_first_step():
    rng = np.random.default_rng(1)
    x_train, y_train = _task(2000, rng)
    x_val, y_val = _task(500, rng)
    x_test, y_test = _task(1000, rng)
    model = Sequential([GRU(16, input_shape=(T, I), seed=2),
                        Dense(1, activation="sigmoid", seed=2)], seed=3)
    model.compile(loss="binary_crossentropy", optimizer=Adam(learning_rate=0.02),
                  metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=40, batch_size=32, verbose=0,
                        validation_data=(x_val, y_val), callbacks=[StopAtAccuracy(0.98)])
    loss, accuracy = model.evaluate(x_test, y_test)  # held-out, never used in training
    assert accuracy >= 0.95, (accuracy, history.history["val_accuracy"])
    # the metric agrees with a direct count on the predictions
    direct = np.mean((model.predict(x_test)[:, 0] > 0.5) == (y_test > 0.5))
    assert abs(direct - accuracy) < 1e-9

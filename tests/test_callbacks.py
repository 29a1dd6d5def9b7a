import numpy as np
import pytest

from cgru.callbacks import EarlyStopping, History, ModelCheckpoint
from cgru._progress import Progbar


class FakeModel:
    def __init__(self):
        self.w = 0
        self.stop_training = False
        self.saved = []

    def get_weights(self):
        return [np.array(self.w)]

    def set_weights(self, ws):
        self.w = int(ws[0])

    def save(self, path):
        self.saved.append(path)


def _drive(cb, values, key="val_loss"):
    model = FakeModel()
    cb.set_model(model)
    cb.on_train_begin()
    epochs = 0
    for epoch, v in enumerate(values):
        model.w = epoch
        cb.on_epoch_end(epoch, {key: v})
        epochs += 1
        if model.stop_training:
            break
    cb.on_train_end()
    return model, epochs


def test_early_stopping_patience_and_restore():
    model, epochs = _drive(EarlyStopping(patience=2, restore_best_weights=True),
                           [1.0, 0.5, 0.6, 0.7, 0.1])
    assert epochs == 4 and model.w == 1  # best epoch index 1 restored
    model, epochs = _drive(EarlyStopping(patience=2), [1.0, 0.5, 0.6, 0.7, 0.1])
    assert epochs == 4 and model.w == 3


def test_early_stopping_mode_auto_for_accuracy_and_min_delta():
    _, epochs = _drive(EarlyStopping(monitor="val_accuracy", patience=1),
                       [0.5, 0.6, 0.7, 0.65], key="val_accuracy")
    assert epochs == 4
    _, epochs = _drive(EarlyStopping(patience=1, min_delta=0.1), [1.0, 0.95, 0.9, 0.5])
    assert epochs == 2


def test_early_stopping_warns_on_missing_monitor():
    with pytest.warns(UserWarning, match="val_loss"):
        _drive(EarlyStopping(), [1.0], key="loss")


def test_model_checkpoint_best_only_and_format(tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "m-{epoch:02d}-{val_loss:.1f}.npz"),
                         save_best_only=True)
    model, _ = _drive(cb, [1.0, 0.5, 0.6, 0.2])
    assert [p.rsplit("/", 1)[-1] for p in model.saved] == \
        ["m-01-1.0.npz", "m-02-0.5.npz", "m-04-0.2.npz"]


def test_history_collects_logs():
    h = History()
    h.on_train_begin()
    h.on_epoch_end(0, {"loss": 1.0, "accuracy": 0.5})
    h.on_epoch_end(1, {"loss": 0.5, "accuracy": 0.7})
    assert h.history == {"loss": [1.0, 0.5], "accuracy": [0.5, 0.7]} and h.epoch == [0, 1]


class _Stream:
    def __init__(self, tty):
        self.tty, self.text = tty, ""

    def isatty(self):
        return self.tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progbar_tty_redraws_in_place():
    s = _Stream(True)
    bar = Progbar(4, stream=s, interval=0)
    for i in range(1, 5):
        bar.update(i, [("loss", 0.69), ("accuracy", 0.5)])
    frames = s.text.split("\r")[1:]
    assert len(frames) == 4 and s.text.endswith("\n") and s.text.count("\n") == 1
    assert frames[0].startswith("1/4 [" + "=" * 6 + ">" + "." * 23 + "]") and "ETA:" in frames[0]
    assert "- loss: 0.6900 - accuracy: 0.5000" in frames[0]
    assert frames[3].startswith("4/4 [" + "=" * 30 + "]") and "/step" in frames[3]


def test_progbar_plain_lines_without_tty():
    s = _Stream(False)
    bar = Progbar(3, stream=s)
    for i in range(1, 4):
        bar.update(i, [("loss", 0.5)])
    lines = s.text.splitlines()
    assert "\r" not in s.text and len(lines) == 3
    assert lines[-1].startswith("3/3 [") and "loss: 0.5000" in lines[-1]

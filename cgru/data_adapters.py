"""Where ``fit``, ``evaluate`` and ``predict`` take their batches from: NumPy arrays, Python
generators and iterables, and ``PyDataset``s, as Keras 3 accepts them.

Every source becomes an adapter with ``num_batches`` (None when unknown: a generator) and
``batches()``, a fresh iterator over one pass of ``(x, y, sample_weight)`` tuples;
``EpochIterator`` cuts passes into epochs of ``steps_per_epoch`` steps as Keras's does: with
``steps_per_epoch`` one iterator runs on across epochs (for a generator, until it ends);
without it, each epoch is one whole pass.
"""
import math
import warnings

import numpy as np

__all__ = ["make_adapter", "EpochIterator", "is_batch_source"]


def is_batch_source(x):
    """Is ``x`` a generator, an iterator, a PyDataset or another iterable of batches (not an
    array, a list or a dict of arrays)?"""
    if isinstance(x, (np.ndarray, list, tuple, dict, str, bytes)) or x is None:
        return False
    if hasattr(x, "__getitem__") and hasattr(x, "__len__") and not hasattr(x, "shape"):
        return True                                     # a PyDataset or keras.utils.Sequence
    return hasattr(x, "__next__") or (hasattr(x, "__iter__") and not hasattr(x, "shape"))


def take_rows(data, rows):
    """``rows`` of an array, or of each array in a list (None stays None)."""
    if data is None:
        return None
    if isinstance(data, (list, tuple)):
        return [take_rows(d, rows) for d in data]
    return data[rows]


def num_rows(data):
    """The number of samples of an array, or of a list's first array."""
    while isinstance(data, (list, tuple)):
        data = data[0]
    return data.shape[0]


class ArrayAdapter:
    """Batches of ``batch_size`` rows of arrays already checked and cast (an array, or a list
    of arrays for several inputs or outputs), shuffled each pass with ``rng`` (the model's
    seeded generator) when ``shuffle``."""

    validated = True

    def __init__(self, x, y, batch_size, shuffle=False, rng=None, sample_weight=None):
        self.x, self.y, self.batch_size, self.shuffle, self.rng = x, y, batch_size, shuffle, rng
        self.sample_weight = sample_weight
        self.num_samples = num_rows(x)
        self.num_batches = math.ceil(self.num_samples / batch_size)

    def batches(self):
        n, size = self.num_samples, self.batch_size
        order = self.rng.permutation(n) if self.shuffle else None
        for step in range(self.num_batches):
            if order is None:
                rows = slice(step * size, (step + 1) * size)
            else:
                rows = order[step * size:(step + 1) * size]
            yield (take_rows(self.x, rows), take_rows(self.y, rows),
                   take_rows(self.sample_weight, rows))

    def on_epoch_end(self):
        pass


def _standardize(batch, source):
    """A batch from a generator or PyDataset as (x, y, sample_weight)."""
    if isinstance(batch, tuple):
        if not 1 <= len(batch) <= 3:
            raise ValueError(f"{source} must yield x, (x,), (x, y) or (x, y, sample_weight); "
                             f"received a tuple of {len(batch)} items.")
        return tuple(batch) + (None,) * (3 - len(batch))
    return batch, None, None


class GeneratorAdapter:
    """A Python generator or iterable of batches: one pass runs until it is exhausted."""

    validated = False
    num_batches = None

    def __init__(self, source):
        self.source = source

    def batches(self):
        for batch in self.source:
            yield _standardize(batch, "A generator")

    def on_epoch_end(self):
        pass


class PyDatasetAdapter:
    """A PyDataset (or keras.utils.Sequence-like object): ``len(dataset)`` batches a pass,
    ``dataset[i]`` each (in a shuffled order when ``shuffle``, as Keras 3 does), and
    ``on_epoch_end()`` after every epoch."""

    validated = False

    def __init__(self, dataset, shuffle=False, rng=None):
        self.dataset, self.shuffle, self.rng = dataset, shuffle, rng
        num_batches = getattr(dataset, "num_batches", None)
        self.num_batches = len(dataset) if num_batches is None and hasattr(
            dataset, "__len__") else num_batches

    def batches(self):
        if self.num_batches is None:                # an endless dataset
            index = 0
            while True:
                yield _standardize(self.dataset[index], "A PyDataset")
                index += 1
        indices = np.arange(self.num_batches)
        if self.shuffle:
            indices = self.rng.permutation(self.num_batches)
        for index in indices:
            yield _standardize(self.dataset[int(index)], "A PyDataset")

    def on_epoch_end(self):
        if hasattr(self.dataset, "on_epoch_end"):
            self.dataset.on_epoch_end()


def make_adapter(x, y, batch_size, shuffle, rng, sample_weight=None):
    """The adapter for ``x`` (and ``y`` and ``sample_weight``: given separately only with
    arrays)."""
    if not is_batch_source(x):
        return ArrayAdapter(x, y, batch_size, shuffle, rng, sample_weight)
    if y is not None or sample_weight is not None:
        raise ValueError("`y` and `sample_weight` must not be given when `x` is a generator "
                         "or a PyDataset: it yields them with the inputs.")
    if hasattr(x, "__getitem__") and not hasattr(x, "__next__"):
        return PyDatasetAdapter(x, shuffle, rng)
    return GeneratorAdapter(x)


def _ran_out_warning():
    warnings.warn("Your input ran out of data; interrupting training. Make sure that your "
                  "dataset or generator can generate at least `steps_per_epoch * epochs` "
                  "batches.", stacklevel=3)


class EpochIterator:
    """Epochs of ``steps_per_epoch`` steps (or whole passes) over an adapter.
    ``ran_out`` is set when a generator ended before an epoch had its steps."""

    def __init__(self, adapter, steps_per_epoch=None):
        if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool) or not isinstance(
                steps_per_epoch, (int, np.integer)) or steps_per_epoch <= 0):
            raise ValueError("Received an invalid value for `steps_per_epoch`, expected a "
                             f"positive integer or None. Received: {steps_per_epoch!r}")
        self.adapter, self.steps_per_epoch = adapter, steps_per_epoch
        self._iterator, self._seen = None, 0
        self.ran_out = False

    @property
    def num_steps(self):
        """Steps an epoch (None: as many as one pass of a generator gives)."""
        return self.steps_per_epoch or self.adapter.num_batches

    def epoch(self):
        """Yields (step, (x, y, sample_weight)) for one epoch."""
        num_batches = self.adapter.num_batches
        if self._iterator is None or self.steps_per_epoch is None:
            self._iterator, self._seen = self.adapter.batches(), 0
        step = 0
        while self.num_steps is None or step < self.num_steps:
            if num_batches is not None and self._seen >= num_batches:
                if self.steps_per_epoch:        # more steps asked than the data has
                    _ran_out_warning()
                    self.ran_out = True
                break
            try:
                batch = next(self._iterator)
            except StopIteration:
                if self.steps_per_epoch:
                    _ran_out_warning()
                    self.ran_out = True
                self._iterator = None
                break
            self._seen += 1
            yield step, batch
            step += 1
        if num_batches is not None and self._seen >= num_batches:
            self._iterator = None               # a new pass next epoch
        self.adapter.on_epoch_end()

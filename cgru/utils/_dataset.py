"""PyDataset (also Sequence): Keras 3's protocol for datasets written in Python.

A subclass gives ``__getitem__(index)`` (one whole batch) and ``__len__`` (the number of
batches) or a ``num_batches`` property (``None`` for an endless dataset). The training loop
that consumes it lives elsewhere; this is the class, with Keras's constructor arguments.
"""
import itertools
import numbers
import warnings

__all__ = ["PyDataset", "Sequence"]

_DEFAULTS = {"workers": 1, "use_multiprocessing": False, "max_queue_size": 10}


class PyDataset:
    """Base class for a dataset of batches computed in Python.

    ``workers`` (threads or processes that may fetch batches ahead), ``use_multiprocessing``
    and ``max_queue_size`` (batches fetched ahead at most) tell the consuming loop how to
    iterate; the class itself uses none of them. Iterating a PyDataset yields its batches in
    order. ``on_epoch_begin()``/``on_epoch_end()`` are called around each epoch.
    """

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self.workers = workers
        self.use_multiprocessing = use_multiprocessing
        self.max_queue_size = max_queue_size

    @property
    def workers(self):
        return self._setting("workers")

    @workers.setter
    def workers(self, value):
        self._workers = _check_count("workers", value, minimum=0)

    @property
    def use_multiprocessing(self):
        return self._setting("use_multiprocessing")

    @use_multiprocessing.setter
    def use_multiprocessing(self, value):
        if not isinstance(value, bool):
            raise ValueError("`use_multiprocessing` must be True or False. "
                             f"Received: use_multiprocessing={value!r}")
        self._use_multiprocessing = value

    @property
    def max_queue_size(self):
        return self._setting("max_queue_size")

    @max_queue_size.setter
    def max_queue_size(self, value):
        self._max_queue_size = _check_count("max_queue_size", value, minimum=1)

    def _setting(self, name):
        """A constructor setting; its default, with a warning, when a subclass's __init__
        did not call super().__init__ (as Keras)."""
        if not hasattr(self, "_" + name):
            warnings.warn("Your `PyDataset` class should call `super().__init__(**kwargs)` in "
                          "its constructor. `**kwargs` can include `workers`, "
                          "`use_multiprocessing`, `max_queue_size`.", stacklevel=3)
            setattr(self, "_" + name, _DEFAULTS[name])
        return getattr(self, "_" + name)

    def __getitem__(self, index):
        """The batch at position ``index``."""
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__(index), "
                                  "returning one batch")

    @property
    def num_batches(self):
        """The number of batches (``len(self)``), or None for an endless dataset."""
        if hasattr(self, "__len__"):
            return len(self)
        raise NotImplementedError(f"{type(self).__name__} must implement __len__ or the "
                                  "`num_batches` property (None for an endless dataset)")

    def __iter__(self):
        try:
            count = self.num_batches
        except NotImplementedError:
            count = None
        indices = itertools.count() if count is None else range(count)
        for index in indices:
            yield self[index]

    def on_epoch_begin(self):
        """Called at the start of every epoch."""

    def on_epoch_end(self):
        """Called at the end of every epoch."""


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


# Keras 3 exports the same class under its Keras 2 name.
Sequence = PyDataset

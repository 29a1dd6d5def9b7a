"""Optimizers with Keras 3's update rules, names and defaults, and learning-rate schedules
(``cgru.optimizers.schedules``).

``get`` accepts the strings "sgd", "adam", "adamw", "nadam", "adamax", "adagrad",
"adadelta", "lion" and "rmsprop", a class or an instance; ``serialize``/``deserialize``
round-trip an optimizer's config and its step count (its state arrays are
``variables()``/``set_variables()``).
"""
from . import schedules
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from ._flat import flat_arrays
from .base import Optimizer
from .lion import Lion
from .nadam import Nadam
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Nadam", "Adamax", "Adagrad", "Adadelta",
           "Lion", "RMSprop", "schedules", "flat_arrays", "get", "serialize", "deserialize"]

_OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "nadam": Nadam, "adamax": Adamax,
               "adagrad": Adagrad, "adadelta": Adadelta, "lion": Lion, "rmsprop": RMSprop}


def get(identifier):
    """An Optimizer from a name (see the module docstring), a class or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Optimizer):
        return identifier()
    if isinstance(identifier, str) and identifier.lower() in _OPTIMIZERS:
        return _OPTIMIZERS[identifier.lower()]()
    raise ValueError(
        f"Unknown optimizer: {identifier!r}. Expected one of {sorted(_OPTIMIZERS)} "
        "or an Optimizer instance.")


def serialize(optimizer):
    """``{"class_name", "config", "iterations"}``, JSON-friendly (a schedule is nested as
    its own ``{"class_name", "config"}``); "iterations" counts ``apply`` calls, also those
    that only accumulated gradients."""
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config(),
            "iterations": optimizer._iterations}


def deserialize(config, custom_objects=None):
    """The optimizer ``serialize`` described, with its step count; ``custom_objects`` maps
    class names to user optimizer or schedule classes."""
    custom_objects = custom_objects or {}
    classes = {c.__name__: c for c in _OPTIMIZERS.values()}
    name = config.get("class_name")
    cls = custom_objects.get(name) or classes.get(name)
    if cls is None:
        raise ValueError(f"Unknown optimizer class in saved config: {name!r}.")
    opt = cls.from_config(config["config"], custom_objects=custom_objects)
    opt.iterations = int(config.get("iterations", 0))
    return opt

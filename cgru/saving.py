"""One-file model saving: a NumPy ``.npz`` (zip) archive holding a JSON header and arrays.

Saving knows the file format and nothing of model or layer classes: it asks a model for its
state through public methods (``get_config``, ``get_weights``, ``get_compile_config``,
``get_rng_state``, ``optimizer.variables()``) and rebuilds one through the registry of
serializable classes (``register_serializable``, which cgru's models and layers use), so
it imports no model or layer module.

Layout of the archive (no pickled objects; loaded with ``allow_pickle=False``):

    __cgru__       uint8 bytes of a UTF-8 JSON header:
                   {"format": "cgru.model", "format_version": 2,
                    "model": {"class_name": ..., "config": <model.get_config()>},
                    "compile": <model.get_compile_config()> or null,
                    "rng": <model.get_rng_state()>}
    weight_<i>     the model weights, in ``model.get_weights()`` order (Keras's layout)
    optimizer_<i>  the optimizer's slot arrays, in ``optimizer.variables()`` order, in the
                   layout of ``model.trainable_weights`` (version 1: Keras's layout)

The RNG states (shuffling, dropout) are saved so that training resumed from a file
draws the same batches and masks as uninterrupted training.

Files are written to a temporary name in the target directory, flushed to disk and
moved over the target with ``os.replace``, so a crash mid-save leaves the previous file.
"""
import json
import os
import zipfile

import numpy as np

from . import optimizers as optimizers_mod
from ._files import atomic_output
from ._layout import slots_layout

FORMAT = "cgru.model"
WEIGHTS_FORMAT = "cgru.weights"
FORMAT_VERSION = 2
_HEADER = "__cgru__"

# class name -> class, for every model and layer class a file may name
_REGISTRY = {}


def register_serializable(cls):
    """Class decorator: lets ``deserialize`` (and so ``load_model``) rebuild ``cls`` from
    ``{"class_name": cls.__name__, "config": instance.get_config()}``."""
    _REGISTRY[cls.__name__] = cls
    return cls


def registered_class(name):
    """The class registered under ``name`` (``register_serializable``)."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown class {name!r}; cgru knows {sorted(_REGISTRY)}.")
    return _REGISTRY[name]


def _check_not_keras_path(path):
    """cgru's own format under a Keras file name would be a file Keras cannot open."""
    name = os.fspath(path)
    if name.endswith((".keras", ".h5", ".hdf5")):
        raise ValueError(
            f"{name!r}: cgru.saving writes and reads cgru's own format; for Keras 3 files "
            "(.keras, .weights.h5) use model.save/cgru.models.load_model, which choose the "
            "format by the name. Legacy Keras .h5 model files are not supported.")


def serialize(obj):
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def deserialize(entry):
    """The object that ``serialize`` described."""
    name = entry.get("class_name") if isinstance(entry, dict) else None
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"Unknown class {name!r} in a saved configuration; cgru knows "
                         f"{sorted(_REGISTRY)}.")
    return cls.from_config(entry["config"])


def _atomic_savez(path, header, arrays):
    """Writes the archive through a temporary file renamed over ``path`` (``_files``)."""
    with atomic_output(path) as f:
        payload = {_HEADER: np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)}
        payload.update(arrays)
        np.savez(f, **payload)


def _read(path, expected_format):
    """(header, arrays) of a cgru file; ValueError for anything else."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file: {path!r}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a bare .npy array
            raise ValueError("it holds a bare NumPy array, not an archive")
        with data:
            if _HEADER not in data.files:
                raise ValueError("it has no cgru header")
            header = json.loads(bytes(data[_HEADER]).decode("utf-8"))
            arrays = {k: data[k] for k in data.files if k != _HEADER}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile,
            UnicodeDecodeError) as e:
        raise ValueError(f"{path!r} is not a readable cgru file ({e}).") from None
    if not isinstance(header, dict) or header.get("format") != expected_format:
        found = header.get("format") if isinstance(header, dict) else None
        raise ValueError(f"{path!r} is not a {expected_format} file (format: {found!r}).")
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path!r} was written by a newer cgru (format version "
                         f"{header['format_version']} > {FORMAT_VERSION}).")
    return header, arrays


def _numbered(arrays, prefix, path):
    out = []
    while f"{prefix}{len(out)}" in arrays:
        out.append(arrays[f"{prefix}{len(out)}"])
    extra = [k for k in arrays if k.startswith(prefix)]
    if len(extra) != len(out):
        raise ValueError(f"{path!r} is corrupt: {prefix}* arrays are not numbered 0..n-1.")
    return out


def save_model(model, filepath):
    """Writes ``model``'s architecture, weights, compile settings, optimizer state and RNG
    states to one file (atomically)."""
    _check_not_keras_path(filepath)
    compile_config = model.get_compile_config()
    header = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "model": serialize(model), "compile": compile_config,
              "rng": model.get_rng_state()}
    arrays = {f"weight_{i}": w for i, w in enumerate(model.get_weights())}
    if compile_config is not None:
        arrays.update({f"optimizer_{i}": v
                       for i, v in enumerate(model.optimizer.variables())})
    _atomic_savez(filepath, header, arrays)


def load_model(filepath):
    """Restores a model written by ``model.save``: architecture, weights, compile settings,
    optimizer state (with its iteration count) and the shuffling and dropout RNG states."""
    _check_not_keras_path(filepath)
    header, arrays = _read(filepath, FORMAT)
    path = os.fspath(filepath)
    try:
        entry = header["model"]
        if "class_name" not in entry:               # version 1: a Sequential's config
            entry = {"class_name": "Sequential", "config": entry}
        model = deserialize(entry)
        model.set_weights(_numbered(arrays, "weight_", path))
        compile_config = header.get("compile")
        if compile_config is not None:
            slots = _numbered(arrays, "optimizer_", path)
            if header.get("format_version", 1) < 2:     # Keras's layout then
                optimizer = optimizers_mod.deserialize(compile_config["optimizer"])
                slots = slots_layout(model, optimizer, slots, to_keras=False)
            model.compile_from_config(compile_config, slots)
        model.set_rng_state(header["rng"])
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{path!r} is a corrupt cgru model file ({type(e).__name__}: {e}).") \
            from None
    return model


def save_weights(model, filepath):
    _check_not_keras_path(filepath)
    header = {"format": WEIGHTS_FORMAT, "format_version": FORMAT_VERSION}
    _atomic_savez(filepath, header, {f"weight_{i}": w for i, w in enumerate(model.get_weights())})


def load_weights(model, filepath):
    _check_not_keras_path(filepath)
    _, arrays = _read(filepath, WEIGHTS_FORMAT)
    model.set_weights(_numbered(arrays, "weight_", os.fspath(filepath)))

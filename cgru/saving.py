"""One-file model saving: a NumPy ``.npz`` (zip) archive holding a JSON header and arrays.

Layout of the archive (no pickled objects; loaded with ``allow_pickle=False``):

    __cgru__       uint8 bytes of a UTF-8 JSON header:
                   {"format": "cgru.model", "format_version": 1,
                    "model": <Sequential.get_config()>,
                    "compile": {"optimizer": {...,"iterations": n}, "loss": ..., "metrics": [...]}
                               or null,
                    "rng": {"shuffle": <bit generator state>, "layers": [...]}}
    weight_<i>     the model weights, in ``model.get_weights()`` order
    optimizer_<i>  the optimizer's slot arrays, in ``optimizer.variables()`` order

The RNG states (shuffling, dropout) are saved so that training resumed from a file
draws the same batches and masks as uninterrupted training.

Files are written to a temporary name in the target directory, flushed to disk and
moved over the target with ``os.replace``, so a crash mid-save leaves the previous file.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from . import optimizers as optimizers_mod
from .layers import LAYER_CLASSES

FORMAT = "cgru.model"
WEIGHTS_FORMAT = "cgru.weights"
FORMAT_VERSION = 1
_HEADER = "__cgru__"


def _atomic_savez(path, header, arrays):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            payload = {_HEADER: np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)}
            payload.update(arrays)
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the usual umask-based mode
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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
    header = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "model": model.get_config(), "compile": None,
              "rng": {"shuffle": model._shuffle_rng.bit_generator.state,
                      "layers": [layer.rng_state() for layer in model.layers]}}
    arrays = {f"weight_{i}": w for i, w in enumerate(model.weights)}
    if model.compiled:
        header["compile"] = {
            "optimizer": optimizers_mod.serialize(model.optimizer),
            "optimizer_built": model.optimizer.built,
            "loss": None if model.loss is None else model.loss.name,
            "metrics": list(model._metric_names)}
        arrays.update({f"optimizer_{i}": v
                       for i, v in enumerate(model.optimizer.variables())})
    _atomic_savez(filepath, header, arrays)


def model_from_config(config):
    from .models import Sequential
    model = Sequential(name=config.get("name"), seed=config.get("seed"))
    for entry in config["layers"]:
        cls = LAYER_CLASSES.get(entry.get("class_name"))
        if cls is None:
            raise ValueError(f"Unknown layer class {entry.get('class_name')!r}.")
        model.add(cls.from_config(entry["config"]))
    if config.get("build_input_shape") is not None and not model.built:
        model.build(tuple(config["build_input_shape"]))
    return model


def load_model(filepath):
    """Restore a model written by ``model.save``: architecture, weights, compile settings,
    optimizer state (with its iteration count) and the shuffling/dropout RNG states."""
    header, arrays = _read(filepath, FORMAT)
    path = os.fspath(filepath)
    try:
        model = model_from_config(header["model"])
        weights = _numbered(arrays, "weight_", path)
        model.set_weights(weights)
        compile_cfg = header.get("compile")
        if compile_cfg is not None:
            optimizer = optimizers_mod.deserialize(compile_cfg["optimizer"])
            model.compile(optimizer=optimizer, loss=compile_cfg["loss"],
                          metrics=compile_cfg["metrics"])
            if compile_cfg.get("optimizer_built"):
                optimizer.set_variables(_numbered(arrays, "optimizer_", path), model.weights)
        rng = header["rng"]
        model._shuffle_rng.bit_generator.state = rng["shuffle"]
        for layer, state in zip(model.layers, rng["layers"]):
            layer.set_rng_state(state)
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{path!r} is a corrupt cgru model file ({type(e).__name__}: {e}).") \
            from None
    return model


def save_weights(model, filepath):
    header = {"format": WEIGHTS_FORMAT, "format_version": FORMAT_VERSION}
    _atomic_savez(filepath, header, {f"weight_{i}": w for i, w in enumerate(model.weights)})


def load_weights(model, filepath):
    _, arrays = _read(filepath, WEIGHTS_FORMAT)
    model.set_weights(_numbered(arrays, "weight_", os.fspath(filepath)))

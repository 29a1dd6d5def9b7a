"""Keras 3 files, both ways: ``.keras`` model archives and ``.weights.h5`` weight files.

A ``.keras`` file (Keras 3's ``model.save``) is a zip archive of three members:

    metadata.json       {"keras_version": ..., "date_saved": ...}
    config.json         the serialized model: {"class_name": "Sequential", "config":
                        {"layers": [InputLayer, GRU, ...], ...}, "compile_config": {...}}
    model.weights.h5    HDF5 groups, one per layer, named by class in snake case and counted
                        per class ("gru", "gru_1", "dense", ...), in the model's layer order:
                          layers/gru/cell/vars/{0,1,2}         kernel, recurrent_kernel, bias
                          layers/bidirectional/forward_layer/cell/vars/{0,1,2}
                          layers/bidirectional/backward_layer/cell/vars/{0,1,2}
                          layers/dense/vars/{0,1}              kernel, bias
                          optimizer/vars/{0,1,...}             iterations, learning_rate, slots

A ``.weights.h5`` file (``model.save_weights``) is the same HDF5 layout on its own.
cgru layers keep Keras 3's weight layout, so the arrays go across unchanged.

The optimizer's slots are stored in Keras's order: for Adam and SGD weight by weight
(momentum, velocity of the first weight, then of the second, ...), for RMSprop slot by slot
(every velocity, then every momentum, then every average gradient).

Needs ``h5py`` (``pip install "cgru[keras]"``); Keras itself is not needed.
"""
import datetime
import io
import json
import os
import zipfile

import numpy as np

from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from . import saving
from ._layout import slots_layout
from ._files import atomic_output
from .layers import GRU, Bidirectional, Dense, Dropout

__all__ = ["load_keras_model", "save_keras_model", "load_keras_weights",
           "save_keras_weights", "is_keras_model_path", "is_keras_weights_path"]

KERAS_VERSION = "3.15.1"  # the Keras release whose file layout this module writes
_CONFIG = "config.json"
_METADATA = "metadata.json"
_WEIGHTS = "model.weights.h5"
_SNAKE = {GRU: "gru", Bidirectional: "bidirectional", Dense: "dense", Dropout: "dropout"}
_KERAS_LAYERS = ("GRU", "Bidirectional", "Dense", "Dropout", "InputLayer")


def is_keras_model_path(path):
    """True for a path ending in ``.keras`` (Keras 3's model archive)."""
    return os.fspath(path).endswith(".keras")


def is_keras_weights_path(path):
    """True for a path ending in ``.weights.h5`` (Keras 3's weights file)."""
    return os.fspath(path).endswith(".weights.h5")


def _import_h5py():
    try:
        import h5py
    except ImportError as e:
        raise ImportError("Reading and writing Keras files needs the `h5py` package: "
                          'pip install "cgru[keras]" (or pip install h5py).') from e
    return h5py


# ---------------------------------------------------------------------------------------------
# Keras config -> cgru layers
# ---------------------------------------------------------------------------------------------
def _dtype_name(dtype, where):
    """'float32' / 'float64' from a Keras dtype entry (a string or a DTypePolicy dict)."""
    if dtype is None:
        return "float32"
    if isinstance(dtype, dict):
        dtype = dtype.get("config", {}).get("name")
    if dtype not in ("float32", "float64"):
        raise NotImplementedError(f"{where}: dtype policy {dtype!r} is not supported; cgru "
                                  "runs float32 or float64.")
    return dtype


_INITIALIZER_NAMES = {"GlorotUniform": "glorot_uniform", "Orthogonal": "orthogonal",
                      "Zeros": "zeros", "Ones": "ones"}


def _initializer(entry, default):
    """cgru's name for a Keras initializer entry. The weights are loaded over the initial
    values, so an initializer cgru lacks falls back to ``default`` without changing results."""
    if isinstance(entry, str):
        return entry if entry in _INITIALIZER_NAMES.values() else default
    if isinstance(entry, dict):
        return _INITIALIZER_NAMES.get(entry.get("class_name"), default)
    return default


def _require(config, where, expected):
    """Raise NotImplementedError for options whose value cgru cannot reproduce."""
    for key, value in expected.items():
        found = config.get(key, value)
        if found != value:
            raise NotImplementedError(f"{where}: {key}={found!r} is not supported by cgru "
                                      f"(only {key}={value!r}).")


def _penalties(config, weights):
    """The regularizer and constraint arguments of a Keras layer config, as cgru takes them
    (Keras's entries {"class_name", "config"} name the same classes with the same configs)."""
    keys = [f"{w}_{kind}" for w in weights for kind in ("regularizer", "constraint")]
    return {key: config[key] for key in keys + ["activity_regularizer"]
            if config.get(key) is not None}


def _keras_entry(obj, module):
    """A cgru regularizer or constraint as Keras's config entry (None stays None)."""
    if obj is None:
        return None
    return {"module": f"keras.{module}", "class_name": type(obj).__name__,
            "config": obj.get_config(), "registered_name": None}


def _penalty_entries(layer, weights):
    entries = {}
    for w in weights:
        entries[f"{w}_regularizer"] = _keras_entry(getattr(layer, f"{w}_regularizer"),
                                                   "regularizers")
        entries[f"{w}_constraint"] = _keras_entry(getattr(layer, f"{w}_constraint"),
                                                  "constraints")
    entries["activity_regularizer"] = _keras_entry(layer.activity_regularizer, "regularizers")
    return entries


def _require_none(config, where, keys):
    for key in keys:
        if config.get(key) is not None:
            raise NotImplementedError(f"{where}: {key}={config[key]!r} is not supported by "
                                      "cgru (it has no regularizers, constraints, "
                                      "quantization or LoRA).")


def _gru_from_keras(config, input_shape, where):
    _require(config, where, {"activation": "tanh", "recurrent_activation": "sigmoid",
                             "stateful": False, "recurrent_dropout": 0.0,
                             "return_state": False})
    seed = config.get("seed")
    return GRU(config["units"], return_sequences=bool(config.get("return_sequences", False)),
               use_bias=bool(config.get("use_bias", True)),
               trainable=bool(config.get("trainable", True)),
               **_penalties(config, ("kernel", "recurrent", "bias")),
               go_backwards=bool(config.get("go_backwards", False)),
               reset_after=bool(config.get("reset_after", True)),
               kernel_initializer=_initializer(config.get("kernel_initializer"),
                                               "glorot_uniform"),
               recurrent_initializer=_initializer(config.get("recurrent_initializer"),
                                                  "orthogonal"),
               bias_initializer=_initializer(config.get("bias_initializer"), "zeros"),
               dropout=float(config.get("dropout", 0.0)), input_shape=input_shape,
               seed=seed if isinstance(seed, int) else None,
               dtype=_dtype_name(config.get("dtype"), where), name=config.get("name"))


def _bidirectional_from_keras(config, input_shape, where):
    inner = config["layer"]
    if inner.get("class_name") != "GRU":
        raise NotImplementedError(f"{where} wraps a Keras {inner.get('class_name')} layer; "
                                  "cgru's Bidirectional wraps GRU layers only.")
    forward = _gru_from_keras(inner["config"], None, f"{where} (forward layer)")
    backward = config.get("backward_layer")
    if backward is not None:
        if backward.get("class_name") != "GRU":
            raise NotImplementedError(f"{where} has a Keras {backward.get('class_name')} "
                                      "backward layer; cgru's backward layer is a GRU.")
        mirrored = dict(inner["config"], go_backwards=not forward.go_backwards)
        for key in ("units", "reset_after", "go_backwards", "return_sequences", "dropout",
                    "activation", "recurrent_activation", "recurrent_dropout"):
            if backward["config"].get(key) != mirrored.get(key):
                raise NotImplementedError(
                    f"{where}: its backward layer differs from the forward layer in {key!r} "
                    f"({backward['config'].get(key)!r} vs {mirrored.get(key)!r}); cgru's "
                    "Bidirectional runs a mirror copy of the forward layer.")
    return Bidirectional(forward, merge_mode=config.get("merge_mode", "concat"),
                         input_shape=input_shape, name=config.get("name"))


_DENSE_ACTIVATIONS = {"linear": None, None: None, "sigmoid": "sigmoid", "tanh": "tanh",
                      "relu": "relu", "softmax": "softmax"}


def _dense_from_keras(config, input_shape, where):
    activation = config.get("activation", "linear")
    if isinstance(activation, dict) or activation not in _DENSE_ACTIVATIONS:
        raise NotImplementedError(f"{where}: activation={activation!r} is not supported by "
                                  f"cgru's Dense (it has {sorted(a for a in _DENSE_ACTIVATIONS if a)}).")
    _require_none(config, where, ["quantization_config"])
    if config.get("lora_rank"):
        raise NotImplementedError(f"{where}: lora_rank={config['lora_rank']} is not "
                                  "supported by cgru.")
    seed = config.get("seed")
    return Dense(config["units"], activation=_DENSE_ACTIVATIONS[activation],
                 use_bias=bool(config.get("use_bias", True)),
                 trainable=bool(config.get("trainable", True)),
                 **_penalties(config, ("kernel", "bias")),
                 kernel_initializer=_initializer(config.get("kernel_initializer"),
                                                 "glorot_uniform"),
                 bias_initializer=_initializer(config.get("bias_initializer"), "zeros"),
                 input_shape=input_shape, seed=seed if isinstance(seed, int) else None,
                 dtype=_dtype_name(config.get("dtype"), where), name=config.get("name"))


def _dropout_from_keras(config, input_shape, where):
    _require_none(config, where, ["noise_shape"])
    seed = config.get("seed")
    return Dropout(config["rate"], input_shape=input_shape,
                   seed=seed if isinstance(seed, int) else None,
                   dtype=_dtype_name(config.get("dtype"), where), name=config.get("name"))


_FROM_KERAS = {"GRU": _gru_from_keras, "Bidirectional": _bidirectional_from_keras,
               "Dense": _dense_from_keras, "Dropout": _dropout_from_keras}


def _input_shape_of(entry):
    """The shape without the batch axis that a Keras InputLayer entry declares."""
    config = entry.get("config", {})
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    if shape is None:
        raise ValueError(f"Keras InputLayer {config.get('name')!r} has no batch_shape.")
    return tuple(shape[1:])


def model_from_keras_config(config):
    """A cgru Sequential (unweighted) from a Keras 3 model config (config.json's content)."""
    Sequential = saving.registered_class("Sequential")
    if config.get("class_name") != "Sequential":
        raise NotImplementedError(
            f"The Keras model is a {config.get('class_name')!r}; cgru reads Sequential "
            "models only.")
    model_config = config["config"]
    input_shape = None
    if model_config.get("build_input_shape"):
        input_shape = tuple(model_config["build_input_shape"][1:])
    model = Sequential(name=model_config.get("name"))
    for index, entry in enumerate(model_config.get("layers", [])):
        class_name = entry.get("class_name")
        layer_config = entry.get("config", {})
        where = f"Keras layer {layer_config.get('name')!r} ({class_name})"
        if class_name == "InputLayer":
            input_shape = _input_shape_of(entry)
            continue
        if class_name not in _FROM_KERAS:
            raise NotImplementedError(
                f"Keras layer {layer_config.get('name')!r} of class {class_name!r} has no "
                f"cgru equivalent; cgru reads {', '.join(_KERAS_LAYERS)}.")
        if not model.layers and input_shape is None and entry.get("build_config"):
            input_shape = tuple(entry["build_config"]["input_shape"][1:])
        first_shape = input_shape if not model.layers else None
        model.add(_FROM_KERAS[class_name](layer_config, first_shape, where))
    if not model.layers:
        raise ValueError("The Keras model has no layers.")
    return model


# ---------------------------------------------------------------------------------------------
# cgru layers -> Keras config
# ---------------------------------------------------------------------------------------------
def _keras_gru_config(layer, name):
    if layer.stateful:
        raise NotImplementedError(f"Layer '{layer.name}': stateful=True is not written to "
                                  "Keras files by cgru (it needs the batch size in the "
                                  "InputLayer).")
    return {"name": name, "trainable": layer.trainable, "dtype": layer.dtype.name,
            "return_sequences": layer.return_sequences, "return_state": False,
            "go_backwards": layer.go_backwards, "stateful": False, "unroll": False,
            "zero_output_for_mask": False, "units": layer.units,
            "activation": layer.activation,
            "recurrent_activation": layer.recurrent_activation, "use_bias": layer.use_bias,
            **_penalty_entries(layer, ("kernel", "recurrent", "bias")),
            "kernel_initializer": layer.get_config()["kernel_initializer"],
            "recurrent_initializer": layer.get_config()["recurrent_initializer"],
            "bias_initializer": layer.get_config()["bias_initializer"],
            "dropout": layer.dropout, "recurrent_dropout": 0.0,
            "reset_after": layer.reset_after, "seed": layer.seed}


def _keras_layer_entry(layer, input_shape):
    """One entry of config.json's "layers" list for a built cgru layer."""
    if isinstance(layer, GRU):
        if layer.return_state:
            raise NotImplementedError(f"Layer '{layer.name}': return_state=True cannot be a "
                                      "Sequential layer in Keras.")
        class_name, config = "GRU", _keras_gru_config(layer, layer.name)
    elif isinstance(layer, Bidirectional):
        if layer.merge_mode is None or layer.return_state:
            raise NotImplementedError(f"Layer '{layer.name}' returns several outputs; it "
                                      "cannot be a Sequential layer in Keras.")
        inner = _keras_gru_config(layer.forward_layer, layer.forward_layer.name)
        class_name = "Bidirectional"
        config = {"name": layer.name, "trainable": layer.trainable,
                  "dtype": layer.dtype.name, "merge_mode": layer.merge_mode,
                  "layer": {"module": "keras.layers", "class_name": "GRU", "config": inner,
                            "registered_name": None}}
    elif isinstance(layer, Dense):
        class_name = "Dense"
        config = {"name": layer.name, "trainable": layer.trainable, "dtype": layer.dtype.name,
                  "units": layer.units, "activation": layer.activation or "linear",
                  "use_bias": layer.use_bias, **_penalty_entries(layer, ("kernel", "bias")),
                  "kernel_initializer": layer.get_config()["kernel_initializer"],
                  "bias_initializer": layer.get_config()["bias_initializer"]}
    elif isinstance(layer, Dropout):
        class_name = "Dropout"
        config = {"name": layer.name, "trainable": layer.trainable, "dtype": layer.dtype.name,
                  "rate": layer.rate, "seed": layer.seed, "noise_shape": None}
    else:
        raise NotImplementedError(f"Layer '{layer.name}' ({type(layer).__name__}) has no "
                                  "Keras file equivalent.")
    return {"module": "keras.layers", "class_name": class_name, "config": config,
            "registered_name": None,
            "build_config": {"input_shape": [None] + list(input_shape)}}


def _model_input_shape(model):
    """The input shape without the batch axis, the time axis free unless it was fixed."""
    shape = list(model.input_shape[1:])
    fixed = model.layers[0].get_config().get("input_shape")
    if len(shape) >= 2 and (fixed is None or fixed[0] is None):
        shape[0] = None
    return shape


def keras_model_config(model):
    """config.json's content (without compile_config) for a built cgru Sequential."""
    if not isinstance(model, saving.registered_class("Sequential")):
        raise TypeError(f"Keras files hold cgru Sequential models; received {model!r}.")
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built: call it on an input or give "
                         "its first layer `input_shape` before saving it.")
    shape = _model_input_shape(model)
    dtype = model.layers[0].dtype.name
    layers = [{"module": "keras.layers", "class_name": "InputLayer",
               "config": {"batch_shape": [None] + shape, "dtype": dtype, "sparse": False,
                          "ragged": False, "name": f"{model.name}_input"},
               "registered_name": None}]
    current = tuple(shape)
    for layer in model.layers:
        layers.append(_keras_layer_entry(layer, current))
        current = tuple(layer.compute_output_shape(current))
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": model.name, "trainable": True, "dtype": dtype,
                       "layers": layers, "build_input_shape": [None] + shape},
            "registered_name": None, "build_config": {"input_shape": [None] + shape}}


# ---------------------------------------------------------------------------------------------
# weights: the HDF5 layout
# ---------------------------------------------------------------------------------------------
def _layer_groups(model):
    """(layer, h5 path, [(sub path, cgru sub-layer)]) for each layer, in Keras's naming."""
    counts = {}
    for layer in model.layers:
        base = _SNAKE.get(type(layer))
        if base is None:
            raise NotImplementedError(f"Layer '{layer.name}' ({type(layer).__name__}) has no "
                                      "Keras file equivalent.")
        n = counts.get(base)
        counts[base] = 0 if n is None else n + 1
        path = f"layers/{base}" if n is None else f"layers/{base}_{n + 1}"
        if isinstance(layer, GRU):
            parts = [("cell", layer)]
        elif isinstance(layer, Bidirectional):
            parts = [("forward_layer/cell", layer.forward_layer),
                     ("backward_layer/cell", layer.backward_layer)]
        elif isinstance(layer, Dense):
            parts = [("", layer)]
        else:
            parts = []
        yield layer, path, parts


def _read_vars(group):
    """The arrays of an h5 ``vars`` group, in the numeric order of their names."""
    return [np.asarray(group[key]) for key in sorted(group.keys(), key=int)]


def _set_layer_weights(model, h5, source):
    """Load every layer's arrays from an open h5 file in Keras's layout."""
    for layer, path, parts in _layer_groups(model):
        for sub, part in parts:
            vars_path = "/".join(p for p in (path, sub, "vars") if p)
            if vars_path not in h5:
                raise ValueError(f"{source!r} has no weights for layer '{layer.name}' "
                                 f"(no group {vars_path!r}); it does not hold this model.")
            arrays = _read_vars(h5[vars_path])
            expected = [w.shape for w in part.get_weights()]
            if [a.shape for a in arrays] != expected:
                raise ValueError(f"{source!r}, {vars_path!r}: weight shapes "
                                 f"{[a.shape for a in arrays]} do not match layer "
                                 f"'{layer.name}' ({expected}).")
            part.set_weights(arrays)


def _write_layer_weights(model, h5):
    h5.create_group("vars").attrs["name"] = model.name
    for layer, path, parts in _layer_groups(model):
        h5.create_group(f"{path}/vars").attrs["name"] = layer.name
        if isinstance(layer, Bidirectional):
            for side in ("forward_layer", "backward_layer"):
                sub = getattr(layer, side)
                h5.create_group(f"{path}/{side}/vars").attrs["name"] = sub.name
        for sub, part in parts:
            group_path = "/".join(p for p in (path, sub, "vars") if p)
            group = h5.require_group(group_path)
            if sub.endswith("cell"):
                group.attrs["name"] = "gru_cell"
            for i, array in enumerate(part.get_weights()):
                group.create_dataset(str(i), data=array)


# ---------------------------------------------------------------------------------------------
# optimizer and compile settings
# ---------------------------------------------------------------------------------------------
_KERAS_OPTIMIZER_DEFAULTS = {"weight_decay": None, "global_clipnorm": None,
                             "clipvalue": None, "use_ema": False,
                             "loss_scale_factor": None, "gradient_accumulation_steps": None}
_SLOT_MAJOR = {"RMSprop"}  # Keras stores these slot by slot, the others weight by weight


def _optimizer_from_keras(entry):
    if isinstance(entry, str):
        return optimizers_mod.get(entry)
    class_name = entry.get("class_name")
    config = dict(entry.get("config", {}))
    where = f"Keras optimizer {class_name!r}"
    if class_name not in ("Adam", "SGD", "RMSprop"):
        raise NotImplementedError(f"{where} has no cgru equivalent (cgru has Adam, SGD, "
                                  "RMSprop).")
    _require(config, where, {**_KERAS_OPTIMIZER_DEFAULTS, "amsgrad": False})
    if isinstance(config.get("learning_rate"), dict):
        raise NotImplementedError(f"{where}: learning-rate schedules are not supported by "
                                  "cgru.")
    common = {"learning_rate": float(config.get("learning_rate", 0.001)),
              "clipnorm": config.get("clipnorm")}
    if class_name == "Adam":
        return optimizers_mod.Adam(beta_1=config.get("beta_1", 0.9),
                                   beta_2=config.get("beta_2", 0.999),
                                   epsilon=config.get("epsilon", 1e-7), **common)
    if class_name == "SGD":
        return optimizers_mod.SGD(momentum=config.get("momentum", 0.0),
                                  nesterov=bool(config.get("nesterov", False)), **common)
    return optimizers_mod.RMSprop(rho=config.get("rho", 0.9),
                                  momentum=config.get("momentum", 0.0),
                                  epsilon=config.get("epsilon", 1e-7),
                                  centered=bool(config.get("centered", False)), **common)


def _keras_optimizer_entry(optimizer):
    config = optimizer.get_config()
    class_name = type(optimizer).__name__
    keras_config = {"name": config.get("name", class_name.lower()),
                    "learning_rate": optimizer.learning_rate, "clipnorm": optimizer.clipnorm,
                    **_KERAS_OPTIMIZER_DEFAULTS, "ema_momentum": 0.99,
                    "ema_overwrite_frequency": None}
    if class_name == "Adam":
        keras_config.update(beta_1=config["beta_1"], beta_2=config["beta_2"],
                            epsilon=config["epsilon"], amsgrad=False)
    elif class_name == "SGD":
        keras_config.update(momentum=config["momentum"], nesterov=config["nesterov"])
    elif class_name == "RMSprop":
        keras_config.update(rho=config["rho"], momentum=config["momentum"],
                            epsilon=config["epsilon"], centered=config["centered"])
    else:
        raise NotImplementedError(f"Optimizer {class_name} has no Keras file equivalent.")
    return {"module": "keras.optimizers", "class_name": class_name, "config": keras_config,
            "registered_name": None}


def _loss_from_keras(entry):
    if isinstance(entry, dict):
        config = entry.get("config", {})
        if config.get("from_logits"):
            raise NotImplementedError(f"Keras loss {entry.get('class_name')!r} with "
                                      "from_logits=True is not supported by cgru.")
        names = {"BinaryCrossentropy": "binary_crossentropy",
                 "CategoricalCrossentropy": "categorical_crossentropy",
                 "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
                 "MeanSquaredError": "mse"}
        if entry.get("class_name") not in names:
            raise NotImplementedError(f"Keras loss {entry.get('class_name')!r} has no cgru "
                                      "equivalent.")
        return names[entry["class_name"]]
    return entry


def _compile_from_keras(model, compile_config):
    loss = _loss_from_keras(compile_config.get("loss"))
    metrics = compile_config.get("metrics") or []
    if isinstance(metrics, (str, dict)):
        metrics = [metrics]
    for metric in metrics:
        if not isinstance(metric, str):
            raise NotImplementedError(f"Keras metric {metric!r} is not supported by cgru "
                                      "(it reads metrics given by name).")
    for key in ("loss_weights", "weighted_metrics"):
        if compile_config.get(key) is not None:
            raise NotImplementedError(f"Keras compile option {key}="
                                      f"{compile_config[key]!r} is not supported by cgru.")
    model.compile(optimizer=_optimizer_from_keras(compile_config["optimizer"]), loss=loss,
                  metrics=list(metrics))


def _keras_compile_config(model):
    loss = getattr(model, "loss", None)
    metrics = [m if isinstance(m, str) else metrics_mod.serialize(metrics_mod.get(m))
               for m in getattr(model, "_metric_names", []) or []]
    return {"optimizer": _keras_optimizer_entry(model.optimizer),
            "loss": None if loss is None else losses_mod.serialize(loss), "loss_weights": None,
            "metrics": metrics or None, "weighted_metrics": None, "run_eagerly": False,
            "steps_per_execution": 1}


def _reorder(arrays, n_weights, slot_major, inverse):
    """Slot arrays from cgru's order (weight by weight) to Keras's, or back with ``inverse``;
    only slot-major optimizers (RMSprop) differ."""
    if not slot_major or not arrays:
        return list(arrays)
    n_slots = len(arrays) // n_weights
    if inverse:  # Keras slot-major -> cgru weight-major
        return [arrays[s * n_weights + w] for w in range(n_weights) for s in range(n_slots)]
    return [arrays[w * n_slots + s] for s in range(n_slots) for w in range(n_weights)]


def _write_optimizer(model, h5):
    optimizer = model.optimizer
    if optimizer is None or not optimizer.built:
        return
    # the slots are in the layers' own layout (a GRU's gate order): Keras's on the way out
    slots = slots_layout(model, optimizer, optimizer.variables(), to_keras=True)
    slots = _reorder(slots, len(model.trainable_weights),
                     type(optimizer).__name__ in _SLOT_MAJOR, False)
    group = h5.create_group("optimizer/vars")
    group.attrs["name"] = optimizer.name
    group.create_dataset("0", data=np.int64(optimizer.iterations))
    group.create_dataset("1", data=np.float32(optimizer.learning_rate))
    for i, array in enumerate(slots):
        group.create_dataset(str(i + 2), data=array)


def _read_optimizer(model, h5, source):
    """Restore the optimizer's iterations and slots from ``optimizer/vars``, if there."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or "optimizer/vars" not in h5:
        return
    arrays = _read_vars(h5["optimizer/vars"])
    if len(arrays) < 2:
        return
    slots = _reorder(arrays[2:], len(model.trainable_weights),
                     type(optimizer).__name__ in _SLOT_MAJOR, True)
    slots = slots_layout(model, optimizer, slots, to_keras=False)
    if not slots:
        optimizer.iterations = int(arrays[0])
        return
    try:
        optimizer.set_variables(slots, model.trainable_weights)
    except ValueError as e:
        raise ValueError(f"{source!r}: the optimizer state does not fit the model ({e}).") \
            from None
    optimizer.iterations = int(arrays[0])


# ---------------------------------------------------------------------------------------------
# the four entry points
# ---------------------------------------------------------------------------------------------
def load_keras_model(path, *, compile=True):
    """A cgru Sequential from a ``.keras`` file that Keras 3 wrote (``model.save``).

    Architecture (GRU, Bidirectional, Dense, Dropout, InputLayer), weights, and with
    ``compile=True`` the compile settings and the optimizer's state (iterations and slots).
    A Keras layer or option cgru lacks raises NotImplementedError naming it. A GRU saved
    with ``use_bias=False`` gets zero biases (exact for inference; cgru then trains them).
    """
    h5py = _import_h5py()
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if _CONFIG not in names:
                raise ValueError(f"it has no {_CONFIG}")
            config = json.loads(archive.read(_CONFIG).decode("utf-8"))
            if _WEIGHTS not in names:
                found = [n for n in names if n.startswith("model.weights")]
                raise ValueError(f"it has no {_WEIGHTS} (found {found}; cgru reads the h5 "
                                 "weights format)")
            weights = archive.read(_WEIGHTS)
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError,
            ValueError) as e:
        raise ValueError(f"{path!r} is not a readable Keras 3 .keras file ({e}).") from None
    model = model_from_keras_config(config)
    with h5py.File(io.BytesIO(weights), "r") as h5:
        if model.built:  # a Keras model saved before it was built has no weights
            _set_layer_weights(model, h5, path)
        compile_config = config.get("compile_config")
        if compile and compile_config:
            _compile_from_keras(model, compile_config)
            _read_optimizer(model, h5, path)
    return model


def save_keras_model(model, path):
    """Write a built cgru Sequential as a Keras 3 ``.keras`` file that
    ``keras.models.load_model`` opens: architecture, weights, compile settings and (once the
    model has trained) the optimizer state. Written to a temporary file and renamed."""
    h5py = _import_h5py()
    config = keras_model_config(model)
    if getattr(model, "compiled", False) and model.optimizer is not None:
        config["compile_config"] = _keras_compile_config(model)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        _write_layer_weights(model, h5)
        if "compile_config" in config:
            _write_optimizer(model, h5)
    metadata = {"keras_version": KERAS_VERSION,
                "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    with atomic_output(path) as f:
        with zipfile.ZipFile(f, "w") as archive:
            archive.writestr(_METADATA, json.dumps(metadata))
            archive.writestr(_CONFIG, json.dumps(config))
            archive.writestr(_WEIGHTS, buffer.getvalue())
    return path


def load_keras_weights(model, path):
    """Load a Keras 3 ``.weights.h5`` file (``model.save_weights``) into a built cgru
    Sequential of the same architecture; as Keras does, the optimizer state in the file is
    restored too when the model is compiled (ValueError if it does not fit the optimizer)."""
    h5py = _import_h5py()
    path = os.fspath(path)
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built: build it (give its first layer "
                         "`input_shape`) before loading weights into it.")
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path!r} is not a readable HDF5 weights file ({e}).") from None
    with h5:
        _set_layer_weights(model, h5, path)
        if getattr(model, "compiled", False):
            _read_optimizer(model, h5, path)
    return model


def save_keras_weights(model, path):
    """Write a built cgru Sequential's weights as a Keras 3 ``.weights.h5`` file that Keras's
    ``model.load_weights`` reads: the layer weights and, as Keras writes them, the optimizer's
    iterations and slots once it has trained."""
    h5py = _import_h5py()
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built; it has no weights to save.")
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        _write_layer_weights(model, h5)
        if getattr(model, "compiled", False) and model.optimizer is not None:
            _write_optimizer(model, h5)
    with atomic_output(path) as f:
        f.write(buffer.getvalue())
    return path

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
                          layers/time_distributed/layer/vars/{0,1}   the wrapped layer's
                          layers/dense/vars/{0,1}              kernel, bias (any other layer:
                                                               its get_weights() in order)
                          optimizer/vars/{0,1,...}             iterations, learning_rate, slots

A functional model's config.json is ``{"class_name": "Functional", "config": {"layers":
[...], "input_layers": ..., "output_layers": ...}}``: each layer entry carries its ``name``
and ``inbound_nodes``, one per call, whose ``args`` are the input tensors named by
``keras_history`` ([layer name, call number, output index]); ``input_layers`` and
``output_layers`` name the model's tensors the same way (one, a list, or a dict by name). A
layer with several outputs (``GRU(return_state=True)``: [output, state]; ``Bidirectional``:
[y_fwd, y_bwd] with ``merge_mode=None``, then [h_fwd, h_bwd] with ``return_state=True``)
has each output named by its index there, in that order, which is the order of cgru's
outputs too. A recurrent layer given ``initial_state`` from the graph (an encoder's states
starting a decoder) has it in the call's ``kwargs``: ``{"initial_state": tensor}`` or a list
of tensors (Bidirectional: [h_fwd, h_bwd]), as it was given. Its
HDF5 groups follow ``model.layers``, InputLayers ("input_layer") and merging layers included,
their ``vars`` empty.

A ``.weights.h5`` file (``model.save_weights``) is the same HDF5 layout on its own.
cgru layers' ``get_weights`` speak Keras 3's layout, so the arrays go across unchanged.

Every layer goes through one table, ``LAYERS``: per Keras class, the cgru class, the HDF5
group name, and where a layer needs more than the generic mapping, its own functions. The
generic mapping passes a Keras config's arguments to the cgru constructor (cgru's layers take
Keras's argument names and refuse, naming it, an option they cannot compute) and writes a
cgru layer's ``get_config`` back in Keras's form. The model-level code (a Sequential's or a
functional model's config and the HDF5 walk over a list of layers) never names a layer class.

The optimizer's variables are stored in Keras's order: iterations, the learning rate (unless
it is a schedule), then the slots in the groups Keras makes them, each group weight by weight
(Adam's momentum and velocity of the first weight, then of the second, ..., then amsgrad's
velocity_hat of each; RMSprop slot by slot: every velocity, then every momentum, then every
average gradient), then a rule's extra state (Nadam's running product). Every cgru optimizer
goes both ways (not yet with ``use_ema`` or ``gradient_accumulation_steps``, whose state
Keras orders differently: refused, naming them).

Needs ``h5py`` (``pip install "cgru[keras]"``); Keras itself is not needed.
"""
import datetime
import io
import json
import os
import zipfile

import numpy as np

from . import activations
from . import initializers
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from . import saving
from ._layout import slots_layout
from ._files import atomic_output
from . import layers as L
from .functional import ACTIVATIONS as CELL_ACTIVATIONS

__all__ = ["load_keras_model", "save_keras_model", "load_keras_weights",
           "save_keras_weights", "is_keras_model_path", "is_keras_weights_path",
           "layer_from_keras", "layer_to_keras", "model_from_keras_config",
           "keras_model_config"]

KERAS_VERSION = "3.15.1"  # the Keras release whose file layout this module writes
_CONFIG = "config.json"
_METADATA = "metadata.json"
_WEIGHTS = "model.weights.h5"


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
# pieces of Keras configs
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


def _initializer_from_keras(entry):
    """cgru's form of a Keras initializer entry, or None when cgru lacks it. The weights are
    loaded over the initial values, so a missing initializer changes no result: the layer
    keeps its default."""
    if isinstance(entry, dict):
        config = {k: v for k, v in (entry.get("config") or {}).items()
                  if not (k in ("input_axes", "output_axes") and v is None)}
        entry = {"class_name": entry.get("class_name"), "config": config}
    try:
        return initializers.serialize(initializers.get(entry))
    except (ValueError, TypeError):
        return None


def _keras_entry(obj, module):
    """A cgru regularizer or constraint as Keras's config entry (None stays None)."""
    if obj is None:
        return None
    return {"module": f"keras.{module}", "class_name": type(obj).__name__,
            "config": obj.get_config(), "registered_name": None}


def _require(config, where, expected):
    """Raise NotImplementedError for options whose value cgru cannot reproduce."""
    for key, value in expected.items():
        found = config.get(key, value)
        if found != value:
            raise NotImplementedError(f"{where}: {key}={found!r} is not supported by cgru "
                                      f"(only {key}={value!r}).")


def _check_activation(value, where):
    try:
        activations.get(None if value == "linear" else value)
    except ValueError:
        raise NotImplementedError(
            f"{where}: activation={value!r} is not supported by cgru (it has "
            f"{sorted(activations._ACTIVATIONS)}).") from None


# ---------------------------------------------------------------------------------------------
# the generic mapping: Keras config <-> cgru constructor arguments and get_config
# ---------------------------------------------------------------------------------------------
def _generic_from_keras(spec, config, input_shape, where):
    """A cgru layer from a Keras layer config: its arguments passed on by name."""
    kwargs = {}
    for key, value in config.items():
        if key in spec.fixed:
            _require(config, where, {key: spec.fixed[key]})
        elif key == "dtype":
            kwargs["dtype"] = _dtype_name(value, where)
        elif key == "seed":
            kwargs["seed"] = value if isinstance(value, int) else None
        elif key.endswith("_initializer"):
            value = _initializer_from_keras(value)
            if value is not None:
                kwargs[key] = value
        elif key == "activation":
            _check_activation(value, where)
            kwargs[key] = None if value == "linear" else value
        elif key == "layer":
            kwargs[key] = layer_from_keras(value, None, f"{where} (wrapped layer)")
        else:
            kwargs[key] = value
    try:
        return spec.cls(input_shape=input_shape, **kwargs)
    except NotImplementedError as e:
        raise NotImplementedError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
        raise NotImplementedError(f"{where}: cgru cannot build this layer from its Keras "
                                  f"config ({e}).") from None


def _generic_to_keras(spec, layer):
    """A cgru layer's ``get_config`` in Keras's form."""
    config = layer.get_config()
    for key in ("input_shape", "batch_size") + (() if spec.seed else ("seed",)):
        config.pop(key, None)
    config.update(name=layer.name, trainable=layer.trainable, dtype=layer.dtype.name)
    for key in list(config):
        if key.endswith("_regularizer"):
            config[key] = _keras_entry(getattr(layer, key), "regularizers")
        elif key.endswith("_constraint"):
            config[key] = _keras_entry(getattr(layer, key), "constraints")
        elif key == "activation" and config[key] is None:
            config[key] = "linear"
        elif key == "layer":
            config[key] = layer_to_keras(layer.layer, None)
    config.setdefault("activity_regularizer",
                      _keras_entry(layer.activity_regularizer, "regularizers"))
    config.update(spec.fixed)
    for key in spec.omit:
        config.pop(key, None)
    return config


def _own_weights(layer):
    """The HDF5 parts of a layer: its own ``vars`` group, if it has weights."""
    return [("", layer)] if layer.weights else []


# ---------------------------------------------------------------------------------------------
# GRU, Bidirectional and TimeDistributed: what differs from the generic mapping
# ---------------------------------------------------------------------------------------------
def _penalties(config, weights):
    """The regularizer and constraint arguments of a Keras layer config, as cgru takes them
    (Keras's entries {"class_name", "config"} name the same classes with the same configs)."""
    keys = [f"{w}_{kind}" for w in weights for kind in ("regularizer", "constraint")]
    return {key: config[key] for key in keys + ["activity_regularizer"]
            if config.get(key) is not None}


def _penalty_entries(layer, weights):
    entries = {}
    for w in weights:
        entries[f"{w}_regularizer"] = _keras_entry(getattr(layer, f"{w}_regularizer"),
                                                   "regularizers")
        entries[f"{w}_constraint"] = _keras_entry(getattr(layer, f"{w}_constraint"),
                                                  "constraints")
    entries["activity_regularizer"] = _keras_entry(layer.activity_regularizer, "regularizers")
    return entries


def _gru_from_keras(spec, config, input_shape, where):
    _require(config, where, {"stateful": False})
    seed = config.get("seed")
    kwargs = {"recurrent_dropout": float(config.get("recurrent_dropout", 0.0)),
              "zero_output_for_mask": bool(config.get("zero_output_for_mask", False))}
    for key, default in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        # the activations the fused cell computes (Keras stores swish as silu)
        name = config.get(key, default)
        if name not in CELL_ACTIVATIONS:
            raise NotImplementedError(
                f"{where}: {key}={name!r} is not supported by cgru's GRU cell (it computes "
                f"{', '.join(CELL_ACTIVATIONS)}).")
        kwargs[key] = name
    for key, default in (("kernel_initializer", "glorot_uniform"),
                         ("recurrent_initializer", "orthogonal"),
                         ("bias_initializer", "zeros")):
        kwargs[key] = _initializer_from_keras(config.get(key)) or default
    return _gru_of(config, input_shape, where, seed, kwargs)


def _gru_of(config, input_shape, where, seed, kwargs):
    return L.GRU(config["units"], return_sequences=bool(config.get("return_sequences", False)),
                 return_state=bool(config.get("return_state", False)),
                 use_bias=bool(config.get("use_bias", True)),
                 trainable=bool(config.get("trainable", True)),
                 **_penalties(config, ("kernel", "recurrent", "bias")),
                 go_backwards=bool(config.get("go_backwards", False)),
                 reset_after=bool(config.get("reset_after", True)),
                 dropout=float(config.get("dropout", 0.0)), input_shape=input_shape,
                 seed=seed if isinstance(seed, int) else None,
                 dtype=_dtype_name(config.get("dtype"), where), name=config.get("name"),
                 **kwargs)


def _gru_to_keras(spec, layer):
    if layer.stateful:
        raise NotImplementedError(f"Layer '{layer.name}': stateful=True is not written to "
                                  "Keras files by cgru (it needs the batch size in the "
                                  "InputLayer).")
    config = layer.get_config()
    return {"name": layer.name, "trainable": layer.trainable, "dtype": layer.dtype.name,
            "return_sequences": layer.return_sequences, "return_state": layer.return_state,
            "go_backwards": layer.go_backwards, "stateful": False, "unroll": False,
            "zero_output_for_mask": layer.zero_output_for_mask,
            "units": layer.units, "activation": layer.activation,
            "recurrent_activation": layer.recurrent_activation, "use_bias": layer.use_bias,
            **_penalty_entries(layer, ("kernel", "recurrent", "bias")),
            "kernel_initializer": config["kernel_initializer"],
            "recurrent_initializer": config["recurrent_initializer"],
            "bias_initializer": config["bias_initializer"],
            "dropout": layer.dropout, "recurrent_dropout": layer.recurrent_dropout,
            "reset_after": layer.reset_after, "seed": layer.seed}


def _bidirectional_from_keras(spec, config, input_shape, where):
    inner = config["layer"]
    if inner.get("class_name") != "GRU":
        raise NotImplementedError(f"{where} wraps a Keras {inner.get('class_name')} layer; "
                                  "cgru's Bidirectional wraps GRU layers only.")
    # Keras's Bidirectional sets its halves' zero_output_for_mask itself (to
    # return_sequences), whatever the wrapped layer's config says
    forward = _gru_from_keras(spec, dict(inner["config"], zero_output_for_mask=False), None,
                              f"{where} (forward layer)")
    backward = config.get("backward_layer")
    if backward is not None:
        if backward.get("class_name") != "GRU":
            raise NotImplementedError(f"{where} has a Keras {backward.get('class_name')} "
                                      "backward layer; cgru's backward layer is a GRU.")
        mirrored = dict(inner["config"], go_backwards=not forward.go_backwards)
        for key in ("units", "reset_after", "go_backwards", "return_sequences",
                    "return_state", "dropout", "activation", "recurrent_activation",
                    "recurrent_dropout"):
            if backward["config"].get(key) != mirrored.get(key):
                raise NotImplementedError(
                    f"{where}: its backward layer differs from the forward layer in {key!r} "
                    f"({backward['config'].get(key)!r} vs {mirrored.get(key)!r}); cgru's "
                    "Bidirectional runs a mirror copy of the forward layer.")
    return L.Bidirectional(forward, merge_mode=config.get("merge_mode", "concat"),
                           input_shape=input_shape, name=config.get("name"))


def _bidirectional_to_keras(spec, layer):
    inner = _gru_to_keras(spec, layer.forward_layer)
    return {"name": layer.name, "trainable": layer.trainable, "dtype": layer.dtype.name,
            "merge_mode": layer.merge_mode,
            "layer": {"module": "keras.layers", "class_name": "GRU", "config": inner,
                      "registered_name": None}}


def _time_distributed_from_keras(spec, config, input_shape, where):
    inner = layer_from_keras(config["layer"], None, f"{where} (wrapped layer)")
    try:
        return L.TimeDistributed(inner, input_shape=input_shape, name=config.get("name"))
    except (NotImplementedError, TypeError, ValueError) as e:
        raise NotImplementedError(f"{where}: {e}") from None


def _time_distributed_parts(layer):
    return [("/".join(p for p in ("layer", sub) if p), part)
            for sub, part in weight_parts(layer.layer)]


# ---------------------------------------------------------------------------------------------
# the layer table
# ---------------------------------------------------------------------------------------------
class _Spec:
    """How one Keras layer class maps onto cgru.

    ``group``: the HDF5 group name Keras gives it (its class in snake case). ``fixed``: Keras
    config entries cgru has no argument for, with the only value cgru computes (another
    value is refused, naming it; these values are written to Keras). ``seed``: whether the
    Keras config has a ``seed``. ``from_keras``/``to_keras``/``parts``: replacements for the
    generic mapping, the generic config writer and the layer's HDF5 parts (``(sub path,
    layer)`` pairs whose ``get_weights`` fill ``<sub path>/vars``). ``ids``: the layer takes
    integer ids (a model starting with it has an int32 input). ``omit``: keys the Keras class
    does not take."""

    def __init__(self, cls, group, *, fixed=None, seed=False, from_keras=None,
                 to_keras=None, parts=None, ids=False, omit=()):
        self.cls, self.group, self.fixed, self.seed = cls, group, dict(fixed or {}), seed
        self.ids, self.omit = ids, omit
        self.from_keras = from_keras or _generic_from_keras
        self.to_keras = to_keras or _generic_to_keras
        self.parts = parts or _own_weights


_NO_LORA = {"lora_rank": None, "lora_alpha": None, "quantization_config": None}

LAYERS = {
    "GRU": _Spec(L.GRU, "gru", from_keras=_gru_from_keras, to_keras=_gru_to_keras,
                 parts=lambda layer: [("cell", layer)]),
    "Bidirectional": _Spec(L.Bidirectional, "bidirectional",
                           from_keras=_bidirectional_from_keras,
                           to_keras=_bidirectional_to_keras,
                           parts=lambda layer: [("forward_layer/cell", layer.forward_layer),
                                                ("backward_layer/cell", layer.backward_layer)]),
    "Dense": _Spec(L.Dense, "dense", fixed=_NO_LORA),
    "Dropout": _Spec(L.Dropout, "dropout", fixed={"noise_shape": None}, seed=True),
    "Embedding": _Spec(L.Embedding, "embedding", ids=True),
    "Masking": _Spec(L.Masking, "masking"),
    "Activation": _Spec(L.Activation, "activation"),
    "Flatten": _Spec(L.Flatten, "flatten"),
    "Reshape": _Spec(L.Reshape, "reshape"),
    "Permute": _Spec(L.Permute, "permute"),
    "RepeatVector": _Spec(L.RepeatVector, "repeat_vector"),
    "TimeDistributed": _Spec(L.TimeDistributed, "time_distributed",
                             from_keras=_time_distributed_from_keras,
                             parts=_time_distributed_parts),
    "Conv1D": _Spec(L.Conv1D, "conv1d", fixed={"data_format": "channels_last", "groups": 1}),
    "MaxPooling1D": _Spec(L.MaxPooling1D, "max_pooling1d",
                          fixed={"data_format": "channels_last"}),
    "AveragePooling1D": _Spec(L.AveragePooling1D, "average_pooling1d",
                              fixed={"data_format": "channels_last"}),
    "GlobalMaxPooling1D": _Spec(L.GlobalMaxPooling1D, "global_max_pooling1d",
                                fixed={"data_format": "channels_last"}),
    "GlobalAveragePooling1D": _Spec(L.GlobalAveragePooling1D, "global_average_pooling1d",
                                    fixed={"data_format": "channels_last"}),
    "BatchNormalization": _Spec(L.BatchNormalization, "batch_normalization",
                                fixed={"renorm": False, "synchronized": False}),
    "LayerNormalization": _Spec(L.LayerNormalization, "layer_normalization",
                                fixed={"rms_scaling": False}),
    "SpatialDropout1D": _Spec(L.SpatialDropout1D, "spatial_dropout1d", seed=True,
                              omit=("trainable", "activity_regularizer")),
    "GaussianNoise": _Spec(L.GaussianNoise, "gaussian_noise", seed=True),
    "GaussianDropout": _Spec(L.GaussianDropout, "gaussian_dropout", seed=True),
    # merging layers (functional models): no weights, Keras's config is name, dtype and
    # their own arguments (axis, axes, normalize)
    **{name: _Spec(getattr(L, name), group, omit=("activity_regularizer",))
       for name, group in (("Concatenate", "concatenate"), ("Add", "add"),
                           ("Subtract", "subtract"), ("Multiply", "multiply"),
                           ("Average", "average"), ("Maximum", "maximum"),
                           ("Minimum", "minimum"), ("Dot", "dot"))},
}
# the InputLayer: its HDF5 group (an empty one, in a functional model's layers); its config
# is written and read with the model's (``_input_layer_entry``, ``_functional_from_keras``)
_INPUT_GROUP = "input_layer"
_BY_CLASS = {spec.cls: name for name, spec in LAYERS.items()}
# Keras's short aliases name the same classes
for _alias, _name in (("MaxPool1D", "MaxPooling1D"), ("AvgPool1D", "AveragePooling1D"),
                      ("GlobalMaxPool1D", "GlobalMaxPooling1D"),
                      ("GlobalAvgPool1D", "GlobalAveragePooling1D")):
    LAYERS[_alias] = LAYERS[_name]


def _spec_of(layer):
    if isinstance(layer, L.InputLayer):
        return "InputLayer", _Spec(L.InputLayer, _INPUT_GROUP, parts=lambda layer: [])
    name = _BY_CLASS.get(type(layer))
    if name is None:
        raise NotImplementedError(f"Layer '{layer.name}' ({type(layer).__name__}) has no "
                                  "Keras file equivalent.")
    return name, LAYERS[name]


def layer_from_keras(entry, input_shape=None, where=None):
    """A cgru layer from one Keras layer entry ({"class_name", "config", ...}), built for
    ``input_shape`` (no batch axis) when given."""
    class_name = entry.get("class_name")
    config = entry.get("config", {})
    where = where or f"Keras layer {config.get('name')!r} ({class_name})"
    spec = LAYERS.get(class_name)
    if spec is None:
        known = sorted(n for n in LAYERS if LAYERS[n].cls.__name__ == n)
        raise NotImplementedError(
            f"Keras layer {config.get('name')!r} of class {class_name!r} has no cgru "
            f"equivalent; cgru reads {', '.join(known + ['InputLayer'])}.")
    return spec.from_keras(spec, config, input_shape, where)


def layer_to_keras(layer, input_shape):
    """One Keras layer entry for a cgru layer (``input_shape`` without the batch axis, or
    None: no build_config)."""
    class_name, spec = _spec_of(layer)
    entry = {"module": "keras.layers", "class_name": class_name,
             "config": spec.to_keras(spec, layer), "registered_name": None}
    if input_shape is not None:
        entry["build_config"] = {"input_shape": [None] + list(input_shape)}
    return entry


def weight_parts(layer):
    """``(sub path, layer)`` pairs: where under the layer's HDF5 group each weight-holding
    part keeps its ``vars``."""
    return _spec_of(layer)[1].parts(layer)


def _group_name(layer):
    return _spec_of(layer)[1].group


# ---------------------------------------------------------------------------------------------
# Sequential configs
# ---------------------------------------------------------------------------------------------
def _input_shape_of(entry):
    """The shape without the batch axis that a Keras InputLayer entry declares."""
    config = entry.get("config", {})
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    if shape is None:
        raise ValueError(f"Keras InputLayer {config.get('name')!r} has no batch_shape.")
    return tuple(shape[1:])


def model_from_keras_config(config):
    """A cgru Sequential or functional Model (unweighted) from a Keras 3 model config
    (config.json's content)."""
    Sequential = saving.registered_class("Sequential")
    if config.get("class_name") in ("Functional", "Model") and "layers" in config.get(
            "config", {}):
        return _functional_from_keras(config)
    if config.get("class_name") != "Sequential":
        raise NotImplementedError(
            f"The Keras model is a {config.get('class_name')!r}; cgru reads Sequential and "
            "functional models (a subclassed model's call() is Python code, which a file "
            "does not hold).")
    model_config = config["config"]
    input_shape = None
    if model_config.get("build_input_shape"):
        input_shape = tuple(model_config["build_input_shape"][1:])
    model = Sequential(name=model_config.get("name"))
    for entry in model_config.get("layers", []):
        if entry.get("class_name") == "InputLayer":
            input_shape = _input_shape_of(entry)
            continue
        if not model.layers and input_shape is None and entry.get("build_config"):
            input_shape = tuple(entry["build_config"]["input_shape"][1:])
        model.add(layer_from_keras(entry, input_shape if not model.layers else None))
    if not model.layers:
        raise ValueError("The Keras model has no layers.")
    return model


def _model_input_shape(model):
    """The input shape without the batch axis: the time axis free unless the first layer's
    ``input_shape`` fixed it or a later layer needs it (a Flatten before a Dense)."""
    shape = list(model.input_shape[1:])
    fixed = model.layers[0].get_config().get("input_shape")
    if not shape or (fixed is not None and fixed[0] is not None):
        return shape
    if len(shape) < 2 and not _spec_of(model.layers[0])[1].ids:
        return shape            # (features,): no time axis
    free = [None] + shape[1:]
    current = tuple(free)
    try:
        for layer in model.layers:
            if layer.weights and current[-1] is None and not _spec_of(layer)[1].ids:
                return shape    # a weight's size follows the time axis
            current = tuple(layer.compute_output_shape(current))
    except (TypeError, ValueError):
        return shape
    return free


def keras_model_config(model):
    """config.json's content (without compile_config) for a built cgru Sequential or
    functional Model."""
    if not isinstance(model, saving.registered_class("Sequential")):
        if isinstance(model, saving.registered_class("Model")):
            return _functional_config(model)
        raise TypeError(f"Keras files hold cgru Sequential or functional models; received "
                        f"{model!r}.")
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built: call it on an input or give "
                         "its first layer `input_shape` before saving it.")
    shape = _model_input_shape(model)
    dtype = model.layers[0].dtype.name
    # a model starting with an Embedding takes integer ids
    input_dtype = "int32" if _spec_of(model.layers[0])[1].ids else dtype
    layers = [{"module": "keras.layers", "class_name": "InputLayer",
               "config": {"batch_shape": [None] + shape, "dtype": input_dtype, "sparse": False,
                          "ragged": False, "name": f"{model.name}_input"},
               "registered_name": None}]
    current = tuple(shape)
    for layer in model.layers:
        layers.append(layer_to_keras(layer, current))
        current = tuple(layer.compute_output_shape(current))
    return {"module": "keras", "class_name": "Sequential",
            "config": {"name": model.name, "trainable": True, "dtype": dtype,
                       "layers": layers, "build_input_shape": [None] + shape},
            "registered_name": None, "build_config": {"input_shape": [None] + shape}}


# ---------------------------------------------------------------------------------------------
# functional configs: every layer with the calls that made the graph ("inbound_nodes"), each
# call's input tensors named by [layer, call number, output index] ("keras_history")
# ---------------------------------------------------------------------------------------------
def _calls_of(model, layer):
    """The calls (nodes) of ``layer`` in ``model``, in order: the numbers Keras writes."""
    return [node for node in model._all_nodes() if node.layer is layer]


def _tensor_entry(model, tensor):
    return {"class_name": "__keras_tensor__",
            "config": {"shape": list(tensor.shape), "dtype": str(np.dtype(tensor.dtype)),
                       "keras_history": model._tensor_ref(tensor)}}


def _structure_refs(model, tensors, kind, keys):
    """input_layers / output_layers: one reference, a list, or a dict by name."""
    refs = [model._tensor_ref(t) for t in tensors]
    if kind == "dict":
        return dict(zip(keys, refs))
    return refs[0] if kind == "single" else refs


def _input_layer_entry(tensor):
    layer = tensor.input_layer
    return {"module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": list(tensor.shape), "dtype": str(np.dtype(tensor.dtype)),
                       "sparse": False, "ragged": False, "name": layer.name},
            "registered_name": None, "name": layer.name, "inbound_nodes": []}


def _functional_config(model):
    """config.json's content (without compile_config) for a cgru functional Model."""
    entries = []
    inputs = {id(t.input_layer): t for t in model._inputs}
    for layer in model.layers:
        if id(layer) in inputs:
            entries.append(_input_layer_entry(inputs[id(layer)]))
            continue
        calls = _calls_of(model, layer)
        shapes = [list(t.shape) for t in calls[0].x_inputs]
        entry = layer_to_keras(layer, None)
        entry["build_config"] = {"input_shape": shapes if calls[0].list_input else shapes[0]}
        entry["name"] = layer.name
        entry["inbound_nodes"] = []
        for node in calls:
            tensors = [_tensor_entry(model, t) for t in node.x_inputs]
            kwargs = {}
            if node.num_states:
                states = [_tensor_entry(model, t) for t in node.state_inputs]
                kwargs["initial_state"] = states if node.states_as_list else states[0]
            entry["inbound_nodes"].append(
                {"args": [tensors if node.list_input else tensors[0]], "kwargs": kwargs})
        entries.append(entry)
    return {"module": "keras.src.models.functional", "class_name": "Functional",
            "config": {"name": model.name, "trainable": True, "layers": entries,
                       "input_layers": _structure_refs(model, model._inputs,
                                                       model._input_kind,
                                                       model._input_dict_keys),
                       "output_layers": _structure_refs(model, model._outputs,
                                                        model._output_kind,
                                                        model._output_dict_keys)},
            "registered_name": "Functional", "build_config": {"input_shape": None}}


def _is_ref(value):
    return isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str)


def _refs_in(value):
    """The keras_history references in a node's args (nested lists and dicts)."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [tuple(value["config"]["keras_history"])]
        return [r for v in value.values() for r in _refs_in(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _refs_in(v)]
    return []


def _functional_from_keras(config):
    """A cgru functional Model from a Keras 3 Functional config: each Keras layer made once,
    then called on the tensors of its inbound nodes in an order where every input exists
    (each layer's calls in their order, so that call numbers match). Keras ops that only
    compute the masks passed as ``mask=`` (an Embedding's ``not_equal``, a Masking layer's
    ``not_equal`` and ``any``) are left out: cgru layers pass masks along the graph
    themselves."""
    Model = saving.registered_class("Model")
    model_config = config["config"]
    entries = model_config.get("layers", [])
    where_model = f"Keras model {model_config.get('name')!r}"
    input_refs, output_refs = model_config["input_layers"], model_config["output_layers"]
    # the layers the outputs read through positional arguments and initial states: an op
    # reached only through a `mask=` keyword (and the ops feeding it: a Masking layer's
    # not_equal, then any) is not one of them
    by_name = {e.get("name") or e.get("config", {}).get("name"): e for e in entries}
    used, todo = set(), []
    for refs in (input_refs, output_refs):
        todo += [refs] if _is_ref(refs) else list(refs.values()) if isinstance(
            refs, dict) else list(refs)
    while todo:
        name = todo.pop()[0]
        if name in used:
            continue
        used.add(name)
        todo += [r for node in by_name.get(name, {}).get("inbound_nodes", [])
                 for r in _refs_in([node.get("args", []),
                                    (node.get("kwargs") or {}).get("initial_state")])]
    calls, pending = {}, []
    for entry in entries:
        name = entry.get("name") or entry.get("config", {}).get("name")
        if name not in used:
            continue                            # an op feeding masks only
        if entry.get("class_name") == "InputLayer":
            c = entry.get("config", {})
            shape = c.get("batch_shape") or c.get("batch_input_shape")
            if shape is None:
                raise ValueError(f"Keras InputLayer {name!r} has no batch_shape.")
            if c.get("sparse") or c.get("ragged") or c.get("optional"):
                raise NotImplementedError(f"Keras InputLayer {name!r}: sparse, ragged and "
                                          "optional inputs are not supported by cgru.")
            calls[(name, 0)] = [L.Input(batch_shape=tuple(shape), name=name,
                                        dtype=c.get("dtype") or "float32")]
            continue
        layer = layer_from_keras(entry)
        for number, node in enumerate(entry.get("inbound_nodes", [])):
            args, kwargs = node.get("args", []), node.get("kwargs", {}) or {}
            extra = sorted(k for k in kwargs
                           if k not in ("training", "mask", "initial_state"))
            state = kwargs.get("initial_state")
            if state is not None and (not _refs_in(state) or len(_refs_in(state)) != (
                    len(state) if isinstance(state, list) else 1)):
                raise NotImplementedError(
                    f"{where_model}: layer {name!r} is called with an `initial_state` that "
                    "is not made of graph tensors; cgru takes initial states from the graph.")
            if len(args) != 1 or extra:
                raise NotImplementedError(
                    f"{where_model}: layer {name!r} is called with arguments cgru does not "
                    f"take ({len(args)} positional, keyword {extra}); cgru calls a layer on "
                    "one tensor or one list of tensors.")
            pending.append((name, number, layer, args[0], state))
    made = {}
    while pending:
        progress = False
        for item in list(pending):
            name, number, layer, arg, state = item
            if made.get(name, 0) != number:
                continue                        # this layer's earlier call first
            refs, state_refs = _refs_in(arg), _refs_in(state)
            if not all((r[0], r[1]) in calls for r in refs + state_refs):
                continue
            tensors = [calls[(r[0], r[1])][r[2]] for r in refs]
            x = tensors if isinstance(arg, list) else tensors[0]
            if state is None:
                out = layer(x)
            else:
                states = [calls[(r[0], r[1])][r[2]] for r in state_refs]
                out = layer(x, initial_state=states if isinstance(state, list) else states[0])
            calls[(name, number)] = out if isinstance(out, list) else [out]
            made[name] = number + 1
            pending.remove(item)
            progress = True
        if not progress:
            raise ValueError(f"{where_model}: the calls of "
                             f"{sorted({p[0] for p in pending})} read tensors no layer makes.")

    def struct(refs):
        if _is_ref(refs):
            return calls[(refs[0], refs[1])][refs[2]]
        if isinstance(refs, dict):
            return {k: calls[(r[0], r[1])][r[2]] for k, r in refs.items()}
        return [calls[(r[0], r[1])][r[2]] for r in refs]

    return Model(struct(input_refs), struct(output_refs), name=model_config.get("name"))


# ---------------------------------------------------------------------------------------------
# weights: the HDF5 layout
# ---------------------------------------------------------------------------------------------
def _layer_groups(layers):
    """(layer, h5 path, [(sub path, part)]) for each layer of ``layers``, in Keras's naming:
    groups counted per class in the order of the list."""
    counts = {}
    for layer in layers:
        base = _group_name(layer)
        n = counts.get(base)
        counts[base] = 0 if n is None else n + 1
        path = f"layers/{base}" if n is None else f"layers/{base}_{n + 1}"
        yield layer, path, weight_parts(layer)


def _read_vars(group):
    """The arrays of an h5 ``vars`` group, in the numeric order of their names."""
    return [np.asarray(group[key]) for key in sorted(group.keys(), key=int)]


def _set_layer_weights(layers, h5, source):
    """Load every layer's arrays from an open h5 file in Keras's layout."""
    for layer, path, parts in _layer_groups(layers):
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


def _write_layer_weights(name, layers, h5):
    h5.create_group("vars").attrs["name"] = name
    for layer, path, parts in _layer_groups(layers):
        h5.create_group(f"{path}/vars").attrs["name"] = layer.name
        for sub, part in parts:
            steps = sub.split("/") if sub else []
            # every object on the way has its (empty) vars group, as Keras writes them
            for i in range(1, len(steps) + 1):
                group = h5.require_group("/".join([path] + steps[:i] + ["vars"]))
                group.attrs["name"] = part.name
            group = h5.require_group("/".join([path] + steps + ["vars"]))
            for i, array in enumerate(part.get_weights()):
                group.create_dataset(str(i), data=array)


# ---------------------------------------------------------------------------------------------
# optimizer and compile settings
# ---------------------------------------------------------------------------------------------
# Options whose state Keras keeps in another order than cgru (EMA copies and gradient
# accumulators come first in Keras's variables): refused both ways for now.
_KERAS_OPTIMIZER_DEFAULTS = {"use_ema": False, "gradient_accumulation_steps": None}


def _optimizer_classes():
    return {cls.__name__: cls for cls in optimizers_mod._OPTIMIZERS.values()}


def _optimizer_from_keras(entry):
    if isinstance(entry, str):
        return optimizers_mod.get(entry)
    class_name = entry.get("class_name")
    config = dict(entry.get("config", {}))
    where = f"Keras optimizer {class_name!r}"
    classes = _optimizer_classes()
    if class_name not in classes:
        raise NotImplementedError(f"{where} has no cgru equivalent (cgru has "
                                  f"{', '.join(sorted(classes))}).")
    _require(config, where, _KERAS_OPTIMIZER_DEFAULTS)
    config.pop("ema_momentum", None)
    config.pop("ema_overwrite_frequency", None)
    lr = config.get("learning_rate")
    if isinstance(lr, dict):
        lr = {"class_name": lr.get("class_name"), "config": lr.get("config", {})}
        try:
            config["learning_rate"] = optimizers_mod.schedules.deserialize(lr)
        except (ValueError, TypeError) as e:
            raise NotImplementedError(f"{where}: learning-rate schedule "
                                      f"{lr['class_name']!r} is not supported ({e}).") from None
    try:
        return classes[class_name](**config)
    except (TypeError, ValueError) as e:
        raise NotImplementedError(f"{where}: cgru cannot build it from its Keras config "
                                  f"({e}).") from None


def _keras_optimizer_entry(optimizer):
    class_name = type(optimizer).__name__
    if class_name not in _optimizer_classes():
        raise NotImplementedError(f"Optimizer {class_name} has no Keras file equivalent.")
    config = optimizer.get_config()
    _require(config, f"Optimizer {class_name}", _KERAS_OPTIMIZER_DEFAULTS)
    lr = config["learning_rate"]
    if isinstance(lr, dict):
        config["learning_rate"] = {"module": "keras.optimizers.schedules",
                                   "class_name": lr["class_name"], "config": lr["config"],
                                   "registered_name": None}
    return {"module": "keras.optimizers", "class_name": class_name, "config": config,
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


def _per_output(value, convert):
    """``convert`` applied to each entry of a compile option given per output (a list in
    the outputs' order or a dict by output name), or to the one value."""
    if isinstance(value, dict) and "class_name" not in value:
        return {k: None if v is None else convert(v) for k, v in value.items()}
    if isinstance(value, list):
        return [None if v is None else convert(v) for v in value]
    return convert(value)


def _metric_names_from_keras(value):
    """A metrics option (a name, a list of names, or per output) with every metric by name."""
    def names(entry):
        entries = entry if isinstance(entry, list) else [entry]
        for metric in entries:
            if isinstance(metric, list):
                names(metric)
            elif not isinstance(metric, str):
                raise NotImplementedError(f"Keras metric {metric!r} is not supported by cgru "
                                          "(it reads metrics given by name).")
        return entry
    if isinstance(value, dict) and "class_name" not in value:
        return {k: names(v) for k, v in value.items() if v is not None}
    return names(value)


def _compile_from_keras(model, compile_config):
    loss = _per_output(compile_config.get("loss"), _loss_from_keras)
    if isinstance(loss, dict):
        loss = {k: v for k, v in loss.items() if v is not None}
    # no metrics: None (an empty list would be one per output for several outputs)
    metrics = compile_config.get("metrics") or None
    if isinstance(metrics, str) or (isinstance(metrics, dict) and "class_name" in metrics):
        metrics = [metrics]
    weighted = compile_config.get("weighted_metrics")
    loss_weights = compile_config.get("loss_weights")
    if isinstance(loss, list) and isinstance(loss_weights, dict):
        # Keras pairs a list of losses with a dict of weights in the dict's sorted key
        # order (tree.flatten), not by output name
        loss_weights = [loss_weights[k] for k in sorted(loss_weights)]
    model.compile(optimizer=_optimizer_from_keras(compile_config["optimizer"]), loss=loss,
                  metrics=None if metrics is None else _metric_names_from_keras(metrics),
                  loss_weights=loss_weights,
                  weighted_metrics=None if weighted is None
                  else _metric_names_from_keras(weighted))


def _keras_metric_entries(specs):
    return [m if isinstance(m, str) else metrics_mod.serialize(metrics_mod.get(m))
            for m in specs]


def _keras_compile_config(model):
    """Keras's compile_config: the loss, metrics, weighted metrics and loss weights as
    ``compile`` was given them (one value, a list in the outputs' order, or a dict by output
    name)."""
    loss = getattr(model, "loss", None)
    names = model._output_names
    single = len(names) == 1

    def by_output(per_output):
        if single:
            return _keras_metric_entries(per_output[0]) or None
        found = {n: _keras_metric_entries(m) for n, m in zip(names, per_output) if m}
        return found or None

    if isinstance(loss, dict):
        keras_loss = {n: losses_mod.serialize(l) for n, l in loss.items()}
    elif isinstance(loss, list):
        keras_loss = [None if l is None else losses_mod.serialize(l) for l in loss]
    else:
        keras_loss = None if loss is None else losses_mod.serialize(loss)
    weights = list(getattr(model, "_loss_weights", [1.0]))
    loss_weights = None
    if any(w != 1.0 for w in weights):
        # in the loss's structure: Keras pairs a dict of weights with a list of losses in
        # the dict's sorted key order, not by name
        loss_weights = weights[0] if single else dict(zip(names, weights)) if isinstance(
            loss, dict) else weights
    return {"optimizer": _keras_optimizer_entry(model.optimizer),
            "loss": keras_loss, "loss_weights": loss_weights,
            "metrics": by_output(getattr(model, "_output_metrics", [[]])),
            "weighted_metrics": by_output(getattr(model, "_output_weighted_metrics", [[]])),
            "run_eagerly": False, "steps_per_execution": 1}


def _keras_slot_groups(optimizer):
    """The optimizer's slot names in the groups Keras 3 creates them: each group weight by
    weight (for each weight, its slots of the group), one group after the other. Adam's
    ``velocity_hat`` (amsgrad) and each of RMSprop's slots make groups of their own."""
    names = list(optimizer._active_slots())
    if isinstance(optimizer, optimizers_mod.RMSprop):
        return [[name] for name in names]
    groups = [[n for n in names if n != "velocity_hat"]]
    if "velocity_hat" in names:
        groups.append(["velocity_hat"])
    return groups


def _slots_order(optimizer, n_weights, n_arrays):
    """Indices that put cgru's ``variables()`` (each weight's slots in turn, then a rule's
    extra state such as Nadam's running product) in Keras's order."""
    names = list(optimizer._active_slots())
    own = {(name, w): w * len(names) + i for w in range(n_weights)
           for i, name in enumerate(names)}
    order = [own[(name, w)] for group in _keras_slot_groups(optimizer)
             for w in range(n_weights) for name in group]
    return order + list(range(len(order), n_arrays))


def _reorder(arrays, optimizer, n_weights, inverse):
    """Slot arrays from cgru's order to Keras's, or back with ``inverse``."""
    order = _slots_order(optimizer, n_weights, len(arrays))
    if len(order) != len(arrays):
        return list(arrays)             # not this optimizer's state: set_variables says so
    if inverse:                         # Keras -> cgru
        out = [None] * len(arrays)
        for keras_index, own_index in enumerate(order):
            out[own_index] = arrays[keras_index]
        return out
    return [arrays[i] for i in order]


def _leading_scalars(optimizer):
    """Keras's optimizer variables start with iterations, then the learning rate unless it
    is a schedule (computed from iterations)."""
    return 1 if isinstance(optimizer.get_config()["learning_rate"], dict) else 2


def _write_optimizer(model, h5):
    optimizer = model.optimizer
    if optimizer is None or not optimizer.built:
        return
    # the slots are in the layers' own layout (a GRU's gate order): Keras's on the way out
    slots = slots_layout(model, optimizer, optimizer.variables(), to_keras=True)
    slots = _reorder(slots, optimizer, len(model.trainable_weights), False)
    group = h5.create_group("optimizer/vars")
    group.attrs["name"] = optimizer.name
    group.create_dataset("0", data=np.int64(optimizer.iterations))
    scalars = _leading_scalars(optimizer)
    if scalars == 2:
        group.create_dataset("1", data=np.float32(optimizer.learning_rate))
    for i, array in enumerate(slots):
        group.create_dataset(str(i + scalars), data=array)


def _read_optimizer(model, h5, source):
    """Restore the optimizer's iterations and slots from ``optimizer/vars``, if there."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or "optimizer/vars" not in h5:
        return
    arrays = _read_vars(h5["optimizer/vars"])
    scalars = _leading_scalars(optimizer)
    if len(arrays) < scalars:
        return
    slots = _reorder(arrays[scalars:], optimizer, len(model.trainable_weights), True)
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
    """A cgru Sequential or functional Model from a ``.keras`` file that Keras 3 wrote
    (``model.save``).

    Architecture (every layer of ``LAYERS``, and InputLayer), weights, and with
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
            _set_layer_weights(model.layers, h5, path)
        compile_config = config.get("compile_config")
        if compile and compile_config:
            _compile_from_keras(model, compile_config)
            _read_optimizer(model, h5, path)
    return model


def save_keras_model(model, path):
    """Write a built cgru Sequential or functional Model as a Keras 3 ``.keras`` file that
    ``keras.models.load_model`` opens: architecture, weights, compile settings and (once the
    model has trained) the optimizer state. Written to a temporary file and renamed."""
    h5py = _import_h5py()
    config = keras_model_config(model)
    if getattr(model, "compiled", False) and model.optimizer is not None:
        config["compile_config"] = _keras_compile_config(model)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        _write_layer_weights(model.name, model.layers, h5)
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
        _set_layer_weights(model.layers, h5, path)
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
        _write_layer_weights(model.name, model.layers, h5)
        if getattr(model, "compiled", False) and model.optimizer is not None:
            _write_optimizer(model, h5)
    with atomic_output(path) as f:
        f.write(buffer.getvalue())
    return path

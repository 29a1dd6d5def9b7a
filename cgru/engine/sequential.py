"""Sequential: a stack of layers, the one-path case of the functional ``Model``.

Its graph is the chain of its layers (each step reads the previous one's output), built
again when a layer is added; forward, backward and the training loop are the ``Model``'s
(``cgru.engine.functional``, ``cgru.engine.trainer``). What is its own: ``add``, building
from the first input's shape, the checks of ``x`` and ``y`` against the first and last
layers, ``summary`` and its config.
"""
import numpy as np

from .. import saving
from ..layers import InputLayer, KerasTensor, Layer
from ..layers.base import auto_name, shape_str as _shape_str
from .functional import Model, _Graph, _Step, summary_row, summary_totals

__all__ = ["Sequential"]


@saving.register_serializable
class Sequential(Model):
    def __init__(self, layers=None, name=None, seed=None):
        self._init_training_state(name or auto_name("Sequential"), seed)
        self.layers = []
        self._input_layer = None        # an InputLayer given first, as Keras allows
        self._chain = None
        for layer in layers or []:
            self.add(layer)

    # -- structure -------------------------------------------------------------------------
    def add(self, layer):
        if isinstance(layer, KerasTensor):          # Sequential([Input(...), ...])
            layer = layer.input_layer
        if isinstance(layer, InputLayer):
            if self.layers or self._input_layer is not None:
                raise ValueError("An InputLayer can only be the first element of a "
                                 "Sequential model.")
            self._input_layer = layer
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add() expects a cgru layer; received {layer!r}.")
        if layer.num_outputs != 1:
            raise ValueError(f"Layer '{layer.name}' returns {layer.num_outputs} outputs (for "
                             "example with return_state=True or merge_mode=None); Sequential "
                             "layers must have exactly one output.")
        batch_size = self.batch_size
        if batch_size is not None and layer.batch_size is None and not layer.built:
            layer.batch_size = batch_size       # stateful layers keep a state per row
        if not self.layers and self._input_layer is not None and not layer.built:
            layer.check_input_shape((None,) + tuple(self._input_layer.input_shape))
            layer.build(tuple(self._input_layer.input_shape))
        elif self.layers and self.layers[-1].built:
            shape = self._output_shape_after(len(self.layers))
            layer.check_input_shape((None,) + shape)
            if not layer.built:
                layer.build(shape)
            elif tuple(layer.built_input_shape) != tuple(shape):
                raise ValueError(f"Layer '{layer.name}' was built for inputs of shape "
                                 f"{_shape_str((None,) + tuple(layer.built_input_shape))} "
                                 f"but the model gives it {_shape_str((None,) + shape)}.")
        self.layers.append(layer)

    def _output_shape_after(self, n):
        shape = tuple(self.layers[0].built_input_shape)
        for layer in self.layers[:n]:
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    @property
    def batch_size(self):
        """The model's fixed batch size (from its Input or first layer), or None."""
        if self._input_layer is not None:
            return self._input_layer.batch_size
        return self.layers[0].batch_size if self.layers else None

    @property
    def built(self):
        return bool(self.layers) and all(layer.built for layer in self.layers)

    def build(self, input_shape):
        """Build every layer for inputs of ``input_shape`` (without the batch axis)."""
        shape = tuple(input_shape)
        for layer in self.layers:
            layer.check_input_shape((None,) + shape)
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))

    @property
    def input_shape(self):
        if not self.layers or not self.layers[0].built:
            return None
        return (None,) + tuple(self.layers[0].built_input_shape)

    @property
    def output_shape(self):
        if not self.built:
            return None
        return (None,) + self._output_shape_after(len(self.layers))

    # -- input checking --------------------------------------------------------------------
    def _prepare_x(self, x, arg="x"):
        if x is None:
            raise ValueError(f"`{arg}` is required.")
        x = np.asarray(x)
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise TypeError(f"`{arg}` must be a numeric array; received dtype {x.dtype}.")
        if not self.layers:
            raise ValueError("The model has no layers; add layers before using it.")
        first = self.layers[0]
        declared = (self._input_layer or first).input_shape
        if declared is not None:
            expected = (None,) + tuple(declared)
            ok = x.ndim == len(expected) and all(
                e is None or e == d for e, d in zip(expected[1:], x.shape[1:]))
            if not ok:
                raise ValueError(f"`{arg}` must have shape {_shape_str(expected)} to match the "
                                 f"model input; received an array of shape {x.shape}.")
        try:
            first.check_input_shape(x.shape)
        except ValueError as e:
            raise ValueError(f"`{arg}` does not fit the model: {e}") from None
        if not self.built:
            self.build(x.shape[1:])
        return x.astype(first.dtype, copy=False)

    def _prepare_sample_weight(self, sample_weight, y, arg="sample_weight"):
        """Per-sample weights (N,) or per-step weights (N, T) as a float array, or None."""
        if sample_weight is None:
            return None
        sample_weight = np.asarray(sample_weight)
        if not (np.issubdtype(sample_weight.dtype, np.number)
                or sample_weight.dtype == np.bool_):
            raise TypeError(f"`{arg}` must be numeric; received dtype {sample_weight.dtype}.")
        if sample_weight.ndim == 0 or sample_weight.shape[0] != y.shape[0] \
                or sample_weight.ndim > 2:
            raise ValueError(f"`{arg}` must have shape (samples,) or (samples, timesteps) "
                             f"with {y.shape[0]} samples; received shape "
                             f"{sample_weight.shape}.")
        return sample_weight.astype(self.layers[-1].dtype, copy=False)

    def _output_shape_for(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    def _prepare_y(self, y, x_shape, arg="y"):
        n = x_shape[0]
        if y is None:
            raise ValueError(f"`{arg}` is required for training and evaluation.")
        y = np.asarray(y)
        if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
            raise TypeError(f"`{arg}` must be a numeric array; received dtype {y.dtype}.")
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(f"`{arg}` must have one label per sample: x has {n} samples "
                             f"but {arg} has shape {y.shape}.")
        out_shape = (n,) + self._output_shape_for(x_shape[1:])
        self.loss.check_shapes(y.shape, out_shape)
        if self.loss.sparse:
            if np.issubdtype(y.dtype, np.floating) and not np.all(np.mod(y, 1) == 0):
                raise ValueError(f"`{arg}` for '{self.loss.name}' must hold integer class "
                                 "ids; received non-integer values.")
            n_classes = out_shape[-1]
            if y.size and (y.min() < 0 or y.max() >= n_classes):
                raise ValueError(f"`{arg}` class ids must be in [0, {n_classes}); received "
                                 f"values in [{y.min()}, {y.max()}].")
            return y.astype(np.int64, copy=False)
        return y.astype(self.layers[-1].dtype, copy=False)

    # -- summary ---------------------------------------------------------------------------
    def summary(self, line_length=65, print_fn=None):
        print_fn = print_fn or print
        cols = [int(line_length * f) for f in (0.45, 0.85, 1.0)]

        def row(fields):
            return summary_row(cols, fields)

        lines = [f'Model: "{self.name}"', "_" * line_length,
                 row([" Layer (type)", "Output Shape", "Param #"]), "=" * line_length]
        shape = self.layers[0].built_input_shape if self.built else None
        for layer in self.layers:
            if shape is not None:
                shape = tuple(layer.compute_output_shape(shape))
                out = _shape_str((None,) + shape)
            else:
                out = "?"
            params = layer.count_params() if layer.built else "0 (unbuilt)"
            lines.append(row([f" {layer.name} ({type(layer).__name__})", out, params]))
        for line in lines + summary_totals(self, line_length):
            print_fn(line)

    # -- the graph: a chain ------------------------------------------------------------------
    @property
    def _graph(self):
        """Layer i reads tensor i and writes tensor i + 1 (rebuilt when a layer is added)."""
        if self._chain is None or len(self._chain.steps) != len(self.layers):
            steps = [_Step(layer, [i], [i + 1], False) for i, layer in enumerate(self.layers)]
            self._chain = _Graph(steps, [0], [len(self.layers)])
        return self._chain

    @property
    def _output_names(self):
        return [self.layers[-1].name] if self.layers else ["output"]

    @property
    def _input_names(self):
        return [self._input_layer.name if self._input_layer is not None else "input"]

    @property
    def inputs(self):
        """The symbolic input (once the model is built), as Keras's ``model.inputs``."""
        if self._input_layer is not None:
            return [self._input_layer.output]
        if not self.built:
            raise AttributeError(f"Sequential model '{self.name}' has no defined inputs yet: "
                                 "build it or give its first layer an input shape.")
        return [KerasTensor(self.input_shape, self.layers[0].dtype.name, name="input")]

    @property
    def outputs(self):
        """The symbolic output (once the model is built), as Keras's ``model.outputs``."""
        if not self.built:
            raise AttributeError(f"Sequential model '{self.name}' has no defined outputs yet: "
                                 "build it or give its first layer an input shape.")
        return [KerasTensor(self.output_shape, self.layers[-1].dtype.name,
                            name=self.layers[-1].name)]

    def _prepare_inputs(self, x, arg="x"):
        return [self._prepare_x(x, arg)]

    def _prepare_targets(self, y, xs, arg="y"):
        return [self._prepare_y(y, xs[0].shape, arg)]

    def _prepare_sample_weights(self, sample_weight, ys, arg="sample_weight"):
        sample_weight = self._prepare_sample_weight(sample_weight, ys[0], arg)
        return None if sample_weight is None else [sample_weight]

    def _pack_outputs(self, ys):
        return ys[0]

    def _empty_outputs(self):
        return [np.zeros((0,) + self.output_shape[1:], dtype=self.layers[-1].dtype)]

    # -- config and saving -----------------------------------------------------------------
    def get_config(self):
        return {"name": self.name, "seed": self.seed,
                "build_input_shape": None if self.input_shape is None
                else list(self.input_shape[1:]),
                "layers": [saving.serialize(layer) for layer in
                           ([self._input_layer] if self._input_layer else []) + self.layers]}

    @classmethod
    def from_config(cls, config):
        model = cls(name=config.get("name"), seed=config.get("seed"))
        for entry in config["layers"]:
            model.add(saving.deserialize(entry))
        if config.get("build_input_shape") is not None and not model.built:
            model.build(tuple(config["build_input_shape"]))
        return model

"""Model: a graph of layers, built with Keras's functional API.

    inputs = cgru.Input(shape=(None, 8))
    x = cgru.layers.GRU(16)(inputs)
    model = cgru.Model(inputs, cgru.layers.Dense(1)(x))

Calling a layer on KerasTensors records a node (``cgru.layers.node``); ``Model(inputs,
outputs)`` walks the nodes back from its outputs and keeps them as steps in an order where
each step's inputs are computed before it. The model drives its layers through the layer
protocol of ``cgru.layers`` and never looks at a layer's class:

- forward (``_run_graph``): steps in order, each layer given its inputs in its own dtype
  and their masks (a list for a layer called on a list), keeping its backward context and
  saying through ``compute_mask`` what its outputs' masks are; a recurrent layer called with
  ``initial_state`` tensors gets them as that keyword (and no mask, as Keras 3);
- backward (``_gradients``): steps in reverse, the gradients of a tensor that feeds several
  steps (or is an output too) summed, each input gradient cast back to the dtype its tensor
  had; a layer called several times (shared) gets the sum of its calls' weight gradients;
  no input gradient is computed for steps that only read the model's inputs; a step given
  initial states from other layers returns their gradients beside its input's. The loss
  gradient is taken at the logits when an output's layer's ``output_activation`` pairs with
  its loss and nothing else reads that output, as Keras does.

``Sequential`` (``cgru.engine.sequential``) is the one-path case of the same graph; both
share the training loop of ``cgru.engine.trainer``.
"""
import numpy as np

from .. import keras_file, saving
from ..layers.base import auto_name, fresh_seed, shape_str as _shape_str
from ..layers.node import KerasTensor, is_symbolic
from .trainer import Trainer, _Trace

__all__ = ["Model"]



def summary_row(cols, fields):
    """One line of ``summary()``: each field from its column's start (``cols`` are the
    columns' ends); every column but the last keeps one blank before the next."""
    line = ""
    for i, field in enumerate(fields):
        start = 0 if i == 0 else cols[i - 1]
        width = cols[i] - (1 if i < len(fields) - 1 else 0)
        line = (line + " " * max(0, start - len(line)) + str(field))[:width]
    return line


def summary_totals(model, line_length):
    """The parameter totals that end ``summary()``, as Keras prints them."""
    def count(arrays):
        n = sum(a.size for a in arrays)
        size = sum(a.nbytes for a in arrays)
        return f"{n:,} ({size / 1024:.2f} KB)" if size >= 1024 else f"{n:,} ({size:.2f} B)"

    return ["=" * line_length,
            f"Total params: {count(model.weights)}",
            f"Trainable params: {count(model.trainable_weights)}",
            f"Non-trainable params: {count(model.non_trainable_weights)}",
            "_" * line_length]

class _Step:
    """One layer call of the graph: the layer, the keys of the tensors it reads and of those
    it returns, and whether it was given a list. The last ``num_states`` keys it reads are
    passed as ``initial_state`` (a list), the others as its input."""

    __slots__ = ("layer", "in_keys", "out_keys", "list_input", "need_input_grad",
                 "num_states", "need_state_grad")

    def __init__(self, layer, in_keys, out_keys, list_input, num_states=0):
        self.layer, self.in_keys, self.out_keys = layer, list(in_keys), list(out_keys)
        self.list_input = list_input
        self.num_states = num_states
        self.need_input_grad = True
        self.need_state_grad = False


class _Graph:
    """Steps in execution order, the model's input and output tensor keys, and what the
    backward pass needs: who produces each tensor and how many times it is read."""

    def __init__(self, steps, input_keys, output_keys):
        self.steps, self.input_keys, self.output_keys = steps, input_keys, output_keys
        self.input_key_set = set(input_keys)
        self.producer, self.reads = {}, {}
        for s, step in enumerate(steps):
            for j, key in enumerate(step.out_keys):
                self.producer[key] = (s, j)
            for key in step.in_keys:
                self.reads[key] = self.reads.get(key, 0) + 1
            # the first layers compute no input gradient; nor a state gradient for states
            # that are the model's inputs
            n_x = len(step.in_keys) - step.num_states
            step.need_input_grad = any(k not in self.input_key_set
                                       for k in step.in_keys[:n_x])
            step.need_state_grad = any(k not in self.input_key_set
                                       for k in step.in_keys[n_x:])
        for key in output_keys:
            self.reads[key] = self.reads.get(key, 0) + 1


def _structure(value, what):
    """(kind, keys, flat list) of a KerasTensor, a list/tuple or a dict of them."""
    if isinstance(value, KerasTensor):
        return "single", None, [value]
    if isinstance(value, dict):
        items = list(value.items())
        kind, keys, flat = "dict", [k for k, _ in items], [v for _, v in items]
    elif isinstance(value, (list, tuple)):
        kind, keys, flat = "list", None, list(value)
    else:
        raise TypeError(f"`{what}` must be a KerasTensor (from cgru.Input or a layer call), a "
                        f"list or a dict of them; received {value!r}.")
    if not flat:
        raise ValueError(f"`{what}` is empty.")
    for t in flat:
        if not isinstance(t, KerasTensor):
            raise TypeError(f"`{what}` must hold KerasTensors (from cgru.Input or a layer "
                            f"call); received {t!r}.")
    return kind, keys, flat


_SUBCLASS_ERROR = (
    "cgru has no automatic differentiation, so a Model subclass with its own `call()` "
    "cannot be trained: cgru computes gradients from the layer graph. Build the same model "
    "with the functional API instead: `inputs = cgru.Input(shape=...)`, call the layers on "
    "it, then `cgru.Model(inputs, outputs)` (or use `cgru.Sequential`).")


@saving.register_serializable
class Model(Trainer):
    """A functional model: ``Model(inputs, outputs)`` over any graph of layers built by
    calling them on ``cgru.Input`` tensors (several inputs and outputs as lists or dicts,
    shared layers, layers with several outputs, masks), trained as Keras trains it."""

    def __init__(self, inputs=None, outputs=None, name=None, seed=None, trainable=True,
                 **kwargs):
        if type(self).call is not Model.call:
            raise NotImplementedError(f"{type(self).__name__}: {_SUBCLASS_ERROR}")
        if inputs is None or outputs is None:
            raise NotImplementedError(
                "Model() needs `inputs` and `outputs` (the functional API). " + _SUBCLASS_ERROR)
        if kwargs:
            raise TypeError(f"Model got unexpected arguments {sorted(kwargs)}")
        self._init_training_state(name or auto_name("Functional"), seed)
        self._build_graph(inputs, outputs)
        if not trainable:                   # as Keras's Model(..., trainable=False)
            for layer in self.layers:
                layer.trainable = False

    def call(self, inputs, training=None, mask=None):
        """The graph's outputs for ``inputs`` (a subclass may not override this: see the
        error that raises)."""
        return self(inputs, training=bool(training))

    def _init_training_state(self, name, seed):
        self.name = name
        self.seed = seed
        self._shuffle_rng = np.random.default_rng(seed if seed is not None else fresh_seed())
        self.optimizer = None
        self.loss = None
        self._losses = [None]
        self._metric_names = []
        self.compiled = False
        self.stop_training = False
        self.history = None

    # -- the graph ---------------------------------------------------------------------------
    def _build_graph(self, inputs, outputs):
        in_kind, in_keys, in_tensors = _structure(inputs, "inputs")
        out_kind, out_keys, out_tensors = _structure(outputs, "outputs")
        for t in in_tensors:
            if t.input_layer is None:
                raise ValueError(f"Model inputs must come from cgru.Input; {t!r} is the "
                                 "output of a layer.")
        if len({id(t) for t in in_tensors}) != len(in_tensors):
            raise ValueError("The same Input is given twice in `inputs`.")
        # Walk back from the outputs (Keras's order: each layer numbered when first met)
        input_ids = {id(t) for t in in_tensors}
        order, seen_nodes, first_seen, in_progress = [], set(), {}, set()

        def visit(tensor):
            node = tensor.node
            if id(node) in seen_nodes:
                return
            if id(node) in in_progress:
                raise ValueError("The layer graph has a cycle.")
            first_seen.setdefault(id(node.layer), (len(first_seen), node.layer))
            if not node.inputs and id(tensor) not in input_ids:
                raise ValueError(
                    f"Graph disconnected: the outputs depend on the Input "
                    f"'{node.layer.name}' of shape {_shape_str(tensor.shape)}, which is not "
                    f"in the model's `inputs` ({[t.name for t in in_tensors]}).")
            in_progress.add(id(node))
            if id(tensor) not in input_ids:
                for t in node.inputs:
                    visit(t)
            in_progress.discard(id(node))
            seen_nodes.add(id(node))
            order.append(node)

        for t in out_tensors:
            visit(t)
        for t in in_tensors:
            first_seen.setdefault(id(t.input_layer), (len(first_seen), t.input_layer))
            if id(t.node) not in seen_nodes:
                seen_nodes.add(id(t.node))
                order.insert(0, t.node)
        # depths as Keras computes them (outputs 0, a layer at the depth of its deepest
        # call), giving the order of model.layers: deepest first, then as first met
        depth = {}
        layer_depth = {}
        for node in reversed(order):
            d = max(depth.get(id(node), 0), layer_depth.get(id(node.layer), 0))
            depth[id(node)] = d
            layer_depth[id(node.layer)] = d
            for t in node.inputs:
                depth[id(t.node)] = max(depth.get(id(t.node), 0), d + 1)
        self.layers = [layer for _, layer in sorted(
            first_seen.values(), key=lambda e: (-layer_depth.get(id(e[1]), 0), e[0]))]
        # steps: every non-input node, each after the nodes it reads
        keys = {}
        for t in in_tensors:
            keys[id(t)] = len(keys)
        steps, self._step_nodes = [], []
        for node in order:
            if not node.inputs:
                continue
            for t in node.outputs:
                keys.setdefault(id(t), len(keys))
            steps.append(_Step(node.layer, [keys[id(t)] for t in node.inputs],
                               [keys[id(t)] for t in node.outputs], node.list_input,
                               node.num_states))
            self._step_nodes.append(node)
        self._graph = _Graph(steps, [keys[id(t)] for t in in_tensors],
                             [keys[id(t)] for t in out_tensors])
        self._inputs, self._outputs = in_tensors, out_tensors
        self._input_kind, self._input_dict_keys = in_kind, in_keys
        self._output_kind, self._output_dict_keys = out_kind, out_keys
        self._input_names = in_keys if in_kind == "dict" else [
            t.input_layer.name for t in in_tensors]
        if out_kind == "dict":
            self._output_names = list(out_keys)
        else:
            names = []
            for t in out_tensors:
                base = t.node.layer.name if t.index == 0 else f"{t.node.layer.name}_{t.index}"
                name, k = base, 1
                while name in names:
                    name, k = f"{base}_{k}", k + 1
                names.append(name)
            self._output_names = names

    # -- structure ---------------------------------------------------------------------------
    @property
    def inputs(self):
        return list(self._inputs)

    @property
    def outputs(self):
        return list(self._outputs)

    @property
    def input(self):
        inputs = self.inputs
        return inputs[0] if len(inputs) == 1 else inputs

    @property
    def output(self):
        outputs = self.outputs
        return outputs[0] if len(outputs) == 1 else outputs

    @property
    def input_shape(self):
        shapes = [t.shape for t in self._inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        shapes = [t.shape for t in self._outputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_names(self):
        return list(self._output_names)

    @property
    def input_names(self):
        return list(self._input_names)

    @property
    def built(self):
        return True

    def _weight_layers(self):
        """The layers that hold weights and RNG states, each once, in ``layers`` order."""
        return self.layers

    def get_layer(self, name=None, index=None):
        """A layer by ``name`` or by ``index`` in ``layers``, as Keras's ``get_layer``."""
        if (name is None) == (index is None):
            raise ValueError("Provide only a layer name or a layer index. Received: "
                             f"index={index}, name={name}.")
        if index is not None:
            if not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"Was asked to retrieve layer at index {index} but model "
                                 f"'{self.name}' only has {len(self.layers)} layers.")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No such layer: {name}. Existing layers are: "
                         f"{[layer.name for layer in self.layers]}.")

    # -- weights (in ``layers`` order, each shared layer once) -----------------------------
    @property
    def weights(self):
        """Every layer's live weight arrays (see ``cgru.layers``: the layers' own layout)."""
        return [w for layer in self._weight_layers() for w in layer.weights]

    @property
    def trainable_weights(self):
        return [w for layer in self._weight_layers() for w in layer.trainable_weights]

    @property
    def non_trainable_weights(self):
        return [w for layer in self._weight_layers() for w in layer.non_trainable_weights]

    def _trainable_variables(self):
        """The Weight records of ``trainable_weights``, in their order."""
        return [v for layer in self._weight_layers() if layer.trainable
                for v in layer.variables if v.trainable]

    def _per_layer(self, arrays, convert):
        out, i = [], 0
        for layer in self._weight_layers():
            n = len(layer.weights)
            out += convert(layer, arrays[i:i + n])
            i += n
        return out

    def weights_to_keras(self, arrays):
        """Arrays shaped as ``weights`` (the layers' own layout) -> Keras's layout."""
        return self._per_layer(arrays, lambda layer, a: layer.weights_to_keras(a))

    def weights_from_keras(self, arrays):
        """Arrays shaped as ``get_weights()`` (Keras's layout) -> the layers' own layout."""
        return self._per_layer(arrays, lambda layer, a: layer.weights_from_keras(a))

    def get_weights(self):
        """Copies of every weight, in Keras 3's layout and order."""
        return [w for layer in self._weight_layers() for w in layer.get_weights()]

    def set_weights(self, weights):
        weights = list(weights)
        n_own = sum(len(layer.weights) for layer in self._weight_layers())
        if len(weights) != n_own:
            raise ValueError(f"Model '{self.name}' has {n_own} weight arrays; received "
                             f"{len(weights)}.")
        i = 0
        for layer in self._weight_layers():
            n = len(layer.weights)
            layer.set_weights(weights[i:i + n])
            i += n

    def count_params(self):
        return sum(layer.count_params() for layer in self._weight_layers())

    def reset_states(self):
        """Zeros the carried states of every stateful layer."""
        for layer in self._weight_layers():
            if hasattr(layer, "reset_state"):
                layer.reset_state()

    reset_state = reset_states

    def get_rng_state(self):
        """The generators of shuffling and of every layer (dropout), for exact resumption."""
        return {"shuffle": self._shuffle_rng.bit_generator.state,
                "layers": [layer.rng_state() for layer in self._weight_layers()]}

    def set_rng_state(self, state):
        self._shuffle_rng.bit_generator.state = state["shuffle"]
        for layer, layer_state in zip(self._weight_layers(), state["layers"]):
            layer.set_rng_state(layer_state)

    # -- data as lists -----------------------------------------------------------------------
    def _as_list(self, value, names, arg, what):
        """``value`` (an array, a list in order, or a dict by name) as one entry per name."""
        if isinstance(value, dict):
            missing = [n for n in names if n not in value]
            unknown = [k for k in value if k not in names]
            if missing or unknown:
                raise ValueError(f"`{arg}` must be a dict with the model's {what} names "
                                 f"{names}; received keys {list(value)}.")
            return [value[n] for n in names]
        if isinstance(value, (list, tuple)) and len(names) > 1:
            if len(value) != len(names):
                raise ValueError(f"`{arg}` must hold {len(names)} arrays, one per model "
                                 f"{what[:-1]} ({names}); received {len(value)}.")
            return list(value)
        if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(
                value[0], np.ndarray):
            return [value[0]]
        if len(names) > 1:
            raise ValueError(f"`{arg}` must be a list or a dict of {len(names)} arrays, one "
                             f"per model {what[:-1]} ({names}); received one array.")
        return [value]

    @staticmethod
    def _numeric(a, arg):
        a = np.asarray(a)
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise TypeError(f"`{arg}` must be a numeric array; received dtype {a.dtype}.")
        return a

    def _prepare_inputs(self, x, arg="x"):
        """``x`` as one checked array per model input, in the input's dtype."""
        if x is None:
            raise ValueError(f"`{arg}` is required.")
        arrays = self._as_list(x, self._input_names, arg, "inputs")
        out = []
        for i, (a, t) in enumerate(zip(arrays, self._inputs)):
            where = arg if len(arrays) == 1 else f"{arg}[{self._input_names[i]!r}]"
            a = self._numeric(a, where)
            ok = a.ndim == len(t.shape) and all(
                e is None or e == d for e, d in zip(t.shape[1:], a.shape[1:]))
            if not ok:
                raise ValueError(f"`{where}` must have shape {_shape_str((None,) + t.shape[1:])}"
                                 f" to match the model input '{self._input_names[i]}'; "
                                 f"received an array of shape {a.shape}.")
            out.append(a.astype(t.dtype, copy=False))
        rows = {a.shape[0] for a in out}
        if len(rows) > 1:
            raise ValueError(f"The arrays of `{arg}` must have the same number of samples; "
                             f"received shapes {[a.shape for a in out]}.")
        return out

    def _output_shapes(self, input_shapes):
        """The outputs' shapes (without the batch axis) for inputs of ``input_shapes``."""
        graph = self._graph
        shapes = dict(zip(graph.input_keys, [tuple(s) for s in input_shapes]))
        for step in graph.steps:
            ins = [shapes[k] for k in step.in_keys]
            out = step.layer.compute_output_shape(ins if step.list_input else ins[0])
            outs = list(out) if len(step.out_keys) > 1 else [out]
            for k, s in zip(step.out_keys, outs):
                shapes[k] = tuple(s)
        return [shapes[k] for k in graph.output_keys]

    def _output_dtypes(self):
        graph = self._graph
        dtypes = []
        for key in graph.output_keys:
            if key in graph.producer:
                dtypes.append(graph.steps[graph.producer[key][0]].layer.dtype)
            else:
                dtypes.append(np.dtype(self._inputs[graph.input_keys.index(key)].dtype))
        return dtypes

    def _prepare_targets(self, y, xs, arg="y"):
        """``y`` as one checked array per output (integer class ids for sparse losses)."""
        if y is None:
            raise ValueError(f"`{arg}` is required for training and evaluation.")
        arrays = self._as_list(y, self._output_names, arg, "outputs")
        n = xs[0].shape[0]
        out_shapes = self._output_shapes([x.shape[1:] for x in xs])
        out = []
        for i, (a, shape, dtype) in enumerate(zip(arrays, out_shapes, self._output_dtypes())):
            where = arg if len(arrays) == 1 else f"{arg}[{self._output_names[i]!r}]"
            a = self._numeric(a, where)
            if a.ndim == 0 or a.shape[0] != n:
                raise ValueError(f"`{where}` must have one label per sample: x has {n} "
                                 f"samples but {where} has shape {a.shape}.")
            loss = self._losses[i]
            if loss is not None:
                out_shape = (n,) + tuple(shape)
                loss.check_shapes(a.shape, out_shape)
                if loss.sparse:
                    if np.issubdtype(a.dtype, np.floating) and not np.all(np.mod(a, 1) == 0):
                        raise ValueError(f"`{where}` for '{loss.name}' must hold integer "
                                         "class ids; received non-integer values.")
                    n_classes = out_shape[-1]
                    if a.size and (a.min() < 0 or a.max() >= n_classes):
                        raise ValueError(f"`{where}` class ids must be in [0, {n_classes}); "
                                         f"received values in [{a.min()}, {a.max()}].")
                    out.append(a.astype(np.int64, copy=False))
                    continue
            out.append(a.astype(dtype, copy=False))
        return out

    def _prepare_sample_weights(self, sample_weight, ys, arg="sample_weight"):
        """Per-sample (N,) or per-step (N, T) weights for each output, or None; one array
        weighs every output."""
        if sample_weight is None:
            return None
        if isinstance(sample_weight, dict) or (isinstance(sample_weight, (list, tuple))
                                               and len(ys) > 1):
            entries = self._as_list(sample_weight, self._output_names, arg, "outputs")
        else:
            entries = [sample_weight] * len(ys)
        out = []
        for sw, y, dtype in zip(entries, ys, self._output_dtypes()):
            if sw is None:
                out.append(None)
                continue
            sw = np.asarray(sw)
            if not (np.issubdtype(sw.dtype, np.number) or sw.dtype == np.bool_):
                raise TypeError(f"`{arg}` must be numeric; received dtype {sw.dtype}.")
            if sw.ndim == 0 or sw.shape[0] != y.shape[0] or sw.ndim > 2:
                raise ValueError(f"`{arg}` must have shape (samples,) or (samples, timesteps) "
                                 f"with {y.shape[0]} samples; received shape {sw.shape}.")
            out.append(sw.astype(dtype, copy=False))
        return out

    def _pack_outputs(self, ys):
        """A list with one array per output -> the structure the model was built with."""
        if self._output_kind == "dict":
            return dict(zip(self._output_dict_keys, ys))
        if len(ys) == 1:
            return ys[0]
        return list(ys)

    def _empty_outputs(self):
        shapes = self._output_shapes([t.shape[1:] for t in self._inputs])
        return [np.zeros((0,) + tuple(0 if d is None else d for d in s), dtype)
                for s, dtype in zip(shapes, self._output_dtypes())]

    # -- forward / backward ----------------------------------------------------------------
    def _run_graph(self, xs, training=False, need_grad=False):
        """Runs the steps on ``xs`` (one array per input); returns (outputs, trace). A
        trace entry per step: (the layer's context, the dtypes its inputs came in, its
        outputs when it has an activity regularizer, its outputs' shapes and dtypes)."""
        graph = self._graph
        values = dict(zip(graph.input_keys, xs))
        masks = dict.fromkeys(graph.input_keys)
        trace = _Trace()
        for step in graph.steps:
            layer = step.layer
            ins = [values[k] for k in step.in_keys]
            came_in = [a.dtype for a in ins]
            # Keras's autocast at the layer boundary
            ins = [a if a.dtype == layer.dtype else a.astype(layer.dtype) for a in ins]
            if step.num_states:
                states = ins[len(ins) - step.num_states:]
                ins = ins[:len(ins) - step.num_states]
            in_masks = [masks[k] for k in step.in_keys[:len(ins)]]
            if step.list_input:
                x, mask = ins, (None if all(m is None for m in in_masks) else in_masks)
            else:
                x, mask = ins[0], in_masks[0]
            if step.num_states:
                # Keras 3 hands a layer its input's mask only when the call has one tensor
                # argument (Layer.__call__): given initial_state tensors, a recurrent layer
                # runs unmasked, while its outputs' masks still follow from the input's
                out, ctx = layer.forward(x, training=training, mask=None, need_grad=need_grad,
                                         initial_state=states)
            else:
                out, ctx = layer.forward(x, training=training, mask=mask, need_grad=need_grad)
            out_mask = layer.compute_mask(x, mask)
            n = len(step.out_keys)
            outs = list(out) if n > 1 else [out]
            out_masks = list(out_mask) if n > 1 and isinstance(out_mask, (list, tuple)) \
                else [out_mask] + [None] * (n - 1)
            for k, o, m in zip(step.out_keys, outs, out_masks):
                values[k], masks[k] = o, m
            trace.append((ctx, came_in, outs if layer.activity_regularizer is not None else None,
                          [(o.shape, o.dtype) for o in outs]))
        trace.output_masks = [masks[k] for k in graph.output_keys]
        return [values[k] for k in graph.output_keys], trace

    def _forward(self, x, training=False, need_grad=False):
        """``_run_graph`` on an array (one input) or a list; returns (output(s), trace)."""
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        ys, trace = self._run_graph(xs, training, need_grad)
        return (ys[0] if len(ys) == 1 else ys), trace

    def _regularization_loss(self, trace, variables=None):
        """The weights' regularizer penalties plus the activity penalties of the outputs in
        ``trace`` (each divided by its batch size, as Keras 3 does): Keras adds both to the
        loss it trains on and reports. ``variables``: ``_trainable_variables()``."""
        penalty = 0.0
        for v in self._trainable_variables() if variables is None else variables:
            if v.regularizer is not None:
                penalty += v.regularizer(v.array)
        for step, entry in zip(self._graph.steps, trace):
            for out in entry[2] or ():
                penalty += step.layer.activity_regularizer(out) / max(1, out.shape[0])
        return penalty

    def _output_gradients(self, ys, ys_pred, trace, sws):
        """The loss gradients at the outputs, {tensor key: gradient}, and the steps whose
        gradient is taken at the logits."""
        graph = self._graph
        grads, at_logits = {}, set()
        for i, key in enumerate(graph.output_keys):
            loss = self._losses[i]
            if loss is None:
                continue
            s, _ = graph.producer.get(key, (None, None))
            layer = None if s is None else graph.steps[s].layer
            logits = (layer is not None and loss.logits_activation is not None
                      and layer.output_activation == loss.logits_activation
                      and len(graph.steps[s].out_keys) == 1 and graph.reads[key] == 1)
            weighting = dict(sample_weight=None if sws is None else sws[i],
                             mask=trace.output_masks[i])
            g = (loss.logits_gradient(ys[i], ys_pred[i], **weighting) if logits
                 else loss.gradient(ys[i], ys_pred[i], **weighting))
            if self._loss_weights[i] != 1.0:
                g = g * g.dtype.type(self._loss_weights[i])
            if logits:
                at_logits.add(s)
            grads[key] = g if key not in grads else grads[key] + g
        return grads, at_logits

    def _gradients(self, ys, ys_pred, trace, variables=None, sws=None):
        """Gradients of the total loss (with the regularizers' penalties) for
        ``trainable_weights``, in their order. ``variables``: ``_trainable_variables()``."""
        graph = self._graph
        d, at_logits = self._output_gradients(ys, ys_pred, trace, sws)
        layer_grads = {}
        for s in range(len(graph.steps) - 1, -1, -1):
            step = graph.steps[s]
            layer = step.layer
            ctx, came_in, acts, specs = trace[s]
            ds = [d.pop(k, None) for k in step.out_keys]
            if acts is None and all(g is None for g in ds):
                continue                        # nothing flows back through this call
            ds = [np.zeros(shape, dtype) if g is None else g for g, (shape, dtype) in
                  zip(ds, specs)]
            ds = [g if g.dtype == layer.dtype else g.astype(layer.dtype) for g in ds]
            if acts is not None:                # the activity penalty's gradient
                ds = [g + layer.activity_regularizer.gradient(a) / a.dtype.type(
                    max(1, a.shape[0])) for g, a in zip(ds, acts)]
            d_out = ds if len(ds) > 1 else ds[0]
            if s in at_logits or step.need_state_grad:
                kwargs = {"need_input_grad": step.need_input_grad}
                if s in at_logits:
                    kwargs["at_logits"] = True
                if step.need_state_grad:
                    kwargs["need_state_grad"] = True
                dx, g = layer.backward(d_out, ctx, **kwargs)
            else:
                dx, g = layer.backward(d_out, ctx, need_input_grad=step.need_input_grad)
            previous = layer_grads.get(id(layer))
            layer_grads[id(layer)] = list(g) if previous is None else [
                a + b for a, b in zip(previous, g)]     # a shared layer: calls summed
            if step.need_state_grad:
                # (input gradients, [one per initial state tensor])
                dx, d_states = dx
                n_x = len(step.in_keys) - step.num_states
                gxs = ([None] * n_x if dx is None or not step.need_input_grad
                       else list(dx) if step.list_input else [dx]) + list(d_states)
            elif not step.need_input_grad or dx is None:
                continue
            else:
                gxs = dx if step.list_input else [dx]
            for key, gx, dtype in zip(step.in_keys, gxs, came_in):
                if gx is None or key in graph.input_key_set:
                    continue
                if gx.dtype != dtype:
                    gx = gx.astype(dtype)       # back in the dtype the layer received
                d[key] = gx if key not in d else d[key] + gx
        grads = []
        for layer in self._weight_layers():
            if not layer.trainable:
                continue
            g = layer_grads.get(id(layer))
            grads += g if g is not None else [np.zeros_like(w) for w in layer.trainable_weights]
        for i, v in enumerate(self._trainable_variables() if variables is None else variables):
            if v.regularizer is not None:
                grads[i] = grads[i] + v.regularizer.gradient(v.array)
        return grads

    def _backward(self, y, y_pred, trace, variables=None, sample_weight=None):
        """``_gradients`` for one output given as arrays (or lists for several)."""
        multi = len(self._graph.output_keys) > 1
        ys = list(y) if multi else [y]
        ys_pred = list(y_pred) if multi else [y_pred]
        sws = None if sample_weight is None else (
            list(sample_weight) if multi else [sample_weight])
        return self._gradients(ys, ys_pred, trace, variables, sws)

    def __call__(self, x, training=False):
        if is_symbolic(x):
            raise NotImplementedError(
                f"Model '{self.name}' was called on symbolic tensors: cgru does not nest "
                "models inside functional models yet; call its layers instead.")
        xs = self._prepare_inputs(x)
        return self._pack_outputs(self._run_graph(xs, training=training)[0])

    # -- summary ---------------------------------------------------------------------------
    def _connections(self, node_index):
        """'layer[node][tensor]' for each input of a node, as Keras's summary writes them
        (node numbers count each layer's calls in this model)."""
        out = []
        for t in node_index.inputs:
            calls = [n for n in self._all_nodes() if n.layer is t.node.layer]
            out.append(f"{t.node.layer.name}[{calls.index(t.node)}][{t.index}]")
        return out

    def _all_nodes(self):
        return [t.node for t in self._inputs] + self._step_nodes

    def summary(self, line_length=None, positions=None, print_fn=None):
        """Layers with their output shapes, parameter counts and inputs ("Connected to"),
        and the parameter totals, as Keras prints them."""
        print_fn = print_fn or print
        line_length = line_length or 98
        cols = [int(line_length * f) for f in (positions or (0.33, 0.55, 0.67, 1.0))]

        def row(fields):
            return summary_row(cols, fields)

        lines = [f'Model: "{self.name}"', "_" * line_length,
                 row([" Layer (type)", "Output Shape", "Param #", "Connected to"]),
                 "=" * line_length]
        nodes = self._all_nodes()
        for node in nodes:
            layer = node.layer
            shapes = [_shape_str(t.shape) for t in node.outputs]
            links = self._connections(node) or ["-"]
            lines.append(row([f" {layer.name} ({type(layer).__name__})",
                              shapes[0] if len(shapes) == 1 else "[" + ", ".join(shapes) + "]",
                              layer.count_params(), links[0]]))
            for link in links[1:]:
                lines.append(row(["", "", "", link]))
            lines.append("_" * line_length if node is not nodes[-1] else "")
        lines.pop()
        for line in lines + summary_totals(self, line_length):
            print_fn(line)

    # -- config and saving -----------------------------------------------------------------
    def _tensor_ref(self, tensor):
        calls = [n for n in self._all_nodes() if n.layer is tensor.node.layer]
        return [tensor.node.layer.name, calls.index(tensor.node), tensor.index]

    def get_config(self):
        """The layers' configs and the graph: each call of a layer (in execution order) with
        the tensors it read, as [layer name, call number, output index]."""
        return {"name": self.name, "seed": self.seed,
                "layers": [{"name": layer.name, **saving.serialize(layer)}
                           for layer in self.layers],
                "nodes": [{"layer": node.layer.name, "list_input": node.list_input,
                           "inputs": [self._tensor_ref(t) for t in node.inputs],
                           "num_states": node.num_states,
                           "states_as_list": node.states_as_list}
                          for node in self._step_nodes],
                "input_layers": [self._tensor_ref(t) for t in self._inputs],
                "output_layers": [self._tensor_ref(t) for t in self._outputs],
                "input_keys": self._input_dict_keys, "output_keys": self._output_dict_keys,
                "output_kind": self._output_kind, "input_kind": self._input_kind}

    @classmethod
    def from_config(cls, config):
        layers = {}
        for entry in config["layers"]:
            layers[entry["name"]] = saving.deserialize(entry)
        calls = {}                              # (layer name, call number) -> outputs
        for name, layer in layers.items():
            if hasattr(layer, "output") and isinstance(layer.output, KerasTensor):
                calls[(name, 0)] = [layer.output]   # an InputLayer
        counts = {}
        for node in config["nodes"]:
            ins = [calls[(n, i)][j] for n, i, j in node["inputs"]]
            n_states = node.get("num_states", 0)
            if n_states:
                states, ins = ins[len(ins) - n_states:], ins[:len(ins) - n_states]
                out = layers[node["layer"]](
                    ins if node["list_input"] else ins[0],
                    initial_state=states if node.get("states_as_list") else states[0])
            else:
                out = layers[node["layer"]](ins if node["list_input"] else ins[0])
            number = counts.get(node["layer"], 0)
            counts[node["layer"]] = number + 1
            calls[(node["layer"], number)] = out if isinstance(out, list) else [out]

        def struct(refs, kind, keys):
            tensors = [calls[(n, i)][j] for n, i, j in refs]
            if kind == "dict":
                return dict(zip(keys, tensors))
            return tensors[0] if kind == "single" else tensors

        return cls(struct(config["input_layers"], config["input_kind"], config["input_keys"]),
                   struct(config["output_layers"], config["output_kind"],
                          config["output_keys"]),
                   name=config.get("name"), seed=config.get("seed"))

    def save(self, filepath):
        """Writes architecture, weights, compile settings and optimizer state to one file:
        a Keras 3 file for a ``.keras`` name (Keras's Sequential or functional config), else
        cgru's own format."""
        if keras_file.is_keras_model_path(filepath):
            keras_file.save_keras_model(self, filepath)
        else:
            saving.save_model(self, filepath)

    def save_weights(self, filepath):
        """The weights alone: Keras 3's ``.weights.h5`` for such a name, else cgru's."""
        if keras_file.is_keras_weights_path(filepath):
            keras_file.save_keras_weights(self, filepath)
        else:
            saving.save_weights(self, filepath)

    def load_weights(self, filepath):
        if keras_file.is_keras_weights_path(filepath):
            keras_file.load_keras_weights(self, filepath)
        else:
            saving.load_weights(self, filepath)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} layers={len(self.layers)}>"

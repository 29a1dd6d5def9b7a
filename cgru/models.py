"""Sequential: a stack of layers with Keras' compile / fit / evaluate / predict.

The model drives its layers through the layer protocol of ``cgru.layers`` and never looks at
a layer's class. One training step (``_train_step``) is: forward through the layers, each
given its input in its own dtype and keeping its backward context; the loss on the batch;
the loss gradient (taken at the logits when the last layer's ``output_activation`` pairs with
the loss); backward through the layers in reverse, each gradient cast back to the dtype of
what the layer received, the first layer computing no input gradient; one optimizer step
over the trainable weights.
"""
import math
import warnings

import numpy as np

from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from . import keras_file, saving
from ._progress import Progbar
from .callbacks import Callback, CallbackList, History
from .data_adapters import EpochIterator, is_batch_source, make_adapter
from .layers import InputLayer, KerasTensor, Layer
from .layers.base import auto_name, fresh_seed, shape_str as _shape_str


def load_model(filepath, compile=True):
    """Restores a saved model: a Keras 3 ``.keras`` file (``cgru.keras_file``), or cgru's own
    format (``cgru.saving``) for any other name."""
    if keras_file.is_keras_model_path(filepath):
        return keras_file.load_keras_model(filepath, compile=compile)
    return saving.load_model(filepath)

__all__ = ["Sequential", "load_model"]


class _Trace(list):
    """The layers' backward contexts of one forward pass, and the mask of its output."""
    output_mask = None


def _class_weights(y, class_weight):
    """Keras's class_weight as sample weights: each sample weighted by its class's entry
    (the argmax of a one-hot label), 1 for classes not listed."""
    if not isinstance(class_weight, dict):
        raise ValueError(f"`class_weight` must be a dict mapping class ids to weights; "
                         f"received {class_weight!r}.")
    labels = y
    if labels.ndim > 1:
        labels = np.argmax(labels, axis=-1) if labels.shape[-1] != 1 else labels[..., 0]
    if labels.ndim != 1:
        raise ValueError("`class_weight` is supported for one label per sample; received "
                         f"labels of shape {y.shape}.")
    labels = np.round(labels).astype(np.int64)
    weights = np.ones(labels.shape[0], np.float64)
    for cls, weight in class_weight.items():
        weights[labels == int(cls)] = weight
    return weights


def _check_batch_size(batch_size):
    if batch_size is None:
        return 32
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size <= 0:
        raise ValueError(f"Received an invalid value for `batch_size`, expected a "
                         f"positive integer. Received: batch_size={batch_size!r}")
    return int(batch_size)


def _check_verbose(verbose):
    if verbose not in (0, 1, 2, "auto"):
        raise ValueError(f"`verbose` must be 0, 1, 2 or 'auto'; received {verbose!r}.")
    return 1 if verbose == "auto" else verbose


@saving.register_serializable
class Sequential:
    _strategy = None    # [distribute hook] the cgru.distributed strategy of a running call

    def __init__(self, layers=None, name=None, seed=None):
        self.name = name or auto_name("Sequential")
        self.seed = seed
        self._shuffle_rng = np.random.default_rng(seed if seed is not None else fresh_seed())
        self.layers = []
        self._input_layer = None        # an InputLayer given first, as Keras allows
        self.optimizer = None
        self.loss = None
        self._metric_names = []
        self.compiled = False
        self.stop_training = False
        self.history = None
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

    def reset_states(self):
        """Zeros the carried states of every stateful layer."""
        for layer in self.layers:
            if hasattr(layer, "reset_state"):
                layer.reset_state()

    reset_state = reset_states

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

    @property
    def weights(self):
        """Every layer's live weight arrays (see ``cgru.layers``: the layers' own layout)."""
        return [w for layer in self.layers for w in layer.weights]

    @property
    def trainable_weights(self):
        return [w for layer in self.layers for w in layer.trainable_weights]

    @property
    def non_trainable_weights(self):
        return [w for layer in self.layers for w in layer.non_trainable_weights]

    def weights_to_keras(self, arrays):
        """Arrays shaped as ``weights`` (the layers' own layout) -> Keras's layout."""
        out, i = [], 0
        for layer in self.layers:
            n = len(layer.weights)
            out += layer.weights_to_keras(arrays[i:i + n])
            i += n
        return out

    def weights_from_keras(self, arrays):
        """Arrays shaped as ``get_weights()`` (Keras's layout) -> the layers' own layout."""
        out, i = [], 0
        for layer in self.layers:
            n = len(layer.weights)
            out += layer.weights_from_keras(arrays[i:i + n])
            i += n
        return out

    def get_weights(self):
        """Copies of every weight, in Keras 3's layout and order."""
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights):
        weights = list(weights)
        n_own = sum(len(layer.weights) for layer in self.layers)
        if len(weights) != n_own:
            raise ValueError(f"Model '{self.name}' has {n_own} weight arrays; received "
                             f"{len(weights)}.")
        i = 0
        for layer in self.layers:
            n = len(layer.weights)
            layer.set_weights(weights[i:i + n])
            i += n

    def count_params(self):
        return sum(layer.count_params() for layer in self.layers)

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

    # -- compile ---------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        self.optimizer = optimizers_mod.get(optimizer)
        self.loss = None if loss is None else losses_mod.get(loss)
        if metrics is None:
            metrics = []
        elif isinstance(metrics, str):
            metrics = [metrics]
        # names, classes, instances or dicts, as Keras takes them; unknown ones fail now
        names = [metrics_mod.get(m, (1, 1), (1, 1)).name for m in metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"Two metrics have the same name: {names}.")
        self._metric_names = list(metrics)
        self.compiled = True

    def get_compile_config(self):
        """What ``compile`` was given, as saving stores it (None when not compiled)."""
        if not self.compiled:
            return None
        return {"optimizer": optimizers_mod.serialize(self.optimizer),
                "optimizer_built": self.optimizer.built,
                "loss": None if self.loss is None else losses_mod.serialize(self.loss),
                "metrics": [m if isinstance(m, str) else metrics_mod.serialize(
                    metrics_mod.get(m)) for m in self._metric_names]}

    def compile_from_config(self, config, optimizer_variables=()):
        """Compiles as ``get_compile_config`` says, the optimizer's state restored from
        ``optimizer_variables`` (its ``variables()`` when saved)."""
        optimizer = optimizers_mod.deserialize(config["optimizer"])
        self.compile(optimizer=optimizer, loss=config["loss"], metrics=config["metrics"])
        if config.get("optimizer_built"):
            optimizer.set_variables(list(optimizer_variables), self.trainable_weights)

    def get_rng_state(self):
        """The generators of shuffling and of every layer (dropout), for exact resumption."""
        return {"shuffle": self._shuffle_rng.bit_generator.state,
                "layers": [layer.rng_state() for layer in self.layers]}

    def set_rng_state(self, state):
        self._shuffle_rng.bit_generator.state = state["shuffle"]
        for layer, layer_state in zip(self.layers, state["layers"]):
            layer.set_rng_state(layer_state)

    def _require_compiled(self, what):
        if not self.compiled or self.loss is None:
            raise RuntimeError(f"You must call `compile()` with a loss before `{what}()`.")

    def _make_metrics(self, y_shape):
        return [metrics_mod.get(m, y_shape, self.output_shape) for m in self._metric_names]

    # -- forward / backward ----------------------------------------------------------------
    def _forward(self, x, training=False, need_grad=False, mask=None):
        """Runs the layers on x (of the first layer's dtype); returns (output, ctxs), with
        ctxs[i] = (layer i's context, the dtype its input came in, its output when it has an
        activity regularizer). A mask travels beside the tensor, as in Keras: each layer
        gets the mask of its input and says, through ``compute_mask``, what its output's
        mask is."""
        ctxs = []
        for layer in self.layers:
            came_in = x.dtype
            if came_in != layer.dtype:          # Keras's autocast at the layer boundary
                x = x.astype(layer.dtype)
            out, ctx = layer.forward(x, training=training, mask=mask, need_grad=need_grad)
            mask = layer.compute_mask(x, mask)
            x = out
            ctxs.append((ctx, came_in, None if layer.activity_regularizer is None else x))
        ctxs = _Trace(ctxs)
        ctxs.output_mask = mask     # Keras weights the loss and metrics by it
        return x, ctxs

    def _trainable_variables(self):
        """The Weight records of ``trainable_weights``, in their order."""
        return [v for layer in self.layers if layer.trainable
                for v in layer.variables if v.trainable]

    def _regularization_loss(self, ctxs, variables=None):
        """The weights' regularizer penalties plus the activity penalties of the outputs in
        ``ctxs`` (each divided by its batch size, as Keras 3 does): Keras adds both to the
        loss it trains on and reports. ``variables``: ``_trainable_variables()``."""
        penalty = 0.0
        for v in self._trainable_variables() if variables is None else variables:
            if v.regularizer is not None:
                penalty += v.regularizer(v.array)
        for layer, (_, _, out) in zip(self.layers, ctxs):
            if out is not None:
                penalty += layer.activity_regularizer(out) / max(1, out.shape[0])
        return penalty

    def _backward(self, y, y_pred, ctxs, variables=None, sample_weight=None):
        """Gradients of the loss (with the regularizers' penalties) for ``trainable_weights``,
        in their order. ``variables``: ``_trainable_variables()``."""
        last = self.layers[-1]
        at_logits = (last.output_activation is not None
                     and last.output_activation == self.loss.logits_activation)
        weighting = dict(sample_weight=sample_weight, mask=getattr(ctxs, "output_mask", None))
        d = (self.loss.logits_gradient(y, y_pred, **weighting) if at_logits
             else self.loss.gradient(y, y_pred, **weighting))
        grads = []
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            ctx, came_in, out = ctxs[i]
            if d.dtype != layer.dtype:
                d = d.astype(layer.dtype)
            if out is not None:                 # the activity penalty's gradient
                d = d + layer.activity_regularizer.gradient(out) / out.dtype.type(
                    max(1, out.shape[0]))
            if at_logits and i == len(self.layers) - 1:
                d, g = layer.backward(d, ctx, need_input_grad=i > 0, at_logits=True)
            else:
                d, g = layer.backward(d, ctx, need_input_grad=i > 0)
            if d is not None and d.dtype != came_in:
                d = d.astype(came_in)           # back in the dtype the layer received
            grads[:0] = g
        for i, v in enumerate(self._trainable_variables() if variables is None else variables):
            if v.regularizer is not None:
                grads[i] = grads[i] + v.regularizer.gradient(v.array)
        return grads

    def _train_step(self, x, y, sample_weight=None):
        """One step on a batch; returns (loss, y_pred, output mask), the loss with the
        regularizers' penalties. No update when the loss is not finite. Constraints apply
        after the update, as Keras's optimizers apply them."""
        if self._strategy is not None:      # [distribute hook] shard, allreduce, one update
            return self._strategy.train_step(self, x, y, sample_weight)
        y_pred, ctxs = self._forward(x, training=True, need_grad=True)
        variables = self._trainable_variables()
        loss = self.loss(y, y_pred, sample_weight=sample_weight, mask=ctxs.output_mask) \
            + self._regularization_loss(ctxs, variables)
        if not math.isfinite(loss):
            return loss, y_pred, ctxs.output_mask
        grads = self._backward(y, y_pred, ctxs, variables, sample_weight)
        self.optimizer.apply([v.array for v in variables], grads)
        for v in variables:
            if v.constraint is not None:
                v.array[...] = v.constraint(v.array)
        return loss, y_pred, ctxs.output_mask

    def __call__(self, x, training=False):
        x = self._prepare_x(x)
        return self._forward(x, training=training)[0]

    # -- fit -------------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1, distribute=None):
        """Trains on arrays, or on a generator, iterable or PyDataset of (x, y) batches, as
        Keras's ``fit``; returns the History. ``distribute``: a ``cgru.distributed``
        strategy (data-parallel over MPI; ``batch_size`` is the global batch)."""
        if distribute is not None:          # [distribute hook]
            return distribute.run(self.fit, locals())
        self._require_compiled("fit")
        batch_size = _check_batch_size(batch_size)
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"Received an invalid value for `epochs`, expected a "
                             f"non-negative integer. Received: epochs={epochs!r}")
        if not (isinstance(validation_split, (int, float)) and 0 <= validation_split < 1):
            raise ValueError("Received an invalid value for `validation_split`, expected a "
                             f"float in [0, 1). Received: validation_split={validation_split!r}")
        if isinstance(validation_freq, bool) or not isinstance(
                validation_freq, (int, np.integer)) or validation_freq < 1:
            raise ValueError("`validation_freq` must be a positive integer; received "
                             f"{validation_freq!r}.")
        verbose = _check_verbose(verbose)
        if is_batch_source(x):
            if class_weight is not None:
                raise ValueError("`class_weight` is supported for arrays; a generator or a "
                                 "PyDataset yields its own sample weights.")
            if validation_split:
                raise ValueError("`validation_split` is only supported for arrays; use "
                                 "`validation_data` with a generator or a PyDataset.")
            adapter = make_adapter(x, y, batch_size, shuffle, self._shuffle_rng)
        else:
            x = self._prepare_x(x)
            y = self._prepare_y(y, x.shape)
            if class_weight is not None:
                if sample_weight is not None:
                    raise ValueError("Give `sample_weight` or `class_weight`, not both.")
                sample_weight = _class_weights(y, class_weight)
            sample_weight = self._prepare_sample_weight(sample_weight, y)
            if validation_split and validation_data is None:
                # Keras: the last fraction of the data, taken before any shuffling
                split_at = int(math.floor(x.shape[0] * (1.0 - validation_split)))
                if split_at == 0 or split_at == x.shape[0]:
                    raise ValueError(f"`validation_split={validation_split}` leaves no "
                                     f"training or no validation samples out of "
                                     f"{x.shape[0]}.")
                validation_data = (x[split_at:], y[split_at:]) if sample_weight is None else (
                    x[split_at:], y[split_at:], sample_weight[split_at:])
                x, y = x[:split_at], y[:split_at]
                if sample_weight is not None:
                    sample_weight = sample_weight[:split_at]
            if x.shape[0] == 0:
                raise ValueError("`x` holds no samples; fit() needs at least one.")
            adapter = make_adapter(x, y, batch_size, shuffle, self._shuffle_rng, sample_weight)
        if validation_data is not None and not is_batch_source(validation_data):
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (
                    2, 3):
                raise ValueError("`validation_data` must be a tuple (x_val, y_val), a "
                                 "generator or a PyDataset.")
            x_val = self._prepare_x(validation_data[0], "validation_data[0]")
            y_val = self._prepare_y(validation_data[1], x_val.shape, "validation_data[1]")
            sw_val = self._prepare_sample_weight(
                validation_data[2] if len(validation_data) == 3 else None, y_val,
                "validation_data[2]")
            validation_data = (x_val, y_val, sw_val)
        epochs_iterator = EpochIterator(adapter, steps_per_epoch)
        steps = epochs_iterator.num_steps

        self.history = History()
        cbs = self._callback_list(callbacks, {"epochs": epochs, "steps": steps,
                                              "verbose": verbose}, self.history)
        self.stop_training = False
        self._initial_epoch = None
        cbs.on_train_begin()
        # a callback (BackupAndRestore) may say where to resume, as in Keras
        initial_epoch = self._initial_epoch or initial_epoch
        epoch_logs = None
        metrics = None
        for epoch in range(initial_epoch, epochs):
            cbs.on_epoch_begin(epoch)
            if verbose and epochs > 1:      # as Keras' ProgbarLogger
                print(f"Epoch {epoch + 1}/{epochs}", flush=True)
            bar = Progbar(epochs_iterator.num_steps, verbose=verbose)
            loss_sum, seen, logs, done = 0.0, 0, {}, 0
            for m in metrics or ():
                m.reset_state()
            for step, (xb, yb, swb) in epochs_iterator.epoch():
                if not adapter.validated:
                    xb = self._prepare_x(xb, "x (a batch)")
                    yb = self._prepare_y(yb, xb.shape, "y (a batch)")
                    swb = self._prepare_sample_weight(swb, yb, "sample_weight (a batch)")
                if metrics is None:
                    metrics = self._make_metrics(yb.shape)
                cbs.on_train_batch_begin(step)
                loss, y_pred, mask = self._train_step(xb, yb, swb)
                loss_sum += loss * len(xb)
                seen += len(xb)
                done = step + 1
                logs = {"loss": loss_sum / seen}
                if not math.isfinite(loss):
                    msg = (f"Batch {step}: Invalid loss {loss}, terminating training "
                           "(the weights are those before this batch).")
                    if verbose:
                        print("\n" + msg, flush=True)
                    warnings.warn(msg, RuntimeWarning, stacklevel=2)
                    self.stop_training = True
                    break
                for m in metrics:
                    m.update_state(yb, y_pred, mask=mask)   # unweighted, as Keras's `metrics`
                    logs[m.name] = m.result()
                cbs.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
                if steps is None or step + 1 < steps:
                    bar.update(step + 1, list(logs.items()), finalize=False)
            if done == 0 and not self.stop_training:
                if epochs_iterator.ran_out:
                    break
                raise ValueError("The training data gave no batch: `x` is empty.")
            epoch_logs = dict(logs)
            if (validation_data is not None and not self.stop_training
                    and (epoch + 1) % validation_freq == 0):
                val = self._run_evaluation(validation_data, validation_batch_size or batch_size,
                                           validation_steps, callbacks=cbs)
                epoch_logs.update({f"val_{k}": v for k, v in val.items()})
            cbs.on_epoch_end(epoch, epoch_logs)
            if not self.stop_training or math.isfinite(epoch_logs.get("loss", 0.0)):
                bar.update(done, list(epoch_logs.items()), finalize=True)
            if epochs_iterator.ran_out:
                self.stop_training = True
            if self.stop_training:
                break
        if epochs > initial_epoch:
            # with use_ema the moving averages become the weights, as Keras does after fit
            self.optimizer.finalize_variable_values(self.trainable_weights)
        cbs.on_train_end(epoch_logs)
        return self.history

    def _callback_list(self, callbacks, params, history=None):
        """The user's callbacks (a list, or a CallbackList already made by fit), with
        ``history`` last, as Keras orders them."""
        if isinstance(callbacks, CallbackList):
            return callbacks
        user_callbacks = list(callbacks or [])
        for cb in user_callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"`callbacks` must hold Callback instances; received {cb!r}.")
        if self._strategy is not None:      # [distribute hook] collective callbacks
            return self._strategy.callback_list(
                user_callbacks + ([history] if history else []), self, params)
        return CallbackList(user_callbacks + ([history] if history else []), self, params)

    # -- evaluate / predict ----------------------------------------------------------------
    def _run_evaluation(self, data, batch_size, steps=None, verbose=0, callbacks=None):
        """The logs (loss and metrics over every sample) of evaluating on ``data``: a tuple
        (x, y) of prepared arrays, a generator or a PyDataset."""
        if is_batch_source(data):
            adapter = make_adapter(data, None, batch_size, False, None)
        else:
            adapter = make_adapter(data[0], data[1], batch_size, False, None,
                                   data[2] if len(data) == 3 else None)
        iterator = EpochIterator(adapter, steps)
        cbs = self._callback_list(callbacks, {"steps": iterator.num_steps, "verbose": verbose})
        bar = Progbar(iterator.num_steps, verbose=verbose)
        metrics, loss_sum, seen, logs, done = None, 0.0, 0, {}, 0
        cbs.on_test_begin()
        for step, (xb, yb, swb) in iterator.epoch():
            if not adapter.validated:
                xb = self._prepare_x(xb, "x (a batch)")
                yb = self._prepare_y(yb, xb.shape, "y (a batch)")
                swb = self._prepare_sample_weight(swb, yb, "sample_weight (a batch)")
            if len(xb) == 0:
                break
            if metrics is None:
                metrics = self._make_metrics(yb.shape)
            cbs.on_test_batch_begin(step)
            y_pred, ctxs = (self._forward(xb) if self._strategy is None   # [distribute hook]
                            else self._strategy.forward(self, xb))
            mask = ctxs.output_mask
            loss_sum += (self.loss(yb, y_pred, sample_weight=swb, mask=mask)
                         + self._regularization_loss(ctxs)) * len(xb)
            seen += len(xb)
            for m in metrics:
                m.update_state(yb, y_pred, mask=mask)   # unweighted, as Keras's `metrics`
            logs = {"loss": loss_sum / seen, **{m.name: m.result() for m in metrics}}
            cbs.on_test_batch_end(step, logs)
            done = step + 1
            bar.update(done, list(logs.items()), finalize=False if iterator.num_steps is None
                       else None)
        if iterator.num_steps is None and done:
            bar.update(done, list(logs.items()), finalize=True)
        if done == 0:
            raise ValueError("The evaluation data gave no batch.")
        cbs.on_test_end(logs)
        return logs

    def _evaluate_arrays(self, x, y, batch_size, verbose=0, callbacks=None):
        return self._run_evaluation((x, y), batch_size, verbose=verbose, callbacks=callbacks)

    def evaluate(self, x=None, y=None, batch_size=None, verbose=0, sample_weight=None,
                 steps=None, callbacks=None, return_dict=False, distribute=None):
        """The loss, or ``[loss, metric, ...]`` when metrics were compiled (a dict with
        ``return_dict``), over arrays or a generator or PyDataset of (x, y) batches.
        ``distribute``: a ``cgru.distributed`` strategy (each batch sharded over ranks)."""
        if distribute is not None:          # [distribute hook]
            return distribute.run(self.evaluate, locals())
        self._require_compiled("evaluate")
        batch_size = _check_batch_size(batch_size)
        verbose = _check_verbose(verbose)
        if is_batch_source(x):
            if y is not None or sample_weight is not None:
                raise ValueError("`y` must not be given when `x` is a generator or a "
                                 "PyDataset: it yields the targets with the inputs.")
            data = x
        else:
            x = self._prepare_x(x)
            y = self._prepare_y(y, x.shape)
            if x.shape[0] == 0:
                raise ValueError("`x` holds no samples; evaluate() needs at least one.")
            data = (x, y, self._prepare_sample_weight(sample_weight, y))
        logs = self._run_evaluation(data, batch_size, steps, verbose=verbose,
                                    callbacks=callbacks)
        if return_dict:
            return dict(logs)
        if not self._metric_names:
            return logs["loss"]
        return list(logs.values())          # the loss, then each metric in compile's order

    def predict(self, x, batch_size=None, verbose=0, steps=None, callbacks=None,
                distribute=None):
        """The model's output for arrays, or for a generator or PyDataset of x batches
        (an (x, ...) tuple's first item), concatenated. ``distribute``: a
        ``cgru.distributed`` strategy (each batch sharded over ranks)."""
        if distribute is not None:          # [distribute hook]
            return distribute.run(self.predict, locals())
        batch_size = _check_batch_size(batch_size)
        verbose = _check_verbose(verbose)
        if is_batch_source(x):
            adapter = make_adapter(x, None, batch_size, False, None)
        else:
            x = self._prepare_x(x)
            if x.shape[0] == 0:
                return np.zeros((0,) + self.output_shape[1:], dtype=self.layers[-1].dtype)
            adapter = make_adapter(x, None, batch_size, False, None)
        iterator = EpochIterator(adapter, steps)
        cbs = self._callback_list(callbacks, {"steps": iterator.num_steps, "verbose": verbose})
        bar = Progbar(iterator.num_steps, verbose=verbose)
        outs = []
        cbs.on_predict_begin()
        for step, (xb, _, _) in iterator.epoch():
            if not adapter.validated:
                xb = self._prepare_x(xb, "x (a batch)")
            cbs.on_predict_batch_begin(step)
            outs.append((self._forward(xb) if self._strategy is None    # [distribute hook]
                         else self._strategy.forward(self, xb))[0])
            cbs.on_predict_batch_end(step, {"outputs": outs[-1]})
            bar.update(step + 1, finalize=False if iterator.num_steps is None else None)
        if iterator.num_steps is None and outs:
            bar.update(len(outs), finalize=True)
        cbs.on_predict_end()
        if not outs:
            raise ValueError("The data given to predict() gave no batch.")
        return np.concatenate(outs, axis=0)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None,
                       return_dict=False):
        """One training step on one batch; returns the loss (with metrics, as evaluate)."""
        self._require_compiled("train_on_batch")
        x = self._prepare_x(x)
        y = self._prepare_y(y, x.shape)
        if class_weight is not None:
            sample_weight = _class_weights(y, class_weight)
        sample_weight = self._prepare_sample_weight(sample_weight, y)
        loss, y_pred, mask = self._train_step(x, y, sample_weight)
        return self._batch_logs(loss, y, y_pred, return_dict, sample_weight, mask)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """The loss (with metrics, as evaluate) on one batch, without training."""
        self._require_compiled("test_on_batch")
        x = self._prepare_x(x)
        y = self._prepare_y(y, x.shape)
        sample_weight = self._prepare_sample_weight(sample_weight, y)
        y_pred, ctxs = self._forward(x)
        loss = self.loss(y, y_pred, sample_weight=sample_weight, mask=ctxs.output_mask) \
            + self._regularization_loss(ctxs)
        return self._batch_logs(loss, y, y_pred, return_dict, sample_weight, ctxs.output_mask)

    def predict_on_batch(self, x):
        """The model's output on one batch."""
        return self._forward(self._prepare_x(x))[0]

    def _batch_logs(self, loss, y, y_pred, return_dict, sample_weight=None, mask=None):
        logs = {"loss": float(loss)}
        for m in self._make_metrics(y.shape):
            m.update_state(y, y_pred, mask=mask)   # unweighted, as Keras's `metrics`
            logs[m.name] = m.result()
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    # -- summary ---------------------------------------------------------------------------
    def summary(self, line_length=65, print_fn=None):
        print_fn = print_fn or print
        cols = [int(line_length * f) for f in (0.45, 0.85, 1.0)]

        def row(fields):
            line = ""
            for i, field in enumerate(fields):
                start = 0 if i == 0 else cols[i - 1]
                # every column but the last keeps one blank before the next
                width = cols[i] - (1 if i < len(fields) - 1 else 0)
                line = (line + " " * max(0, start - len(line)) + str(field))[:width]
            return line

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
        def count(arrays):
            n = sum(a.size for a in arrays)
            size = sum(a.nbytes for a in arrays)
            return f"{n:,} ({size / 1024:.2f} KB)" if size >= 1024 else f"{n:,} ({size:.2f} B)"

        lines += ["=" * line_length,
                  f"Total params: {count(self.weights)}",
                  f"Trainable params: {count(self.trainable_weights)}",
                  f"Non-trainable params: {count(self.non_trainable_weights)}",
                  "_" * line_length]
        for line in lines:
            print_fn(line)

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

    def save(self, filepath):
        """Writes architecture, weights, compile settings and optimizer state to one file:
        a Keras 3 file for a ``.keras`` name, else cgru's own format."""
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
        return f"<Sequential name={self.name!r} layers={len(self.layers)}>"

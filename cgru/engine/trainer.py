"""The training loop, written once for every model: compile, fit, evaluate, predict and the
``*_on_batch`` methods, as Keras 3 has them.

A model class provides the graph side (``cgru.engine.functional.Model``): its inputs and
outputs as lists (``_prepare_inputs``, ``_prepare_targets``, ``_prepare_sample_weights``,
``_pack_outputs``), ``_run_graph`` (forward) and ``_gradients`` (backward). Inside the
loop, data are lists: one array per model input, per output.

One training step (``_train_step``) is: the forward pass (``_run_graph``), the loss
(``_compute_loss``: each output's loss times its ``loss_weights`` entry, plus the
regularizers' penalties), the gradients (``_compute_gradients``), the update
(``_apply_gradients``). The epoch's logs are sums that ``_reduce_logs`` turns into means.

With ``distribute=`` (a ``cgru.distributed`` strategy; the lines marked ``[distribute
hook]``), ``fit``/``evaluate``/``predict`` run through the strategy, ``_train_step`` hands
each global batch to it (it runs the methods above on this rank's rows and sums the
gradients over the ranks before the one ``_apply_gradients``), the inference forward of
evaluation and ``predict`` shards the batch and gathers the outputs, and the callbacks act
collectively.
"""
import math
import warnings

import numpy as np

from .. import losses as losses_mod
from .. import metrics as metrics_mod
from .. import optimizers as optimizers_mod
from .._progress import Progbar
from ..callbacks import Callback, CallbackList, History
from ..data_adapters import EpochIterator, is_batch_source, make_adapter, num_rows, take_rows


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


def _is_config(value):
    """Is the dict ``value`` one object's serialized config (not one entry per output)?"""
    return isinstance(value, dict) and "class_name" in value


class _Trace(list):
    """The backward contexts of one forward pass (one entry per node), and the masks of the
    model's outputs."""
    output_masks = ()

    @property
    def output_mask(self):
        return self.output_masks[0] if self.output_masks else None


class _Prepared(tuple):
    """(x, y, sample_weight) lists already checked and cast (validation data)."""


class _EpochLogs:
    """Running sums of one epoch (or evaluation): losses summed over samples (each batch's
    mean times its size, so that the result is a per-sample average as Keras's total loss
    is), and the metrics' states."""

    def __init__(self, loss_keys, metrics):
        self.loss_keys = loss_keys          # [(log key, output index or None)]
        self.metrics = metrics              # [(log key, output index, metric, weighted)]
        self.reset()

    def reset(self):
        """Back to no sample seen, the metrics' states too (Keras resets them each epoch)."""
        self.sums = {key: 0.0 for key, _ in self.loss_keys}
        self.seen = 0
        for _, _, metric, _ in self.metrics:
            metric.reset_state()

    def update(self, n, total, per_output, ys, ys_pred, masks, sws):
        self.seen += n
        for key, i in self.loss_keys:
            self.sums[key] += (total if i is None else per_output[i]) * n
        for _, i, metric, weighted in self.metrics:
            # Keras's `metrics` ignore sample weights, its `weighted_metrics` use them
            metric.update_state(ys[i], ys_pred[i], mask=masks[i],
                                **({"sample_weight": sws[i]} if weighted and sws else {}))

    def result(self):
        logs = {key: self.sums[key] / max(self.seen, 1) for key, _ in self.loss_keys}
        logs.update({key: metric.result() for key, _, metric, _ in self.metrics})
        return logs


class Trainer:
    """compile / fit / evaluate / predict / train_on_batch / test_on_batch /
    predict_on_batch over a model's graph (see the module docstring)."""

    _strategy = None    # [distribute hook] the cgru.distributed strategy of a running call

    # -- compile ---------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None,
                weighted_metrics=None, run_eagerly=False, steps_per_execution=1,
                jit_compile="auto", auto_scale_loss=True):
        """As Keras's: ``loss``, ``loss_weights``, ``metrics`` and ``weighted_metrics`` per
        output (a list in the outputs' order or a dict by output name; one loss for every
        output). ``run_eagerly``, ``jit_compile`` and ``auto_scale_loss`` change nothing
        (cgru always runs its own kernels); ``steps_per_execution`` must be 1."""
        if steps_per_execution != 1:
            raise NotImplementedError("cgru runs one step per execution: "
                                      f"steps_per_execution={steps_per_execution!r} is not "
                                      "supported.")
        names = self._output_names
        self.optimizer = optimizers_mod.get(optimizer)
        self._losses = [None if spec is None else losses_mod.get(spec)
                        for spec in self._per_output(loss, "loss", single_value=True)]
        if len(names) == 1 or not isinstance(loss, (list, tuple, dict)):
            self.loss = self._losses[0]         # one loss for every output
        elif isinstance(loss, dict):
            self.loss = {n: l for n, l in zip(names, self._losses) if l is not None}
        else:
            self.loss = list(self._losses)
        weights = self._per_output(loss_weights, "loss_weights", single_value=True)
        self._loss_weights = [1.0 if w is None else float(w) for w in weights]
        self._output_metrics = self._metrics_per_output(metrics, "metrics")
        self._output_weighted_metrics = self._metrics_per_output(weighted_metrics,
                                                                 "weighted_metrics")
        self._metric_names = self._output_metrics[0] if len(names) == 1 else metrics
        self.compiled = True

    def _per_output(self, value, arg, single_value=False):
        """``value`` (None, one value, a list in the outputs' order, or a dict by output
        name) as a list with one entry per output."""
        names = self._output_names
        if value is None:
            return [None] * len(names)
        if isinstance(value, dict) and not _is_config(value):
            unknown = [k for k in value if k not in names]
            if unknown:
                raise ValueError(f"`{arg}` names {unknown}, which are not outputs of model "
                                 f"'{self.name}'; its outputs are {names}.")
            return [value.get(n) for n in names]
        if isinstance(value, (list, tuple)) and (single_value or len(names) > 1):
            if len(value) != len(names):
                raise ValueError(f"`{arg}` has {len(value)} entries but model '{self.name}' "
                                 f"has {len(names)} outputs ({names}).")
            return list(value)
        if single_value:
            return [value] * len(names)
        raise ValueError(f"`{arg}` must be a list or a dict with one entry per output for "
                         f"model '{self.name}', which has {len(names)} outputs ({names}).")

    def _metrics_per_output(self, metrics, arg):
        """``metrics`` as one list of metric identifiers per output, each checked now."""
        names = self._output_names
        if metrics is None:
            per_output = [[] for _ in names]
        elif len(names) == 1 and (not isinstance(metrics, dict) or _is_config(metrics)):
            per_output = [[metrics] if isinstance(metrics, str) or not isinstance(
                metrics, (list, tuple)) else list(metrics)]
        else:
            per_output = [[] if m is None else [m] if isinstance(m, str) or not isinstance(
                m, (list, tuple)) else list(m) for m in self._per_output(metrics, arg)]
        for specs in per_output:
            # names, classes, instances or dicts, as Keras takes them; unknown ones fail now
            found = [metrics_mod.get(m, (1, 1), (1, 1)).name for m in specs]
            if len(set(found)) != len(found):
                raise ValueError(f"Two entries of `{arg}` have the same name: {found}.")
        return per_output

    def get_compile_config(self):
        """What ``compile`` was given, as saving stores it (None when not compiled)."""
        if not self.compiled:
            return None

        def metric_entry(m):
            return m if isinstance(m, str) else metrics_mod.serialize(metrics_mod.get(m))

        config = {"optimizer": optimizers_mod.serialize(self.optimizer),
                  "optimizer_built": self.optimizer.built}
        if len(self._output_names) == 1:
            config["loss"] = None if self._losses[0] is None else losses_mod.serialize(
                self._losses[0])
            config["metrics"] = [metric_entry(m) for m in self._output_metrics[0]]
            weighted = [metric_entry(m) for m in self._output_weighted_metrics[0]]
        else:
            config["loss"] = {n: None if l is None else losses_mod.serialize(l)
                              for n, l in zip(self._output_names, self._losses)}
            config["metrics"] = {n: [metric_entry(m) for m in ms]
                                 for n, ms in zip(self._output_names, self._output_metrics)}
            weighted = {n: [metric_entry(m) for m in ms] for n, ms in
                        zip(self._output_names, self._output_weighted_metrics)}
        if any(self._output_weighted_metrics):
            config["weighted_metrics"] = weighted
        if any(w != 1.0 for w in self._loss_weights):
            config["loss_weights"] = dict(zip(self._output_names, self._loss_weights)) \
                if len(self._output_names) > 1 else self._loss_weights[0]
        return config

    def compile_from_config(self, config, optimizer_variables=()):
        """Compiles as ``get_compile_config`` says, the optimizer's state restored from
        ``optimizer_variables`` (its ``variables()`` when saved)."""
        optimizer = optimizers_mod.deserialize(config["optimizer"])
        loss = config["loss"]
        if isinstance(loss, dict):
            loss = {n: l for n, l in loss.items() if l is not None}
        self.compile(optimizer=optimizer, loss=loss, metrics=config["metrics"],
                     loss_weights=config.get("loss_weights"),
                     weighted_metrics=config.get("weighted_metrics"))
        if config.get("optimizer_built"):
            optimizer.set_variables(list(optimizer_variables), self.trainable_weights)

    def _require_compiled(self, what):
        if not self.compiled or all(l is None for l in getattr(self, "_losses", [None])):
            raise RuntimeError(f"You must call `compile()` with a loss before `{what}()`.")

    # -- the logs' names, as Keras 3 writes them in History -------------------------------
    def _loss_keys(self):
        keys = [("loss", None)]
        if len(self._output_names) > 1:
            keys += [(f"{n}_loss", i) for i, n in enumerate(self._output_names)
                     if self._losses[i] is not None]
        return keys

    def _make_metrics(self, ys, ys_pred):
        """Fresh metrics for every output: (log key, output, metric, weighted)."""
        multi = len(self._output_names) > 1
        out = []
        for i, name in enumerate(self._output_names):
            prefix = f"{name}_" if multi else ""
            plain = []
            for spec in self._output_metrics[i]:
                metric = metrics_mod.get(spec, ys[i].shape, ys_pred[i].shape)
                plain.append(metric.name)
                out.append((prefix + metric.name, i, metric, False))
            for spec in self._output_weighted_metrics[i]:
                metric = metrics_mod.get(spec, ys[i].shape, ys_pred[i].shape)
                key = metric.name if metric.name not in plain else "weighted_" + metric.name
                out.append((prefix + key, i, metric, True))
        return out

    def _new_logs(self, ys, ys_pred):
        return _EpochLogs(self._loss_keys(), self._make_metrics(ys, ys_pred))

    def _reduce_logs(self, epoch_logs):
        """The logs of an epoch (or evaluation) so far: means over the samples seen."""
        return epoch_logs.result()

    # -- one step ----------------------------------------------------------------------------
    def _compute_loss(self, ys, ys_pred, sws, trace, variables=None):
        """(total, per-output losses): the total weighs each output's loss by its
        ``loss_weights`` entry and adds the regularizers' penalties, as Keras trains and
        reports it; the per-output losses are unweighted, as Keras logs them."""
        per_output, total = [], 0.0
        for i, loss in enumerate(self._losses):
            if loss is None:
                per_output.append(None)
                continue
            value = loss(ys[i], ys_pred[i], sample_weight=None if sws is None else sws[i],
                         mask=trace.output_masks[i])
            per_output.append(value)
            total += self._loss_weights[i] * value
        return total + self._regularization_loss(trace, variables), per_output

    def _compute_gradients(self, ys, ys_pred, trace, variables, sws):
        """Gradients of the total loss for ``variables`` (the trainable ones), in order."""
        return self._gradients(ys, ys_pred, trace, variables, sws)

    def _apply_gradients(self, variables, grads):
        """One optimizer step; constraints apply after it, as Keras's optimizers do."""
        self.optimizer.apply([v.array for v in variables], grads)
        for v in variables:
            if v.constraint is not None:
                v.array[...] = v.constraint(v.array)

    def _train_step(self, xs, ys, sws=None):
        """One step on a batch; returns (loss, per-output losses, outputs, output masks).
        No update when the loss is not finite. Arrays stand for one-element lists."""
        if not isinstance(xs, list):
            xs, ys, sws = [xs], [ys], (None if sws is None else [sws])
        if self._strategy is not None:      # [distribute hook] shard, allreduce, one update
            return self._strategy.train_step(self, xs, ys, sws)
        ys_pred, trace = self._run_graph(xs, training=True, need_grad=True)
        variables = self._trainable_variables()
        loss, per_output = self._compute_loss(ys, ys_pred, sws, trace, variables)
        if math.isfinite(loss):
            grads = self._compute_gradients(ys, ys_pred, trace, variables, sws)
            self._apply_gradients(variables, grads)
        return loss, per_output, ys_pred, trace.output_masks

    def _test_step(self, xs, ys, sws=None):
        ys_pred, trace = self._inference_forward(xs)
        loss, per_output = self._compute_loss(ys, ys_pred, sws, trace)
        return loss, per_output, ys_pred, trace.output_masks

    def _predict_step(self, xs):
        return self._inference_forward(xs)[0]

    def _inference_forward(self, xs):
        """The forward pass of evaluate, validation and predict: (outputs, trace)."""
        if self._strategy is not None:      # [distribute hook] sharded, outputs gathered
            return self._strategy.forward(self, xs)
        return self._run_graph(xs)

    def _prepare_batch(self, batch, adapter, need_targets=True):
        """A batch from the adapter as lists (checked and cast unless the adapter's
        arrays were checked already)."""
        xb, yb, swb = batch
        if adapter.validated:
            return xb, yb, swb
        xb = self._prepare_inputs(xb, "x (a batch)")
        if not need_targets:
            return xb, None, None
        yb = self._prepare_targets(yb, xb, "y (a batch)")
        return xb, yb, self._prepare_sample_weights(swb, yb, "sample_weight (a batch)")

    def _prepare_arrays(self, x, y, sample_weight, class_weight=None):
        """Arrays given to fit/evaluate/*_on_batch as checked lists."""
        xs = self._prepare_inputs(x)
        ys = self._prepare_targets(y, xs)
        if class_weight is not None:
            if sample_weight is not None:
                raise ValueError("Give `sample_weight` or `class_weight`, not both.")
            if len(ys) != 1:
                raise ValueError("`class_weight` is only supported for models with a single "
                                 f"output; model '{self.name}' has {len(ys)}.")
            sample_weight = _class_weights(ys[0], class_weight)
        return xs, ys, self._prepare_sample_weights(sample_weight, ys)

    # -- fit -------------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1, distribute=None):
        """Trains on arrays (lists or dicts of arrays for several inputs or outputs), or on a
        generator, iterable or PyDataset of (x, y) batches, as Keras's ``fit``; returns the
        History. ``distribute``: a ``cgru.distributed`` strategy (data-parallel over MPI;
        ``batch_size`` is the global batch)."""
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
            xs, ys, sws = self._prepare_arrays(x, y, sample_weight, class_weight)
            n = num_rows(xs)
            if validation_split and validation_data is None:
                # Keras: the last fraction of the data, taken before any shuffling
                split_at = int(math.floor(n * (1.0 - validation_split)))
                if split_at == 0 or split_at == n:
                    raise ValueError(f"`validation_split={validation_split}` leaves no "
                                     f"training or no validation samples out of {n}.")
                rest = slice(split_at, None)
                validation_data = _Prepared((take_rows(xs, rest), take_rows(ys, rest),
                                             take_rows(sws, rest)))
                xs, ys, sws = (take_rows(xs, slice(split_at)), take_rows(ys, slice(split_at)),
                               take_rows(sws, slice(split_at)))
                n = split_at
            if n == 0:
                raise ValueError("`x` holds no samples; fit() needs at least one.")
            adapter = make_adapter(xs, ys, batch_size, shuffle, self._shuffle_rng, sws)
        if validation_data is not None and not is_batch_source(validation_data) and not \
                isinstance(validation_data, _Prepared):
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (
                    2, 3):
                raise ValueError("`validation_data` must be a tuple (x_val, y_val), a "
                                 "generator or a PyDataset.")
            x_val = self._prepare_inputs(validation_data[0], "validation_data[0]")
            y_val = self._prepare_targets(validation_data[1], x_val, "validation_data[1]")
            sw_val = self._prepare_sample_weights(
                validation_data[2] if len(validation_data) == 3 else None, y_val,
                "validation_data[2]")
            validation_data = _Prepared((x_val, y_val, sw_val))
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
        running = None
        for epoch in range(initial_epoch, epochs):
            cbs.on_epoch_begin(epoch)
            if verbose and epochs > 1:      # as Keras' ProgbarLogger
                print(f"Epoch {epoch + 1}/{epochs}", flush=True)
            bar = Progbar(epochs_iterator.num_steps, verbose=verbose)
            logs, done = {}, 0
            if running is not None:     # fresh sums and metric states each epoch
                running.reset()
            for step, batch in epochs_iterator.epoch():
                xb, yb, swb = self._prepare_batch(batch, adapter)
                cbs.on_train_batch_begin(step)
                loss, per_output, ys_pred, masks = self._train_step(xb, yb, swb)
                if running is None:         # metrics made once, for the outputs' shapes
                    running = self._new_logs(yb, ys_pred)
                done = step + 1
                if not math.isfinite(loss):
                    msg = (f"Batch {step}: Invalid loss {loss}, terminating training "
                           "(the weights are those before this batch).")
                    if verbose:
                        print("\n" + msg, flush=True)
                    warnings.warn(msg, RuntimeWarning, stacklevel=2)
                    running.update(num_rows(xb), loss, per_output, yb, ys_pred, masks, swb)
                    logs = {"loss": loss}
                    self.stop_training = True
                    break
                running.update(num_rows(xb), loss, per_output, yb, ys_pred, masks, swb)
                logs = self._reduce_logs(running)
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
        """The logs (loss and metrics over every sample) of evaluating on ``data``:
        ``_Prepared`` lists (x, y, sample_weight), a generator or a PyDataset."""
        if is_batch_source(data):
            adapter = make_adapter(data, None, batch_size, False, None)
        else:
            adapter = make_adapter(data[0], data[1], batch_size, False, None, data[2])
        iterator = EpochIterator(adapter, steps)
        cbs = self._callback_list(callbacks, {"steps": iterator.num_steps, "verbose": verbose})
        bar = Progbar(iterator.num_steps, verbose=verbose)
        running, logs, done = None, {}, 0
        cbs.on_test_begin()
        for step, batch in iterator.epoch():
            xb, yb, swb = self._prepare_batch(batch, adapter)
            if num_rows(xb) == 0:
                break
            cbs.on_test_batch_begin(step)
            loss, per_output, ys_pred, masks = self._test_step(xb, yb, swb)
            if running is None:
                running = self._new_logs(yb, ys_pred)
            running.update(num_rows(xb), loss, per_output, yb, ys_pred, masks, swb)
            logs = self._reduce_logs(running)
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

    def _logs_as_list(self, logs):
        """evaluate()'s list as Keras 3 orders it: the loss, each output's loss (in the
        outputs' order), then the metrics (in compile's order for one output, by name for
        several); the loss alone when there is nothing else."""
        if len(logs) == 1:
            return logs["loss"]
        keys = [k for k, _ in self._loss_keys()]
        rest = [k for k in logs if k not in keys]
        if len(self._output_names) > 1:
            rest = sorted(rest)
        return [logs[k] for k in keys + rest]

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
            xs, ys, sws = self._prepare_arrays(x, y, sample_weight)
            if num_rows(xs) == 0:
                raise ValueError("`x` holds no samples; evaluate() needs at least one.")
            data = _Prepared((xs, ys, sws))
        logs = self._run_evaluation(data, batch_size, steps, verbose=verbose,
                                    callbacks=callbacks)
        return dict(logs) if return_dict else self._logs_as_list(logs)

    def predict(self, x, batch_size=None, verbose=0, steps=None, callbacks=None,
                distribute=None):
        """The model's outputs for arrays, or for a generator or PyDataset of x batches
        (an (x, ...) tuple's first item), concatenated. ``distribute``: a
        ``cgru.distributed`` strategy (each batch sharded over ranks)."""
        if distribute is not None:          # [distribute hook]
            return distribute.run(self.predict, locals())
        batch_size = _check_batch_size(batch_size)
        verbose = _check_verbose(verbose)
        if is_batch_source(x):
            adapter = make_adapter(x, None, batch_size, False, None)
        else:
            xs = self._prepare_inputs(x)
            if num_rows(xs) == 0:
                return self._pack_outputs(self._empty_outputs())
            adapter = make_adapter(xs, None, batch_size, False, None)
        iterator = EpochIterator(adapter, steps)
        cbs = self._callback_list(callbacks, {"steps": iterator.num_steps, "verbose": verbose})
        bar = Progbar(iterator.num_steps, verbose=verbose)
        outs = []
        cbs.on_predict_begin()
        for step, batch in iterator.epoch():
            xb = self._prepare_batch(batch, adapter, need_targets=False)[0]
            cbs.on_predict_batch_begin(step)
            outs.append(self._predict_step(xb))
            cbs.on_predict_batch_end(step, {"outputs": self._pack_outputs(outs[-1])})
            bar.update(step + 1, finalize=False if iterator.num_steps is None else None)
        if iterator.num_steps is None and outs:
            bar.update(len(outs), finalize=True)
        cbs.on_predict_end()
        if not outs:
            raise ValueError("The data given to predict() gave no batch.")
        return self._pack_outputs([np.concatenate(parts, axis=0) for parts in zip(*outs)])

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None,
                       return_dict=False):
        """One training step on one batch; returns the loss (with metrics, as evaluate)."""
        self._require_compiled("train_on_batch")
        xs, ys, sws = self._prepare_arrays(x, y, sample_weight, class_weight)
        return self._batch_logs(xs, ys, sws, self._train_step(xs, ys, sws), return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """The loss (with metrics, as evaluate) on one batch, without training."""
        self._require_compiled("test_on_batch")
        xs, ys, sws = self._prepare_arrays(x, y, sample_weight)
        return self._batch_logs(xs, ys, sws, self._test_step(xs, ys, sws), return_dict)

    def predict_on_batch(self, x):
        """The model's outputs on one batch."""
        return self._pack_outputs(self._predict_step(self._prepare_inputs(x)))

    def _batch_logs(self, xs, ys, sws, step_result, return_dict):
        loss, per_output, ys_pred, masks = step_result
        logs = self._new_logs(ys, ys_pred)
        logs.update(num_rows(xs), float(loss), per_output, ys, ys_pred, masks, sws)
        result = self._reduce_logs(logs)
        return result if return_dict else self._logs_as_list(result)

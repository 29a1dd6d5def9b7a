"""Data-parallel training and inference over MPI (mpi4py).

Launch one process per share of the work with ``mpiexec -n N python -m mpi4py train.py`` (or
``srun``); in the script, pass the same arrays on every rank and a strategy::

    strategy = cgru.distributed.MPIStrategy()
    model.fit(x, y, batch_size=256, epochs=10, distribute=strategy)     # the global batch
    model.evaluate(x_val, y_val, distribute=strategy)
    y_pred = model.predict(x_test, distribute=strategy)

mpi4py is imported when a strategy is made. Without MPI (a plain ``python train.py``),
``MPIStrategy()`` has ``size`` 1 and the calls run exactly as without ``distribute``; when
mpi4py is not installed and the process was not launched by an MPI launcher, it still works
with size 1.

Semantics. Keras's MultiWorkerMirroredStrategy (MWMS), PyTorch's DistributedDataParallel
(DDP) and Horovod are the references; where they differ, the choice is said.

- **Start.** When training begins (after the callbacks' ``on_train_begin``, so that a
  ``BackupAndRestore`` on rank 0 has restored its backup), rank 0's weights, optimizer state
  and iteration count, random generators (the shuffle's and every layer's dropout
  generator) and starting epoch are broadcast to every rank (Horovod's
  ``broadcast_parameters``/``broadcast_optimizer_state``, DDP's broadcast at construction).
- **Data.** Every rank is given the same arrays (or a generator yielding the same batches)
  and ``batch_size`` is the global batch, as in MWMS. A functional ``Model`` with several
  inputs or outputs takes lists or dicts of arrays: every input, target and sample weight is
  cut into the same rows. Every rank draws the same permutation and takes a contiguous share
  of each global batch: of ``n`` rows, rank ``r`` takes ``n // N + (r < n % N)`` rows, the
  lower ranks first. No padding and no dropped samples (DDP's DistributedSampler pads or
  drops; this follows MWMS): a last batch smaller than ``N`` leaves the last ranks without
  rows for that step.
- **Gradients.** Each rank runs the training loop's own step (``cgru.engine.trainer``:
  ``_run_graph``, ``_compute_loss``, ``_compute_gradients``) on its share, so its loss is
  the engine's (each output's loss times its ``loss_weights`` entry, plus the regularizers'
  penalties); it scales the gradient by its share of the rows (``rows / n``), and one
  in-place allreduce sums one flat buffer of every gradient per step (in the weights' dtype;
  beside it, started at the same time, a float64 allreduce of the loss's total and of each
  output's loss, and when metrics are compiled an allgather of the predictions), and
  ``_apply_gradients`` makes the one update. For the losses' default reductions
  (``"sum_over_batch_size"``, ``"mean"``) with or without sample weights, that sum is the
  gradient one process computes on the global batch, uneven last batches included (Horovod
  and DDP average equal shares instead; MWMS scales by the global batch size, as here).
  Clipping, weight decay, the optimizer's rule and constraints then run on every rank on the
  same summed gradient. The reductions ``"sum"`` and ``"mean_with_sample_weight"`` and a
  mask that reaches the loss, whose global divisors a share does not know, raise
  ``NotImplementedError``; so do stateful layers.
- **Random draws.** Dropout and noise layers draw the masks one process would draw for the
  global batch: each rank draws the global batch's mask from its (identical) generator and
  keeps its rows. A rank without rows for a step takes rank 0's generators after it.
- **Layers with state that training updates** (``BatchNormalization``'s moving statistics)
  normalize each share by its own batch statistics, as DDP without ``SyncBatchNorm``,
  Horovod and MWMS do; rank 0's moving statistics are broadcast after every step (DDP's
  ``broadcast_buffers``).
- **Decisions are collective.** The loss and metrics every rank logs are exact global
  values: the loss from the sum over ranks of each share's total, the metrics computed on
  every rank from all ranks' predictions of the batch (so ``EarlyStopping``,
  ``ReduceLROnPlateau``, ``ModelCheckpoint``'s "best" and ``TerminateOnNaN`` see the same
  numbers everywhere and decide alike). The non-finite-loss skip uses the global loss.
  ``model.stop_training`` is OR-ed over ranks after each step (when a callback acts on
  steps) and each epoch, and rank 0's learning rate is broadcast after each epoch.
- **Output.** Only rank 0 prints (progress bars, callbacks' messages, warnings) and writes
  files: ``ModelCheckpoint``, ``CSVLogger`` and ``BackupAndRestore`` run on rank 0 only
  (Horovod's advice); other callbacks run on every rank.
- **evaluate / predict.** Each batch's rows are sharded the same way and every rank's
  outputs gathered, so the loss and metrics are those of one process. ``predict`` returns
  the full array on every rank, or on rank 0 alone (``None`` elsewhere) with
  ``MPIStrategy(predict_on="root")``.
- **Failures.** Arguments and input shapes are compared across ranks before the first
  collective: a difference is a ``ValueError`` on every rank naming what differs. An
  exception on one rank once the ranks work together prints its traceback and calls
  ``MPI_Abort``, which ends the whole job (``mpiexec``, ``srun``) instead of leaving the
  other ranks waiting in a collective. An uncaught exception elsewhere in the script ends the
  job too: a strategy of more than one rank sets ``sys.excepthook`` to call ``MPI_Abort``
  (what ``python -m mpi4py``, the recommended launch, does for the whole script).
- **Threads.** Each rank runs cgru's kernels with ``cgru.get_num_threads()`` threads. The
  strategy counts the ranks on each node (an MPI shared-memory split) and warns when ranks
  x threads exceed the node's cores, or threads exceed the cores the rank is bound to.
"""
import contextlib
import math
import os
import sys
import time
import traceback
import warnings

import numpy as np

from .callbacks import BackupAndRestore, CallbackList, CSVLogger, ModelCheckpoint
from .data_adapters import is_batch_source, num_rows, take_rows
from .engine.trainer import _Trace
from .layers.base import Layer
from .optimizers._flat import flat_arrays

__all__ = ["MPIStrategy"]

# callbacks that write files: rank 0 only
_ROOT_ONLY = (ModelCheckpoint, CSVLogger, BackupAndRestore)
_EXACT_REDUCTIONS = ("sum_over_batch_size", "mean")
# environment variables that MPI launchers set (PMI: MPICH's Hydra and srun --mpi=pmi2; Open
# MPI; a Slurm job step)
_LAUNCHER_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
                   "SLURM_STEP_NUM_TASKS")


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        launched = any(int(os.environ.get(k, "1") or 1) > 1 for k in _LAUNCHER_SIZES)
        if launched:
            raise ImportError("cgru.distributed.MPIStrategy needs mpi4py in a job launched "
                              "by MPI: pip install 'cgru[mpi]' (mpi4py, and the mpich wheel "
                              "for mpiexec) or mpi4py built against the site's MPI.") from None
        return None
    return MPI


class _CollectiveError(ValueError):
    """Raised alike on every rank after a collective check: no abort needed."""


def share(n, rank, size):
    """The rows ``[start, stop)`` of a batch of ``n`` rows that ``rank`` of ``size`` takes:
    ``n // size`` each, one more for the first ``n % size`` ranks."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def _sublayers(layers):
    """Every layer of ``layers`` and, depth first, the layers they hold (wrappers)."""
    seen, out = set(), []

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        out.append(layer)
        for value in vars(layer).values():
            for item in (value if isinstance(value, (list, tuple)) else (value,)):
                if isinstance(item, Layer):
                    visit(item)

    for layer in layers:
        visit(layer)
    return out


class _ShareOfGlobalDraws:
    """Stands in for a layer's generator during one step on a share: every draw of a shape
    whose first axis is ``k`` per row draws the global batch's shape (``n k`` rows) from the
    real generator and returns rows ``[start k, stop k)``, the draws one process makes for
    those rows (NumPy fills arrays in C order, row after row)."""

    def __init__(self, rng, n, start, stop):
        self._rng, self._n, self._start, self._stop = rng, n, start, stop

    def _global(self, size, method):
        size = (size,) if np.ndim(size) == 0 and size is not None else size
        rows = self._stop - self._start
        if size is None or len(size) == 0 or size[0] % rows:
            raise NotImplementedError(
                f"Distributed training: a layer draws {method}(size={size}), whose first axis "
                f"is not a multiple of the share's {rows} rows; the draws of the global batch "
                "cannot be sharded.")
        k = size[0] // rows
        return (self._n * k,) + tuple(size[1:]), slice(self._start * k, self._stop * k)

    def _scalars(self, method, *args):
        if any(np.ndim(a) for a in args):
            raise NotImplementedError(f"Distributed training: {method}() with array "
                                      "parameters cannot be sharded.")

    def random(self, size=None, dtype=np.float64):
        shape, rows = self._global(size, "random")
        return self._rng.random(shape, dtype)[rows]

    def standard_normal(self, size=None, dtype=np.float64):
        shape, rows = self._global(size, "standard_normal")
        return self._rng.standard_normal(shape, dtype)[rows]

    def normal(self, loc=0.0, scale=1.0, size=None):
        self._scalars("normal", loc, scale)
        shape, rows = self._global(size, "normal")
        return self._rng.normal(loc, scale, shape)[rows]

    def uniform(self, low=0.0, high=1.0, size=None):
        self._scalars("uniform", low, high)
        shape, rows = self._global(size, "uniform")
        return self._rng.uniform(low, high, shape)[rows]

    def binomial(self, n, p, size=None):
        self._scalars("binomial", n, p)
        shape, rows = self._global(size, "binomial")
        return self._rng.binomial(n, p, shape)[rows]

    def __getattr__(self, name):
        raise NotImplementedError(f"Distributed training: a layer draws with {name}(), which "
                                  "cgru.distributed does not shard.")


class _CollectiveCallbacks(CallbackList):
    """The fit's callbacks under a strategy: file writers on rank 0 only, rank 0's state
    broadcast after ``on_train_begin``, ``stop_training`` OR-ed over ranks and rank 0's
    learning rate taken after the hooks that may change them. Other hooks pass through."""

    def __init__(self, callbacks, model, params, strategy):
        callbacks = list(callbacks)
        # decided on the full list, so that every rank makes the same collectives
        self._per_step = any(_overrides(cb, "on_train_batch_end") or _overrides(
            cb, "on_batch_end") for cb in callbacks)
        if strategy.rank != 0:
            callbacks = [cb for cb in callbacks if not isinstance(cb, _ROOT_ONLY)]
        self._inner = CallbackList(callbacks, model, params)
        self.callbacks = self._inner.callbacks
        self._model, self._strategy = model, strategy

    def __getattr__(self, hook):
        if hook.startswith("_"):
            raise AttributeError(hook)
        return getattr(self._inner, hook)

    def on_train_begin(self, logs=None):
        self._inner.on_train_begin(logs)
        self._strategy._broadcast_state(self._model)

    def on_train_batch_end(self, batch, logs=None):
        self._inner.on_train_batch_end(batch, logs)
        if self._per_step:
            self._model.stop_training = self._strategy._any(self._model.stop_training)

    def on_epoch_end(self, epoch, logs=None):
        self._inner.on_epoch_end(epoch, logs)
        self._model.stop_training = self._strategy._any(self._model.stop_training)
        self._strategy._broadcast_learning_rate(self._model)


def _overrides(cb, name):
    from .callbacks import Callback
    return getattr(type(cb), name) is not getattr(Callback, name) or name in vars(cb)


def _describe(value):
    """What must agree across ranks about an argument: shapes for arrays, the value for
    numbers and strings, "batches" for a generator or PyDataset."""
    if value is None or isinstance(value, (bool, int, float, str, np.integer, np.floating)):
        return value
    if is_batch_source(value):
        return "batches"
    if isinstance(value, dict):
        return {k: _describe(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)) and value and not all(
            isinstance(v, (int, float, np.integer, np.floating)) for v in value):
        return [_describe(v) for v in value]
    return ("array", tuple(np.shape(value)))



# How long a failing rank waits between writing its traceback and MPI_Abort: the launcher's
# proxy forwards a rank's stderr asynchronously, and MPI_Abort ends the proxies too, so on a
# busy machine an immediate abort lost the traceback (the job ended with no message).
_ABORT_GRACE_SECONDS = 1.0


def _flush_before_abort():
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(_ABORT_GRACE_SECONDS)

class MPIStrategy:
    """Data-parallel ``fit``/``evaluate``/``predict`` over MPI (see the module's docstring).

    ``comm``: an mpi4py communicator (``MPI.COMM_WORLD`` by default). ``predict_on``:
    ``"all"`` (every rank gets ``predict``'s full array) or ``"root"`` (rank 0 only, others
    ``None``). ``.rank``, ``.size``: this process's rank and the number of processes;
    ``.local_rank``, ``.local_size``: the same among the ranks of this node."""

    def __init__(self, comm=None, predict_on="all"):
        if predict_on not in ("all", "root"):
            raise ValueError(f"`predict_on` must be 'all' or 'root'; received {predict_on!r}.")
        self.predict_on = predict_on
        self._MPI = _import_mpi()
        if self._MPI is None:               # no mpi4py and no MPI launcher: one process
            if comm is not None:
                raise ImportError("`comm` was given but mpi4py is not installed.")
            self.comm, self.rank, self.size, self.local_rank, self.local_size = \
                None, 0, 1, 0, 1
        else:
            self.comm = self._MPI.COMM_WORLD if comm is None else comm
            self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
            node = self.comm.Split_type(self._MPI.COMM_TYPE_SHARED, key=self.rank)
            self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
            node.Free()
        self._check_batches = False
        self._kind = None
        self._buffers = {}
        if self.size > 1:
            self._abort_on_uncaught_exceptions()
        if self.local_rank == 0:
            self.check_threads()

    def _abort_on_uncaught_exceptions(self):
        """An exception that ends the script on one rank ends the job (as ``python -m
        mpi4py`` does), instead of leaving the other ranks in a collective."""
        previous = sys.excepthook
        if getattr(previous, "_cgru_aborts", False):
            return
        comm = self.comm

        def hook(kind, value, tb):
            previous(kind, value, tb)
            _flush_before_abort()
            comm.Abort(1)
        hook._cgru_aborts = True
        sys.excepthook = hook

    def __repr__(self):
        return f"<MPIStrategy rank={self.rank} size={self.size}>"

    # -- threads ---------------------------------------------------------------------------
    def check_threads(self):
        """Warns (once, on this rank) when this node's ranks x cgru's threads exceed its
        cores, or when cgru's threads exceed the cores this rank is bound to; returns
        ``(threads, ranks on this node, cores of the node, cores this rank may use)``.
        ``MPIStrategy()`` calls it on the first rank of each node."""
        from .functional import get_num_threads
        threads = get_num_threads()
        cores = os.cpu_count() or 1
        bound = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
        if self.local_size > cores:
            warnings.warn(
                f"{self.local_size} ranks on this node exceed its {cores} cores: run at most "
                f"{cores} ranks per node.", RuntimeWarning, stacklevel=2)
        elif self.local_size * threads > cores:
            warnings.warn(
                f"{self.local_size} ranks on this node x {threads} threads each exceed its "
                f"{cores} cores: set threads per rank to {max(1, cores // self.local_size)} "
                "(cgru.set_num_threads or OMP_NUM_THREADS/OPENBLAS_NUM_THREADS), or run "
                "fewer ranks per node.", RuntimeWarning, stacklevel=2)
        elif threads > bound:
            warnings.warn(
                f"cgru uses {threads} threads but this rank is bound to {bound} cores: set "
                f"cgru.set_num_threads({bound}) or bind each rank to more cores.",
                RuntimeWarning, stacklevel=2)
        return threads, self.local_size, cores, bound

    # -- the entry from fit / evaluate / predict -------------------------------------------
    def run(self, method, arguments):
        """Runs the bound ``method`` (a model's ``fit``, ``evaluate`` or ``predict``) with
        ``arguments`` (its ``locals()``: ``self`` and ``distribute`` are dropped) across the
        ranks."""
        arguments = {k: v for k, v in arguments.items() if k not in ("self", "distribute")}
        model, kind = method.__self__, method.__name__
        if self.size == 1:
            return method(**arguments)
        self._check_model(model, kind)
        self._compare_across_ranks(model, kind, arguments)
        self._check_batches = any(is_batch_source(v) for k, v in arguments.items()
                                  if k in ("x", "validation_data"))
        with self._session(model, kind):
            result = method(**arguments)
        if kind == "predict" and self.predict_on == "root" and self.rank != 0:
            return None
        return result

    def _check_model(self, model, kind):
        """What a share cannot compute exactly: a NotImplementedError on every rank."""
        for loss in getattr(model, "_losses", None) or ():
            reduction = getattr(loss, "reduction", "sum_over_batch_size")
            if kind == "fit" and loss is not None and reduction not in _EXACT_REDUCTIONS:
                raise NotImplementedError(
                    f"Distributed training needs a loss reduction of {_EXACT_REDUCTIONS} "
                    f"(the global divisor of '{reduction}' is not known to a share); "
                    f"received reduction={reduction!r} for the loss '{loss.name}'.")
        for layer in _sublayers(model.layers):
            if getattr(layer, "stateful", False):
                raise NotImplementedError(
                    f"Distributed {kind}() with stateful layers (layer '{layer.name}') is not "
                    "supported: a carried state belongs to rows that change rank.")

    def _compare_across_ranks(self, model, kind, arguments):
        # callbacks and verbosity may differ (``verbose=1 if rank == 0 else 0`` is common)
        described = {k: _describe(v) for k, v in arguments.items()
                     if k not in ("callbacks", "verbose")}
        described["model weights"] = [tuple(w.shape) for w in model.weights]
        every = self.comm.allgather(described)
        differ = sorted({k for d in every for k in d if d.get(k) != every[0].get(k)})
        if differ:
            lines = "; ".join(f"{k}: " + ", ".join(f"rank {r}: {d.get(k)}"
                                                   for r, d in enumerate(every))
                              for k in differ)
            raise ValueError(f"{kind}() was called with different arguments on different "
                             f"ranks (every rank must pass the same): {lines}.")

    @contextlib.contextmanager
    def _session(self, model, kind):
        """The model knows the strategy; ranks other than 0 print nothing; an exception on
        any rank aborts the job (other ranks may be waiting in a collective)."""
        model._strategy, self._kind = self, kind
        quiet = self.rank != 0
        sink = open(os.devnull, "w") if quiet else None
        try:
            with contextlib.ExitStack() as stack:
                if quiet:
                    stack.enter_context(contextlib.redirect_stdout(sink))
                    stack.enter_context(warnings.catch_warnings())
                    warnings.simplefilter("ignore")
                yield
        except _CollectiveError:
            raise                               # raised alike on every rank
        except BaseException:
            self._abort()
        finally:
            model._strategy, self._kind = None, None
            if sink is not None:
                sink.close()

    def _abort(self):
        message = traceback.format_exc()
        sys.stderr.write(f"[cgru.distributed rank {self.rank}/{self.size}] aborting the job "
                         f"after an exception:\n{message}")
        _flush_before_abort()
        self.comm.Abort(1)

    # -- collectives -----------------------------------------------------------------------
    def _any(self, flag):
        return bool(self.comm.allreduce(bool(flag), op=self._MPI.LOR))

    def _check_batch(self, *arrays):
        """For generator sources: every rank's batch (lists of arrays: inputs, targets,
        sample weights) must have the same shapes."""
        def shapes_of(a):
            if a is None:
                return None
            if isinstance(a, (list, tuple)):
                return tuple(shapes_of(item) for item in a)
            return tuple(np.shape(a))
        shapes = tuple(shapes_of(a) for a in arrays)
        every = self.comm.allgather(shapes)
        if any(s != every[0] for s in every):
            raise _CollectiveError(
                "The batches differ in shape across ranks (every rank must yield the same "
                f"global batches): (x, y, sample_weight) shapes per rank {every}.")

    def _bcast_arrays(self, arrays):
        """Rank 0's values into ``arrays`` (in place) on every rank, one buffer per dtype."""
        by_dtype = {}
        for a in arrays:
            by_dtype.setdefault(a.dtype, []).append(a)
        for dtype, group in by_dtype.items():
            buffer = np.concatenate([a.ravel() for a in group]) if group else None
            self.comm.Bcast(buffer, root=0)
            if self.rank != 0:
                offset = 0
                for a in group:
                    a[...] = buffer[offset:offset + a.size].reshape(a.shape)
                    offset += a.size

    def _broadcast_state(self, model):
        """Rank 0's weights, optimizer state, generators and starting epoch everywhere."""
        self._bcast_arrays(model.weights)
        optimizer = model.optimizer
        head = (optimizer.built, optimizer.iterations, model.get_rng_state(),
                getattr(model, "_initial_epoch", None)) if self.rank == 0 else None
        built, _, rng_state, initial_epoch = self.comm.bcast(head, root=0)
        if built:
            if self.rank != 0 and not optimizer.built:
                optimizer.build(model.trainable_weights)
            self._bcast_arrays(optimizer.variables())
        elif optimizer.built:                   # rank 0 starts fresh: so does every rank
            optimizer.build(model.trainable_weights)
        optimizer._iterations = self.comm.bcast(optimizer._iterations, root=0)
        model.set_rng_state(rng_state)
        model._initial_epoch = initial_epoch
        self._buffers.clear()

    def _broadcast_learning_rate(self, model):
        lr = model.optimizer._learning_rate
        if isinstance(lr, float):
            model.optimizer._learning_rate = self.comm.bcast(lr, root=0)

    def callback_list(self, callbacks, model, params):
        """The callbacks of a call under this strategy (see ``_CollectiveCallbacks``)."""
        return _CollectiveCallbacks(callbacks, model, params, self)

    # -- one training step -----------------------------------------------------------------
    def _grad_buffer(self, params):
        """One flat buffer (reused) whose views are the gradients, in one dtype: the
        weights' when they share one, else float64."""
        key = tuple((p.shape, p.dtype.str) for p in params)
        buffer = self._buffers.get(key)
        if buffer is None:
            dtype = np.result_type(*[p.dtype for p in params]) if params else np.float32
            buffer = self._buffers[key] = flat_arrays([p.shape for p in params], dtype)
        return buffer

    @contextlib.contextmanager
    def _global_draws(self, model, n, start, stop):
        patched = []
        for layer in _sublayers(model.layers):
            rng = getattr(layer, "_dropout_rng", None)
            if rng is not None:
                patched.append((layer, rng))
                layer._dropout_rng = _ShareOfGlobalDraws(rng, n, start, stop)
        try:
            yield
        finally:
            for layer, rng in patched:
                layer._dropout_rng = rng

    def train_step(self, model, xs, ys, sws=None):
        """The model's training step (``Trainer._train_step``) on a global batch: this
        rank's share of every input, target and sample weight through the engine's forward,
        loss (per output, with ``loss_weights`` and the regularizers' penalties) and
        gradients, the gradients scaled by the share's rows and summed over ranks in one
        flat buffer, then one update (``_apply_gradients``) everywhere. Returns (global
        loss, global per-output losses, outputs, output masks) as ``_train_step``: the
        outputs of the whole batch when metrics need them, else this share's."""
        MPI = self._MPI
        if self._check_batches:
            self._check_batch(xs, ys, sws)
        n = num_rows(xs)
        start, stop = share(n, self.rank, self.size)
        variables = model._trainable_variables()
        params = [v.array for v in variables]
        grads = self._grad_buffer(params)
        n_out = len(ys)
        # [total, each output's loss] times the share's rows, summed over ranks
        stats = np.zeros(1 + n_out, np.float64)
        ys_pred = None
        if stop > start:
            rows = slice(start, stop)
            xs_s, ys_s, sws_s = take_rows(xs, rows), take_rows(ys, rows), take_rows(sws, rows)
            with self._global_draws(model, n, start, stop):
                ys_pred, trace = model._run_graph(xs_s, training=True, need_grad=True)
            if any(m is not None for m in trace.output_masks):
                raise NotImplementedError(
                    "Distributed training with a mask that reaches the loss (Masking or "
                    "Embedding(mask_zero=True) before an output) is not supported: the "
                    "loss's divisor, the global count of valid steps, is not known to a share.")
            loss, per_output = model._compute_loss(ys_s, ys_pred, sws_s, trace, variables)
            stats[0] = loss * (stop - start)
            for i, value in enumerate(per_output):
                if value is not None:
                    stats[1 + i] = value * (stop - start)
            if math.isfinite(loss):
                scale = (stop - start) / n
                for view, g in zip(grads, model._compute_gradients(ys_s, ys_pred, trace,
                                                                   variables, sws_s)):
                    np.multiply(g, view.dtype.type(scale), out=view, casting="same_kind")
            else:
                grads.flat[...] = 0
        else:
            grads.flat[...] = 0
        requests = [self.comm.Iallreduce(MPI.IN_PLACE, grads.flat, op=MPI.SUM),
                    self.comm.Iallreduce(MPI.IN_PLACE, stats, op=MPI.SUM)]
        if _has_metrics(model):
            ys_pred = self._gather_outputs(ys_pred)
        elif ys_pred is None:
            ys_pred = _no_rows(model, xs)
        MPI.Request.Waitall(requests)
        loss = float(stats[0]) / n
        per_output = [None if l is None else float(stats[1 + i]) / n
                      for i, l in enumerate(model._losses)]
        if math.isfinite(loss):
            model._apply_gradients(variables, grads)
        self._after_step(model, n)
        return loss, per_output, ys_pred, [None] * n_out

    def _after_step(self, model, n):
        layers = model._weight_layers()
        if n < self.size:           # some ranks drew nothing: they take rank 0's generators
            states = self.comm.bcast([layer.rng_state() for layer in layers]
                                     if self.rank == 0 else None, root=0)
            for layer, state in zip(layers, states):
                layer.set_rng_state(state)
        updated = [v.array for layer in layers if layer.trainable
                   for v in layer.variables if not v.trainable]
        if updated:                 # moving statistics: rank 0's (DDP's broadcast_buffers)
            self._bcast_arrays(updated)

    # -- inference -------------------------------------------------------------------------
    def _gather_outputs(self, ys, to_all=True):
        """Every rank's output blocks (one list per rank, None for a rank without rows)
        concatenated per output in rank order, on every rank (or on rank 0; elsewhere
        None)."""
        if to_all:
            blocks = self.comm.allgather(ys)
        else:
            blocks = self.comm.gather(ys, root=0)
            if self.rank != 0:
                return None
        blocks = [b for b in blocks if b is not None]
        return [np.concatenate(parts, axis=0) for parts in zip(*blocks)]

    def forward(self, model, xs):
        """The inference forward of evaluate, validation and predict (``Trainer.
        _inference_forward``) on a global batch: this rank's rows of every input, the
        outputs (and their masks, and the outputs that activity regularizers read) gathered
        from every rank. Returns (outputs, trace) as the model's ``_run_graph``."""
        if self._check_batches:
            self._check_batch(xs)
        n = num_rows(xs)
        start, stop = share(n, self.rank, self.size)
        local = None
        if stop > start:
            ys, trace = model._run_graph(take_rows(xs, slice(start, stop)))
            local = (ys, trace.output_masks, [entry[2] for entry in trace])
        to_all = not (self._kind == "predict" and self.predict_on == "root")
        blocks = self.comm.allgather(local) if to_all else self.comm.gather(local, root=0)
        if blocks is None:                  # predict_on="root", a rank other than 0
            return _no_rows(model, xs), _GatheredTrace()
        blocks = [b for b in blocks if b is not None]

        def joined(parts):
            return None if parts[0] is None else np.concatenate(parts, axis=0)

        ys = [joined(parts) for parts in zip(*[b[0] for b in blocks])]
        trace = _GatheredTrace(
            (None, None, None if acts is None else [joined(parts) for parts in zip(
                *[b[2][s] for b in blocks])], None)
            for s, acts in enumerate(blocks[0][2]))
        trace.output_masks = [joined(parts) for parts in zip(*[b[1] for b in blocks])]
        return ys, trace


def _has_metrics(model):
    return any(getattr(model, "_output_metrics", ())) or any(
        getattr(model, "_output_weighted_metrics", ()))


def _no_rows(model, xs):
    """The model's outputs for zero rows of ``xs`` (a rank without rows for a step)."""
    shapes = model._output_shapes([x.shape[1:] for x in xs])
    return [np.zeros((0,) + tuple(s), dtype) for s, dtype in zip(shapes,
                                                                  model._output_dtypes())]


class _GatheredTrace(_Trace):
    """A forward's trace as the loss and the regularizers read it: per step (None, None,
    the outputs an activity regularizer reads, None), and the outputs' masks."""

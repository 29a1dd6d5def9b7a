"""The optimizer base class: Keras 3's ``apply`` (scale, clip, weight decay, update, EMA,
count) over flat state buffers.

As in Keras, an optimizer splits its state from its rule: ``build(params)`` makes the
slots, ``_update_step`` applies the rule in place, ``apply(params, grads)`` runs one step.
Arithmetic is done in the weight's dtype with the hyper-parameters cast to it, in Keras's
order (keras/src/optimizers/base_optimizer.py ``_backend_apply_gradients``):

    gradients / loss_scale_factor -> [gradient accumulation: on n-1 of n calls add to the
    accumulators and skip to the EMA; on the n-th use (g + accumulators) / n]
    -> clipnorm | global_clipnorm | clipvalue
    -> weight -= weight * weight_decay * lr -> update_step -> EMA -> iterations += 1

so float32 results agree with Keras to rounding.

Layout, for speed with many small weights. Weights of one dtype form a group; each slot
of a group is one flat buffer, and each weight's slot is a view into it. Every rule is
elementwise, so it runs on whole buffers:
- when a group's weights are consecutive views into one C-contiguous buffer (checked once
  per weight list), the rule runs once over that buffer (a "flat" group);
- otherwise the weights are copied into one scratch buffer around the step when the rule
  makes many passes (every rule but plain SGD), else the rule runs once per weight.
Gradients are cast into a scratch buffer of the weights' dtype when they need a cast or a
clip; a gradient list with a ``flat`` attribute (a 1-D array holding every gradient in
weight order, see :func:`flat_arrays`) is used without a copy.

Measured on the quickstart model's 5 float32 weights (20, 96), (32, 96), (2, 96), (32, 1),
(1,) (the shapes of benchmarks/optimizer_step.py), microseconds per ``apply``, minimum over
12 alternating rounds of one run on the shared 2-core machine (medians within 10 %):

    rule             before (per weight, temporaries)   separate arrays   flat_arrays
    Adam                          58.4                        37.3            25.5
    SGD                           12.9                        15.5             8.6
    SGD momentum 0.9              25.0                        21.6            11.1
    RMSprop                       52.1                        30.3            19.7
    Adam clipnorm=1              105.4                        55.0            45.4

Plain SGD on separate arrays pays about 2.5 us of bookkeeping for nothing; every other case
gains, most when the model keeps its weights and gradients in ``flat_arrays``.
"""
import operator
import warnings

import numpy as np

from . import schedules as schedules_mod
from ._flat import WeightGroup, clip_by_norm


def _check_positive(name, value, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not value > 0:
        raise ValueError(f"Received an invalid value for `{name}`, expected a positive number"
                         f"{' or None' if allow_none else ''}. Received: {name}={value!r}")
    return float(value)


def _check_learning_rate(learning_rate):
    if isinstance(learning_rate, schedules_mod.LearningRateSchedule) or \
            callable(learning_rate):
        return learning_rate
    if isinstance(learning_rate, bool) or \
            not isinstance(learning_rate, (int, float, np.floating)) or \
            not learning_rate >= 0:
        raise ValueError(
            "Received an invalid value for `learning_rate`, expected a non-negative number, "
            "a LearningRateSchedule or a callable. "
            f"Received: learning_rate={learning_rate!r}")
    return float(learning_rate)


class Optimizer:
    """Base class. Subclasses set ``_slot_names`` (or ``_active_slots``), ``_step_scalars``
    and ``_update_step``; arguments, defaults and errors follow Keras 3's BaseOptimizer."""

    _slot_names = ()
    # Copy separate weights into one buffer around a step, so that the rule runs once over
    # it: pays for rules of many passes (see the subclasses' figures), not for plain SGD.
    _gather_weights = True

    def __init__(self, learning_rate, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):
        if kwargs.pop("decay", None) is not None:  # Keras 3 warns and ignores it
            warnings.warn("Argument `decay` is no longer supported and will be ignored.")
        if kwargs:
            raise ValueError(f"Argument(s) not recognized: {kwargs}")
        if gradient_accumulation_steps is not None and (
                isinstance(gradient_accumulation_steps, bool)
                or not isinstance(gradient_accumulation_steps, int)
                or not gradient_accumulation_steps >= 2):
            raise ValueError("`gradient_accumulation_steps` must be an integer >= 2. "
                             f"Received: gradient_accumulation_steps="
                             f"{gradient_accumulation_steps!r}")
        self._learning_rate = _check_learning_rate(learning_rate)
        self.weight_decay = None if weight_decay is None else _check_non_negative(
            "weight_decay", weight_decay)
        self.clipnorm = _check_positive("clipnorm", clipnorm)
        self.clipvalue = _check_positive("clipvalue", clipvalue)
        self.global_clipnorm = _check_positive("global_clipnorm", global_clipnorm)
        if sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(
                "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
                f"Received: clipnorm={clipnorm}, clipvalue={clipvalue}, "
                f"global_clipnorm={global_clipnorm}")
        self.loss_scale_factor = _check_positive("loss_scale_factor", loss_scale_factor)
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.use_ema = bool(use_ema)
        if self.use_ema:
            if not 0 <= ema_momentum <= 1:
                raise ValueError("`ema_momentum` must be in the range [0, 1]. "
                                 f"Received: ema_momentum={ema_momentum}")
            if ema_overwrite_frequency and (
                    not isinstance(ema_overwrite_frequency, int)
                    or ema_overwrite_frequency < 1):
                raise ValueError("`ema_overwrite_frequency` must be an integer >= 1 or None. "
                                 f"Received: ema_overwrite_frequency={ema_overwrite_frequency}")
        self.ema_momentum = float(ema_momentum)
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self.name = name or type(self).__name__.lower()
        self._iterations = 0  # apply calls, accumulating ones included
        self._groups = None
        self._bound = None

    @property
    def iterations(self):
        """Weight updates so far: ``apply`` calls, divided by ``gradient_accumulation_steps``
        when gradients are accumulated (as Keras)."""
        if self.gradient_accumulation_steps:
            return self._iterations // self.gradient_accumulation_steps
        return self._iterations

    @iterations.setter
    def iterations(self, value):
        self._iterations = int(value)

    # -- learning rate ---------------------------------------------------------------------
    @property
    def learning_rate(self):
        """The learning rate of the next step: the float, the schedule's value at
        ``iterations``, or the callable's value (as Keras's ``optimizer.learning_rate``)."""
        lr = self._learning_rate
        if isinstance(lr, schedules_mod.LearningRateSchedule):
            return lr(self._iterations)  # every apply call, as Keras
        if callable(lr):
            return lr()
        return lr

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        if isinstance(self._learning_rate, schedules_mod.LearningRateSchedule) and not (
                isinstance(learning_rate, schedules_mod.LearningRateSchedule)
                or callable(learning_rate)):
            raise TypeError(
                "This optimizer was created with a `LearningRateSchedule` object as its "
                "`learning_rate` constructor argument, hence its learning rate is not "
                "settable. If you need the learning rate to be settable, you should "
                "instantiate the optimizer with a float `learning_rate` argument.")
        self._learning_rate = _check_learning_rate(learning_rate)

    # -- state -----------------------------------------------------------------------------
    def _active_slots(self):
        return self._slot_names

    def _slot_initial_value(self, name):
        return 0

    def build(self, params):
        """Make the state for ``params`` (a list of float arrays): zeroed slots, EMA copies."""
        params = list(params)
        for i, p in enumerate(params):
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise TypeError(f"Optimizer weights must be float NumPy arrays; weight {i} is "
                                f"{type(p).__name__} of dtype {getattr(p, 'dtype', None)}.")
        slot_inits = {n: self._slot_initial_value(n) for n in self._active_slots()}
        if self.use_ema:
            slot_inits["average"] = 0  # Keras's EMA copies start at zero
        if self.gradient_accumulation_steps:
            slot_inits["gradient_accumulator"] = 0
        by_dtype = {}
        for i, p in enumerate(params):
            by_dtype.setdefault(p.dtype, []).append(i)
        self._groups = [WeightGroup(dtype, idx, [params[i].shape for i in idx], slot_inits)
                        for dtype, idx in by_dtype.items()]
        self._weight_slots = [None] * len(params)  # weight index -> (group, position)
        for group in self._groups:
            for k, i in enumerate(group.indices):
                self._weight_slots[i] = (group, k)
        excluded = getattr(self, "_decay_excluded", [])
        for group in self._groups:
            group.decay_exempt = {k for k, i in enumerate(group.indices)
                                  if any(params[i] is e for e in excluded)}
        self._build_extra(params)
        self._bound = None

    def _build_extra(self, params):
        """Extra state of a rule (Nadam's running product); none by default."""

    def _extra_variables(self):
        return []

    @property
    def built(self):
        return self._groups is not None

    def variables(self):
        """All state arrays in a fixed order: each weight's slots (weight by weight, slot by
        slot), then each weight's EMA copy, then each weight's gradient accumulator, then a
        rule's extra state."""
        if self._groups is None:
            return []
        names = self._active_slots()
        out = [g.slot_views[n][k] for g, k in self._weight_slots for n in names]
        for name in ("average", "gradient_accumulator"):
            if self._groups and name in self._groups[0].slots:
                out += [g.slot_views[name][k] for g, k in self._weight_slots]
        return out + self._extra_variables()

    def set_variables(self, arrays, params):
        """Build for ``params`` and load state saved from ``variables()``."""
        self.build(params)
        own = self.variables()
        if len(arrays) != len(own):
            raise ValueError(f"Optimizer state has {len(arrays)} arrays, expected {len(own)}.")
        for i, (dst, src) in enumerate(zip(own, arrays)):
            src = np.asarray(src)
            if dst.shape != src.shape:
                raise ValueError(f"Optimizer state array {i} has shape {src.shape}; expected "
                                 f"{dst.shape}.")
            dst[...] = src

    def _bind(self, params):
        """Check ``params`` against the built state once per new weight list."""
        if self._bound is not None and len(params) == len(self._bound) and \
                all(map(operator.is_, params, self._bound)):
            return
        expected = [(g.shapes[k], g.dtype) for g, k in self._weight_slots]
        received = [(getattr(p, "shape", None), getattr(p, "dtype", None)) for p in params]
        if received != expected or not all(isinstance(p, np.ndarray) for p in params):
            raise ValueError(
                "`params` do not match the weights this optimizer was built for: expected "
                f"(shape, dtype) {[(s, str(d)) for s, d in expected]}, received "
                f"{[(s, str(d)) for s, d in received]}.")
        for i, p in enumerate(params):
            if not p.flags.writeable:
                raise ValueError(f"`params[{i}]` is read-only; the optimizer updates weights "
                                 "in place.")
        for group in self._groups:
            group.bind(params, self._active_slots(), self._gather_weights)
        self._bound = list(params)

    # -- one step --------------------------------------------------------------------------
    def apply(self, params, grads):
        """One optimizer step: update every array of ``params`` in place from ``grads``
        (arrays of the same shapes, any float dtype; cast to the weight's dtype)."""
        if len(grads) != len(params):
            raise ValueError(f"`grads` has {len(grads)} arrays but `params` has {len(params)}.")
        if len(grads) == 0:
            return  # as Keras: no step, and the step count stays
        if not self.built:
            self.build(params)
        self._bind(params)
        if not self._fused_step(params, grads):
            grad_units = self._prepare_gradients(params, grads)
            update = not self.gradient_accumulation_steps or self._accumulate_or_average()
            self._step_groups(grad_units, update)
        self._iterations += 1

    def _modifies_gradients(self):
        """Are gradients scaled, clipped or accumulated before the rule?"""
        return (self.loss_scale_factor is not None or self.clipnorm is not None
                or self.clipvalue is not None or self.global_clipnorm is not None
                or self.gradient_accumulation_steps is not None)

    def _plain_step(self, params, grads):
        """Does this step run the rule alone (no gradient scaling, clipping, accumulation,
        weight decay or EMA) on gradients that are C-contiguous arrays of their weights'
        dtypes and shapes?"""
        if self.weight_decay is not None or self.use_ema or self._modifies_gradients():
            return False
        for g, p in zip(grads, params):
            if type(g) is not np.ndarray or g.dtype != p.dtype or g.shape != p.shape \
                    or not g.flags.c_contiguous or not p.flags.c_contiguous:
                return False
        return True

    def _fused_step(self, params, grads):
        """The step as one native pass per weight, where a rule has one (Adam); returns
        whether it ran. The default: no."""
        return False

    def _step_groups(self, grad_units, update):
        """Per group: weight decay and the rule (when ``update``), then the EMA, on the flat
        buffer, the gathered copy or the weights one by one."""
        lr = self.learning_rate if update else None
        if update:
            self._before_step()
        for group, group_grads in zip(self._groups, grad_units):
            if not (update or self.use_ema):
                continue
            if group.gathered is not None:
                group.gather()
            if update:
                self._update_group(group, group_grads, lr)
            if self.use_ema:
                self._update_ema(group, group.units)
            if group.gathered is not None:
                group.scatter()

    def _update_group(self, group, group_grads, lr):
        t = group.scalar
        lr = t(lr)  # Keras casts the learning rate to the weight's dtype
        if self.weight_decay is not None:
            self._apply_weight_decay(group, group.units, lr, t(self.weight_decay))
        scalars = self._step_scalars(t, lr)
        for g, (p, slots, tmp1, tmp2) in zip(group_grads, group.units):
            self._update_step(g, p, slots, tmp1, tmp2, scalars)

    def _prepare_gradients(self, params, grads):
        """Per group, the gradients matching ``group.units``: cast to the weight dtype,
        divided by ``loss_scale_factor`` and clipped. Whatever is modified is first copied
        into the group's scratch buffer: the caller's arrays are never written."""
        flat = getattr(grads, "flat", None)
        modify = self._modifies_gradients()
        out = []
        for group in self._groups:
            gs = []
            for i in group.indices:
                g = grads[i]
                if type(g) is not np.ndarray or g.shape != params[i].shape or \
                        g.dtype.kind not in "fiu":
                    g = self._checked_gradient(grads, params, i)  # converts or raises
                gs.append(g)
            if modify or group.params is not None:
                if not modify and len(self._groups) == 1 and isinstance(flat, np.ndarray) \
                        and flat.shape == (group.size,) and flat.dtype == group.dtype \
                        and all(g.base is flat for g in gs):
                    out.append([flat])  # the caller's flat buffer, read only
                    continue
                # flat weights: gathering the gradients (one copy each, ~1 us) buys one pass
                # of the rule over all weights instead of one per weight
                for view, g in zip(group.grad_views, gs):
                    np.copyto(view, g, casting="same_kind")
                out.append([group.grads] if group.params is not None else group.grad_views)
            else:
                out.append([g if g.dtype == group.dtype else
                            _cast_into(view, g) for view, g in zip(group.grad_views, gs)])
        if self.loss_scale_factor is not None:
            for group in self._groups:
                np.divide(group.grads, group.scalar(self.loss_scale_factor), out=group.grads)
        if modify and not self.gradient_accumulation_steps:
            self._clip()
        return out

    def _accumulate_or_average(self):
        """With ``gradient_accumulation_steps`` = n: on n-1 of n calls add the gradients to
        the accumulators and return False (no update); on the n-th replace them by
        (gradients + accumulators) / n, clip them, zero the accumulators, return True."""
        n = self.gradient_accumulation_steps
        if (self._iterations + 1) % n != 0:
            for group in self._groups:
                accumulator = group.slots["gradient_accumulator"]
                np.add(group.grads, accumulator, out=accumulator)
            return False
        for group in self._groups:
            accumulator = group.slots["gradient_accumulator"]
            np.add(group.grads, accumulator, out=group.grads)
            np.divide(group.grads, group.scalar(n), out=group.grads)
            accumulator[...] = 0
        self._clip()
        return True

    @staticmethod
    def _checked_gradient(grads, params, i):
        g = grads[i]
        if type(g) is not np.ndarray:
            if g is None:
                raise ValueError(f"`grads[{i}]` is None; cgru needs a gradient for every "
                                 "weight (Keras would skip the weight).")
            g = np.asarray(g)
        if g.shape != params[i].shape:
            raise ValueError(f"`grads[{i}]` has shape {g.shape} but `params[{i}]` has shape "
                             f"{params[i].shape}.")
        if g.dtype.kind not in "fiu":
            raise TypeError(f"`grads[{i}]` must be a real number array; received dtype "
                            f"{g.dtype}.")
        return g

    def _clip(self):
        """In the groups' scratch gradient buffers, as Keras: ``clipnorm`` per weight,
        ``global_clipnorm`` over all weights, or ``clipvalue``."""
        for group in self._groups:
            t, grads = group.scalar, group.grads
            if self.clipnorm is not None:
                clip_by_norm(group, t(self.clipnorm))
            elif self.clipvalue is not None:
                np.clip(grads, t(-self.clipvalue), t(self.clipvalue), out=grads)
        if self.global_clipnorm is not None:
            self._clip_by_global_norm()

    def _clip_by_global_norm(self):
        """Keras's clip_by_global_norm: g * clip * min(1 / ||all g||, 1 / clip), with a NaN
        scale when the norm is not finite."""
        squared = sum(np.dot(g.grads, g.grads) for g in self._groups)
        for group in self._groups:
            t = group.scalar
            norm = np.sqrt(t(squared))
            clip = t(self.global_clipnorm)
            scale = clip * np.minimum(t(1.0) / norm, t(1.0 / self.global_clipnorm))
            scale = scale + (norm - norm)
            np.multiply(group.grads, scale, out=group.grads)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Exempt the arrays of ``var_list`` from weight decay (call before the first step).
        cgru's weights have no names, so ``var_names`` is refused."""
        if self.built:
            raise ValueError("`exclude_from_weight_decay()` can only be configured before "
                             "the optimizer is built.")
        if var_names:
            raise ValueError("cgru weights have no names, so `var_names` is not supported by "
                             "`exclude_from_weight_decay`; pass the arrays in `var_list`.")
        self._decay_excluded = list(var_list or [])

    def _apply_weight_decay(self, group, units, lr, weight_decay):
        """weight -= weight * weight_decay * lr (Keras's order), before the rule; over the
        whole buffer unless some weights are exempt."""
        if group.decay_exempt:
            views = group.param_views if group.params is None else group.views(group.params)
            units = [(p, None, tmp, None) for k, (p, tmp) in
                     enumerate(zip(views, group.tmp_views[0])) if k not in group.decay_exempt]
        for p, _, tmp, _ in units:
            np.multiply(p, weight_decay, out=tmp)
            np.multiply(tmp, lr, out=tmp)
            np.subtract(p, tmp, out=p)

    def _update_ema(self, group, units):
        """average = m * average + (1 - m) * weight, m = 0 on the first step; every
        ``ema_overwrite_frequency`` steps the weights take the averages."""
        t = group.scalar
        momentum = t(self.ema_momentum) if self.iterations != 0 else t(0.0)
        one_minus = t(1) - momentum
        overwrite = (self.ema_overwrite_frequency and
                     (self.iterations + 1) % self.ema_overwrite_frequency == 0)
        if group.params is not None:  # flat or gathered
            pairs = [(group.params, group.slots["average"])]
        else:
            pairs = list(zip(group.param_views, group.slot_views["average"]))
        for (p, average), (_, _, tmp, _) in zip(pairs, units):
            np.multiply(average, momentum, out=average)
            np.multiply(p, one_minus, out=tmp)
            np.add(average, tmp, out=average)
            if overwrite:
                np.copyto(p, average)

    def finalize_variable_values(self, params):
        """With ``use_ema``, write the moving averages into ``params`` (Keras calls this at
        the end of ``fit``); otherwise do nothing."""
        if not self.use_ema or not self.built:
            return
        self._bind(list(params))
        for group in self._groups:
            for p, average in zip(group.param_views, group.slot_views["average"]):
                np.copyto(p, average)

    def _before_step(self):
        """Once per step, before the weights' rules (Nadam's running product)."""

    def _step_scalars(self, t, lr):
        """The rule's hyper-parameters for this step in dtype ``t`` (once per step)."""
        return lr

    def _update_step(self, gradient, variable, slots, tmp1, tmp2, scalars):
        """Apply the rule in place to ``variable`` and its ``slots`` (same shapes as the
        gradient); ``tmp1``, ``tmp2`` are scratch arrays of that shape."""
        raise NotImplementedError

    # -- config ----------------------------------------------------------------------------
    def get_config(self):
        lr = self._learning_rate
        if isinstance(lr, schedules_mod.LearningRateSchedule):
            lr = schedules_mod.serialize(lr)
        elif callable(lr):
            raise ValueError(
                "An optimizer whose `learning_rate` is a plain callable cannot be serialized; "
                "use a LearningRateSchedule subclass with `get_config`.")
        return {"name": self.name, "learning_rate": lr, "weight_decay": self.weight_decay,
                "clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm,
                "clipvalue": self.clipvalue, "use_ema": self.use_ema,
                "ema_momentum": self.ema_momentum,
                "ema_overwrite_frequency": self.ema_overwrite_frequency,
                "loss_scale_factor": self.loss_scale_factor,
                "gradient_accumulation_steps": self.gradient_accumulation_steps}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules_mod.deserialize(
                config["learning_rate"], custom_objects=custom_objects)
        return cls(**config)


def _check_non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not value >= 0:
        raise ValueError(f"Received an invalid value for `{name}`, expected a non-negative "
                         f"number or None. Received: {name}={value!r}")
    return float(value)


def _cast_into(out, g):
    np.copyto(out, g, casting="same_kind")
    return out

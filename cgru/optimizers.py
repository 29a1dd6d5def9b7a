"""SGD, Adam and RMSprop with Keras 3's update rules.

As in Keras, an optimizer splits its state from its rule: ``build(params)`` makes the
slots, ``update_step`` applies one weight's rule in place, ``apply(params, grads)``
clips each gradient (``clipnorm``, per weight) and runs one step for every weight.
Arithmetic is done in the weight's dtype with the hyper-parameters cast to it, in the
same order as Keras, so float32 results agree with Keras to rounding.
"""
import numpy as np


class Optimizer:
    _slot_names = ()

    def __init__(self, learning_rate=0.001, clipnorm=None, name=None):
        if not (isinstance(learning_rate, (int, float)) and learning_rate >= 0):
            raise ValueError(
                "Received an invalid value for `learning_rate`, expected a non-negative "
                f"number. Received: learning_rate={learning_rate!r}")
        if clipnorm is not None and not clipnorm > 0:
            raise ValueError(
                "Received an invalid value for `clipnorm`, expected a positive number "
                f"or None. Received: clipnorm={clipnorm!r}")
        self.learning_rate = float(learning_rate)
        self.clipnorm = None if clipnorm is None else float(clipnorm)
        self.name = name or type(self).__name__.lower()
        self.iterations = 0
        self._slots = None  # list (one per weight) of dicts slot name -> array

    # -- state ---------------------------------------------------------------------------
    def build(self, params):
        self._slots = [{s: np.zeros_like(p) for s in self._active_slots()} for p in params]

    def _active_slots(self):
        return self._slot_names

    @property
    def built(self):
        return self._slots is not None

    def variables(self):
        """Slot arrays in a fixed order (weight by weight, slot by slot)."""
        if self._slots is None:
            return []
        return [slots[s] for slots in self._slots for s in self._active_slots()]

    def set_variables(self, arrays, params):
        self.build(params)
        own = self.variables()
        if len(arrays) != len(own):
            raise ValueError(f"Optimizer state has {len(arrays)} arrays, expected {len(own)}.")
        for dst, src in zip(own, arrays):
            if dst.shape != src.shape:
                raise ValueError(f"Optimizer state shape {src.shape} != {dst.shape}.")
            dst[...] = src

    # -- rule ----------------------------------------------------------------------------
    def _clip(self, g):
        # Keras' _clip_by_norm: g * clipnorm / max(||g||, clipnorm)
        l2sum = np.sum(np.square(g))
        l2norm = np.sqrt(l2sum) if l2sum > 0 else l2sum
        c = g.dtype.type(self.clipnorm)
        return (g * c) / np.maximum(l2norm, c)

    def apply(self, params, grads):
        """One optimizer step: update every array of ``params`` in place."""
        if self._slots is None:
            self.build(params)
        for i, (p, g) in enumerate(zip(params, grads)):
            g = np.asarray(g, dtype=p.dtype)
            if self.clipnorm is not None:
                g = self._clip(g)
            self.update_step(g, p, self._slots[i])
        self.iterations += 1

    def update_step(self, gradient, variable, slots):
        raise NotImplementedError

    def get_config(self):
        return {"learning_rate": self.learning_rate, "clipnorm": self.clipnorm}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class SGD(Optimizer):
    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, clipnorm=None,
                 name=None):
        super().__init__(learning_rate, clipnorm, name)
        if not 0 <= momentum <= 1:
            raise ValueError("Received an invalid value for `momentum`, expected a float "
                             f"in [0, 1]. Received: momentum={momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _active_slots(self):
        return ("momentum",) if self.momentum != 0 else ()

    def update_step(self, gradient, variable, slots):
        t = variable.dtype.type
        lr = t(self.learning_rate)
        if self.momentum != 0:
            mom = t(self.momentum)
            m = slots["momentum"]
            m[...] = m * mom - gradient * lr
            if self.nesterov:
                variable += m * mom - gradient * lr
            else:
                variable += m
        else:
            variable -= gradient * lr

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    _slot_names = ("momentum", "velocity")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 clipnorm=None, name=None):
        super().__init__(learning_rate, clipnorm, name)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)

    def _step_scalars(self, t):
        """(alpha, 1 - beta_1, 1 - beta_2, epsilon) in dtype t for this iteration: the same for
        every weight of a step, so computed once a step (NumPy scalar arithmetic costs about
        a microsecond an operation, a fifth of a small weight's update)."""
        key = (self.iterations, t, self.learning_rate)
        if getattr(self, "_scalars_key", None) != key:
            lr = t(self.learning_rate)
            local_step = t(self.iterations + 1)
            beta_1_power = np.power(t(self.beta_1), local_step)
            beta_2_power = np.power(t(self.beta_2), local_step)
            # bias-corrected step size; epsilon is added to sqrt(v), not to v_hat
            alpha = lr * np.sqrt(1 - beta_2_power) / (1 - beta_1_power)
            self._scalars = (alpha, t(1 - self.beta_1), t(1 - self.beta_2), t(self.epsilon))
            self._scalars_key = key
        return self._scalars

    def update_step(self, gradient, variable, slots):
        alpha, one_minus_beta_1, one_minus_beta_2, epsilon = self._step_scalars(
            variable.dtype.type)
        m, v = slots["momentum"], slots["velocity"]
        m += (gradient - m) * one_minus_beta_1
        v += (np.square(gradient) - v) * one_minus_beta_2
        variable -= (m * alpha) / (np.sqrt(v) + epsilon)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class RMSprop(Optimizer):
    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False, clipnorm=None, name=None):
        super().__init__(learning_rate, clipnorm, name)
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.centered = bool(centered)

    def _active_slots(self):
        names = ["velocity"]
        if self.momentum > 0:
            names.append("momentum")
        if self.centered:
            names.append("average_gradient")
        return tuple(names)

    def update_step(self, gradient, variable, slots):
        t = variable.dtype.type
        lr = t(self.learning_rate)
        rho = t(self.rho)
        v = slots["velocity"]
        v[...] = rho * v + t(1 - self.rho) * np.square(gradient)
        if self.centered:
            a = slots["average_gradient"]
            a[...] = rho * a + t(1 - self.rho) * gradient
            denominator = v - np.square(a) + t(self.epsilon)
        else:
            denominator = v + t(self.epsilon)  # epsilon inside the square root
        increment = (lr * gradient) / np.sqrt(denominator)
        if self.momentum > 0:
            mom = slots["momentum"]
            mom[...] = t(self.momentum) * mom + increment
            variable -= mom
        else:
            variable -= increment

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


_OPTIMIZERS = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}


def get(identifier):
    """An Optimizer from a name ("sgd", "adam", "rmsprop"), a class or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Optimizer):
        return identifier()
    if isinstance(identifier, str) and identifier.lower() in _OPTIMIZERS:
        return _OPTIMIZERS[identifier.lower()]()
    raise ValueError(
        f"Unknown optimizer: {identifier!r}. Expected one of {sorted(_OPTIMIZERS)} "
        "or an Optimizer instance.")


def serialize(optimizer):
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config(),
            "iterations": optimizer.iterations}


def deserialize(config):
    classes = {c.__name__: c for c in _OPTIMIZERS.values()}
    name = config.get("class_name")
    if name not in classes:
        raise ValueError(f"Unknown optimizer class in saved config: {name!r}.")
    opt = classes[name].from_config(config["config"])
    opt.iterations = int(config.get("iterations", 0))
    return opt

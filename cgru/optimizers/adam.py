"""Adam and AdamW with Keras 3's update rules (keras/src/optimizers/adam.py, adamw.py)."""
import math

import numpy as np

from ..functional import _adam_update
from .base import Optimizer


class Adam(Optimizer):
    """Adam; epsilon is added to sqrt(v), with a bias-corrected step size:

        m += (g - m) * (1 - beta_1)
        v += (g^2 - v) * (1 - beta_2)
        v_hat = max(v_hat, v); v = v_hat            (amsgrad)
        w -= (m * alpha) / (sqrt(v) + epsilon),  alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.amsgrad = bool(amsgrad)

    def _active_slots(self):
        return ("momentum", "velocity", "velocity_hat") if self.amsgrad else \
            ("momentum", "velocity")

    def _step_scalars(self, t, lr):
        # NumPy scalar ``**`` and math.sqrt rounded to t give the same bits as np.power and
        # np.sqrt (checked over 14k steps; sqrt rounds correctly either way) in 2.8 us
        # instead of 4.7 us a step
        local_step = t(self.iterations + 1)
        beta_1_power = t(self.beta_1) ** local_step
        beta_2_power = t(self.beta_2) ** local_step
        alpha = lr * t(math.sqrt(1 - beta_2_power)) / (1 - beta_1_power)
        return alpha, t(1 - self.beta_1), t(1 - self.beta_2), t(self.epsilon)

    def _fused_step(self, params, grads):
        """The rule below as one native pass per weight (cgru/_native/_optim.pyx), the same
        bits, when it runs alone (``_plain_step``) and without amsgrad. On the quickstart
        model's 5 float32 weights (separate arrays, benchmarks/optimizer_step.py and
        `apply` timed alone, one run each): 38-43 us per step with the eleven NumPy passes
        (the weights gathered into one buffer and scattered back), 13-19 us with this one."""
        if self.amsgrad or type(self)._update_step is not Adam._update_step \
                or not self._plain_step(params, grads):
            return False        # (a subclass with a rule of its own runs that rule)
        lr = self.learning_rate
        self._before_step()
        for group in self._groups:
            t = group.scalar
            _adam_update([params[i] for i in group.indices], [grads[i] for i in group.indices],
                         group.slot_views["momentum"], group.slot_views["velocity"],
                         self._step_scalars(t, t(lr)))
        return True

    def _update_step(self, g, w, slots, tmp1, tmp2, scalars):
        alpha, one_minus_beta_1, one_minus_beta_2, epsilon = scalars
        m, v = slots[0], slots[1]
        np.subtract(g, m, out=tmp1)
        np.multiply(tmp1, one_minus_beta_1, out=tmp1)
        np.add(m, tmp1, out=m)                            # m += (g - m) * (1 - beta_1)
        np.square(g, out=tmp1)
        np.subtract(tmp1, v, out=tmp1)
        np.multiply(tmp1, one_minus_beta_2, out=tmp1)
        np.add(v, tmp1, out=v)                            # v += (g^2 - v) * (1 - beta_2)
        if self.amsgrad:
            v_hat = slots[2]
            np.maximum(v_hat, v, out=v_hat)
            v = v_hat
        np.sqrt(v, out=tmp1)
        np.add(tmp1, epsilon, out=tmp1)
        np.multiply(m, alpha, out=tmp2)
        np.divide(tmp2, tmp1, out=tmp2)
        np.subtract(w, tmp2, out=w)                       # w -= m alpha / (sqrt(v) + eps)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (``weight -= weight * weight_decay * lr`` before the
    Adam rule); ``weight_decay`` defaults to 0.004 and may not be None."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False, **kwargs):
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: "
                             "weight_decay=None")
        super().__init__(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=amsgrad, weight_decay=weight_decay, **kwargs)

"""Adamax with Keras 3's update rule (keras/src/optimizers/adamax.py)."""
import numpy as np

from .base import Optimizer


class Adamax(Optimizer):
    """Adam with the infinity norm:

        m += (g - m) * (1 - beta_1)
        u = max(beta_2 * u, |g|)
        w -= lr m / ((1 - beta_1^t) (u + epsilon))
    """

    _slot_names = ("momentum", "norm")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)

    def _step_scalars(self, t, lr):
        beta_1_power = t(self.beta_1) ** t(self.iterations + 1)  # as np.power, faster
        return lr, t(1 - self.beta_1), t(self.beta_2), t(1) - beta_1_power, t(self.epsilon)

    def _update_step(self, g, w, slots, tmp1, tmp2, scalars):
        lr, one_minus_beta_1, beta_2, bias_correction, epsilon = scalars
        m, u = slots
        np.subtract(g, m, out=tmp1)
        np.multiply(tmp1, one_minus_beta_1, out=tmp1)
        np.add(m, tmp1, out=m)                            # m += (g - m) * (1 - beta_1)
        np.multiply(u, beta_2, out=u)
        np.abs(g, out=tmp1)
        np.maximum(u, tmp1, out=u)                        # u = max(beta_2 u, |g|)
        np.add(u, epsilon, out=tmp1)
        np.multiply(tmp1, bias_correction, out=tmp1)
        np.multiply(m, lr, out=tmp2)
        np.divide(tmp2, tmp1, out=tmp2)
        np.subtract(w, tmp2, out=w)                       # w -= lr m / ((1-b1^t)(u+eps))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}

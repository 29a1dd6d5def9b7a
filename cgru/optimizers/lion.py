"""Lion with Keras 3's update rule (keras/src/optimizers/lion.py)."""
import numpy as np

from .base import Optimizer


class Lion(Optimizer):
    """Sign of an interpolated momentum:

        w -= lr sign(m beta_1 + g (1 - beta_1))
        m = m beta_2 + g (1 - beta_2)
    """

    _slot_names = ("momentum",)

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.99, **kwargs):
        super().__init__(learning_rate, **kwargs)
        if beta_1 <= 0 or beta_1 > 1:
            raise ValueError("Argument `beta_1` must be in the [0, 1] range. Otherwise, the "
                             f"optimizer degenerates to SignSGD. Received: beta_1={beta_1}.")
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)

    def _step_scalars(self, t, lr):
        beta_1, beta_2 = t(self.beta_1), t(self.beta_2)
        return lr, beta_1, t(1.0) - beta_1, beta_2, t(1.0) - beta_2

    def _update_step(self, g, w, slots, tmp1, tmp2, scalars):
        lr, beta_1, one_minus_beta_1, beta_2, one_minus_beta_2 = scalars
        (m,) = slots
        np.multiply(m, beta_1, out=tmp1)
        np.multiply(g, one_minus_beta_1, out=tmp2)
        np.add(tmp1, tmp2, out=tmp1)
        np.sign(tmp1, out=tmp1)
        np.multiply(tmp1, lr, out=tmp1)
        np.subtract(w, tmp1, out=w)                       # w -= lr sign(...)
        np.multiply(m, beta_2, out=m)
        np.multiply(g, one_minus_beta_2, out=tmp2)
        np.add(m, tmp2, out=m)                            # m = m beta_2 + g (1 - beta_2)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2}

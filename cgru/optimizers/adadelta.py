"""Adadelta with Keras 3's update rule (keras/src/optimizers/adadelta.py)."""
import numpy as np

from .base import Optimizer


class Adadelta(Optimizer):
    """Steps scaled by the ratio of running RMS of updates and of gradients:

        A_g = rho A_g + (1 - rho) g^2
        d = -sqrt(A_d + epsilon) g / sqrt(A_g + epsilon)
        A_d = rho A_d + (1 - rho) d^2
        w += lr d
    """

    _slot_names = ("accumulated_grad", "accumulated_delta_var")

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho = float(rho)
        self.epsilon = float(epsilon)

    def _step_scalars(self, t, lr):
        return lr, t(self.rho), t(1 - self.rho), t(self.epsilon)

    def _update_step(self, g, w, slots, tmp1, tmp2, scalars):
        lr, rho, one_minus_rho, epsilon = scalars
        accumulated_grad, accumulated_delta = slots
        np.multiply(accumulated_grad, rho, out=accumulated_grad)
        np.square(g, out=tmp1)
        np.multiply(tmp1, one_minus_rho, out=tmp1)
        np.add(accumulated_grad, tmp1, out=accumulated_grad)
        np.add(accumulated_delta, epsilon, out=tmp1)
        np.sqrt(tmp1, out=tmp1)
        np.multiply(tmp1, g, out=tmp1)
        np.add(accumulated_grad, epsilon, out=tmp2)
        np.sqrt(tmp2, out=tmp2)
        np.divide(tmp1, tmp2, out=tmp1)
        np.negative(tmp1, out=tmp1)                       # d
        np.multiply(accumulated_delta, rho, out=accumulated_delta)
        np.square(tmp1, out=tmp2)
        np.multiply(tmp2, one_minus_rho, out=tmp2)
        np.add(accumulated_delta, tmp2, out=accumulated_delta)
        np.multiply(tmp1, lr, out=tmp1)
        np.add(w, tmp1, out=w)                            # w += lr d

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}

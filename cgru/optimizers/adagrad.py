"""Adagrad with Keras 3's update rule (keras/src/optimizers/adagrad.py)."""
import numpy as np

from .base import Optimizer


class Adagrad(Optimizer):
    """Per-coordinate rates from the sum of squared gradients (epsilon inside the root):

        a += g^2;  w -= lr g / sqrt(a + epsilon);  a starts at initial_accumulator_value
    """

    _slot_names = ("accumulator",)

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7,
                 **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.epsilon = float(epsilon)

    def _slot_initial_value(self, name):
        return self.initial_accumulator_value

    def _step_scalars(self, t, lr):
        return lr, t(self.epsilon)

    def _update_step(self, g, w, slots, tmp1, tmp2, scalars):
        lr, epsilon = scalars
        (accumulator,) = slots
        np.square(g, out=tmp1)
        np.add(accumulator, tmp1, out=accumulator)        # a += g^2
        np.add(accumulator, epsilon, out=tmp1)
        np.sqrt(tmp1, out=tmp1)
        np.multiply(g, lr, out=tmp2)
        np.divide(tmp2, tmp1, out=tmp2)
        np.subtract(w, tmp2, out=w)                       # w -= lr g / sqrt(a + eps)

    def get_config(self):
        return {**super().get_config(),
                "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}

"""RMSprop with Keras 3's update rule (keras/src/optimizers/rmsprop.py)."""
import numpy as np

from .base import Optimizer


class RMSprop(Optimizer):
    """Steps scaled by a running RMS of gradients; epsilon inside the square root:

        v = rho v + (1 - rho) g^2
        a = rho a + (1 - rho) g;  denominator = v - a^2 + epsilon      (centered)
        denominator = v + epsilon                                     (otherwise)
        increment = lr g / sqrt(denominator)
        mom = momentum mom + increment; w -= mom    (momentum > 0; else w -= increment)
    """

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
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

    def _step_scalars(self, t, lr):
        return lr, t(self.rho), t(1 - self.rho), t(self.epsilon), t(self.momentum)

    def _update_step(self, g, w, slots, tmp1, tmp2, scalars):
        lr, rho, one_minus_rho, epsilon, momentum = scalars
        velocity = slots[0]
        np.multiply(velocity, rho, out=velocity)
        np.square(g, out=tmp1)
        np.multiply(tmp1, one_minus_rho, out=tmp1)
        np.add(velocity, tmp1, out=velocity)              # v = rho v + (1 - rho) g^2
        if self.centered:
            average = slots[-1]
            np.multiply(average, rho, out=average)
            np.multiply(g, one_minus_rho, out=tmp1)
            np.add(average, tmp1, out=average)            # a = rho a + (1 - rho) g
            np.square(average, out=tmp1)
            np.subtract(velocity, tmp1, out=tmp1)
            np.add(tmp1, epsilon, out=tmp1)               # v - a^2 + eps
        else:
            np.add(velocity, epsilon, out=tmp1)           # v + eps
        np.sqrt(tmp1, out=tmp1)
        np.multiply(g, lr, out=tmp2)
        np.divide(tmp2, tmp1, out=tmp2)                   # increment
        if self.momentum > 0:
            mom = slots[1]
            np.multiply(mom, momentum, out=mom)
            np.add(mom, tmp2, out=mom)
            np.subtract(w, mom, out=w)
        else:
            np.subtract(w, tmp2, out=w)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}

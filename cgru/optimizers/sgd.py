"""SGD with Keras 3's update rule (keras/src/optimizers/sgd.py)."""
import numpy as np

from .base import Optimizer


class SGD(Optimizer):
    """Gradient descent, with (Nesterov) momentum when ``momentum > 0``:

        m = m * momentum - g * lr
        w += m                            (nesterov: w += m * momentum - g * lr)
        w -= g * lr                       (momentum == 0)
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or \
                not 0 <= momentum <= 1:
            raise ValueError("Received an invalid value for `momentum`, expected a float "
                             f"in [0, 1]. Received: momentum={momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    @property
    def _gather_weights(self):
        # plain SGD is two passes a weight: gathering separate weights cost more than it saved
        return self.momentum != 0

    def _active_slots(self):
        return ("momentum",) if self.momentum != 0 else ()

    def _step_scalars(self, t, lr):
        return lr, t(self.momentum)

    def _update_step(self, g, w, slots, tmp1, tmp2, scalars):
        lr, momentum = scalars
        np.multiply(g, lr, out=tmp1)                      # g * lr
        if not slots:
            np.subtract(w, tmp1, out=w)
            return
        (m,) = slots
        np.multiply(m, momentum, out=m)
        np.subtract(m, tmp1, out=m)                       # m = m * momentum - g * lr
        if self.nesterov:
            np.multiply(m, momentum, out=tmp2)
            np.subtract(tmp2, tmp1, out=tmp2)
            np.add(w, tmp2, out=w)                        # w += m * momentum - g * lr
        else:
            np.add(w, m, out=w)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}

"""Nadam with Keras 3's update rule (keras/src/optimizers/nadam.py)."""
import numpy as np

from .base import Optimizer


class Nadam(Optimizer):
    """Adam with Nesterov momentum and Dozat's momentum schedule
    u_t = beta_1 (1 - 0.5 * 0.96^t), whose running product is state (``u_product``):

        m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2)
        m_hat = u_{t+1} m / (1 - prod u_{1..t+1}) + (1 - u_t) g / (1 - prod u_{1..t})
        w -= m_hat lr / (sqrt(v / (1 - beta_2^t)) + epsilon)
    """

    _slot_names = ("momentum", "velocity")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)

    def _build_extra(self, params):
        # one scalar, in the first weight's dtype (as Keras)
        self._u_product = np.ones((), dtype=params[0].dtype if params else np.float32)

    def _extra_variables(self):
        return [self._u_product]

    def _before_step(self):
        t = self._u_product.dtype.type
        decay_power = t(0.96) ** t(self.iterations + 1)  # NumPy scalar **: same bits, faster
        self._u_product[...] = self._u_product * t(self.beta_1) * (t(1.0) - t(0.5) * decay_power)

    def _step_scalars(self, t, lr):
        beta_1, beta_2, decay = t(self.beta_1), t(self.beta_2), t(0.96)
        u_t = beta_1 * (t(1.0) - t(0.5) * decay ** t(self.iterations + 1))
        u_t_1 = beta_1 * (t(1.0) - t(0.5) * decay ** t(self.iterations + 2))
        u_product_t = t(self._u_product)
        u_product_t_1 = u_product_t * u_t_1
        beta_2_power = beta_2 ** t(self.iterations + 1)
        return (lr, t(1) - beta_1, t(1) - beta_2, u_t_1, t(1) - u_product_t_1, t(1) - u_t,
                t(1) - u_product_t, t(1) - beta_2_power, t(self.epsilon))

    def _update_step(self, g, w, slots, tmp1, tmp2, scalars):
        (lr, one_minus_beta_1, one_minus_beta_2, u_t_1, m_denominator, one_minus_u_t,
         g_denominator, v_denominator, epsilon) = scalars
        m, v = slots
        np.subtract(g, m, out=tmp1)
        np.multiply(tmp1, one_minus_beta_1, out=tmp1)
        np.add(m, tmp1, out=m)                            # m += (g - m) * (1 - beta_1)
        np.square(g, out=tmp1)
        np.subtract(tmp1, v, out=tmp1)
        np.multiply(tmp1, one_minus_beta_2, out=tmp1)
        np.add(v, tmp1, out=v)                            # v += (g^2 - v) * (1 - beta_2)
        np.multiply(m, u_t_1, out=tmp1)
        np.divide(tmp1, m_denominator, out=tmp1)
        np.multiply(g, one_minus_u_t, out=tmp2)
        np.divide(tmp2, g_denominator, out=tmp2)
        np.add(tmp1, tmp2, out=tmp1)                      # m_hat
        np.divide(v, v_denominator, out=tmp2)             # v_hat
        np.sqrt(tmp2, out=tmp2)
        np.add(tmp2, epsilon, out=tmp2)
        np.multiply(tmp1, lr, out=tmp1)
        np.divide(tmp1, tmp2, out=tmp1)
        np.subtract(w, tmp1, out=w)                       # w -= m_hat lr / (sqrt(v_hat) + eps)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}

"""Plain NumPy GRU forward and backward: the readable specification and the test oracle.

Same signatures and semantics as ``cgru.gru_forward`` / ``cgru.gru_backward`` (time-major,
PyTorch weight layout and gate order r, z, n), written one step at a time for clarity, not
speed. Nothing here is validated: the tests call it with well-formed arrays only.

The cell (reset_after=True, as in PyTorch and cuDNN):
    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h
reset_after=False (Cho et al. 2014) differs only in n:
    n  = tanh(W_in x + b_in + W_hn (r * h) + b_hn)

Lengths: a sequence's steps at or past its length leave its h unchanged and its y rows zero.
Mask (T, B) (Keras 3's RNN): a masked step leaves h unchanged; its y is the step before's (0
before any valid step), or 0 with zero_output_for_mask.
Recurrent dropout mask (3, B, H), gates (r, z, n): h * m_g in gate g's recurrent product only.
Activations: ``activation`` replaces tanh and ``recurrent_activation`` sigmoid (names of
``cgru.activations``, Keras 3's definitions).
"""
import numpy as np

from cgru import activations
from cgru.functional import GRUGrads


def _valid_mask(lengths, T, B, dtype):
    """(T, B, 1) array: 1 where step t of sequence b is inside its length."""
    if lengths is None:
        return np.ones((T, B, 1), dtype=dtype)
    steps = np.arange(T)[:, None]
    return (steps < np.asarray(lengths)[None, :]).astype(dtype)[:, :, None]


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, *, reset_after=True, lengths=None,
                training=True, mask=None, zero_output_for_mask=False,
                recurrent_dropout_mask=None, activation="tanh", recurrent_activation="sigmoid"):
    act, rec = activations.get(activation), activations.get(recurrent_activation)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    h = np.zeros((B, H), x.dtype) if h0 is None else np.array(h0, dtype=x.dtype)
    h_initial = h.copy()
    hold = mask is not None and not zero_output_for_mask
    if mask is not None:
        mask = np.asarray(mask, dtype=x.dtype)[:, :, None]
    else:
        mask = _valid_mask(lengths, T, B, x.dtype)
    m = (np.ones((3, B, H), x.dtype) if recurrent_dropout_mask is None
         else recurrent_dropout_mask)
    y = np.zeros((T, B, H), x.dtype)
    y_prev = np.zeros((B, H), x.dtype)
    steps = []
    for t in range(T):
        h_prev = h
        gates_x = x[t] @ w_ih.T + b_ih                      # (B, 3H)
        r_pre = gates_x[:, :H] + (h_prev * m[0]) @ w_hh[:H].T + b_hh[:H]
        z_pre = gates_x[:, H:2 * H] + (h_prev * m[1]) @ w_hh[H:2 * H].T + b_hh[H:2 * H]
        r, z = rec(r_pre), rec(z_pre)
        if reset_after:
            hidden_n = (h_prev * m[2]) @ w_hh[2 * H:].T + b_hh[2 * H:]
            n_pre = gates_x[:, 2 * H:] + r * hidden_n
        else:
            hidden_n = (r * (h_prev * m[2])) @ w_hh[2 * H:].T + b_hh[2 * H:]
            n_pre = gates_x[:, 2 * H:] + hidden_n
        n = act(n_pre)
        h_new = (1 - z) * n + z * h_prev
        h = mask[t] * h_new + (1 - mask[t]) * h_prev
        y[t] = mask[t] * h_new + ((1 - mask[t]) * y_prev if hold else 0)
        y_prev = y[t]
        steps.append((h_prev, r, z, n, hidden_n, r_pre, z_pre, n_pre))
    cache = None
    if training:
        cache = dict(x=x, w_ih=w_ih, w_hh=w_hh, mask=mask, steps=steps,
                     reset_after=reset_after, h0=h_initial, act=act, rec=rec)
    return y, h, cache


def gru_backward(dy, dh_n, cache):
    x, w_ih, w_hh, mask = cache["x"], cache["w_ih"], cache["w_hh"], cache["mask"]
    T, B, _ = x.shape
    H = w_hh.shape[1]
    dtype = x.dtype
    dh = np.zeros((B, H), dtype) if dh_n is None else np.array(dh_n, dtype=dtype)
    dx = np.zeros_like(x)
    dw_ih, dw_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)
    db_ih, db_hh = np.zeros(3 * H, dtype), np.zeros(3 * H, dtype)
    reset_after, act, rec = cache["reset_after"], cache["act"], cache["rec"]
    for t in reversed(range(T)):
        h_prev, r, z, n, hidden_n, r_pre, z_pre, n_pre = cache["steps"][t]
        valid = mask[t]
        # h = valid * ((1 - z) * n + z * h_prev) + (1 - valid) * h_prev ; y = valid * h_new
        dh_new = valid * (dh + (0 if dy is None else dy[t]))
        dh_prev = (1 - valid) * dh + dh_new * z
        dn_pre = act.backward(dh_new * (1 - z), n, n_pre)
        dz_pre = rec.backward(dh_new * (h_prev - n), z, z_pre)
        if reset_after:
            # n = act(gx_n + r * hidden_n), hidden_n = W_hn h_prev + b_hn
            dr_pre = rec.backward(dn_pre * hidden_n, r, r_pre)
            dhidden_n = dn_pre * r
            dh_prev += dhidden_n @ w_hh[2 * H:]
            dw_hh[2 * H:] += dhidden_n.T @ h_prev
        else:
            # n = act(gx_n + W_hn (r * h_prev) + b_hn)
            dhidden_n = dn_pre
            d_rh = dn_pre @ w_hh[2 * H:]
            dr_pre = rec.backward(d_rh * h_prev, r, r_pre)
            dh_prev += d_rh * r
            dw_hh[2 * H:] += dn_pre.T @ (r * h_prev)
        d_gates_x = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
        d_rz = d_gates_x[:, :2 * H]
        dh_prev += d_rz @ w_hh[:2 * H]
        dw_hh[:2 * H] += d_rz.T @ h_prev
        dw_ih += d_gates_x.T @ x[t]
        dx[t] = d_gates_x @ w_ih
        db_ih += d_gates_x.sum(axis=0)
        db_hh += np.concatenate([dr_pre, dz_pre, dhidden_n], axis=1).sum(axis=0)
        dh = dh_prev
    return GRUGrads(dx, dh, dw_ih, dw_hh, db_ih, db_hh)

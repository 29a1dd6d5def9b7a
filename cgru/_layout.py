"""Weight layout conversions between Keras 3 and PyTorch GRUs.

Keras 3 (the layer API)            PyTorch (the functional kernels)
  gate order z, r, h                 gate order r, z, n
  kernel           (I, 3H)           w_ih (3H, I)
  recurrent_kernel (H, 3H)           w_hh (3H, H)
  bias (2, 3H) if reset_after        b_ih = bias[0], b_hh = bias[1]
  bias (3H,)   otherwise             b_ih = bias,    b_hh = 0

Swapping the first two gate blocks maps one gate order onto the other in both
directions (z, r, h <-> r, z, n), so one permutation serves both ways.

With reset_after=False the recurrent bias sits outside the reset gate
(n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)), so b_hn adds to b_in exactly and
``torch_to_keras`` folds b_hh into the single Keras bias.
"""
import numpy as np


def _swap_index(H):
    """Column order that turns z, r, h blocks into r, z, n blocks (and back)."""
    return np.concatenate([np.arange(H, 2 * H), np.arange(0, H), np.arange(2 * H, 3 * H)])


def keras_to_torch(kernel, recurrent_kernel, bias, reset_after=True):
    """Keras (kernel, recurrent_kernel, bias) -> PyTorch (w_ih, w_hh, b_ih, b_hh)."""
    H = recurrent_kernel.shape[0]
    idx = _swap_index(H)
    # w_ih = kernel[:, swap].T ; take along axis 1 then transpose into a C-contiguous copy
    w_ih = np.ascontiguousarray(kernel.T[idx])
    w_hh = np.ascontiguousarray(recurrent_kernel.T[idx])
    if reset_after:
        b_ih = bias[0][idx]
        b_hh = bias[1][idx]
    else:
        b_ih = bias[idx]
        b_hh = np.zeros(3 * H, dtype=bias.dtype)
    return w_ih, w_hh, b_ih, b_hh


def torch_to_keras(w_ih, w_hh, b_ih, b_hh, reset_after=True):
    """PyTorch (w_ih, w_hh, b_ih, b_hh) -> Keras [kernel, recurrent_kernel, bias]."""
    H = w_hh.shape[1]
    idx = _swap_index(H)
    kernel = np.ascontiguousarray(w_ih[idx].T)
    recurrent_kernel = np.ascontiguousarray(w_hh[idx].T)
    if reset_after:
        bias = np.stack([b_ih[idx], b_hh[idx]])
    else:
        bias = (b_ih + b_hh)[idx]
    return [kernel, recurrent_kernel, bias]


def slots_layout(model, optimizer, slots, to_keras):
    """Optimizer state (``optimizer.variables()``: each trainable weight's slots, weight by
    weight, then blocks of one array per weight such as EMA copies, then a rule's extra
    state) moved between the layers' own layout and Keras's, through the model's
    ``weights_to_keras``/``weights_from_keras``: a per-weight array converts as its weight
    does. Extra state passes unchanged."""
    n = len(model.trainable_weights)
    if n == 0:
        return list(slots)
    # The conversions take every weight of the model; the slots follow the trainable ones
    # only, so the others (frozen layers, moving statistics) are filled in with the live
    # arrays, whose converted values are dropped.
    trainable = {id(w) for w in model.trainable_weights}
    positions = [i for i, w in enumerate(model.weights) if id(w) in trainable]
    if len(positions) != n:
        return list(slots)
    full_convert = model.weights_to_keras if to_keras else model.weights_from_keras

    def convert(group):
        full = list(model.weights)
        for i, array in zip(positions, group):
            full[i] = array
        converted = full_convert(full)
        return [converted[i] for i in positions]
    per_weight = len(optimizer._active_slots())
    if len(slots) < n * per_weight:
        return list(slots)          # not the state of these weights (set_variables says so)
    out = list(slots)
    for s in range(per_weight):     # the first block: weight by weight, slot by slot
        group = convert([slots[i * per_weight + s] for i in range(n)])
        for i in range(n):
            out[i * per_weight + s] = group[i]
    shapes = [w.shape for w in model.trainable_weights]
    start = n * per_weight
    while start + n <= len(slots) and all(np.shape(slots[start + i]) == shapes[i]
                                          for i in range(n)):
        out[start:start + n] = convert(list(slots[start:start + n]))
        start += n
    return out

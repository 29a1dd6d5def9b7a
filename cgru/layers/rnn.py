"""GRU and Bidirectional.

The GRU keeps its weights in the layout the kernels read (``cgru.functional._layer_forward``):
kernel (I, 3H) and recurrent_kernel (H, 3H) as Keras has them, but with the gate blocks in
PyTorch's order (r, z, n) instead of Keras's (z, r, h), and bias (2, 3H) = [b_ih; b_hh]
(or (3H,) = b_ih with ``reset_after=False``, where the recurrent bias is a constant zero).
Swapping the first two gate blocks maps one order onto the other, both ways: that happens
only in ``get_weights``/``set_weights`` and saving, never in a training step.
"""
import numpy as np

from .. import activations, constraints, initializers, regularizers
from ..functional import ACTIVATIONS as CELL_ACTIVATIONS
from ..functional import _layer_backward, _layer_forward
from .base import Layer, check_positive_int, check_rate, dropout_mask
from .node import is_symbolic, symbolic_call


def swap_gate_blocks(array, H):
    """A copy of ``array`` with its first two blocks of H along the last axis swapped:
    Keras's gate order (z, r, h) <-> the kernels' (r, z, n)."""
    out = np.empty_like(array)
    out[..., :H] = array[..., H:2 * H]
    out[..., H:2 * H] = array[..., :H]
    out[..., 2 * H:] = array[..., 2 * H:]
    return out


def check_mask(layer, mask, x_shape):
    """The mask a GRU received, as booleans (batch, timesteps), or None."""
    if mask is None:
        return None
    if isinstance(mask, (list, tuple)):
        mask = mask[0]
        if mask is None:
            return None
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.shape != tuple(x_shape[:2]):
        raise ValueError(f"Layer '{layer.name}' received a mask of shape {mask.shape}; it must "
                         f"be (batch, timesteps) = {tuple(x_shape[:2])}, the input's first "
                         "two axes.")
    if mask.dtype != np.bool_:
        if not (np.issubdtype(mask.dtype, np.number)):
            raise TypeError(f"Layer '{layer.name}' received a mask of dtype {mask.dtype}; "
                            "it must be booleans.")
        mask = mask != 0
    return mask


def _cell_activation(argument, value):
    """The name of the activation ``value`` (a name, a cgru or Keras activation function, or
    Keras's serialized form; None is linear, as in Keras) that the fused cell computes."""
    try:
        name = activations.get(value).name
    except ValueError:
        name = None
    if name not in CELL_ACTIVATIONS:
        raise ValueError(
            f"GRU({argument}={value!r}): cgru's fused GRU cell computes these activations "
            f"natively: {', '.join(CELL_ACTIVATIONS)} (and 'swish', silu's other name), given "
            "by name, as cgru.activations or keras.activations functions, or serialized; "
            "other callables are not supported.")
    return name


class GRU(Layer):
    """Gated recurrent unit layer with Keras 3's arguments and numbers.

    ``get_weights()`` gives Keras's layout (kernel (I, 3H), recurrent_kernel (H, 3H), bias
    (2, 3H) or (3H,), gate order z, r, h), so ``set_weights(keras_gru.get_weights())``
    reproduces a Keras layer. Input (batch, timesteps, features); output (batch, units), or
    (batch, timesteps, units) with ``return_sequences``, and the last state as a second
    output with ``return_state``. With ``go_backwards`` the sequence is processed from its
    end and the returned sequence stays in processing (reversed) order, as in Keras.

    Masks (from ``Masking``, ``Embedding(mask_zero=True)``, or ``layer(x, mask=m)`` with m
    (batch, timesteps) booleans) are consumed as Keras 3's RNN does (keras/src/layers/rnn/
    rnn.py and the backends' ``rnn``; checked against Keras 3.15), for any pattern (holes,
    left padding, rows masked entirely), inside the compiled loop:
      - a masked step keeps the state: h_t = h_{t-1};
      - its output repeats the output of the step before; before a row's first valid step
        that is 0, even with an ``initial_state`` (Keras starts the "previous output" at
        0); with ``zero_output_for_mask=True`` the output of a masked step is 0 instead;
      - ``return_sequences=False`` returns the last step's output under those rules: the
        output of the last valid step (0 for a row masked entirely), or, with
        ``zero_output_for_mask=True``, 0 when the last step is masked;
      - ``return_state`` returns h after a row's last valid step, ``initial_state`` (or 0)
        for a row masked entirely;
      - ``go_backwards`` reverses the mask with the input (the outputs stay in processing
        order);
      - the output's mask is the input's with ``return_sequences=True`` (unchanged, also
        with ``go_backwards``), None otherwise; ``return_state`` adds None for the state.
        A GRU after a GRU therefore gets the mask only from one that returns sequences;
        layers after a GRU without return_sequences see no mask, as in Keras.
    ``Bidirectional`` sets ``zero_output_for_mask`` of both directions to its
    ``return_sequences`` (keras/src/layers/rnn/bidirectional.py), whatever the wrapped layer
    said, and passes the mask to both.

    Dropout as Keras 3's GRUCell (keras/src/layers/rnn/gru.py; training only; masks drawn
    from ``seed`` once per call and reused at every step; kept values scaled by
    1 / (1 - rate)):
      - ``dropout`` alone: one (batch, features) mask on the input of every gate;
      - ``recurrent_dropout``: one (batch, units) mask per gate (z, r, h) multiplies the
        previous state in that gate's recurrent product only; the update
        h = z * h_prev + (1 - z) * hh reads the state itself. Keras then (its
        implementation 1) also draws one input mask per gate when ``dropout`` is set; so
        does cgru, each gate's input product reading its own masked input.
    Where cgru differs: the masks come from cgru's own generator, not Keras's, so a seeded
    run draws other masks than Keras (tests inject Keras's masks to compare).

    ``activation`` (the candidate, tanh by default) and ``recurrent_activation`` (the gates,
    sigmoid) take any activation the fused cell computes (``cgru.functional.ACTIVATIONS``,
    Keras 3's definitions), by name, as a ``cgru.activations`` or ``keras.activations``
    function, or in Keras's serialized form; ``get_config`` keeps the name ("swish" becomes
    "silu", as in Keras). Any other callable raises ValueError: the cell runs compiled, with
    no Python inside the time loop.
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", *,
                 return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, reset_after=True, recurrent_dropout=0.0,
                 use_cudnn="auto", implementation=None, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", dropout=0.0,
                 use_bias=True, kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, kernel_constraint=None, recurrent_constraint=None,
                 bias_constraint=None, zero_output_for_mask=False, **kwargs):
        super().__init__(**kwargs)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.activation = _cell_activation("activation", activation)
        self.recurrent_activation = _cell_activation("recurrent_activation",
                                                     recurrent_activation)
        self.recurrent_dropout = check_rate("recurrent_dropout", recurrent_dropout)
        # unroll, use_cudnn and implementation choose how Keras runs the loop; cgru runs one
        # compiled loop whatever they say, with the same numbers
        self.stateful, self.unroll = bool(stateful), bool(unroll)
        self.use_cudnn, self.implementation = use_cudnn, implementation
        self.states = None
        self.use_bias = bool(use_bias)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.units = check_positive_int("units", units)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.reset_after = bool(reset_after)
        self.kernel_initializer = initializers.serialize(kernel_initializer)
        self.recurrent_initializer = initializers.serialize(recurrent_initializer)
        self.bias_initializer = initializers.serialize(bias_initializer)
        self.dropout = check_rate("dropout", dropout)
        if self.input_shape is not None:
            if len(self.input_shape) != 2:
                raise ValueError("GRU `input_shape` must be (timesteps, features); received "
                                 f"input_shape={self.input_shape}")
            self.build(self.input_shape)

    @property
    def num_outputs(self):
        return 2 if self.return_state else 1

    def check_input_shape(self, shape):
        if len(shape) != 3:
            raise ValueError(
                f"Layer '{self.name}' expects input of shape (batch, timesteps, features); "
                f"received an array of shape {tuple(shape)}. (If it comes from a recurrent "
                "layer, set return_sequences=True on that layer.)")
        # the time axis is free unless `input_shape` fixed it; features must match
        t = self.input_shape[0] if self.input_shape is not None else None
        f = (self.built_input_shape if self.built else self.input_shape or (None, None))[1]
        if (f is not None and shape[2] != f) or (t is not None and shape[1] != t):
            raise ValueError(
                f"Layer '{self.name}' expects input of shape (batch, {t}, {f}); "
                f"received an array of shape {tuple(shape)}.")

    def build(self, input_shape):
        self.check_input_shape((None,) + tuple(input_shape))
        I, H = int(input_shape[-1]), self.units
        rng, dtype = self._init_rng, self.dtype
        # Drawn in Keras's layout and order, as Keras draws them, then stored in the kernels'.
        kernel = initializers.get(self.kernel_initializer)((I, 3 * H), dtype, rng)
        recurrent = initializers.get(self.recurrent_initializer)((H, 3 * H), dtype, rng)
        # Regularizers and constraints see the kernels' layout: every one of Keras's acts on
        # each column (or all of them) alike, so the gate blocks' order changes nothing.
        self.kernel = self.add_weight("kernel", value=swap_gate_blocks(kernel, H),
                                      regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        self.recurrent_kernel = self.add_weight("recurrent_kernel",
                                                value=swap_gate_blocks(recurrent, H),
                                                regularizer=self.recurrent_regularizer,
                                                constraint=self.recurrent_constraint)
        # the kernels' recurrent bias is a constant zero with reset_after=False, and both
        # biases are with use_bias=False
        self._zero_bias = np.zeros(3 * H, self.dtype)
        self.bias = None
        if self.use_bias:
            bias = initializers.get(self.bias_initializer)(
                (2, 3 * H) if self.reset_after else (3 * H,), dtype, rng)
            self.bias = self.add_weight("bias", value=swap_gate_blocks(bias, H),
                                        regularizer=self.bias_regularizer,
                                        constraint=self.bias_constraint)
        if self.stateful:
            if self.batch_size is None:
                raise ValueError(
                    f"Layer '{self.name}': stateful=True needs a fixed batch size. Start the "
                    "model with Input(batch_shape=(batch, timesteps, features)), or give the "
                    "first layer batch_input_shape=... or batch_size=...")
            # the last state of each batch row, carried to the next call (not a weight)
            self.states = np.zeros((self.batch_size, H), self.dtype)
        super().build(input_shape)

    def reset_state(self):
        """Zeros the carried state of a stateful layer."""
        if self.states is not None:
            self.states[...] = 0

    reset_states = reset_state          # Keras's other name for it

    def weights_to_keras(self, arrays):
        return [swap_gate_blocks(a, self.units) for a in arrays]

    weights_from_keras = weights_to_keras       # the swap is its own inverse

    def compute_output_shape(self, input_shape):
        out = (input_shape[0], self.units) if self.return_sequences else (self.units,)
        return [out, (self.units,)] if self.return_state else out

    def initial_state_shapes(self, input_shape):
        return [(self.units,)]

    def compute_mask(self, inputs, mask=None):
        """Keras's RNN: the input's mask with return_sequences, else None (None for the
        state)."""
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if mask is None:
            return None         # no mask in, none out (Keras: a None per output)
        out = mask if self.return_sequences else None
        return [out, None] if self.return_state else out

    # -- forward and backward ------------------------------------------------------------
    def _dropout_masks(self, batch, features):
        """(input masks or None, recurrent masks or None) for a training call, as Keras 3's
        GRUCell draws them: with recurrent_dropout, one mask per gate of each (input masks
        (3, B, I) and recurrent masks (3, B, H), both in the kernels' gate order r, z, n);
        without, one (B, I) input mask."""
        rng, dtype, H = self._dropout_rng, self.dtype, self.units
        if not self.recurrent_dropout:
            if not self.dropout:
                return None, None
            return dropout_mask(rng, (batch, features), self.dropout, dtype), None
        keep = None
        if self.dropout:
            keep = dropout_mask(rng, (3, batch, features), self.dropout, dtype)[[1, 0, 2]]
        rec = dropout_mask(rng, (3, batch, H), self.recurrent_dropout, dtype)[[1, 0, 2]]
        return keep, np.ascontiguousarray(rec)

    def run(self, x, h0, training=False, need_grad=False, mask=None):
        """x (B, T, I) of the layer's dtype, mask None or booleans (B, T) -> (output, h_n,
        ctx); ctx None unless need_grad. The time loop: cgru.functional (time-major), with
        dropout on x first."""
        if self.stateful:
            if x.shape[0] != self.states.shape[0]:
                raise ValueError(
                    "If an RNN is stateful, the batch size of the input sequences must be "
                    f"the same as the batch size of the initial state. Layer '{self.name}': "
                    f"expected batch size {self.states.shape[0]}, received input of shape "
                    f"{x.shape}.")
            if h0 is None:
                h0 = self.states
        keep = rec = None
        if training:
            keep, rec = self._dropout_masks(x.shape[0], x.shape[2])
        input_masks = None
        if keep is not None and keep.ndim == 2:
            # Keras (recurrent_dropout=0): one (B, I) mask shared by all time steps
            x = x * keep[:, None, :]
        elif keep is not None:
            # one mask per gate (with recurrent_dropout): the kernels read x * keep[g] in
            # gate g's input product
            input_masks = np.ascontiguousarray(keep)
        x_tm = x.transpose(1, 0, 2)         # time-major view; made contiguous once, below
        mask_tm = None if mask is None else mask.T
        if self.go_backwards:
            x_tm = x_tm[::-1]
            mask_tm = None if mask_tm is None else mask_tm[::-1]
        bias = self.bias
        if bias is None:
            b_ih = b_hh = self._zero_bias
        elif self.reset_after:
            b_ih, b_hh = bias[0], bias[1]
        else:
            b_ih, b_hh = bias, self._zero_bias
        y, h_n, cache = _layer_forward(x_tm, h0, self.kernel, self.recurrent_kernel, b_ih,
                                       b_hh, self.reset_after, need_grad, mask_tm,
                                       self.zero_output_for_mask, rec, input_masks,
                                       self.activation, self.recurrent_activation)
        if self.stateful:
            self.states[...] = h_n          # carried to the next batch, as Keras does
        # with go_backwards the sequence stays in processing order, as in Keras
        last = None
        if self.return_sequences:
            output = y.transpose(1, 0, 2)
        elif mask_tm is None:
            output = h_n
        else:
            # the last step's output: h_n where the row had a valid step (the last step
            # with zero_output_for_mask), else 0
            last = (mask_tm[-1] if self.zero_output_for_mask else mask_tm.any(axis=0))
            last = last[:, None].astype(self.dtype)
            output = h_n * last
        return output, h_n, ((cache, keep, last) if need_grad else None)

    def run_backward(self, d_output, d_h, ctx, need_input_grad=True):
        """Gradients of (output, h_n) -> (dx or None, dh0, grads of trainable_weights)."""
        cache, keep, last = ctx
        if self.return_sequences:
            dy = None if d_output is None else d_output.transpose(1, 0, 2)
            dh_n = d_h
        else:
            dy = None
            if d_output is not None and last is not None:
                d_output = d_output * last
            dh_n = d_output if d_h is None else (d_h if d_output is None else d_output + d_h)
        dx, dh0, d_kernel, d_recurrent, db_ih, db_hh = _layer_backward(
            dy, dh_n, cache, need_dx=need_input_grad)
        if dx is not None:
            dx = dx[::-1] if self.go_backwards else dx
            dx = dx.transpose(1, 0, 2)
            # (a mask per gate was applied by the kernels' entry, dx included)
            if keep is not None and keep.ndim == 2:
                dx = dx * keep[:, None, :]
            else:
                dx = np.ascontiguousarray(dx)
        grads = []
        if self.trainable:
            grads = [d_kernel, d_recurrent]
            if self.use_bias:
                # (2, 3H) as Keras holds it (np.concatenate: a fifth of np.stack's 7.7 us)
                grads.append(np.concatenate((db_ih, db_hh)).reshape(2, -1) if self.reset_after
                             else db_ih)
        return dx, dh0, grads

    def forward(self, x, training=False, mask=None, need_grad=False, initial_state=None):
        """``initial_state``: None, a (batch, units) array or a list of one (the state)."""
        mask = check_mask(self, mask, x.shape)
        h0 = self.initial_state_array(initial_state, x.shape[0])
        output, h_n, ctx = self.run(x, h0, training, need_grad, mask)
        if self.return_state:
            return (output, h_n), ctx
        return output, ctx

    def backward(self, d_output, ctx, need_input_grad=True, need_state_grad=False):
        """With ``need_state_grad`` (a call given ``initial_state``) the input gradients are
        the pair (dx, [d_initial_state])."""
        d_h = None
        if self.return_state:
            d_output, d_h = d_output
        dx, dh0, grads = self.run_backward(d_output, d_h, ctx, need_input_grad)
        return ((dx, [dh0]) if need_state_grad else dx), grads

    def initial_state_array(self, initial_state, batch):
        """The user's ``initial_state`` (an array or a one-element list) as (batch, units)."""
        if initial_state is None:
            return None
        if isinstance(initial_state, (list, tuple)):
            if len(initial_state) != 1:
                raise ValueError(f"GRU takes one initial state; received {len(initial_state)}.")
            initial_state = initial_state[0]
        h0 = self.cast(initial_state, "initial_state")
        if h0.shape != (batch, self.units):
            raise ValueError(f"`initial_state` must have shape ({batch}, {self.units}); "
                             f"received an array of shape {h0.shape}.")
        return np.ascontiguousarray(h0)

    def __call__(self, x, initial_state=None, training=False, mask=None):
        if is_symbolic(x):                  # building a functional model
            return symbolic_call(self, x, initial_state=initial_state, training=training,
                                 mask=mask)
        x = self.cast(x)
        self.check_input_shape(x.shape)
        if self.stateful and self.batch_size is None and not self.built:
            self.batch_size = x.shape[0]    # called directly: the first batch fixes it
        self.ensure_built(x.shape[1:])
        out, _ = self.forward(x, training=training, initial_state=initial_state, mask=mask)
        if self.return_state:
            return (np.ascontiguousarray(out[0]), out[1])
        return np.ascontiguousarray(out)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=self.activation,
                      recurrent_activation=self.recurrent_activation,
                      return_sequences=self.return_sequences, stateful=self.stateful,
                      unroll=self.unroll, return_state=self.return_state,
                      go_backwards=self.go_backwards,
                      zero_output_for_mask=self.zero_output_for_mask,
                      reset_after=self.reset_after,
                      kernel_initializer=self.kernel_initializer,
                      recurrent_initializer=self.recurrent_initializer,
                      bias_initializer=self.bias_initializer, dropout=self.dropout,
                      recurrent_dropout=self.recurrent_dropout, use_bias=self.use_bias,
                      kernel_regularizer=regularizers.serialize(self.kernel_regularizer),
                      recurrent_regularizer=regularizers.serialize(self.recurrent_regularizer),
                      bias_regularizer=regularizers.serialize(self.bias_regularizer),
                      kernel_constraint=constraints.serialize(self.kernel_constraint),
                      recurrent_constraint=constraints.serialize(self.recurrent_constraint),
                      bias_constraint=constraints.serialize(self.bias_constraint))
        return config


_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class Bidirectional(Layer):
    """Runs a GRU forwards and a copy of it backwards and merges the two outputs.

    Weights: the forward layer's, then the backward layer's. The backward output is flipped
    back to time order before merging; ``merge_mode=None`` returns both outputs.
    """

    def __init__(self, layer, merge_mode="concat", **kwargs):
        if not isinstance(layer, GRU):
            raise TypeError(f"Bidirectional wraps a GRU layer; received {layer!r}.")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"Received an invalid value for `merge_mode`, expected one of "
                             f"{_MERGE_MODES}. Received: merge_mode={merge_mode!r}")
        kwargs.setdefault("name", f"bidirectional_{layer.name}")
        if kwargs.get("input_shape") is None:
            kwargs["input_shape"] = layer.input_shape
        super().__init__(dtype=layer.dtype.name, seed=layer.seed, **kwargs)
        self.merge_mode = merge_mode
        config = layer.get_config()
        config.update(input_shape=None, name=f"forward_{layer.name}")
        self.forward_layer = GRU.from_config(config)
        if layer.built:
            self.forward_layer.build(layer.built_input_shape)
            self.forward_layer.set_weights(layer.get_weights())
        config.update(name=f"backward_{layer.name}", go_backwards=not layer.go_backwards,
                      seed=None if layer.seed is None else layer.seed + 1)
        self.backward_layer = GRU.from_config(config)
        # Keras: both directions output zeros at masked steps when returning sequences
        for sub in (self.forward_layer, self.backward_layer):
            sub.zero_output_for_mask = layer.return_sequences
        self.batch_size = self._batch_size if self._batch_size is not None else layer.batch_size
        self.trainable = self._trainable
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        if self.input_shape is not None:
            self.build(self.input_shape)

    @property
    def num_outputs(self):
        return (2 if self.merge_mode is None else 1) + (2 if self.return_state else 0)

    def check_input_shape(self, shape):
        self.forward_layer.check_input_shape(shape)
        if self.input_shape is not None:
            t, f = self.input_shape
            if shape[2] != f or (t is not None and shape[1] != t):
                raise ValueError(f"Layer '{self.name}' expects input of shape (batch, {t}, "
                                 f"{f}); received an array of shape {tuple(shape)}.")

    def build(self, input_shape):
        for sub in (self.forward_layer, self.backward_layer):
            sub.ensure_built(input_shape)
        self._weights = self.forward_layer._weights + self.backward_layer._weights
        super().build(input_shape)

    @property
    def batch_size(self):
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value):
        self._batch_size = value
        for sub in ("forward_layer", "backward_layer"):
            if hasattr(self, sub) and not getattr(self, sub).built:
                getattr(self, sub).batch_size = value

    def reset_state(self):
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    reset_states = reset_state

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)
        for sub in ("forward_layer", "backward_layer"):
            if hasattr(self, sub):
                getattr(self, sub).trainable = self._trainable

    def weights_to_keras(self, arrays):
        n = len(self.forward_layer.weights)
        return (self.forward_layer.weights_to_keras(arrays[:n])
                + self.backward_layer.weights_to_keras(arrays[n:]))

    def weights_from_keras(self, arrays):
        n = len(self.forward_layer.weights)
        return (self.forward_layer.weights_from_keras(arrays[:n])
                + self.backward_layer.weights_from_keras(arrays[n:]))

    def compute_output_shape(self, input_shape):
        shape = self.forward_layer.compute_output_shape(input_shape)
        if self.return_state:
            shape = shape[0]
        outputs = [shape, shape] if self.merge_mode is None else [
            shape[:-1] + (2 * shape[-1],) if self.merge_mode == "concat" else shape]
        if self.return_state:
            outputs += [(self.forward_layer.units,)] * 2
        return outputs if len(outputs) > 1 else outputs[0]

    def initial_state_shapes(self, input_shape):
        """Keras's Bidirectional: the forward layer's states, then the backward layer's."""
        return [(self.forward_layer.units,), (self.backward_layer.units,)]

    def compute_mask(self, inputs, mask=None):
        """Keras's Bidirectional: the input's mask with return_sequences (for each output
        with merge_mode=None), else None; None for the states."""
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if mask is None:
            return None         # no mask in, none out (Keras: a None per output)
        out = mask if self.return_sequences else None
        masks = [out, out] if self.merge_mode is None else [out]
        if self.return_state:
            masks += [None, None]
        return masks if len(masks) > 1 else masks[0]

    def _merge(self, yf, yb):
        if self.merge_mode == "concat":
            return np.concatenate([yf, yb], axis=-1)
        if self.merge_mode == "sum":
            return yf + yb
        if self.merge_mode == "mul":
            return yf * yb
        if self.merge_mode == "ave":
            return (yf + yb) / self.dtype.type(2)
        return [yf, yb]

    def forward(self, x, training=False, mask=None, need_grad=False, initial_state=None):
        """``initial_state``: None or [forward state, backward state], (batch, units) each."""
        mask = check_mask(self, mask, x.shape)
        hf0 = hb0 = None
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)) or len(initial_state) != 2:
                raise ValueError("Bidirectional `initial_state` must be a list of two "
                                 "arrays (forward state, backward state).")
            hf0 = self.forward_layer.initial_state_array(initial_state[0], x.shape[0])
            hb0 = self.backward_layer.initial_state_array(initial_state[1], x.shape[0])
        yf, hf, ctx_f = self.forward_layer.run(x, hf0, training, need_grad, mask)
        yb, hb, ctx_b = self.backward_layer.run(x, hb0, training, need_grad, mask)
        if self.return_sequences:
            yb = yb[:, ::-1]  # back to time order before merging
        out = self._merge(yf, yb)
        ctx = (ctx_f, ctx_b, yf, yb, self.merge_mode) if need_grad else None
        if self.return_state:
            out = (*out, hf, hb) if self.merge_mode is None else (out, hf, hb)
        elif self.merge_mode is None:
            out = tuple(out)
        return out, ctx

    def backward(self, d_output, ctx, need_input_grad=True, need_state_grad=False):
        """With ``need_state_grad`` (a call given ``initial_state``) the input gradients are
        the pair (dx, [d_forward_state, d_backward_state])."""
        ctx_f, ctx_b, yf, yb, merge_mode = ctx
        dhf = dhb = None
        if self.return_state:
            *d_output, dhf, dhb = d_output
            d_output = d_output if merge_mode is None else d_output[0]
        if merge_mode is None:
            d_f, d_b = d_output
        elif merge_mode == "concat":
            H = yf.shape[-1]
            d_f, d_b = d_output[..., :H], d_output[..., H:]
        elif merge_mode == "sum":
            d_f = d_b = d_output
        elif merge_mode == "mul":
            d_f, d_b = d_output * yb, d_output * yf
        else:  # ave
            d_f = d_b = d_output / self.dtype.type(2)
        if self.return_sequences and d_b is not None:
            d_b = d_b[:, ::-1]
        dx_f, dhf0, g_f = self.forward_layer.run_backward(d_f, dhf, ctx_f, need_input_grad)
        dx_b, dhb0, g_b = self.backward_layer.run_backward(d_b, dhb, ctx_b, need_input_grad)
        dx = dx_f + dx_b if need_input_grad else None
        return ((dx, [dhf0, dhb0]) if need_state_grad else dx), g_f + g_b

    def __call__(self, x, initial_state=None, training=False, mask=None):
        if is_symbolic(x):                  # building a functional model
            return symbolic_call(self, x, initial_state=initial_state, training=training,
                                 mask=mask)
        x = self.cast(x)
        self.check_input_shape(x.shape)
        if self.forward_layer.stateful and self.batch_size is None and not self.built:
            self.batch_size = x.shape[0]    # called directly: the first batch fixes it
        self.ensure_built(x.shape[1:])
        out, _ = self.forward(x, training=training, initial_state=initial_state, mask=mask)
        return list(out) if isinstance(out, tuple) and self.merge_mode is None \
            and not self.return_state else out

    def rng_state(self):
        return [self.forward_layer.rng_state(), self.backward_layer.rng_state()]

    def set_rng_state(self, state):
        self.forward_layer.set_rng_state(state[0])
        self.backward_layer.set_rng_state(state[1])

    def get_config(self):
        inner = self.forward_layer.get_config()
        inner["name"] = inner["name"][len("forward_"):]
        config = {"name": self.name, "merge_mode": self.merge_mode,
                  "input_shape": None if self.input_shape is None else list(self.input_shape),
                  "layer": inner}
        if self.batch_size is not None:
            config["batch_size"] = self.batch_size
        if not self.trainable:
            config["trainable"] = False
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = GRU.from_config(config.pop("layer"))
        return cls(layer, **config)

"""ONNX export of cgru models (``cgru.interop.to_onnx``).

The graph is batch-first at every layer boundary, as cgru layers are. Each layer class has
one entry in ``EXPORTERS``: a function that adds the layer's nodes and says what becomes of
the mask (Keras's masks travel beside the tensors, as in cgru: ``Masking`` and
``Embedding(mask_zero=True)`` make one, the layers that support masking pass it on, a GRU and
``GlobalAveragePooling1D`` consume it). The model-level code walks the layers through that
table and never names a layer class.

The input of a Sequential (or a single layer) is one tensor ``x``: float32 ``(batch, time,
features)`` as ``predict`` takes it, or, when the model starts with an ``Embedding``, int64
ids ``(batch, time)``. The output is ``y``, what ``predict`` returns. A functional ``Model``
has one graph input per model input, named as ``model.input_names`` (int64 for integer
``Input``s), and one output per model output, named as ``model.output_names``; its layer
calls are exported in the model's order, the merging layers as standard ops (``Add``,
``Mul``, ``Where`` for their masks, ``Concat``, ``MatMul`` for ``Dot``).

A GRU layer without a mask becomes

    Transpose (B, T, I) -> (T, B, I)        onnxruntime's CPU GRU runs layout=0 only
    GRU                                      W (D, 3H, I), R (D, 3H, H), B (D, 6H)
    [Slice, reversing time]                  go_backwards with return_sequences
    Transpose + Reshape, or Gather + merge   back to (B, T, D*H) / (B, D*H)

Keras's layout maps onto ONNX's without reordering: both use the gate order z, r, h, so
``W = kernel.T``, ``R = recurrent_kernel.T``, and ``B`` is the input bias then the recurrent
bias (``bias[0]``, ``bias[1]`` when ``reset_after=True``; ``bias`` and zeros otherwise).
``reset_after=True`` is ONNX's ``linear_before_reset=1``: ``h~ = g(W_h x + Wb_h +
r * (R_h h + Rb_h))``; ``reset_after=False`` is ``linear_before_reset=0``.

The GRU's ``recurrent_activation`` is ONNX's f and its ``activation`` g. The node carries
them (``activations``, with ``activation_alpha``/``activation_beta``) when onnxruntime's CPU
GRU computes both: tanh, sigmoid, hard_sigmoid (HardSigmoid, alpha 1/6, beta 1/2), relu,
linear (Affine, alpha 1, beta 0), softsign, elu (Elu, alpha 1). A GRU using selu, gelu or
silu becomes the Scan over the cell described below, its activations as standard ops.

ONNX's ``direction="reverse"`` returns ``Y`` aligned with the input's time steps, whereas a
Keras/cgru ``GRU(go_backwards=True, return_sequences=True)`` returns its outputs in processing
order (last time step first), so a ``Slice`` with step -1 reverses ``Y`` for it. A
``Bidirectional`` layer is one ``direction="bidirectional"`` node: its backward half's ``Y``
is already in time order, which is what Keras merges.

A GRU that receives a mask follows Keras 3: a masked step keeps the state and repeats the
previous output (zeros before a row's first valid step), so a row masked entirely gives zeros;
with ``zero_output_for_mask`` (which Keras's Bidirectional sets on both halves when they return
sequences) a masked step's output is zero, and so is the last output when the last step is
masked.
ONNX's ``sequence_lens`` describes right padding only (and zeroes the padded outputs), so the
masked GRU is a ``Scan`` (the one above for selu, gelu, silu, with the mask) whose body is
the cell: the input projection ``x @ kernel + b`` of every step in one ``MatMul`` before it,
and per step the recurrent ``MatMul``, the gates, and ``Where(mask_t, h_new, h_prev)``. It is
built from the layer's config and weights alone.
"""
import numpy as np

from ._files import atomic_output
from . import activations
from . import layers as L
from .models import Model, Sequential

_IR_VERSION = 8  # the IR of opset 17; read by onnxruntime 1.13 and later
_INT64_MAX = np.iinfo(np.int64).max


def _import_onnx():
    try:
        import onnx
    except ImportError as e:
        raise ImportError("cgru.interop.to_onnx needs the `onnx` package: "
                          'pip install "cgru[onnx]" (or pip install onnx).') from e
    return onnx


class _GraphBuilder:
    """Collects nodes and initializers under unique names (shared with subgraphs)."""

    def __init__(self, onnx, opset, counter=None, reserved=()):
        self.onnx, self.opset = onnx, opset
        self.nodes, self.initializers = [], []
        self._counter = counter if counter is not None else [0]
        self.reserved = set(reserved)   # the graph's input and output names

    def name(self, base):
        while True:
            self._counter[0] += 1
            name = f"{base}_{self._counter[0]}"
            if name not in self.reserved:
                return name

    def sub(self):
        """A builder for a subgraph (a Scan body) whose names stay unique in the model."""
        return _GraphBuilder(self.onnx, self.opset, self._counter, self.reserved)

    def constant(self, base, array):
        name = self.name(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def f32(self, base, array):
        return self.constant(base, np.asarray(array, dtype=np.float32))

    def i64(self, base, values):
        return self.constant(base, np.asarray(values, dtype=np.int64))

    def node(self, op, inputs, n_outputs=1, base=None, **attributes):
        outputs = [self.name(base or op.lower()) for _ in range(n_outputs)]
        self.nodes.append(self.onnx.helper.make_node(op, inputs, outputs, name=self.name(op),
                                                     **attributes))
        return outputs[0] if n_outputs == 1 else outputs

    def transpose(self, x, perm):
        return self.node("Transpose", [x], perm=list(perm))

    def reduce(self, op, x, axes, keepdims):
        """ReduceMax/ReduceMean over ``axes``: an attribute up to opset 17, an input from
        opset 18 (ReduceSum takes an input from opset 13)."""
        if self.opset >= 18:
            return self.node(op, [x, self.i64("axes", list(axes))], keepdims=keepdims)
        return self.node(op, [x], axes=list(axes), keepdims=keepdims)

    def split(self, x, sizes, axis):
        """``x`` cut along ``axis`` into pieces of ``sizes`` (given as an input, which every
        opset from 13 on reads the same way)."""
        return self.node("Split", [x, self.i64("split", sizes)], n_outputs=len(sizes),
                         axis=axis)


def _float32(array):
    return np.ascontiguousarray(array, dtype=np.float32)


def _passes(layer, mask):
    """The mask after a layer that does not use it: passed on when the layer supports
    masking (``compute_mask``'s default), else dropped."""
    return mask if layer.supports_masking else None


# ---------------------------------------------------------------------------------------------
# activations, Dense, Activation, identities
# ---------------------------------------------------------------------------------------------
# cgru.activations' definitions (Keras 3's) as standard ops. hard_sigmoid's relu6(x + 3) / 6
# is HardSigmoid(alpha=1/6, beta=1/2) (within an ulp: alpha is 1/6 rounded to float32); gelu
# is x / 2 * (1 + erf(x / sqrt(2))) with 1 / sqrt(2) rounded to float32 as cgru and TensorFlow
# round it (GELU_C), the opset-20 Gelu op where the opset has it.
_ACTIVATION_OPS = {"sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}), "relu": ("Relu", {}),
                   "softsign": ("Softsign", {}),
                   "hard_sigmoid": ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}),
                   "elu": ("Elu", {"alpha": 1.0}),
                   "selu": ("Selu", {"alpha": activations.SELU_ALPHA,
                                     "gamma": activations.SELU_SCALE})}


def _activation(graph, name, x):
    """The nodes computing activation ``name`` of ``x``; ``x`` itself for linear."""
    name = "silu" if name == "swish" else name
    if name is None or name == "linear":
        return x
    if name == "softmax":
        return graph.node("Softmax", [x], axis=-1)
    if name in _ACTIVATION_OPS:
        op, attributes = _ACTIVATION_OPS[name]
        return graph.node(op, [x], **attributes)
    if name == "silu":                                                  # x * sigmoid(x)
        return graph.node("Mul", [x, graph.node("Sigmoid", [x])])
    if name == "gelu":
        if graph.opset >= 20:
            return graph.node("Gelu", [x], approximate="none")
        erf = graph.node("Erf", [graph.node("Mul", [x, graph.f32("gelu_c",
                                                                  activations.GELU_C)])])
        half_x = graph.node("Mul", [x, graph.f32("half", 0.5)])
        return graph.node("Mul", [half_x, graph.node("Add", [erf, graph.f32("one", 1)])])
    raise NotImplementedError(f"activation={name!r} has no ONNX export.")


def _dense(graph, dense, x, mask, shape):
    weights = dense.get_weights()
    out = graph.node("MatMul", [x, graph.f32("kernel", weights[0])])
    if dense.use_bias:
        out = graph.node("Add", [out, graph.f32("bias", weights[1])])
    return _activation(graph, dense.activation, out), _passes(dense, mask)


def _activation_layer(graph, layer, x, mask, shape):
    return _activation(graph, layer.activation, x), _passes(layer, mask)


def _identity(graph, layer, x, mask, shape):
    """Dropout and the noise layers: the identity outside training."""
    return x, _passes(layer, mask)


# ---------------------------------------------------------------------------------------------
# Embedding and Masking: where masks come from
# ---------------------------------------------------------------------------------------------
def _embedding(graph, layer, x, mask, shape):
    ids = graph.node("Cast", [x], to=graph.onnx.TensorProto.INT64)
    out = graph.node("Gather", [graph.f32("embeddings", layer.get_weights()[0]), ids], axis=0)
    if not layer.mask_zero:
        return out, None
    return out, graph.node("Not", [graph.node("Equal", [ids, graph.i64("zero", 0)])])


def _masking(graph, layer, x, mask, shape):
    differs = graph.node("Not", [graph.node("Equal", [x, graph.f32("mask_value",
                                                                   layer.mask_value)])])
    keep = graph.reduce("ReduceMax", graph.node("Cast", [differs],
                                                to=graph.onnx.TensorProto.FLOAT), [-1], 1)
    out = graph.node("Mul", [x, keep])
    new_mask = graph.node("Cast", [graph.node("Squeeze", [keep, graph.i64("axis", [-1])])],
                          to=graph.onnx.TensorProto.BOOL)
    return out, new_mask


# ---------------------------------------------------------------------------------------------
# reshaping
# ---------------------------------------------------------------------------------------------
def _flatten(graph, layer, x, mask, shape):
    if layer.data_format == "channels_first" and len(shape) > 1:
        rank = len(shape) + 1
        x = graph.transpose(x, [0] + list(range(2, rank)) + [1])
    return graph.node("Flatten", [x], axis=1), None


def _reshape(graph, layer, x, mask, shape):
    return graph.node("Reshape", [x, graph.i64("shape", [0] + list(layer.target_shape))]), None


def _permute(graph, layer, x, mask, shape):
    return graph.transpose(x, [0] + list(layer.dims)), None


def _repeat_vector(graph, layer, x, mask, shape):
    x = graph.node("Unsqueeze", [x, graph.i64("axis", [1])])
    return graph.node("Tile", [x, graph.i64("repeats", [1, layer.n, 1])]), None


def _time_distributed(graph, layer, x, mask, shape):
    """The wrapped layer on (batch * time, ...) rows, reshaped back to (batch, time, ...)."""
    inner = layer.layer
    exporter = _exporter(inner)
    if mask is not None and exporter in _MASK_CONSUMERS:
        raise NotImplementedError(f"Layer '{layer.name}': a masked TimeDistributed("
                                  f"{type(inner).__name__}) has no ONNX export.")
    x_shape = graph.node("Shape", [x])
    batch_time = graph.node("Slice", [x_shape, graph.i64("start", [0]), graph.i64("end", [2])])
    rest = graph.node("Slice", [x_shape, graph.i64("start", [2]),
                                graph.i64("end", [_INT64_MAX])])
    rows = graph.node("Reshape", [x, graph.node("Concat", [graph.i64("rows", [-1]), rest],
                                                axis=0)])
    out, _ = exporter(graph, inner, rows, None, tuple(shape[1:]))
    out_rest = graph.node("Slice", [graph.node("Shape", [out]), graph.i64("start", [1]),
                                    graph.i64("end", [_INT64_MAX])])
    out = graph.node("Reshape", [out, graph.node("Concat", [batch_time, out_rest], axis=0)])
    return out, _passes(layer, mask)


# ---------------------------------------------------------------------------------------------
# Conv1D and pooling: ONNX's ops are channels-first (batch, channels, steps)
# ---------------------------------------------------------------------------------------------
def _window_attributes(padding, window, stride, dilation=1):
    """Padding as TensorFlow pads: "same" puts the odd padding step at the end. With stride
    1 its size is fixed, ``dilation * (window - 1)``; with a larger stride it depends on the
    length, which ONNX's SAME_UPPER computes (onnxruntime refuses it with dilation, which
    Keras allows with stride 1 only)."""
    span = dilation * (window - 1)
    if padding == "same" and stride > 1:
        return {"auto_pad": "SAME_UPPER"}
    if padding == "same":
        return {"pads": [span // 2, span - span // 2]}
    return {"pads": [span if padding == "causal" else 0, 0]}


def _conv1d(graph, layer, x, mask, shape):
    weights = layer.get_weights()
    inputs = [graph.transpose(x, [0, 2, 1]),
              graph.f32("kernel", weights[0].transpose(2, 1, 0))]     # (filters, C, k)
    if layer.use_bias:
        inputs.append(graph.f32("bias", weights[1]))
    out = graph.node("Conv", inputs, kernel_shape=[layer.kernel_size], strides=[layer.strides],
                     dilations=[layer.dilation_rate],
                     **_window_attributes(layer.padding, layer.kernel_size, layer.strides,
                                          layer.dilation_rate))
    return _activation(graph, layer.activation, graph.transpose(out, [0, 2, 1])), None


def _pooling(op, **extra):
    def export(graph, layer, x, mask, shape):
        out = graph.node(op, [graph.transpose(x, [0, 2, 1])], kernel_shape=[layer.pool_size],
                         strides=[layer.strides],
                         **_window_attributes(layer.padding, layer.pool_size, layer.strides),
                         **extra)
        return graph.transpose(out, [0, 2, 1]), None
    return export


def _global_max(graph, layer, x, mask, shape):
    return graph.reduce("ReduceMax", x, [1], int(layer.keepdims)), None


def _global_average(graph, layer, x, mask, shape):
    keepdims = int(layer.keepdims)
    if mask is None:
        return graph.reduce("ReduceMean", x, [1], keepdims), None
    # the mean of the valid steps: share = valid / sum(valid), masked steps set to 0 first
    valid = graph.node("Cast", [graph.node("Unsqueeze", [mask, graph.i64("axis", [-1])])],
                       to=graph.onnx.TensorProto.FLOAT)
    share = graph.node("Div", [valid, graph.node("ReduceSum", [valid, graph.i64("axis", [1])],
                                                 keepdims=1)])
    kept = graph.node("Where", [graph.node("Greater", [share, graph.f32("zero", 0)]), x,
                                graph.f32("zero", 0)])
    pooled = graph.node("ReduceSum", [graph.node("Mul", [kept, share]),
                                      graph.i64("axis", [1])], keepdims=keepdims)
    return pooled, None


# ---------------------------------------------------------------------------------------------
# normalization, computed as cgru computes it
# ---------------------------------------------------------------------------------------------
def _broadcast(array, rank, axes):
    """``array`` (the sizes of ``axes``) shaped to broadcast against a rank-``rank`` tensor."""
    shape = [1] * rank
    for axis, size in zip(axes, np.shape(array)):
        shape[axis] = size
    return _float32(np.reshape(array, shape))


def _batch_normalization(graph, layer, x, mask, shape):
    """Inference: (x - moving_mean) * (gamma / sqrt(moving_variance + epsilon)) + beta, the
    factor computed in float32 as cgru computes it."""
    rank = len(shape) + 1
    axis = layer.axis % rank
    dtype = np.float32
    inv = 1 / np.sqrt(layer.moving_variance.astype(dtype) + dtype(layer.epsilon))
    factor = inv * layer.gamma.astype(dtype) if layer.scale else inv
    out = graph.node("Sub", [x, graph.f32("mean", _broadcast(layer.moving_mean, rank,
                                                             [axis]))])
    out = graph.node("Mul", [out, graph.f32("factor", _broadcast(factor, rank, [axis]))])
    if layer.center:
        out = graph.node("Add", [out, graph.f32("beta", _broadcast(layer.beta, rank, [axis]))])
    return out, _passes(layer, mask)


def _layer_normalization(graph, layer, x, mask, shape):
    rank = len(shape) + 1
    axes = sorted(a % rank for a in (layer.axis if isinstance(layer.axis, list)
                                     else [layer.axis]))
    mean = graph.reduce("ReduceMean", x, axes, 1)
    centred = graph.node("Sub", [x, mean])
    variance = graph.reduce("ReduceMean", graph.node("Mul", [centred, centred]), axes, 1)
    inv = graph.node("Div", [graph.f32("one", 1), graph.node(
        "Sqrt", [graph.node("Add", [variance, graph.f32("epsilon", layer.epsilon)])])])
    out = graph.node("Mul", [centred, inv])
    param_shape = [shape[a - 1] for a in axes]
    if layer.scale:
        out = graph.node("Mul", [out, graph.f32("gamma", _broadcast(
            np.reshape(layer.gamma, param_shape), rank, axes))])
    if layer.center:
        out = graph.node("Add", [out, graph.f32("beta", _broadcast(
            np.reshape(layer.beta, param_shape), rank, axes))])
    return out, _passes(layer, mask)


# ---------------------------------------------------------------------------------------------
# GRU and Bidirectional
# ---------------------------------------------------------------------------------------------
def _gru_tensors(cells):
    """ONNX W (D, 3H, I), R (D, 3H, H), B (D, 6H), float32, from Keras-layout GRU layers."""
    w, r, b = [], [], []
    for cell in cells:
        kernel, recurrent_kernel, bias = _keras_gru_weights(cell)
        w.append(kernel.T)
        r.append(recurrent_kernel.T)
        b.append(bias.reshape(-1) if cell.reset_after
                 else np.concatenate([bias, np.zeros_like(bias)]))
    return [_float32(np.stack(t)) for t in (w, r, b)]


def _keras_gru_weights(cell):
    """kernel (I, 3H), recurrent_kernel (H, 3H), bias ((2, 3H) or (3H,)) in Keras's layout,
    zero biases for ``use_bias=False``."""
    weights = cell.get_weights()
    if not cell.use_bias:
        H = cell.units
        weights.append(np.zeros((2, 3 * H) if cell.reset_after else (3 * H,), np.float32))
    return [_float32(w) for w in weights]


def _check_recurrent(layer):
    """The GRU halves (forward first) and the ONNX direction of a GRU or Bidirectional."""
    if isinstance(layer, L.Bidirectional):
        if layer.merge_mode is None:
            raise NotImplementedError(f"Layer '{layer.name}': merge_mode=None returns two "
                                      "outputs; the ONNX export writes one-output models.")
        cells = [layer.forward_layer, layer.backward_layer]
        if cells[0].go_backwards:
            raise NotImplementedError(
                f"Layer '{layer.name}' wraps a GRU with go_backwards=True (its halves "
                "swapped); ONNX's bidirectional GRU runs the forward half forwards.")
        direction = "bidirectional"
    else:
        cells = [layer]
        direction = "reverse" if layer.go_backwards else "forward"
        if layer.stateful:
            raise NotImplementedError(f"Layer '{layer.name}': stateful=True carries state "
                                      "between calls, which an ONNX graph cannot.")
    if getattr(layer, "return_state", False):
        raise NotImplementedError(f"Layer '{layer.name}': return_state=True returns several "
                                  "outputs; the ONNX export writes one-output models.")
    for cell in cells:
        for argument in ("activation", "recurrent_activation"):
            name = getattr(cell, argument)
            if name not in _GRU_OP_ACTIVATIONS and name not in _SCAN_ACTIVATIONS:
                raise NotImplementedError(f"Layer '{layer.name}': GRU({argument}={name!r}) "
                                          "has no ONNX export.")
    if len({c.reset_after for c in cells}) != 1:
        raise NotImplementedError(f"Layer '{layer.name}' mixes reset_after values.")
    return cells, direction


# The activations of cgru's GRU that ONNX's GRU op takes and onnxruntime's CPU GRU kernel
# computes, as (function, alpha, beta); None where the function takes no such value. The rest
# (_SCAN_ACTIVATIONS) run in the Scan over the cell, as standard ops.
_GRU_OP_ACTIVATIONS = {"tanh": ("Tanh", None, None), "sigmoid": ("Sigmoid", None, None),
                       "hard_sigmoid": ("HardSigmoid", 1 / 6, 0.5), "relu": ("Relu", None, None),
                       "linear": ("Affine", 1.0, 0.0), "softsign": ("Softsign", None, None),
                       "elu": ("Elu", 1.0, None)}
_SCAN_ACTIVATIONS = {"selu", "gelu", "silu", "swish"}


def _runs_in_gru_op(cells):
    return all(getattr(cell, argument) in _GRU_OP_ACTIVATIONS for cell in cells
               for argument in ("recurrent_activation", "activation"))


def _gru_op_activations(cells):
    """The GRU node's activation attributes: nothing for the default tanh/sigmoid cell, else
    f (the gates) and g (the candidate) per direction, and the alpha and beta values of the
    functions that take them, in that order (each function consumes its own values, as
    onnxruntime reads the list)."""
    if all((c.activation, c.recurrent_activation) == ("tanh", "sigmoid") for c in cells):
        return {}
    functions, alphas, betas = [], [], []
    for cell in cells:
        for name in (cell.recurrent_activation, cell.activation):
            function, alpha, beta = _GRU_OP_ACTIVATIONS[name]
            functions.append(function)
            alphas += [] if alpha is None else [alpha]
            betas += [] if beta is None else [beta]
    attributes = {"activations": functions}
    if alphas:
        attributes["activation_alpha"] = alphas
    if betas:
        attributes["activation_beta"] = betas
    return attributes


def _recurrent(graph, layer, x, mask, shape):
    cells, direction = _check_recurrent(layer)
    merge = layer.merge_mode if isinstance(layer, L.Bidirectional) else "concat"
    out_mask = mask if layer.return_sequences else None
    if mask is not None or not _runs_in_gru_op(cells):
        return _scan_recurrent(graph, cells, direction, merge, layer.return_sequences, x,
                               mask), out_mask
    H = cells[0].units
    w, r, b = _gru_tensors(cells)
    y, y_h = graph.node(
        "GRU", [graph.transpose(x, [1, 0, 2]), graph.constant("W", w), graph.constant("R", r),
                graph.constant("B", b)],
        n_outputs=2, base="gru", hidden_size=H, direction=direction,
        linear_before_reset=int(cells[0].reset_after), **_gru_op_activations(cells))
    if layer.return_sequences:  # y (T, D, B, H)
        if direction == "reverse":  # processing order, as Keras returns it
            y = graph.node("Slice", [y, graph.i64("starts", [-1]),
                                     graph.i64("ends", [np.iinfo(np.int64).min]),
                                     graph.i64("axes", [0]), graph.i64("steps", [-1])])
        if merge == "concat":
            y = graph.transpose(y, [2, 0, 1, 3])                       # (B, T, D, H)
            return graph.node("Reshape", [y, graph.i64("shape", [0, 0, -1])]), out_mask
        return _merge_directions(graph, y, 1, merge, time_major=True), out_mask
    if merge == "concat":  # y_h (D, B, H)
        y_h = graph.transpose(y_h, [1, 0, 2])                          # (B, D, H)
        return graph.node("Reshape", [y_h, graph.i64("shape", [0, -1])]), out_mask
    return _merge_directions(graph, y_h, 0, merge, time_major=False), out_mask


def _merge(graph, forward, backward, merge_mode, axis=-1):
    """concat / sum / mul / ave of two outputs, as cgru's Bidirectional does."""
    if merge_mode == "concat":
        return graph.node("Concat", [forward, backward], axis=axis)
    if merge_mode == "mul":
        return graph.node("Mul", [forward, backward])
    merged = graph.node("Add", [forward, backward])
    if merge_mode == "ave":
        merged = graph.node("Div", [merged, graph.f32("two", 2)])
    return merged


def _merge_directions(graph, y, axis, merge_mode, time_major):
    """sum / mul / ave of the two directions stacked along ``axis`` of an ONNX GRU output."""
    forward = graph.node("Gather", [y, graph.i64("index", 0)], axis=axis)
    backward = graph.node("Gather", [y, graph.i64("index", 1)], axis=axis)
    merged = _merge(graph, forward, backward, merge_mode)
    return graph.transpose(merged, [1, 0, 2]) if time_major else merged


def _cell_body(graph, cell, masked, zero_output):
    """The Scan body of one GRU direction, Keras's cell (gate order z, r, h), f the
    recurrent activation and g the activation:

        inputs  h_prev (B, H), projected x_t @ kernel + b_in (B, 3H), [mask_t (B, 1) bool]
        outputs h (B, H) (the state carried on), y (B, H) (the step's output)
        z = f(x_z + h_prev @ R_z + b_z), r = f(x_r + h_prev @ R_r + b_r)
        h~ = g(x_h + r * (h_prev @ R_h + b_h))    (reset_after)
        h~ = g(x_h + (r * h_prev) @ R_h)          (not reset_after)
        h = where(mask_t, z * h_prev + (1 - z) * h~, h_prev)      (h_new without a mask)
        y = where(mask_t, z * h_prev + (1 - z) * h~, 0) with zero_output, else h
    """
    onnx = graph.onnx
    body = graph.sub()
    H = cell.units
    f, g = cell.recurrent_activation, cell.activation
    kernel, recurrent_kernel, bias = _keras_gru_weights(cell)
    h_prev, x_t, m_t = body.name("h_prev"), body.name("x_t"), body.name("mask_t")
    xz, xr, xh = body.split(x_t, [H] * 3, axis=1)
    if cell.reset_after:
        # the recurrent projection with its bias, then r applied to its h-block
        hp = body.node("Add", [body.node("MatMul", [h_prev, body.f32("R", recurrent_kernel)]),
                               body.f32("b_rec", bias[1])])
        hz, hr, hh = body.split(hp, [H] * 3, axis=1)
        z = _activation(body, f, body.node("Add", [xz, hz]))
        r = _activation(body, f, body.node("Add", [xr, hr]))
        candidate = _activation(body, g, body.node("Add", [xh, body.node("Mul", [r, hh])]))
    else:
        # r multiplies h before the h-block of the recurrent kernel
        hzr = body.node("MatMul", [h_prev, body.f32("R_zr", recurrent_kernel[:, :2 * H])])
        hz, hr = body.split(hzr, [H] * 2, axis=1)
        z = _activation(body, f, body.node("Add", [xz, hz]))
        r = _activation(body, f, body.node("Add", [xr, hr]))
        rh = body.node("MatMul", [body.node("Mul", [r, h_prev]),
                                  body.f32("R_h", recurrent_kernel[:, 2 * H:])])
        candidate = _activation(body, g, body.node("Add", [xh, rh]))
    one_minus_z = body.node("Sub", [body.f32("one", 1), z])
    h_new = body.node("Add", [body.node("Mul", [z, h_prev]),
                              body.node("Mul", [one_minus_z, candidate])])
    helper, F, BOOL = onnx.helper, onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL
    inputs = [helper.make_tensor_value_info(h_prev, F, ["batch", H]),
              helper.make_tensor_value_info(x_t, F, ["batch", 3 * H])]
    if masked:
        h = body.node("Where", [m_t, h_new, h_prev])
        y = (body.node("Where", [m_t, h_new, body.f32("zero", 0)]) if zero_output
             else body.node("Identity", [h]))
        inputs.append(helper.make_tensor_value_info(m_t, BOOL, ["batch", 1]))
    else:
        h, y = h_new, body.node("Identity", [h_new])
    return helper.make_graph(
        body.nodes, body.name("gru_cell"), inputs,
        [helper.make_tensor_value_info(h, F, ["batch", H]),
         helper.make_tensor_value_info(y, F, ["batch", H])],
        initializer=body.initializers)


def _scan_direction(graph, cell, x_time_major, mask_time_major, reverse, reversed_output,
                    zero_output):
    """One direction of a GRU as a Scan over time: (last output (B, H), outputs (T, B, H)).
    ``mask_time_major`` (T, B, 1) bool, or None where the GRU receives no mask."""
    kernel, _, bias = _keras_gru_weights(cell)
    b_in = bias[0] if cell.reset_after else bias
    projected = graph.node("Add", [graph.node("MatMul", [x_time_major,
                                                         graph.f32("kernel", kernel)]),
                                   graph.f32("b_in", b_in)])
    batch = graph.node("Slice", [graph.node("Shape", [x_time_major]), graph.i64("start", [1]),
                                 graph.i64("end", [2])])
    h0 = graph.node("ConstantOfShape", [graph.node("Concat", [batch, graph.i64(
        "units", [cell.units])], axis=0)],
        value=graph.onnx.numpy_helper.from_array(np.zeros(1, np.float32)))
    masked = mask_time_major is not None
    scanned = [projected, mask_time_major] if masked else [projected]
    h_n, y = graph.node("Scan", [h0] + scanned, n_outputs=2, base="scan",
                        body=_cell_body(graph, cell, masked, zero_output),
                        num_scan_inputs=len(scanned),
                        scan_input_directions=[int(reverse)] * len(scanned),
                        scan_output_directions=[int(reversed_output)])
    if masked and zero_output:  # the last output is zero where the last step is masked
        last_mask = graph.node("Gather", [mask_time_major, graph.i64("step", 0 if reverse
                                                                     else -1)], axis=0)
        h_n = graph.node("Where", [last_mask, h_n, graph.f32("zero", 0)])
    return h_n, y


def _scan_recurrent(graph, cells, direction, merge, return_sequences, x, mask):
    """A GRU or Bidirectional as Scans over the cell: for a GRU that receives a mask, or one
    whose activations the GRU op lacks. ``mask`` (B, T) bool or None."""
    x_tm = graph.transpose(x, [1, 0, 2])                                    # (T, B, I)
    m_tm = None if mask is None else graph.transpose(
        graph.node("Unsqueeze", [mask, graph.i64("axis", [-1])]), [1, 0, 2])  # (T, B, 1)
    if direction == "bidirectional":
        # Keras's Bidirectional sets zero_output_for_mask = return_sequences on both halves
        h_f, y_f = _scan_direction(graph, cells[0], x_tm, m_tm, False, False,
                                   return_sequences)
        # the backward half's outputs stored in time order, as Bidirectional merges them
        h_b, y_b = _scan_direction(graph, cells[1], x_tm, m_tm, True, True,
                                   return_sequences)
        if return_sequences:
            return graph.transpose(_merge(graph, y_f, y_b, merge), [1, 0, 2])
        return _merge(graph, h_f, h_b, merge)
    # go_backwards: a reversed scan whose outputs stay in processing order, as Keras's
    h_n, y = _scan_direction(graph, cells[0], x_tm, m_tm, direction == "reverse", False,
                             bool(getattr(cells[0], "zero_output_for_mask", False)))
    return graph.transpose(y, [1, 0, 2]) if return_sequences else h_n


# ---------------------------------------------------------------------------------------------
# merging layers (functional models): lists of inputs, masks and shapes, as cgru merges them
# ---------------------------------------------------------------------------------------------
def _aligned(graph, xs, shapes):
    """Inputs of lower rank get axes after the batch axis (Keras's merge broadcasting)."""
    rank = max(len(sh) for sh in shapes)
    return [x if len(sh) == rank else graph.node(
        "Unsqueeze", [x, graph.i64("axes", list(range(1, 1 + rank - len(sh))))])
        for x, sh in zip(xs, shapes)], rank + 1


def _expanded_mask(graph, mask, rank):
    """A (batch, steps) mask with trailing axes to broadcast against a rank-``rank``
    tensor."""
    if rank <= 2:
        return mask
    return graph.node("Unsqueeze", [mask, graph.i64("axes", list(range(2, rank)))])


def _or_masks(graph, masks):
    """The elementwise layers' output mask: the OR of the input masks when each has one."""
    if masks is None or any(m is None for m in masks):
        return None
    out = masks[0]
    for m in masks[1:]:
        out = graph.node("Or", [out, m])
    return out


def _linear_merge(coefficients):
    """Add, Subtract, Average: ``sum(c_i * x_i)`` in cgru's order, (x0 * c0 + x1 * c1) + ...,
    a coefficient of 1 not multiplied."""
    def export(graph, layer, xs, masks, shapes):
        xs, _ = _aligned(graph, xs, shapes)
        coefs = coefficients(len(xs))
        terms = [x if c == 1 else graph.node("Mul", [x, graph.f32("coefficient", c)])
                 for x, c in zip(xs, coefs)]
        out = terms[0]
        for term in terms[1:]:
            out = graph.node("Add", [out, term])
        return out, _or_masks(graph, masks)
    return export


def _multiply(graph, layer, xs, masks, shapes):
    """A masked entry counts as 1; where every input has a mask, the entries masked in all
    of them are 0."""
    xs, rank = _aligned(graph, xs, shapes)
    masks = list(masks) if masks is not None else [None] * len(xs)
    factors, any_valid = [], None
    for x, m in zip(xs, masks):
        if m is not None:
            m = _expanded_mask(graph, m, rank)
            x = graph.node("Where", [m, x, graph.f32("one", 1)])
            any_valid = m if any_valid is None else graph.node("Or", [any_valid, m])
        factors.append(x)
    out = factors[0]
    for x in factors[1:]:
        out = graph.node("Mul", [out, x])
    if all(m is not None for m in masks):
        out = graph.node("Where", [any_valid, out, graph.f32("zero", 0)])
    return out, _or_masks(graph, masks)


def _extremum(op):
    """Maximum (op Greater) and Minimum (Less): masked entries never win; ties keep the
    earlier input's value."""
    def export(graph, layer, xs, masks, shapes):
        xs, rank = _aligned(graph, xs, shapes)
        masks = list(masks) if masks is not None else [None] * len(xs)
        if all(m is None for m in masks):
            return graph.node("Max" if op == "Greater" else "Min", xs), None
        # cgru's running form: `out` (and `out_mask`) so far, each input taken where it is
        # valid and (where `out` is valid) wins the comparison
        shape = graph.node("Shape", [graph.node("Max" if op == "Greater" else "Min", xs)])
        out = graph.node("Expand", [xs[0], shape])
        out_mask = None if masks[0] is None else graph.node(
            "Expand", [_expanded_mask(graph, masks[0], rank), shape])
        for x, m in zip(xs[1:], masks[1:]):
            x = graph.node("Expand", [x, shape])
            if m is not None:
                m = graph.node("Expand", [_expanded_mask(graph, m, rank), shape])
                x = graph.node("Where", [m, x, out])
            if out_mask is not None:
                out = graph.node("Where", [out_mask, out, x])
            out_mask = graph.node("Or", [out_mask, m]) if (
                m is not None and out_mask is not None) else None
            out = graph.node("Where", [graph.node(op, [x, out]), x, out])
        return out, _or_masks(graph, masks)
    return export


def _concatenate(graph, layer, xs, masks, shapes):
    axis = layer._inner_axis(len(shapes[0])) + 1
    out = graph.node("Concat", list(xs), axis=axis)
    if masks is None or all(m is None for m in masks):
        return out, None
    # each input's mask over its entries (all valid without one), joined, any on the last axis
    rank = len(shapes[0]) + 1
    full = []
    for x, m in zip(xs, masks):
        ones = graph.node("ConstantOfShape", [graph.node("Shape", [x])],
                          value=graph.onnx.numpy_helper.from_array(np.ones(1, np.bool_)))
        full.append(ones if m is None else graph.node(
            "And", [ones, _expanded_mask(graph, m, rank)]))
    joined = graph.node("Cast", [graph.node("Concat", full, axis=axis)],
                        to=graph.onnx.TensorProto.FLOAT)
    mask = graph.reduce("ReduceMax", joined, [-1], 0)
    return out, graph.node("Cast", [mask], to=graph.onnx.TensorProto.BOOL)


def _dot(graph, layer, xs, masks, shapes):
    """(B, M, K) @ (B, K, N) with the contracted axis moved last in x1 and first in x2,
    after L2-normalizing both along it when ``normalize`` (x * min(1 / |x|, 1 / epsilon))."""
    from . import backend
    (x1, x2), (s1, s2) = xs, [(None,) + tuple(sh) for sh in shapes]
    a1, a2 = layer._axes(len(s1), len(s2))
    if layer.normalize:
        inv_eps = float(np.float32(1 / backend.epsilon()))
        tiny = float(np.finfo(np.float32).tiny)
        normed = []
        for x, a in ((x1, a1), (x2, a2)):
            norm = graph.node("Sqrt", [graph.node("ReduceSum", [
                graph.node("Mul", [x, x]), graph.i64("axis", [a])], keepdims=1)])
            inv = graph.node("Min", [graph.node("Div", [graph.f32("one", 1), graph.node(
                "Max", [norm, graph.f32("tiny", tiny)])]), graph.f32("inv_eps", inv_eps)])
            normed.append(graph.node("Mul", [x, inv]))
        x1, x2 = normed
    perm1 = [0] + [i for i in range(1, len(s1)) if i != a1] + [a1]
    perm2 = [0, a2] + [i for i in range(1, len(s2)) if i != a2]
    m1, m2 = graph.transpose(x1, perm1), graph.transpose(x2, perm2)
    rest1, rest2 = [s1[i] for i in perm1[1:-1]], [s2[i] for i in perm2[2:]]
    if len(s1) <= 3 and len(s2) <= 3:
        # at most one axis besides the contracted one: (B, M or 1, K) @ (B, K, N or 1)
        if len(s1) == 2:
            m1 = graph.node("Unsqueeze", [m1, graph.i64("axes", [1])])
        if len(s2) == 2:
            m2 = graph.node("Unsqueeze", [m2, graph.i64("axes", [2])])
        p = graph.node("MatMul", [m1, m2])
        if len(s1) == 2 and len(s2) == 2:
            return graph.node("Reshape", [p, graph.i64("shape", [0, 1])]), None
        if len(s1) == 2 or len(s2) == 2:
            return graph.node("Squeeze", [p, graph.i64("axes", [1 if len(s1) == 2
                                                                 else 2])]), None
        return p, None
    k = s1[a1] if s1[a1] is not None else s2[a2]
    if k is None or None in rest1 + rest2:
        raise NotImplementedError(f"Layer '{layer.name}': a Dot of rank-4+ inputs with free "
                                  "axes besides the batch axis has no ONNX export.")
    p = graph.node("MatMul", [graph.node("Reshape", [m1, graph.i64("shape", [0, -1, k])]),
                              graph.node("Reshape", [m2, graph.i64("shape", [0, k, -1])])])
    return graph.node("Reshape", [p, graph.i64("shape", [0] + rest1 + rest2)]), None


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------
EXPORTERS = {
    L.GRU: _recurrent, L.Bidirectional: _recurrent,
    L.Dense: _dense, L.Activation: _activation_layer,
    L.Dropout: _identity, L.SpatialDropout1D: _identity, L.GaussianNoise: _identity,
    L.GaussianDropout: _identity,
    L.Embedding: _embedding, L.Masking: _masking,
    L.Flatten: _flatten, L.Reshape: _reshape, L.Permute: _permute,
    L.RepeatVector: _repeat_vector, L.TimeDistributed: _time_distributed,
    L.Conv1D: _conv1d,
    L.MaxPooling1D: _pooling("MaxPool"),
    L.AveragePooling1D: _pooling("AveragePool", count_include_pad=0),
    L.GlobalMaxPooling1D: _global_max, L.GlobalAveragePooling1D: _global_average,
    L.BatchNormalization: _batch_normalization, L.LayerNormalization: _layer_normalization,
    L.Add: _linear_merge(lambda n: [1] * n), L.Subtract: _linear_merge(lambda n: [1, -1]),
    L.Average: _linear_merge(lambda n: [1.0 / n] * n), L.Multiply: _multiply,
    L.Maximum: _extremum("Greater"), L.Minimum: _extremum("Less"),
    L.Concatenate: _concatenate, L.Dot: _dot,
}
# layers whose numbers depend on the mask they receive
_MASK_CONSUMERS = {_recurrent, _global_average}
# layers whose input is integer ids (a model starting with one takes int64 ids)
_TAKES_IDS = {_embedding}


def _exporter(layer):
    exporter = EXPORTERS.get(type(layer))
    if exporter is None:
        raise NotImplementedError(f"Layer '{layer.name}' ({type(layer).__name__}) has no "
                                  "ONNX export.")
    return exporter


def _layers_of(model):
    if isinstance(model, Sequential):
        if not model.built:
            raise ValueError(f"Model '{model.name}' is not built: call it on an input or "
                             "give its first layer `input_shape` before exporting it.")
        return list(model.layers)
    if isinstance(model, (L.GRU, L.Bidirectional, L.Dense)):
        if not model.built:
            raise ValueError(f"Layer '{model.name}' is not built: call it on an input or "
                             "give it `input_shape` before exporting it.")
        return [model]
    raise TypeError("to_onnx exports a cgru Model, Sequential, GRU, Bidirectional or Dense; "
                    f"received {model!r}.")


def _output_shape(layers, shape):
    for layer in layers:
        shape = tuple(layer.compute_output_shape(tuple(shape)))
    return shape


def _input_shape(layers):
    """The model's input shape without the batch axis, None where an axis is free: the
    time axis unless the first layer's `input_shape` fixed it or a later layer needs it
    (a Flatten before a Dense)."""
    first = layers[0]
    shape = list(first.built_input_shape)
    fixed = first.get_config().get("input_shape")
    has_time = len(shape) >= 2 or (len(shape) == 1 and _exporter(first) in _TAKES_IDS)
    if not has_time or (fixed is not None and fixed[0] is not None):
        return shape
    free = [None] + shape[1:]
    current = tuple(free)
    try:
        for layer in layers:
            if layer.weights and current[-1] is None and _exporter(layer) not in _TAKES_IDS:
                return shape    # a weight's size follows the time axis
            current = tuple(layer.compute_output_shape(current))
    except (TypeError, ValueError):
        return shape
    return free


def _dims(shape, free_names):
    """ONNX dims: the batch axis, then each axis, free ones named from ``free_names``."""
    names = iter(free_names)
    return ["batch"] + [int(d) if d is not None else next(names) for d in shape]


def _check_float32(layer):
    if np.dtype(layer.dtype) != np.float32:
        raise TypeError(f"Layer '{layer.name}' is {layer.dtype}; the ONNX export writes "
                        "float32 graphs (onnxruntime's GRU runs float32). Rebuild the "
                        "model with dtype='float32' and copy the weights to export it.")


def _sequential_graph(onnx, graph, model):
    """A Sequential or a single layer: one input ``x``, one output ``y``; returns the graph's
    (inputs, outputs) value infos."""
    layers = _layers_of(model)
    for layer in layers:
        _check_float32(layer)
        _exporter(layer)            # every layer has an export before anything is built
    shape = _input_shape(layers)
    x, mask, current = "x", None, tuple(shape)
    for layer in layers:
        x, mask = _exporter(layer)(graph, layer, x, mask, current)
        current = tuple(layer.compute_output_shape(current))
    graph.nodes.append(onnx.helper.make_node("Identity", [x], ["y"], name="output"))
    helper = onnx.helper
    in_type = (onnx.TensorProto.INT64 if _exporter(layers[0]) in _TAKES_IDS
               else onnx.TensorProto.FLOAT)
    in_dims = _dims(shape, ["time", "axis_2", "axis_3"])
    out_dims = _dims(_output_shape(layers, shape), [f"y_axis_{i}" for i in range(1, 8)])
    return ([helper.make_tensor_value_info("x", in_type, in_dims)],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out_dims)])


def _functional_graph(onnx, graph, model):
    """A functional Model: one graph input per model input (named as ``input_names``: the
    Input's name, or the key of a dict of inputs), one output per model output (named as
    ``output_names``), the layer calls in the model's order, masks beside the tensors."""
    helper = onnx.helper
    steps = model._graph.steps
    graph.reserved.update(model.input_names + model.output_names)
    if len(set(model.output_names)) != len(model.output_names) or \
            set(model.input_names) & set(model.output_names):
        raise NotImplementedError(
            f"Model '{model.name}': ONNX names each graph input and output once; the model's "
            f"inputs {model.input_names} and outputs {model.output_names} share a name (an "
            "input returned as an output, or an output key that names an input). Return it "
            "through a layer, or name the outputs with a dict of other keys.")
    for step in steps:
        _check_float32(step.layer)
        _exporter(step.layer)
        if len(step.out_keys) > 1:
            raise NotImplementedError(f"Layer '{step.layer.name}' returns several tensors; "
                                      "the ONNX export handles layers with one output.")
    inputs = []
    names, masks, shapes = {}, {}, {}
    for key, tensor, name in zip(model._graph.input_keys, model.inputs, model.input_names):
        dtype = np.dtype(tensor.dtype)
        if dtype.kind == "f" and dtype != np.float32:
            raise TypeError(f"Input '{name}' is {dtype}; the ONNX export writes float32 "
                            "graphs.")
        elem = onnx.TensorProto.INT64 if dtype.kind in "iu" else onnx.TensorProto.FLOAT
        shape = tuple(tensor.shape[1:])
        inputs.append(helper.make_tensor_value_info(
            name, elem, _dims(shape, [f"{name}_axis_{i}" for i in range(1, 8)])))
        names[key], masks[key], shapes[key] = name, None, shape
    for step in steps:
        layer = step.layer
        ins = [names[k] for k in step.in_keys]
        in_masks = [masks[k] for k in step.in_keys]
        in_shapes = [shapes[k] for k in step.in_keys]
        if step.list_input:
            x, shape = ins, in_shapes
            mask = None if all(m is None for m in in_masks) else in_masks
        else:
            x, mask, shape = ins[0], in_masks[0], in_shapes[0]
        out, out_mask = _exporter(layer)(graph, layer, x, mask, shape)
        key = step.out_keys[0]
        names[key], masks[key] = out, out_mask
        shapes[key] = tuple(layer.compute_output_shape(
            [tuple(sh) for sh in shape] if step.list_input else shape))
    outputs = []
    for key, name in zip(model._graph.output_keys, model.output_names):
        graph.nodes.append(helper.make_node("Identity", [names[key]], [name],
                                            name=graph.name("output")))
        outputs.append(helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT,
            _dims(shapes[key], [f"{name}_axis_{i}" for i in range(1, 8)])))
    return inputs, outputs


def export(model, path, *, opset=17):
    """Build the ONNX graph of ``model`` and write it atomically to ``path``; returns path."""
    onnx = _import_onnx()
    graph = _GraphBuilder(onnx, opset)
    if isinstance(model, Model) and not isinstance(model, Sequential):
        inputs, outputs = _functional_graph(onnx, graph, model)
    else:
        inputs, outputs = _sequential_graph(onnx, graph, model)
    helper = onnx.helper
    onnx_graph = helper.make_graph(graph.nodes, "cgru_model", inputs, outputs,
                                   initializer=graph.initializers)
    opsets = [helper.make_opsetid("", opset)]
    onnx_model = helper.make_model(onnx_graph, producer_name="cgru", opset_imports=opsets)
    onnx_model.ir_version = max(_IR_VERSION, helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(onnx_model)
    with atomic_output(path) as f:
        f.write(onnx_model.SerializeToString())
    return path

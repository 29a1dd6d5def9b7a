"""ONNX export of cgru models (``cgru.interop.to_onnx``).

The graph is batch-first at every layer boundary, as cgru layers are. A GRU layer becomes

    Transpose (B, T, I) -> (T, B, I)        onnxruntime's CPU GRU runs layout=0 only
    GRU                                      W (D, 3H, I), R (D, 3H, H), B (D, 6H)
    [Slice, reversing time]                  go_backwards with return_sequences
    Transpose + Reshape, or Gather + merge   back to (B, T, D*H) / (B, D*H)

Keras's layout maps onto ONNX's without reordering: both use the gate order z, r, h, so
``W = kernel.T``, ``R = recurrent_kernel.T``, and ``B`` is the input bias then the recurrent
bias (``bias[0]``, ``bias[1]`` when ``reset_after=True``; ``bias`` and zeros otherwise).
``reset_after=True`` is ONNX's ``linear_before_reset=1``: ``h~ = g(W_h x + Wb_h +
r * (R_h h + Rb_h))``; ``reset_after=False`` is ``linear_before_reset=0``.

ONNX's ``direction="reverse"`` returns ``Y`` aligned with the input's time steps, whereas a
Keras/cgru ``GRU(go_backwards=True, return_sequences=True)`` returns its outputs in processing
order (last time step first), so a ``Slice`` with step -1 reverses ``Y`` for it. A
``Bidirectional`` layer is one ``direction="bidirectional"`` node: its backward half's ``Y``
is already in time order, which is what Keras merges.
"""
import numpy as np

from ._files import atomic_output
from .layers import GRU, Bidirectional, Dense, Dropout
from .models import Sequential

_IR_VERSION = 8  # the IR of opset 17; read by onnxruntime 1.13 and later


def _import_onnx():
    try:
        import onnx
    except ImportError as e:
        raise ImportError("cgru.interop.to_onnx needs the `onnx` package: "
                          'pip install "cgru[onnx]" (or pip install onnx).') from e
    return onnx


class _GraphBuilder:
    """Collects nodes and initializers under unique names."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes, self.initializers, self._count = [], [], 0

    def name(self, base):
        self._count += 1
        return f"{base}_{self._count}"

    def constant(self, base, array):
        name = self.name(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, n_outputs=1, base=None, **attributes):
        outputs = [self.name(base or op.lower()) for _ in range(n_outputs)]
        self.nodes.append(self.onnx.helper.make_node(op, inputs, outputs, name=self.name(op),
                                                     **attributes))
        return outputs[0] if n_outputs == 1 else outputs


def _gru_tensors(cells):
    """ONNX W (D, 3H, I), R (D, 3H, H), B (D, 6H), float32, from Keras-layout GRU layers."""
    w, r, b = [], [], []
    for cell in cells:
        kernel, recurrent_kernel, bias = cell.get_weights()
        w.append(kernel.T)
        r.append(recurrent_kernel.T)
        b.append(bias.reshape(-1) if cell.reset_after
                 else np.concatenate([bias, np.zeros_like(bias)]))
    return [np.ascontiguousarray(np.stack(t), dtype=np.float32) for t in (w, r, b)]


def _check_recurrent(layer):
    """The GRU halves (forward first) and the ONNX direction of a GRU or Bidirectional."""
    if isinstance(layer, Bidirectional):
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
    if getattr(layer, "return_state", False):
        raise NotImplementedError(f"Layer '{layer.name}': return_state=True returns several "
                                  "outputs; the ONNX export writes one-output models.")
    for cell in cells:
        if (cell.activation, cell.recurrent_activation) != ("tanh", "sigmoid"):
            raise NotImplementedError(
                f"Layer '{layer.name}': GRU(activation={cell.activation!r}, "
                f"recurrent_activation={cell.recurrent_activation!r}) is not exported to "
                "ONNX (the export writes ONNX's default tanh/sigmoid GRU).")
    if len({c.reset_after for c in cells}) != 1:
        raise NotImplementedError(f"Layer '{layer.name}' mixes reset_after values.")
    return cells, direction


def _add_recurrent(graph, layer, x):
    """Nodes for a GRU or Bidirectional on batch-first x; returns the batch-first output."""
    cells, direction = _check_recurrent(layer)
    H = cells[0].units
    w, r, b = _gru_tensors(cells)
    x_time_major = graph.node("Transpose", [x], perm=[1, 0, 2])
    y, y_h = graph.node(
        "GRU", [x_time_major, graph.constant("W", w), graph.constant("R", r),
                graph.constant("B", b)],
        n_outputs=2, base="gru", hidden_size=H, direction=direction,
        linear_before_reset=int(cells[0].reset_after))
    merge = layer.merge_mode if isinstance(layer, Bidirectional) else "concat"
    if layer.return_sequences:  # y (T, D, B, H)
        if direction == "reverse":  # processing order, as Keras returns it
            y = graph.node("Slice", [y, graph.constant("starts", np.array([-1])),
                                     graph.constant("ends", np.array([np.iinfo(np.int64).min])),
                                     graph.constant("axes", np.array([0])),
                                     graph.constant("steps", np.array([-1]))])
        if merge == "concat":
            y = graph.node("Transpose", [y], perm=[2, 0, 1, 3])       # (B, T, D, H)
            return graph.node("Reshape", [y, graph.constant("shape", np.array([0, 0, -1]))])
        return _merge_directions(graph, y, 1, merge, time_major=True)
    if merge == "concat":  # y_h (D, B, H)
        y_h = graph.node("Transpose", [y_h], perm=[1, 0, 2])          # (B, D, H)
        return graph.node("Reshape", [y_h, graph.constant("shape", np.array([0, -1]))])
    return _merge_directions(graph, y_h, 0, merge, time_major=False)


def _merge_directions(graph, y, axis, merge_mode, time_major):
    """sum / mul / ave of the two directions along ``axis``, as cgru's Bidirectional does."""
    forward = graph.node("Gather", [y, graph.constant("index", np.array(0))], axis=axis)
    backward = graph.node("Gather", [y, graph.constant("index", np.array(1))], axis=axis)
    if merge_mode == "mul":
        merged = graph.node("Mul", [forward, backward])
    else:
        merged = graph.node("Add", [forward, backward])
        if merge_mode == "ave":
            merged = graph.node("Div", [merged, graph.constant("two", np.float32(2))])
    return graph.node("Transpose", [merged], perm=[1, 0, 2]) if time_major else merged


_ACTIVATION_OPS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}


def _add_dense(graph, dense, x):
    weights = dense.get_weights()
    out = graph.node("MatMul", [x, graph.constant("kernel", weights[0].astype(np.float32))])
    if dense.use_bias:
        out = graph.node("Add", [out, graph.constant("bias", weights[1].astype(np.float32))])
    if dense.activation == "softmax":
        return graph.node("Softmax", [out], axis=-1)
    if dense.activation is not None:
        if dense.activation not in _ACTIVATION_OPS:
            raise NotImplementedError(f"Layer '{dense.name}': activation={dense.activation!r} "
                                      "is not exported to ONNX (sigmoid, tanh, relu, softmax "
                                      "are).")
        return graph.node(_ACTIVATION_OPS[dense.activation], [out])
    return out


def _layers_of(model):
    if isinstance(model, Sequential):
        if not model.built:
            raise ValueError(f"Model '{model.name}' is not built: call it on an input or "
                             "give its first layer `input_shape` before exporting it.")
        return list(model.layers)
    if isinstance(model, (GRU, Bidirectional, Dense)):
        if not model.built:
            raise ValueError(f"Layer '{model.name}' is not built: call it on an input or "
                             "give it `input_shape` before exporting it.")
        return [model]
    raise TypeError("to_onnx exports a cgru Sequential, GRU, Bidirectional or Dense; "
                    f"received {model!r}.")


def _input_shape(model, layers):
    """The model's input shape without the batch axis, None where an axis is free: the
    time axis unless the first layer's `input_shape` fixed it."""
    fixed = layers[0].get_config().get("input_shape")
    if isinstance(model, Sequential):
        shape = list(model.input_shape[1:])
    elif isinstance(model, Dense):
        return [int(model.get_weights()[0].shape[0])]
    else:
        shape = [None, int(layers[0].get_weights()[0].shape[0])]
    if len(shape) >= 2 and (fixed is None or fixed[0] is None):
        shape[0] = None
    return shape


def _dims(shape, free_names):
    """ONNX dims: the batch axis, then each axis, free ones named from ``free_names``."""
    names = iter(free_names)
    return ["batch"] + [int(d) if d is not None else next(names) for d in shape]


def export(model, path, *, opset=17):
    """Build the ONNX graph of ``model`` and write it atomically to ``path``; returns path."""
    onnx = _import_onnx()
    layers = _layers_of(model)
    for layer in layers:
        if np.dtype(layer.dtype) != np.float32:
            raise TypeError(f"Layer '{layer.name}' is {layer.dtype}; the ONNX export writes "
                            "float32 graphs (onnxruntime's GRU runs float32). Rebuild the "
                            "model with dtype='float32' and copy the weights to export it.")
    graph = _GraphBuilder(onnx)
    x = "x"
    for layer in layers:
        if isinstance(layer, (GRU, Bidirectional)):
            x = _add_recurrent(graph, layer, x)
        elif isinstance(layer, Dense):
            x = _add_dense(graph, layer, x)
        elif isinstance(layer, Dropout):
            continue  # the identity outside training
        else:
            raise NotImplementedError(f"Layer '{layer.name}' ({type(layer).__name__}) has no "
                                      "ONNX export.")
    graph.nodes.append(onnx.helper.make_node("Identity", [x], ["y"], name="output"))
    helper = onnx.helper
    shape = _input_shape(model, layers)
    in_dims = _dims(shape, ["time", "axis_2", "axis_3"])
    out_shape = shape
    for layer in layers:
        out_shape = list(layer.compute_output_shape(tuple(out_shape)))
    out_dims = _dims(out_shape, ["time", "axis_2", "axis_3"])
    onnx_graph = helper.make_graph(
        graph.nodes, "cgru_model",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, in_dims)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out_dims)],
        initializer=graph.initializers)
    onnx_model = helper.make_model(onnx_graph, producer_name="cgru",
                                   opset_imports=[helper.make_opsetid("", opset)])
    onnx_model.ir_version = _IR_VERSION
    onnx.checker.check_model(onnx_model)
    with atomic_output(path) as f:
        f.write(onnx_model.SerializeToString())
    return path

"""The symbolic side of layers: ``KerasTensor`` and the ``Node`` a layer call records.

Calling a layer on KerasTensors (``Dense(4)(inputs)``) computes nothing: it builds the layer
for the tensors' shapes, records a ``Node`` (the layer, the tensors it was called on and the
tensors it returned) and returns new KerasTensors of the output shapes. A functional
``cgru.Model(inputs, outputs)`` walks these nodes back from its outputs to its inputs.
"""

__all__ = ["KerasTensor", "Node", "is_symbolic", "symbolic_call"]


class KerasTensor:
    """A symbolic tensor: its shape (batch axis first), dtype, and where it comes from
    (``node``: the call that returned it, ``index``: which of that call's outputs). An
    ``Input`` tensor's node is its InputLayer's, and ``input_layer`` is that layer."""

    def __init__(self, shape, dtype, node=None, index=0, name=None, input_layer=None):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.node, self.index = node, index
        self.input_layer = input_layer
        self.name = name if name is not None else (
            node.layer.name if node is not None else "keras_tensor")

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self.name}>"


class Node:
    """One call of ``layer`` on ``inputs`` (KerasTensors; ``list_input`` when the layer was
    given a list, as merging layers are), returning ``outputs``.

    A recurrent layer called with ``initial_state=`` tensors keeps them at the end of
    ``inputs``: ``num_states`` is how many of the last ``inputs`` are its initial state
    (``states_as_list``: given as a list, not a single tensor), the others its ``x``."""

    def __init__(self, layer, inputs, list_input=False, states=(), states_as_list=False):
        states = list(states)
        self.layer, self.list_input = layer, bool(list_input)
        self.inputs = list(inputs) + states
        self.num_states, self.states_as_list = len(states), bool(states_as_list)
        self.outputs = []

    @property
    def x_inputs(self):
        """The tensors the layer was called on (``inputs`` without the initial state)."""
        return self.inputs[:len(self.inputs) - self.num_states]

    @property
    def state_inputs(self):
        """The tensors given as ``initial_state``, in their order (empty when none)."""
        return self.inputs[len(self.inputs) - self.num_states:]


def is_symbolic(x):
    """Is ``x`` a KerasTensor or a non-empty list or tuple of them?"""
    if isinstance(x, KerasTensor):
        return True
    return isinstance(x, (list, tuple)) and bool(x) and any(
        isinstance(t, KerasTensor) for t in x)


def _initial_state_tensors(layer, initial_state, batch, inner):
    """The ``initial_state`` of a symbolic call as a list of KerasTensors, checked against
    the layer's ``initial_state_shapes`` (the layer protocol, ``cgru.layers``)."""
    as_list = isinstance(initial_state, (list, tuple))
    states = list(initial_state) if as_list else [initial_state]
    expected = layer.initial_state_shapes(inner)
    if expected is None:
        raise NotImplementedError(f"Layer '{layer.name}' takes no `initial_state`.")
    for t in states:
        if not isinstance(t, KerasTensor):
            raise TypeError(
                f"Layer '{layer.name}' was called on symbolic inputs with an `initial_state` "
                f"that is not a symbolic tensor ({t!r}); give the states as KerasTensors "
                "(an Input or a layer's output) in a functional model.")
    shapes = [tuple(t.shape) for t in states]
    want = [(batch,) + tuple(s) for s in expected]
    if len(states) != len(expected) or any(
            len(s) != len(w) or any(a is not None and b is not None and a != b
                                    for a, b in zip(s, w)) for s, w in zip(shapes, want)):
        raise ValueError(
            f"Layer '{layer.name}' expects `initial_state` of {len(expected)} tensor(s) of "
            f"shape(s) {want}; received shape(s) {shapes}.")
    return states, as_list


def symbolic_call(layer, inputs, initial_state=None, **call_kwargs):
    """``layer(inputs)`` on KerasTensors: builds the layer for their shapes, records a Node
    and returns the output KerasTensor(s) (a list when the layer returns several). An
    ``initial_state`` (KerasTensors, for layers whose ``initial_state_shapes`` says which)
    is recorded in the Node after the inputs."""
    for key, value in call_kwargs.items():
        if value is not None and value is not False:
            raise NotImplementedError(
                f"Layer '{layer.name}' was called on symbolic inputs with `{key}=`; cgru's "
                f"functional models do not support call arguments ({key}) yet.")
    list_input = isinstance(inputs, (list, tuple))
    tensors = list(inputs) if list_input else [inputs]
    for t in tensors:
        if not isinstance(t, KerasTensor):
            raise TypeError(f"Layer '{layer.name}' was called on a mix of symbolic tensors "
                            f"and arrays; received {t!r}.")
    batch = tensors[0].shape[0]
    if list_input:
        shapes = [tuple(t.shape) for t in tensors]
        layer.check_input_shape(shapes)
        inner = [s[1:] for s in shapes]
    else:
        shapes = tuple(tensors[0].shape)
        layer.check_input_shape(shapes)
        inner = shapes[1:]
        if batch is not None and layer.batch_size is None and not layer.built:
            layer.batch_size = batch            # stateful layers keep a state per row
    states, states_as_list = [], False
    if initial_state is not None:
        states, states_as_list = _initial_state_tensors(layer, initial_state, batch, inner)
    layer.ensure_built(inner)
    out_shape = layer.compute_output_shape(inner)
    out_shapes = list(out_shape) if layer.num_outputs > 1 else [out_shape]
    node = Node(layer, tensors, list_input, states, states_as_list)
    node.outputs = [KerasTensor((batch,) + tuple(s), layer.dtype.name, node=node, index=i)
                    for i, s in enumerate(out_shapes)]
    if not hasattr(layer, "_inbound_nodes"):
        layer._inbound_nodes = []
    layer._inbound_nodes.append(node)
    return list(node.outputs) if layer.num_outputs > 1 else node.outputs[0]

"""Conversions between cgru and other frameworks: PyTorch modules both ways, ONNX export.

``from_torch(module)`` turns a ``torch.nn.GRU``, ``torch.nn.GRUCell`` or ``torch.nn.Linear``
into cgru objects that compute what the module computes; ``to_torch(layer_or_model)`` goes
back; ``to_onnx(model, path)`` writes an ONNX file (see ``cgru._onnx_export``).

torch and onnx are optional: they are imported inside the functions that need them.

The mapping for ``torch.nn.GRU(input_size=I, hidden_size=H, num_layers=L,
bidirectional=D == 2)``, whose forward returns ``(output, h_n)``:

    torch.nn.GRU                     cgru Sequential (batch-first, always)
    layer k, one direction      ->   GRU(H, return_sequences=True)
    layer k, bidirectional      ->   Bidirectional(GRU(H, return_sequences=True), "concat")
    dropout p between layers    ->   Dropout(p) between the recurrent layers
    output (B, T, D*H)          ==   model.predict(x)            (return_sequences=True)
    h_n[-1] / cat(h_n[-2], h_n[-1], dim=1)
                                ==   model.predict(x)            (return_sequences=False)

The weights go across through ``cgru._layout`` (PyTorch's gate order r, z, n and Keras's
z, r, h). PyTorch's cell is Keras's ``reset_after=True`` cell.
"""
import numpy as np

from ._layout import keras_to_torch, torch_to_keras
from .functional import GRUCell as FunctionalGRUCell
from .layers import GRU, Activation, Bidirectional, Dense, Dropout
from .models import Sequential

__all__ = ["from_torch", "to_torch", "to_onnx"]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _import_torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is installed where tests run
        raise ImportError("cgru.interop needs PyTorch for this conversion: "
                          "pip install torch") from e
    return torch


def _numpy(tensor):
    """A detached NumPy copy of a torch tensor."""
    return tensor.detach().cpu().numpy().copy()


def _dtype_name_of(module):
    """'float32' or 'float64' from a module's parameters, else a TypeError naming the dtype."""
    torch = _import_torch()
    dtypes = {p.dtype for p in module.parameters()}
    if len(dtypes) != 1:
        raise TypeError(f"{type(module).__name__} has parameters of several dtypes "
                        f"{sorted(map(str, dtypes))}; convert it with .float() or .double().")
    dtype = dtypes.pop()
    names = {torch.float32: "float32", torch.float64: "float64"}
    if dtype not in names:
        raise TypeError(f"cgru runs float32 or float64; {type(module).__name__} has "
                        f"parameters of dtype {dtype}. Convert it with .float() or .double().")
    return names[dtype]


def _torch_dtype(dtype):
    torch = _import_torch()
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[
        np.dtype(dtype)]


# ---------------------------------------------------------------------------------------------
# PyTorch -> cgru
# ---------------------------------------------------------------------------------------------
def from_torch(module, *, return_sequences=True):
    """Convert a PyTorch module into cgru objects that compute what it computes.

    * ``torch.nn.GRU`` -> a built ``cgru.Sequential`` of ``GRU`` (or ``Bidirectional(GRU,
      merge_mode="concat")`` when ``bidirectional=True``) layers, one per ``num_layers``,
      with ``Dropout(p)`` between them when the module has ``dropout=p``. **The cgru model is
      batch-first**, whatever the module's ``batch_first``: give it ``x`` of shape
      ``(batch, time, input_size)`` (``x.transpose(0, 1)`` of a time-major input).
      ``model.predict(x)`` is the module's ``output`` in batch-first form,
      ``(batch, time, D*H)``; with ``return_sequences=False`` the last recurrent layer returns
      its final state instead, ``(batch, D*H)``: ``h_n[-1]`` for one direction,
      ``torch.cat([h_n[-2], h_n[-1]], dim=1)`` for two (the last layer's part of ``h_n``).
      ``bias=False`` converts to all-zero biases, an exact equivalent (a zero bias adds
      nothing in either cell).
    * ``torch.nn.GRUCell`` -> a ``cgru.functional.GRUCell``: ``cell(x, h)`` with ``x (B, I)``
      and ``h (B, H)`` (or ``None`` for zeros) returns ``h' (B, H)``, as the module does.
    * ``torch.nn.Linear`` -> a built ``cgru.Dense`` (``use_bias`` as the module's ``bias``),
      acting on the last axis as ``Linear`` does.

    The cgru objects take the module's dtype (float32 or float64) and copies of its
    weights. A module or option cgru cannot reproduce raises ``TypeError`` /
    ``NotImplementedError`` / ``ValueError`` naming it.
    """
    torch = _import_torch()
    nn = torch.nn
    if isinstance(module, nn.GRU):
        return _gru_from_torch(module, return_sequences)
    if isinstance(module, nn.GRUCell):
        return _cell_from_torch(module)
    if isinstance(module, nn.Linear):
        return _linear_from_torch(module)
    if isinstance(module, nn.RNNBase):
        raise NotImplementedError(f"cgru has GRUs only; cannot convert a {type(module).__name__} "
                                  f"(mode {getattr(module, 'mode', '?')!r}).")
    raise TypeError("from_torch converts a torch.nn.GRU, torch.nn.GRUCell or torch.nn.Linear; "
                    f"received {type(module).__name__}.")


def _check_gru_module(module):
    """Raise for the options of torch.nn.GRU that cgru cannot reproduce."""
    if getattr(module, "proj_size", 0):
        raise NotImplementedError(f"torch.nn.GRU with proj_size={module.proj_size} cannot be "
                                  "converted: cgru's GRU has no projection.")
    if module.dropout and module.num_layers > 1 and module.training:
        raise ValueError(
            f"torch.nn.GRU(dropout={module.dropout}) is in training mode, where it drops "
            "units between layers at random; call module.eval() before converting (the cgru "
            f"model gets Dropout({module.dropout}) layers between the GRUs, which act in fit "
            "and are the identity in predict).")


def _gru_weights(module, layer, suffix, dtype):
    """Keras-layout [kernel, recurrent_kernel, bias] of one layer and direction of a module."""
    w_ih = _numpy(getattr(module, f"weight_ih_l{layer}{suffix}"))
    w_hh = _numpy(getattr(module, f"weight_hh_l{layer}{suffix}"))
    H = module.hidden_size
    if module.bias:
        b_ih = _numpy(getattr(module, f"bias_ih_l{layer}{suffix}"))
        b_hh = _numpy(getattr(module, f"bias_hh_l{layer}{suffix}"))
    else:  # no bias is exactly a zero bias: b_ih and b_hh only ever add
        b_ih = np.zeros(3 * H, dtype)
        b_hh = np.zeros(3 * H, dtype)
    return torch_to_keras(w_ih, w_hh, b_ih, b_hh, reset_after=True)


def _gru_from_torch(module, return_sequences):
    _check_gru_module(module)
    dtype = _dtype_name_of(module)
    H, L = module.hidden_size, module.num_layers
    bidirectional = bool(module.bidirectional)
    model = Sequential()
    n_in = module.input_size
    for k in range(L):
        last = k == L - 1
        if k > 0 and module.dropout:
            model.add(Dropout(module.dropout, dtype=dtype))
        cell = GRU(H, return_sequences=return_sequences or not last, reset_after=True,
                   dtype=dtype, input_shape=(None, n_in) if k == 0 else None)
        layer = Bidirectional(cell, merge_mode="concat") if bidirectional else cell
        model.add(layer)
        if bidirectional:
            layer.set_weights(_gru_weights(module, k, "", dtype)
                              + _gru_weights(module, k, "_reverse", dtype))
        else:
            layer.set_weights(_gru_weights(module, k, "", dtype))
        n_in = H * (2 if bidirectional else 1)
    return model


def _cell_from_torch(module):
    dtype = _dtype_name_of(module)
    H = module.hidden_size
    w_ih, w_hh = _numpy(module.weight_ih), _numpy(module.weight_hh)
    if module.bias:
        b_ih, b_hh = _numpy(module.bias_ih), _numpy(module.bias_hh)
    else:  # exact: a zero bias adds nothing
        b_ih = b_hh = np.zeros(3 * H, dtype)
    return FunctionalGRUCell(w_ih, w_hh, b_ih, b_hh, reset_after=True)


def _linear_from_torch(module):
    dtype = _dtype_name_of(module)
    use_bias = module.bias is not None
    dense = Dense(module.out_features, use_bias=use_bias, dtype=dtype,
                  input_shape=(module.in_features,))
    weights = [_numpy(module.weight).T.copy()]
    if use_bias:
        weights.append(_numpy(module.bias))
    dense.set_weights(weights)
    return dense


# ---------------------------------------------------------------------------------------------
# cgru -> PyTorch
# ---------------------------------------------------------------------------------------------
def to_torch(layer_or_model):
    """The ``torch.nn`` module matching a built cgru layer or ``Sequential``, weights loaded.

    * ``GRU`` -> ``torch.nn.GRU(I, H, batch_first=True)``; ``Bidirectional(GRU, "concat")``
      -> the same with ``bidirectional=True``. The module returns ``(output, h_n)`` as torch
      GRUs do: the cgru layer's output is ``output`` when ``return_sequences=True``, else
      ``h_n[-1]`` (one direction) or ``torch.cat([h_n[-2], h_n[-1]], 1)`` (two).
    * ``Dense`` -> ``torch.nn.Linear``, followed by the activation in a ``torch.nn.Sequential``
      when it has one: ``Sigmoid``, ``Tanh``, ``ReLU``, ``Softmax(dim=-1)``, ``Hardsigmoid``
      (Keras 3's hard_sigmoid, relu6(x + 3) / 6), ``Softsign``, ``ELU``, ``SELU``.
    * ``Activation`` -> that activation's module (``Identity`` for linear).
    * ``Dropout(rate)`` -> ``torch.nn.Dropout(rate)``.
    * ``cgru.functional.GRUCell`` (``reset_after=True``) -> ``torch.nn.GRUCell``.
    * ``Sequential`` -> a ``torch.nn.Module`` whose ``forward(x)`` returns what
      ``model.predict(x)`` returns (batch-first ``x``), in a ``layers`` ``ModuleList``. Runs of
      recurrent layers of one kind (one direction or bidirectional-concat) and one size,
      each returning sequences into the next, optionally with ``Dropout`` layers of one rate
      between them, become one ``torch.nn.GRU(num_layers=..., dropout=rate)``.

    The module is in eval mode, in the layers' dtype. Raises ``NotImplementedError`` for what
    torch's modules cannot express: a GRU whose activations are not tanh/sigmoid,
    ``reset_after=False``, ``go_backwards=True`` on a lone GRU, merge modes other than
    "concat", input dropout (``GRU(dropout>0)``), recurrent dropout
    (``GRU(recurrent_dropout>0)``).
    """
    torch = _import_torch()
    if isinstance(layer_or_model, Sequential):
        module = _sequential_to_torch(layer_or_model)
    elif isinstance(layer_or_model, (GRU, Bidirectional)):
        _require_built(layer_or_model)
        module = _recurrent_stack_to_torch([layer_or_model], 0.0)
    elif isinstance(layer_or_model, Dense):
        _require_built(layer_or_model)
        module = _dense_to_torch(layer_or_model)
    elif isinstance(layer_or_model, Activation):
        module = _torch_activation(layer_or_model, layer_or_model.activation)
    elif isinstance(layer_or_model, Dropout):
        module = torch.nn.Dropout(layer_or_model.rate)
    elif isinstance(layer_or_model, FunctionalGRUCell):
        module = _cell_to_torch(layer_or_model)
    else:
        raise TypeError("to_torch converts a cgru GRU, Bidirectional, Dense, Activation, "
                        "Dropout, functional GRUCell or Sequential; received "
                        f"{layer_or_model!r}.")
    return module.eval()


def _require_built(layer):
    if not layer.built:
        raise ValueError(f"Layer '{layer.name}' is not built: call it on an input or give it "
                         "`input_shape` before converting it (its weights do not exist yet).")


def _recurrent_kind(layer):
    """(units, bidirectional, input features) of a GRU or Bidirectional that torch can run."""
    if isinstance(layer, Bidirectional):
        if layer.merge_mode != "concat":
            raise NotImplementedError(
                f"Layer '{layer.name}': torch.nn.GRU(bidirectional=True) concatenates the two "
                f"directions; merge_mode={layer.merge_mode!r} has no torch equivalent.")
        fwd, bwd = layer.forward_layer, layer.backward_layer
        if fwd.go_backwards or not bwd.go_backwards:
            raise NotImplementedError(
                f"Layer '{layer.name}' wraps a GRU with go_backwards=True (its forward and "
                "backward halves swapped); torch.nn.GRU has no such option.")
        cells = (fwd, bwd)
    else:
        if layer.go_backwards:
            raise NotImplementedError(
                f"Layer '{layer.name}': go_backwards=True has no torch.nn.GRU equivalent "
                "(flip the input along time instead: x.flip(1)).")
        cells = (layer,)
    for cell in cells:
        if (cell.activation, cell.recurrent_activation) != ("tanh", "sigmoid"):
            raise NotImplementedError(
                f"Layer '{layer.name}': GRU(activation={cell.activation!r}, "
                f"recurrent_activation={cell.recurrent_activation!r}) has no torch.nn.GRU "
                "equivalent; torch's cell is tanh/sigmoid only.")
        if not cell.reset_after:
            raise NotImplementedError(
                f"Layer '{layer.name}': reset_after=False (the reset gate applied before the "
                "recurrent product) has no torch.nn.GRU equivalent; torch's cell is "
                "reset_after=True.")
        if cell.dropout:
            raise NotImplementedError(
                f"Layer '{layer.name}': GRU(dropout={cell.dropout}) drops input units with "
                "one mask for all time steps; torch.nn.GRU has no input dropout. Rebuild the "
                "layer with dropout=0.0 (inference is unaffected) to convert it.")
        if cell.recurrent_dropout:
            raise NotImplementedError(
                f"Layer '{layer.name}': GRU(recurrent_dropout={cell.recurrent_dropout}) drops "
                "state units in the recurrent products; torch.nn.GRU has no recurrent "
                "dropout. Rebuild the layer with recurrent_dropout=0.0 (inference is "
                "unaffected) to convert it.")
    features = cells[0].get_weights()[0].shape[0]  # kernel (I, 3H)
    return cells[0].units, isinstance(layer, Bidirectional), int(features)


def _recurrent_stack_to_torch(layers, dropout):
    """One torch.nn.GRU(num_layers=len(layers)) from same-kind recurrent cgru layers."""
    torch = _import_torch()
    H, bidirectional, n_in = _recurrent_kind(layers[0])
    dtype = layers[0].dtype
    gru = torch.nn.GRU(n_in, H, num_layers=len(layers), bias=True, batch_first=True,
                       dropout=dropout, bidirectional=bidirectional,
                       dtype=_torch_dtype(dtype))
    with torch.no_grad():
        for k, layer in enumerate(layers):
            halves = [(layer.forward_layer, ""), (layer.backward_layer, "_reverse")] \
                if bidirectional else [(layer, "")]
            for cell, suffix in halves:
                kernel, recurrent_kernel, bias = cell.get_weights()
                for name, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
                                       keras_to_torch(kernel, recurrent_kernel, bias, True)):
                    getattr(gru, f"{name}_l{k}{suffix}").copy_(torch.from_numpy(
                        np.ascontiguousarray(value)))
    return gru


# cgru.activations' functions as torch.nn modules computing the same numbers: Hardsigmoid is
# relu6(x + 3) / 6, ELU's alpha is 1, SELU's constants are Keras's, GELU is the erf form and
# SiLU is swish (the last two are the GRU's; Dense and Activation refuse them in cgru).
_TORCH_ACTIVATIONS = {"sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}), "relu": ("ReLU", {}),
                      "softmax": ("Softmax", {"dim": -1}), "linear": ("Identity", {}),
                      "hard_sigmoid": ("Hardsigmoid", {}), "softsign": ("Softsign", {}),
                      "elu": ("ELU", {"alpha": 1.0}), "selu": ("SELU", {}),
                      "gelu": ("GELU", {"approximate": "none"}), "silu": ("SiLU", {}),
                      "swish": ("SiLU", {})}


def _torch_activation(layer, name):
    """The torch.nn module computing activation ``name`` of ``layer``."""
    torch = _import_torch()
    if name not in _TORCH_ACTIVATIONS:
        raise NotImplementedError(f"Layer '{layer.name}': activation={name!r} is not "
                                  "converted to torch.")
    module, arguments = _TORCH_ACTIVATIONS[name]
    return getattr(torch.nn, module)(**arguments)


def _dense_to_torch(dense):
    torch = _import_torch()
    weights = dense.get_weights()
    linear = torch.nn.Linear(weights[0].shape[0], dense.units, bias=dense.use_bias,
                             dtype=_torch_dtype(dense.dtype))
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(weights[0].T)))
        if dense.use_bias:
            linear.bias.copy_(torch.from_numpy(weights[1]))
    if dense.activation is None:
        return linear
    return torch.nn.Sequential(linear, _torch_activation(dense, dense.activation))


def _cell_to_torch(cell):
    torch = _import_torch()
    if not cell.reset_after:
        raise NotImplementedError("A GRUCell with reset_after=False has no torch.nn.GRUCell "
                                  "equivalent; torch's cell is reset_after=True.")
    module = torch.nn.GRUCell(cell.input_size, cell.hidden_size,
                              dtype=_torch_dtype(cell.dtype))
    with torch.no_grad():
        module.weight_ih.copy_(torch.from_numpy(np.ascontiguousarray(cell.w_ih)))
        module.weight_hh.copy_(torch.from_numpy(np.ascontiguousarray(cell.w_hh)))
        module.bias_ih.copy_(torch.from_numpy(np.array(cell.b_ih)))
        module.bias_hh.copy_(torch.from_numpy(np.array(cell.b_hh)))
    return module


def _group_layers(layers):
    """Split a Sequential's layers into stages: ("gru", [layers], rate, return_sequences)
    for stackable recurrent runs, ("other", layer) otherwise."""
    stages, i = [], 0
    while i < len(layers):
        layer = layers[i]
        if not isinstance(layer, (GRU, Bidirectional)):
            stages.append(("other", layer))
            i += 1
            continue
        kind = _recurrent_kind(layer)[:2]
        run, rate, j = [layer], 0.0, i + 1
        while run[-1].return_sequences and j < len(layers):
            k, step_rate = j, 0.0
            if isinstance(layers[k], Dropout):
                step_rate, k = layers[k].rate, k + 1
            if k >= len(layers) or not isinstance(layers[k], (GRU, Bidirectional)) or \
                    _recurrent_kind(layers[k])[:2] != kind or \
                    (len(run) > 1 and step_rate != rate):
                break
            run.append(layers[k])
            rate, j = step_rate, k + 1
        stages.append(("gru", run, rate, run[-1].return_sequences))
        i = j
    return stages


def _sequential_to_torch(model):
    torch = _import_torch()
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built: call it on an input or give its "
                         "first layer `input_shape` before converting it.")
    modules, returns = [], []
    for stage in _group_layers(model.layers):
        if stage[0] == "gru":
            _, run, rate, return_sequences = stage
            modules.append(_recurrent_stack_to_torch(run, rate))
            returns.append(return_sequences)
        else:
            modules.append(to_torch(stage[1]).train(False))
            returns.append(None)
    return _torch_sequential_class()(modules, returns)


_TORCH_SEQUENTIAL = []


def _torch_sequential_class():
    """The torch.nn.Module class for converted Sequentials (made once, when torch is there)."""
    if _TORCH_SEQUENTIAL:
        return _TORCH_SEQUENTIAL[0]
    torch = _import_torch()

    class CgruSequential(torch.nn.Module):
        """Runs ``layers`` in order on batch-first ``x``; a ``torch.nn.GRU`` passes on its
        output sequence, or its last layer's final state (both directions concatenated)
        where the cgru layer had ``return_sequences=False``."""

        def __init__(self, modules, returns_sequences):
            super().__init__()
            self.layers = torch.nn.ModuleList(modules)
            self.returns_sequences = list(returns_sequences)

        def forward(self, x):
            for module, sequences in zip(self.layers, self.returns_sequences):
                if isinstance(module, torch.nn.GRU):
                    output, h_n = module(x)
                    if sequences:
                        x = output
                    elif module.bidirectional:
                        x = torch.cat([h_n[-2], h_n[-1]], dim=1)
                    else:
                        x = h_n[-1]
                else:
                    x = module(x)
            return x

    _TORCH_SEQUENTIAL.append(CgruSequential)
    return CgruSequential


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------
def to_onnx(model, path, *, opset=17):
    """Write ``model`` (a built cgru ``Sequential``, a functional ``Model``, or a GRU,
    Bidirectional or Dense layer) to an ONNX file at ``path``.

    A Sequential's graph takes one input ``x`` and returns ``y``, what ``model.predict(x)``
    returns. ``x`` is float32 ``(batch, time, features)`` (batch free; time free unless the
    model fixed it), or int64 ids ``(batch, time)`` when the model starts with an
    ``Embedding``. A functional Model's graph has one input per model input, named as
    ``model.input_names`` (int64 for an integer ``Input``), and one output per model output,
    named as ``model.output_names``, each what ``predict`` returns for it; the merging layers
    (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot) become standard
    ops, masks included.
    Every cgru layer has an export (``cgru._onnx_export.EXPORTERS``): one ONNX ``GRU`` node per
    GRU (both directions in one node for ``Bidirectional``; every activation pair whose
    functions onnxruntime's GRU computes: tanh, sigmoid, hard_sigmoid, relu, linear,
    softsign, elu), a ``Scan`` over the GRU cell when the GRU receives a mask (from
    ``Masking`` or ``Embedding(mask_zero=True)``, with Keras 3's numbers for any mask) or uses
    selu, gelu or silu, ``Gather`` for ``Embedding``, ``Conv``/``MaxPool``/
    ``AveragePool`` for the 1-D layers, standard ops for the rest, nothing for dropout and
    noise. A layer or option ONNX cannot express raises NotImplementedError naming it.
    ``opset``: the ONNX opset, 17 by default (tested up to 21; from 20 gelu is ONNX's
    ``Gelu`` op, before it ``Erf``). Needs the ``onnx`` package (``pip install
    "cgru[onnx]"``). Written to a temporary file and renamed.
    """
    from ._onnx_export import export
    return export(model, path, opset=opset)

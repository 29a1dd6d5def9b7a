"""Merging layers (Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum, Dot):
outputs, input gradients and masks against Keras 3; the functions; errors; configs."""
import numpy as np
import pytest

from _layer_checks import keras  # noqa: F401  (sets the Keras backend first)
import cgru
from cgru import layers as CL
from cgru import saving

pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

CASES = [
    ("Concatenate", {}, [(2, 5, 3), (2, 5, 4)]),
    ("Concatenate", {"axis": 1}, [(2, 3, 4), (2, 5, 4)]),
    ("Add", {}, [(2, 5, 3), (2, 5, 3), (2, 5, 3)]),
    ("Add", {}, [(2, 5, 3), (2, 3)]),                  # lower rank: an axis after the batch
    ("Subtract", {}, [(2, 4), (2, 4)]),
    ("Multiply", {}, [(2, 5, 3), (2, 5, 3), (2, 5, 3)]),
    ("Average", {}, [(2, 5, 3), (2, 5, 3)]),
    ("Maximum", {}, [(2, 5, 3), (2, 5, 3), (2, 5, 3)]),
    ("Minimum", {}, [(2, 5, 3), (2, 5, 3)]),
    ("Dot", {"axes": -1}, [(3, 4), (3, 4)]),
    ("Dot", {"axes": -1, "normalize": True}, [(3, 4), (3, 4)]),
    ("Dot", {"axes": (1, 1)}, [(2, 5, 3), (2, 5, 4)]),
    ("Dot", {"axes": (2, 2)}, [(2, 5, 3), (2, 6, 3)]),
    ("Dot", {"axes": (1, 2)}, [(2, 4), (2, 3, 4)]),
]


def _inputs(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kwargs,shapes", CASES)
def test_forward_and_input_gradients_match_keras(name, kwargs, shapes, dtype):
    k = keras()
    xs = _inputs(shapes, dtype)
    k_layer = getattr(k.layers, name)(dtype=np.dtype(dtype).name, **kwargs)
    c_layer = getattr(CL, name)(dtype=np.dtype(dtype).name, **kwargs)
    tensors = [tf.constant(x) for x in xs]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        expected = k_layer(tensors)
        cot = np.random.default_rng(1).standard_normal(expected.shape).astype(dtype)
        scalar = tf.reduce_sum(expected * cot)
    k_grads = tape.gradient(scalar, tensors)
    got = c_layer(xs)
    assert got.shape == tuple(expected.shape) and got.dtype == dtype
    tol = 2e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, np.asarray(expected), rtol=0, atol=tol)
    out, ctx = c_layer.forward(xs, need_grad=True)
    d_inputs, grads = c_layer.backward(cot, ctx)
    assert grads == []
    for d, kd, x in zip(d_inputs, k_grads, xs):
        assert d.shape == x.shape
        np.testing.assert_allclose(d, np.asarray(kd), rtol=0, atol=tol * 10)
    # the shape a model plans with is the one computed
    assert tuple(c_layer.compute_output_shape([s[1:] for s in shapes])) == got.shape[1:]


MASK_CASES = ["Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
              "Dot"]


@pytest.mark.parametrize("which_masked", ["both", "first"])
@pytest.mark.parametrize("name", MASK_CASES)
def test_masked_inputs_values_and_output_mask_match_keras(name, which_masked):
    k = keras()
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((3, 5, 4)).astype(np.float32) for _ in range(2)]
    xs[0][0, 3:] = 0.0          # masked steps: all features equal to mask_value
    xs[1][1, :2] = 0.0
    xs[1][0, 4:] = 0.0
    masked = [True, which_masked == "both"]
    kwargs = {"axes": (1, 1)} if name == "Dot" else {}
    k_in = [k.layers.Masking()(tf.constant(x)) if m else tf.constant(x)
            for x, m in zip(xs, masked)]
    k_out = getattr(k.layers, name)(**kwargs)(k_in)
    k_mask = getattr(k_out, "_keras_mask", None)
    c_masks = [CL.Masking().compute_mask(x, None) if m else None for x, m in zip(xs, masked)]
    layer = getattr(CL, name)(**kwargs)
    layer.ensure_built([x.shape[1:] for x in xs])
    mask_arg = c_masks if any(m is not None for m in c_masks) else None
    out, ctx = layer.forward(xs, mask=mask_arg, need_grad=True)
    np.testing.assert_allclose(out, np.asarray(k_out), rtol=0, atol=2e-6)
    c_mask = layer.compute_mask(xs, mask_arg)
    if k_mask is None:
        assert c_mask is None
    else:
        np.testing.assert_array_equal(c_mask, np.asarray(k_mask))


@pytest.mark.parametrize("name", ["Multiply", "Maximum", "Minimum"])
def test_masked_input_gradients_match_keras(name):
    k = keras()
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((2, 4, 3)) for _ in range(2)]
    xs[0][0, 2:] = 0.0
    xs[1][1, :1] = 0.0
    tensors = [tf.constant(x) for x in xs]
    cot = rng.standard_normal((2, 4, 3))
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        out = getattr(k.layers, name)(dtype="float64")(
            [k.layers.Masking(dtype="float64")(t) for t in tensors])
        scalar = tf.reduce_sum(out * cot)
    k_grads = tape.gradient(scalar, tensors)
    layer = getattr(CL, name)(dtype="float64")
    masks = [CL.Masking(dtype="float64").compute_mask(x, None) for x in xs]
    _, ctx = layer.forward(xs, mask=masks, need_grad=True)
    d_inputs, _ = layer.backward(cot, ctx)
    for d, kd in zip(d_inputs, k_grads):
        np.testing.assert_allclose(d, np.asarray(kd), rtol=0, atol=1e-12)


def test_functions_call_the_layers_on_arrays_and_on_symbolic_tensors():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    pairs = [(CL.concatenate, np.concatenate([a, b], axis=-1)), (CL.add, a + b),
             (CL.subtract, a - b), (CL.multiply, a * b), (CL.average, (a + b) / 2),
             (CL.maximum, np.maximum(a, b)), (CL.minimum, np.minimum(a, b)),
             (CL.dot, np.sum(a * b, axis=-1, keepdims=True))]
    for fn, expected in pairs:
        np.testing.assert_allclose(fn([a, b], dtype="float64"), expected, rtol=1e-12)
    ta, tb = cgru.Input((3,)), cgru.Input((3,))
    t = CL.concatenate([ta, tb], name="joined")
    assert t.shape == (None, 6) and t.node.layer.name == "joined"
    assert CL.dot([ta, tb], axes=1).shape == (None, 1)


def test_bad_inputs_raise_naming_the_shapes():
    with pytest.raises(ValueError, match="list of inputs"):
        CL.Add()(np.ones((2, 3)))
    with pytest.raises(ValueError, match="exactly 2 inputs"):
        CL.Subtract()([np.ones((2, 3))] * 3)
    with pytest.raises(ValueError, match=r"matching shapes.*\(None, 3, 4\).*\(None, 5, 6\)"):
        CL.Concatenate(axis=1)([np.ones((2, 3, 4)), np.ones((2, 5, 6))])
    with pytest.raises(ValueError, match="incompatible shapes"):
        CL.Add()([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="Incompatible input shapes"):
        CL.Dot(axes=1)([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="axis"):
        CL.Concatenate(axis=0)
    with pytest.raises(ValueError, match="two elements"):
        CL.Dot(axes=(1, 1, 1))


@pytest.mark.parametrize("layer", [CL.Concatenate(axis=1), CL.Dot(axes=(1, 2), normalize=True),
                                   CL.Maximum(name="mx"), CL.Subtract(dtype="float64")])
def test_config_round_trip(layer):
    clone = saving.deserialize(saving.serialize(layer))
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()

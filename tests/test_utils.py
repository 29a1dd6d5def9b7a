"""cgru.utils and cgru.preprocessing against Keras 3's keras.utils, on the same inputs."""
import importlib.machinery
import importlib.util
import itertools
import os
import random
import sys
import warnings

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

import cgru  # noqa: E402
from cgru import utils  # noqa: E402


def same_outcome(cgru_call, keras_call):
    """Both calls return equal arrays (same shape, dtype and values), or raise the same
    exception type; returns that type, or None."""
    try:
        expected = keras_call()
    except Exception as error:          # noqa: BLE001 - any Keras error is the expectation
        with pytest.raises(type(error)):
            cgru_call()
        return type(error)
    got = cgru_call()
    expected = np.asarray(expected)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    return None


# -- pad_sequences -------------------------------------------------------------------------

RAGGED = {
    "ints": [[1], [2, 3], [4, 5, 6]],
    "with_empty": [[], [1, 2, 3, 4], [5], []],
    "floats": [[0.5, 1.5], [2.25], [3.0, 4.0, 5.0, 6.0, 7.5]],
    "arrays": [np.arange(n) + 10 * n for n in (4, 1, 6, 2)],
    "rectangular": np.arange(12).reshape(3, 4),
    "vector_steps": [np.full((2, 3), 1.5), np.full((4, 3), -2.0), np.zeros((0, 3))],
    "tuples": [(9, 8, 7), (6,), ()],
}


@pytest.mark.parametrize("name", sorted(RAGGED))
@pytest.mark.parametrize("dtype", ["int32", "int64", "float32", "float64"])
def test_pad_sequences_matches_keras(name, dtype):
    sequences = RAGGED[name]
    for maxlen, padding, truncating, value in itertools.product(
            [None, 1, 2, 3, 5, 8], ["pre", "post"], ["pre", "post"], [0.0, -1, 7.5]):
        kwargs = dict(maxlen=maxlen, dtype=dtype, padding=padding, truncating=truncating,
                      value=value)
        assert same_outcome(lambda: utils.pad_sequences(sequences, **kwargs),
                            lambda: keras.utils.pad_sequences(sequences, **kwargs)) is None


def test_pad_sequences_defaults_match_keras():
    for sequences in RAGGED.values():
        same_outcome(lambda: utils.pad_sequences(sequences),
                     lambda: keras.utils.pad_sequences(sequences))


@pytest.mark.parametrize("dtype, value", [(object, "<pad>"), ("U5", "-"), ("U5", 0.0)])
def test_pad_sequences_of_strings_match_keras(dtype, value):
    sequences = [["a", "bb"], ["ccc"], [], ["d", "e", "f"]]
    for maxlen, padding, truncating in itertools.product([None, 2, 4], ["pre", "post"],
                                                         ["pre", "post"]):
        kwargs = dict(maxlen=maxlen, dtype=dtype, padding=padding, truncating=truncating,
                      value=value)
        assert same_outcome(lambda: utils.pad_sequences(sequences, **kwargs),
                            lambda: keras.utils.pad_sequences(sequences, **kwargs)) is None


@pytest.mark.parametrize("sequences, maxlen", [([], 3), ([[], []], None), ([[], []], 2)])
def test_pad_sequences_of_empty_input_match_keras(sequences, maxlen):
    assert same_outcome(lambda: utils.pad_sequences(sequences, maxlen=maxlen),
                        lambda: keras.utils.pad_sequences(sequences, maxlen=maxlen)) is None


@pytest.mark.parametrize("args, kwargs", [
    ((5,), {}),                                              # no length
    (("a generator",), {}),                                  # no length
    (([[1], 2],), {}),                                       # a step that is no sequence
    (([[1, 2]],), {"padding": "middle"}),
    (([[1, 2]],), {"truncating": "middle", "maxlen": 1}),
    (([[1]],), {"value": "x"}),                              # a string into int32
    (([[1]],), {"dtype": "not_a_dtype"}),
    (([[1]],), {"maxlen": -1}),
    (([[1]],), {"maxlen": 2.5}),
    (([[1]],), {"maxlen": 2.0}),
    (([np.ones((2, 3)), np.ones((2, 4))],), {}),             # steps of two shapes
    (([],), {}),                                             # nothing to take maxlen from
    (([["a"]],), {"dtype": "int32"}),                        # a string into int32
])
def test_pad_sequences_rejects_what_keras_rejects(args, kwargs):
    def fresh(arguments):                   # a generator can be consumed once only
        return tuple((x for x in [[1]]) if a == "a generator" else a for a in arguments)
    error = same_outcome(lambda: utils.pad_sequences(*fresh(args), **kwargs),
                         lambda: keras.utils.pad_sequences(*fresh(args), **kwargs))
    assert error is not None


def test_pad_sequences_messages_name_the_argument():
    with pytest.raises(ValueError, match="padding"):
        utils.pad_sequences([[1]], padding="middle")
    with pytest.raises(TypeError, match="maxlen"):
        utils.pad_sequences([[1]], maxlen=2.5)
    with pytest.raises(ValueError, match=r"position 1.*\(3,\)"):
        utils.pad_sequences([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="maxlen"):
        utils.pad_sequences([])


def test_pad_sequences_to_length_zero_gives_empty_rows():
    """Keras takes s[-0:] (the whole sequence) and fails; cgru returns (n, 0)."""
    padded = utils.pad_sequences([[1, 2], [3]], maxlen=0)
    assert padded.shape == (2, 0) and padded.dtype == np.int32
    with pytest.raises(ValueError):
        keras.utils.pad_sequences([[1, 2], [3]], maxlen=0)


def test_pad_sequences_is_also_in_preprocessing_sequence():
    from cgru.preprocessing import sequence
    from cgru.preprocessing.sequence import pad_sequences
    assert pad_sequences is utils.pad_sequences is sequence.pad_sequences
    assert cgru.preprocessing.sequence.pad_sequences is utils.pad_sequences
    np.testing.assert_array_equal(
        pad_sequences([[1, 2], [3]], maxlen=3, padding="post"),
        keras.preprocessing.sequence.pad_sequences([[1, 2], [3]], maxlen=3, padding="post"))


# -- to_categorical --------------------------------------------------------------------------

LABELS = {
    "vector": [0, 1, 2, 3, 1],
    "column": [[2], [0], [1]],                  # (n, 1): the 1 is dropped
    "single": [2],                              # (1,): kept
    "matrix": [[0, 1, 2], [2, 1, 0]],
    "column_of_columns": np.array([1, 0, 2]).reshape(3, 1, 1),
    "scalar": 2,
    "floats": [0.0, 2.0, 1.0],
    "bools": [True, False, True],
    "uint8": np.array([3, 0, 1], np.uint8),
    "int16_2d": np.array([[1], [4]], np.int16),
    "digit_strings": ["1", "2", "0"],
}


@pytest.mark.parametrize("name", sorted(LABELS))
@pytest.mark.parametrize("num_classes", [None, 0, 5, 7])
def test_to_categorical_matches_keras(name, num_classes):
    labels = LABELS[name]
    assert same_outcome(lambda: utils.to_categorical(labels, num_classes),
                        lambda: keras.utils.to_categorical(labels, num_classes)) is None


def test_to_categorical_of_nothing_matches_keras():
    for labels in ([], np.zeros((0, 1), int), np.zeros((0, 2), int)):
        assert same_outcome(lambda: utils.to_categorical(labels, num_classes=3),
                            lambda: keras.utils.to_categorical(labels, num_classes=3)) is None


@pytest.mark.parametrize("labels, num_classes", [
    ([0, 5], 3),                    # IndexError: above the range
    ([0, -5], 3),                   # IndexError
    ([], None),                     # ValueError: nothing to infer the classes from
    ([0, 1], -2),                   # ValueError
    ([0, 1], 2.5),                  # TypeError
    ([0, 1], 3.0),                  # TypeError
    (["a", "b"], None),             # ValueError
    ([np.nan], None),               # ValueError
])
def test_to_categorical_rejects_what_keras_rejects(labels, num_classes):
    error = same_outcome(lambda: utils.to_categorical(labels, num_classes),
                         lambda: keras.utils.to_categorical(labels, num_classes))
    assert error is not None


def test_to_categorical_rejects_what_keras_gets_silently_wrong():
    """Keras wraps -1 around to the last class and truncates 1.7 to 1."""
    with pytest.raises(IndexError, match=r"-1 .*0\.\.2"):
        utils.to_categorical([0, -1], 3)
    with pytest.raises(ValueError, match="whole-number"):
        utils.to_categorical([0.5, 1.7])


# -- normalize -----------------------------------------------------------------------------

def arrays_to_normalize():
    rng = np.random.default_rng(3)
    yield rng.standard_normal((4, 5)).astype(np.float32)
    yield rng.standard_normal((3, 4, 6))
    yield rng.integers(-5, 6, (5, 3))
    with_zero_rows = rng.standard_normal((4, 3))
    with_zero_rows[1] = 0
    yield with_zero_rows
    yield np.zeros((0, 4))


@pytest.mark.parametrize("order", [1, 2, 3, np.inf, -np.inf, 0.5])
def test_normalize_matches_keras(order):
    for x in arrays_to_normalize():
        for axis in [-1] + list(range(1, x.ndim)) + [-x.ndim + 1]:
            if x.ndim + axis == 0 and axis < 0:
                continue                        # axis -ndim is axis 0: see the next test
            got = utils.normalize(x, axis=axis, order=order)
            expected = keras.utils.normalize(x, axis=axis, order=order)
            assert got.shape == expected.shape and got.dtype == expected.dtype
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_normalize_along_axis_0_and_of_vectors_matches_keras_tensor_branch(order):
    """Keras's NumPy branch reads axis=0 as -1 and returns a 1-D x as (1, n); its tensor
    branch, keras.ops.normalize, normalizes as asked."""
    x = np.random.default_rng(5).standard_normal((3, 4))
    got = utils.normalize(x, axis=0, order=order)
    np.testing.assert_allclose(got, keras.utils.normalize(x.T, axis=-1, order=order).T,
                               rtol=1e-12)
    np.testing.assert_allclose(
        got, np.asarray(keras.ops.normalize(x, axis=0, order=order)), rtol=1e-12)
    vector = x[0]
    np.testing.assert_allclose(
        utils.normalize(vector, order=order),
        np.asarray(keras.ops.normalize(vector, axis=-1, order=order)), rtol=1e-12)
    assert utils.normalize(vector).shape == vector.shape


def test_normalize_rejects_what_keras_rejects():
    x = np.ones((2, 3))
    for kwargs in [{"axis": 3}, {"axis": -3}, {"order": "fro"}]:
        assert same_outcome(lambda: utils.normalize(x, **kwargs),
                            lambda: keras.utils.normalize(x, **kwargs)) is not None


def test_normalize_says_what_it_lacks():
    with pytest.raises(ValueError, match="axis"):
        utils.normalize(np.ones((2, 3)), axis=None)
    with pytest.raises(ValueError, match="axis"):
        utils.normalize(np.ones((2, 3)), axis=(0, 1))
    with pytest.raises(ValueError, match="scalar"):
        utils.normalize(3.0)


# -- set_random_seed -----------------------------------------------------------------------

def draws():
    return random.random(), np.random.random_sample(4).tolist(), np.random.randint(10**6)


def test_set_random_seed_seeds_python_and_numpy_as_keras_does():
    keras.utils.set_random_seed(1234)
    expected = draws()
    utils.set_random_seed(1234)
    assert draws() == expected
    utils.set_random_seed(99)
    assert draws() != expected


def test_set_random_seed_repeats_the_initial_weights_of_unseeded_layers():
    def weights():
        layer = cgru.GRU(4)
        layer(np.zeros((1, 2, 3), np.float32))
        return layer.get_weights()
    utils.set_random_seed(7)
    first = weights()
    utils.set_random_seed(7)
    for a, b in zip(weights(), first):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(weights()[0], first[0])


@pytest.mark.parametrize("seed", ["7", 7.0, np.int64(3), -1, 2**32])
def test_set_random_seed_rejects_what_keras_rejects(seed):
    state = np.random.get_state()
    with pytest.raises(ValueError):
        keras.utils.set_random_seed(seed)
    with pytest.raises(ValueError, match="seed"):
        utils.set_random_seed(seed)
    np.random.set_state(state)


# -- PyDataset -----------------------------------------------------------------------------

def squares_dataset(base):
    """A dataset class on `base` (cgru's or Keras's PyDataset): batch i is (i, i * i)."""
    class Squares(base):
        def __init__(self, count, **kwargs):
            super().__init__(**kwargs)
            self.count = count
            self.epochs_ended = 0

        def __len__(self):
            return self.count

        def __getitem__(self, index):
            return np.array([index]), np.array([index * index])

        def on_epoch_end(self):
            self.epochs_ended += 1
    return Squares


def endless_dataset(base):
    class Endless(base):
        @property
        def num_batches(self):
            return None

        def __getitem__(self, index):
            return index
    return Endless


@pytest.mark.parametrize("kwargs", [{}, {"workers": 4, "use_multiprocessing": True,
                                          "max_queue_size": 3}])
def test_py_dataset_protocol_matches_keras(kwargs):
    ours = squares_dataset(utils.PyDataset)(5, **kwargs)
    theirs = squares_dataset(keras.utils.PyDataset)(5, **kwargs)
    for name in ("workers", "use_multiprocessing", "max_queue_size", "num_batches"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert len(ours) == len(theirs) == 5
    for (x, y), (kx, ky) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(x, kx)
        np.testing.assert_array_equal(y, ky)
    ours.on_epoch_begin()
    ours.on_epoch_end()
    assert ours.epochs_ended == 1


def test_an_endless_py_dataset_iterates_like_keras():
    ours, theirs = endless_dataset(utils.PyDataset)(), endless_dataset(keras.utils.PyDataset)()
    assert ours.num_batches is None and theirs.num_batches is None
    assert list(itertools.islice(ours, 7)) == list(itertools.islice(theirs, 7)) == list(range(7))


def test_py_dataset_without_batches_raises_as_keras():
    for base in (utils.PyDataset, keras.utils.PyDataset):
        class Bare(base):
            pass
        with pytest.raises(NotImplementedError):
            Bare()[0]
        with pytest.raises(NotImplementedError):
            Bare().num_batches


def test_py_dataset_warns_as_keras_when_super_init_is_not_called():
    for base in (utils.PyDataset, keras.utils.PyDataset):
        class NoSuper(base):
            def __init__(self):
                self.data = [1, 2]
        with pytest.warns(UserWarning, match="super"):
            dataset = NoSuper()
            assert (dataset.workers, dataset.use_multiprocessing, dataset.max_queue_size) == (
                1, False, 10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = NoSuper()
            dataset.max_queue_size = 4
            assert dataset.max_queue_size == 4


def test_sequence_is_py_dataset_as_in_keras():
    assert utils.Sequence is utils.PyDataset
    assert keras.utils.Sequence is keras.utils.PyDataset


@pytest.mark.parametrize("kwargs", [{"workers": -1}, {"workers": 1.5},
                                    {"max_queue_size": 0}, {"use_multiprocessing": "yes"}])
def test_py_dataset_rejects_bad_settings_by_name(kwargs):
    (name,) = kwargs
    with pytest.raises(ValueError, match=name):
        utils.PyDataset(**kwargs)


# -- plot_model ----------------------------------------------------------------------------

REAL_FIND_SPEC = importlib.util.find_spec


def pretend_pydot(monkeypatch, installed):
    """Makes importlib.util.find_spec report pydot as installed or not."""
    def find_spec(name, *args):
        if name == "pydot":
            return importlib.machinery.ModuleSpec(name, None) if installed else None
        return REAL_FIND_SPEC(name, *args)
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_plot_model_raises_import_error_as_keras_does_without_pydot(monkeypatch):
    if REAL_FIND_SPEC("pydot") is None:
        # Keras prints instead of raising inside IPython; outside it raises ImportError.
        monkeypatch.delitem(sys.modules, "IPython.core.magics.namespace", raising=False)
        keras_model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        with pytest.raises(ImportError, match="pydot"):
            keras.utils.plot_model(keras_model)
        with pytest.raises(ImportError, match="pydot"):
            keras.utils.model_to_dot(keras_model)
    pretend_pydot(monkeypatch, installed=False)
    model = cgru.Sequential([cgru.Dense(2)])
    for function in (utils.plot_model, utils.model_to_dot):
        with pytest.raises(ImportError, match=r"pydot.*graphviz.*cgru does not draw models"):
            function(model)


def test_plot_model_raises_not_implemented_when_pydot_is_there(monkeypatch):
    pretend_pydot(monkeypatch, installed=True)
    with pytest.raises(NotImplementedError, match="cgru does not draw models"):
        utils.plot_model(cgru.Sequential([cgru.Dense(2)]), to_file="model.png")

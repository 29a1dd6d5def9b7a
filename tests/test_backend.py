"""cgru.backend: Keras's global settings that cgru has, against keras.backend."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

import cgru  # noqa: E402
from cgru import backend  # noqa: E402


@pytest.fixture(autouse=True)
def restore_settings():
    floatx, epsilon = backend.floatx(), backend.epsilon()
    yield
    backend.set_floatx(floatx)
    backend.set_epsilon(epsilon)


def test_defaults_are_keras_defaults():
    assert backend.floatx() == keras.backend.floatx() == "float32"
    assert backend.epsilon() == keras.backend.epsilon() == 1e-7
    assert backend.image_data_format() == keras.backend.image_data_format() == "channels_last"


@pytest.mark.parametrize("value", ["float64", "float32"])
def test_set_floatx_is_read_back(value):
    backend.set_floatx(value)
    assert backend.floatx() == value


@pytest.mark.parametrize("value", ["int32", np.float32, None, "float"])
def test_set_floatx_rejects_what_keras_rejects(value):
    with pytest.raises(ValueError):
        keras.backend.set_floatx(value)
    with pytest.raises(ValueError, match="float32 and float64"):
        backend.set_floatx(value)
    assert backend.floatx() == "float32"


@pytest.mark.parametrize("value", ["float16", "bfloat16"])
def test_set_floatx_names_what_cgru_supports_for_what_it_lacks(value):
    with pytest.raises(ValueError, match=f"{value}.*float32 and float64"):
        backend.set_floatx(value)


def test_set_epsilon_is_read_back_and_checked():
    backend.set_epsilon(1e-5)
    assert backend.epsilon() == 1e-5
    for bad in (-1.0, float("nan"), "small", None):
        with pytest.raises(ValueError, match="epsilon"):
            backend.set_epsilon(bad)
    assert backend.epsilon() == 1e-5


def test_set_image_data_format_takes_channels_last_only():
    backend.set_image_data_format("channels_last")
    with pytest.raises(ValueError, match="channels_last"):
        backend.set_image_data_format("channels_first")
    with pytest.raises(ValueError):
        keras.backend.set_image_data_format("channels_middle")
    with pytest.raises(ValueError, match="channels_last"):
        backend.set_image_data_format("channels_middle")


def test_clear_session_restarts_layer_names_as_keras_does():
    names = [cgru.GRU(2).name, cgru.GRU(2).name, cgru.Dense(1).name]
    backend.clear_session()
    assert [cgru.GRU(2).name, cgru.GRU(2).name, cgru.Dense(1).name] == ["gru", "gru_1", "dense"]
    assert names[1] != "gru"
    keras.backend.clear_session()
    assert [keras.layers.GRU(2).name, keras.layers.GRU(2).name] == ["gru", "gru_1"]


def test_clear_session_can_leave_memory_alone():
    from cgru._pool import POOL
    cgru.GRU(2)
    kept = POOL.empty((1 << 20,), np.float32)
    del kept
    idle = POOL.idle_bytes
    backend.clear_session(free_memory=False)
    assert cgru.GRU(2).name == "gru"
    assert POOL.idle_bytes == idle
    backend.clear_session()
    assert POOL.idle_bytes == 0


def test_importing_backend_does_not_import_the_layers():
    import subprocess
    import sys
    code = ("import sys, importlib.util, os\n"
            "spec = importlib.util.spec_from_file_location('backend_alone', "
            "os.path.join('cgru', 'backend.py'))\n"
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
            "print('cgru.layers' in sys.modules)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "False"

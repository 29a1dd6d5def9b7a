"""`python -m cgru`: help, info, the training run, and the data set it trains on."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import cgru

EPOCHS = 3


def run_cgru(*args, code=None, timeout=300):
    """Run ``python -m cgru ARGS`` (or ``python -c CODE ARGS``) on the cgru under test."""
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(cgru.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_parent, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "cgru"]
    # Run from the folder holding that cgru: `-m` and `-c` put the working directory first
    # on sys.path, and a source tree there would shadow an installed cgru.
    return subprocess.run(command + list(args), env=env, cwd=package_parent,
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------ data set

def test_japanese_vowels_matches_its_description():
    from cgru.datasets import load_japanese_vowels
    (x_train, y_train, len_train), (x_test, y_test, len_test) = load_japanese_vowels(
        return_lengths=True)
    assert x_train.shape == (270, 29, 12) and x_test.shape == (370, 29, 12)
    assert x_train.dtype == np.float32
    # 30 utterances per speaker for training; the test counts of the UCI description.
    assert np.bincount(y_train).tolist() == [30] * 9
    assert np.bincount(y_test).tolist() == [31, 35, 88, 44, 29, 24, 40, 50, 29]
    lengths = np.concatenate([len_train, len_test])
    assert lengths.min() == 7 and lengths.max() == 29
    for x, n in ((x_train, len_train), (x_test, len_test)):
        past_the_end = np.arange(29)[None, :] >= n[:, None]
        assert not x[past_the_end].any()
        assert np.all(np.abs(x[np.arange(len(x)), n - 1]).sum(axis=1) > 0)  # last frame


def test_front_padding_moves_the_frames_to_the_end():
    from cgru.datasets import load_japanese_vowels
    (post, _, n), _ = load_japanese_vowels(return_lengths=True)
    (pre, _), _ = load_japanese_vowels(padding="pre")
    for i in (0, 1, 100, 269):
        np.testing.assert_array_equal(pre[i, 29 - n[i]:], post[i, :n[i]])
        assert not pre[i, :29 - n[i]].any()
    with pytest.raises(ValueError, match="padding"):
        load_japanese_vowels(padding="middle")


# ----------------------------------------------------------------------- commands

def test_help_explains_the_commands():
    result = run_cgru("--help")
    assert result.returncode == 0, result.stderr
    for text in ("info", "--epochs", "--units", "--seed", "--save", "--plot",
                 "Japanese Vowels", "matplotlib"):
        assert text in result.stdout


def test_bad_option_is_refused():
    result = run_cgru("--epochs", "0")
    assert result.returncode == 2
    assert "--epochs" in result.stderr


def test_info():
    result = run_cgru("info")
    assert result.returncode == 0, result.stderr
    fields = dict(re.findall(r"^(\S[^:]*):\s+(.*)$", result.stdout, re.MULTILINE))
    assert fields["cgru"] == cgru.__version__
    assert re.search(r"\d+ threads|threads: ", fields["BLAS"]), fields["BLAS"]
    try:
        from cgru._native import _loops as _gru
    except ImportError:
        assert fields["debug checks"] == "n/a"
    else:
        expected = {True: "yes", False: "no", None: "unknown"}[
            getattr(_gru, "DEBUG_CHECKS", None)]
        assert fields["debug checks"].split()[0] == expected


def test_info_without_threadpoolctl():
    hide = ("import runpy, sys; sys.modules['threadpoolctl'] = None; "
            "sys.argv[0] = 'cgru'; runpy.run_module('cgru', run_name='__main__')")
    result = run_cgru("info", code=hide)
    assert result.returncode == 0, result.stderr
    blas = re.search(r"^BLAS:\s+(.*)$", result.stdout, re.MULTILINE).group(1)
    assert "threads: " in blas and "threadpoolctl" in blas


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path):
    hide_matplotlib = ("import runpy, sys; sys.modules['matplotlib'] = None; "
                       "sys.argv[0] = 'cgru'; runpy.run_module('cgru', run_name='__main__')")
    png = tmp_path / "history.png"
    result = run_cgru("--epochs", "1", "--plot", str(png), code=hide_matplotlib)
    assert result.returncode == 2
    assert "matplotlib" in result.stderr and "pip install" in result.stderr
    assert "Epoch" not in result.stdout  # refused before training, not after
    assert not png.exists()


def test_short_training_run_saves_and_plots(tmp_path):
    model_path = tmp_path / "vowels.cgru"
    png = tmp_path / "history.png"
    args = ["--epochs", str(EPOCHS), "--units", "32", "--seed", "1", "--save", str(model_path)]
    has_matplotlib = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        has_matplotlib = False
    if has_matplotlib:
        args += ["--plot", str(png)]
    result = run_cgru(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout

    assert f"Epoch {EPOCHS}/{EPOCHS}" in out and f"Epoch {EPOCHS + 1}/" not in out
    accuracy = float(re.search(r"^Test accuracy: (\d+\.\d)%", out, re.MULTILINE).group(1))
    published = float(re.search(r"^Published: +(\d+\.\d)%", out, re.MULTILINE).group(1))
    assert published == 94.1
    # Better than always naming the test split's most frequent speaker (88 of 370).
    assert 100 * 88 / 370 < accuracy <= 100

    # The saved file restores a model that scores what was printed.
    from cgru.cli import load_data
    _, (x_test, y_test) = load_data()
    loaded = cgru.load_model(str(model_path))
    loss, reloaded_accuracy = loaded.evaluate(x_test, y_test, verbose=0)
    assert abs(100 * reloaded_accuracy - accuracy) <= 0.05 + 1e-9
    probabilities = loaded.predict(x_test[:4])
    assert probabilities.shape == (4, 9)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)

    if has_matplotlib:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 10_000

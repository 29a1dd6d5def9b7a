"""Smoke tests: every script in examples/ runs to the end and prints what it promises."""
import os
import re
import subprocess
import sys

import pytest

import cgru

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def run_example(name, timeout=300):
    # The example must import the same cgru as this test process does.
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(cgru.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_parent, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, name)], env=env,
                          cwd=package_parent, capture_output=True, text=True,
                          timeout=timeout)


def test_seed_example():
    result = run_example("seed_example.py")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "GRU output shape: (1, 10, 32)" in out
    # The Keras-style progress: one header per epoch, 32 batches of 32 for 1000 samples.
    for epoch in range(1, 11):
        assert f"Epoch {epoch}/10" in out
    assert "Epoch 11/10" not in out
    assert "32/32" in out
    assert re.search(r"loss: \d+\.\d+", out)
    assert re.search(r"accuracy: \d+\.\d+", out)
    assert "epochs trained: 10" in out
    assert "predictions shape: (5, 1)" in out


def test_from_pytorch():
    pytest.importorskip("torch")
    result = run_example("from_pytorch.py")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "whole sequences:    y (25, 8, 32), h_n (8, 32)" in out
    assert "variable lengths:   y (25, 8, 32), h_n (8, 32)" in out
    diffs = [float(v) for v in re.findall(r"largest difference:? (\S+)", out)]
    assert len(diffs) == 3
    assert all(0 <= d < 1e-5 for d in diffs), diffs

"""cgru.distributed: data-parallel training and inference over MPI.

The MPI tests launch ``mpiexec -n 2 python -m mpi4py tests/_mpi_worker.py`` (the ranks talk
on this machine) and compare what every rank ends with against references computed here in
one process: plain ``fit`` on the same global batches (within 1e-6), and one process that
sums the gradients of the same two shards in rank order (bit for bit). They skip when mpi4py
is not installed (``pip install ".[mpi]"``).
"""
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import cgru
from cgru.distributed import MPIStrategy, _ShareOfGlobalDraws, share

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _mpi_worker as worker  # noqa: E402


# -- without MPI ---------------------------------------------------------------------------
@pytest.mark.parametrize("n, size", [(8, 2), (5, 2), (37, 3), (2, 4), (1, 3), (0, 2)])
def test_shares_are_contiguous_cover_every_row_and_differ_by_at_most_one(n, size):
    bounds = [share(n, r, size) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    for (a, b), (c, d) in zip(bounds, bounds[1:]):
        assert b == c
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_a_share_draws_the_rows_of_the_global_batch_draws():
    def fresh():
        return np.random.default_rng(7)
    whole = fresh()
    expected = [whole.random((6, 4)), whole.normal(0.0, 2.0, (6 * 3, 2)),
                whole.random((6, 1, 5))]
    for start, stop in [(0, 3), (3, 6), (2, 5)]:
        part = _ShareOfGlobalDraws(fresh(), 6, start, stop)
        rows = stop - start
        got = [part.random((rows, 4)), part.normal(0.0, 2.0, (rows * 3, 2)),
               part.random((rows, 1, 5))]
        np.testing.assert_array_equal(got[0], expected[0][start:stop])
        np.testing.assert_array_equal(got[1], expected[1][start * 3:stop * 3])
        np.testing.assert_array_equal(got[2], expected[2][start:stop])
    with pytest.raises(NotImplementedError, match="multiple"):
        _ShareOfGlobalDraws(fresh(), 6, 0, 4).random((3, 2))
    with pytest.raises(NotImplementedError, match="permutation"):
        _ShareOfGlobalDraws(fresh(), 6, 0, 3).permutation(3)


def test_strategy_refuses_losses_a_share_cannot_divide():
    strategy = MPIStrategy()
    model = worker.make_model()
    model.compile(optimizer="sgd", loss=cgru.losses.SparseCategoricalCrossentropy(
        reduction="sum"))
    with pytest.raises(NotImplementedError, match="reduction"):
        strategy._check_model(model, "fit")
    with pytest.raises(ValueError, match="predict_on"):
        MPIStrategy(predict_on="rank0")


def test_one_process_strategy_is_plain_training():
    """Without mpiexec (with or without mpi4py) the strategy has size 1 and changes
    nothing."""
    strategy = MPIStrategy()
    assert (strategy.rank, strategy.size) == (0, 1)
    x, y, x_val, y_val = worker.make_data()
    results = []
    for distribute in (None, strategy):
        model = worker.make_model()
        history = model.fit(x, y, batch_size=worker.BATCH, epochs=2, verbose=0,
                            validation_data=(x_val, y_val), distribute=distribute)
        results.append((model.get_weights(), history.history,
                        model.predict(x_val, distribute=distribute)))
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_array_equal(a, b)
    assert results[0][1] == results[1][1]
    np.testing.assert_array_equal(results[0][2], results[1][2])


# -- under mpiexec -n 2 --------------------------------------------------------------------
def _mpiexec():
    pytest.importorskip("mpi4py")
    search = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    path = shutil.which("mpiexec", path=search)
    assert path, "mpi4py is installed but no mpiexec was found: pip install mpich"
    return path


def _launch(scenario, out_dir, optimizer="adam", timeout=120, ranks=2):
    """Runs the scenario on ``ranks`` ranks; returns (completed process, seconds)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(cgru.__file__)),
                                           HERE, os.environ.get("PYTHONPATH", "")]))
    command = [_mpiexec(), "-n", str(ranks), "-prepend-rank", sys.executable, "-m", "mpi4py",
               os.path.join(HERE, "_mpi_worker.py"), scenario, str(out_dir), optimizer]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    return done, time.perf_counter() - start


def _results(scenario, out_dir, optimizer="adam", ranks=2):
    done, _ = _launch(scenario, out_dir, optimizer, ranks=ranks)
    assert done.returncode == 0, done.stdout + done.stderr
    return done, [dict(np.load(os.path.join(out_dir, f"{scenario}-rank{r}.npz")))
                  for r in range(ranks)]


def _weights(result):
    return [result[f"w{i}"] for i in range(sum(k.startswith("w") for k in result))]


def _train_summing_shards(optimizer, epochs):
    """One process: per global batch, the gradients of its two halves (the first takes the
    odd row), each scaled by its share of the rows, summed in rank order, one update."""
    x, y, _, _ = worker.make_data()
    model = worker.make_model(optimizer, dropout=0.0)
    x = model._prepare_x(x)
    y = model._prepare_y(y, x.shape)
    variables = model._trainable_variables()
    params = [v.array for v in variables]
    for _ in range(epochs):
        order = model._shuffle_rng.permutation(len(x))
        for step in range(math.ceil(len(x) / worker.BATCH)):
            rows = order[step * worker.BATCH:(step + 1) * worker.BATCH]
            xb, yb = x[rows], y[rows]
            n = len(xb)
            half = (n + 1) // 2
            summed = None
            for a, b in [(0, half), (half, n)]:
                y_pred, ctxs = model._forward(xb[a:b], training=True, need_grad=True)
                grads = model._backward(yb[a:b], y_pred, ctxs, variables)
                scaled = [g * g.dtype.type((b - a) / n) for g in grads]
                summed = scaled if summed is None else [s + g for s, g in zip(summed, scaled)]
            model.optimizer.apply(params, summed)
    return model.get_weights()


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_two_ranks_equal_one_process_summing_the_two_shards_bit_for_bit(tmp_path, optimizer):
    _, ranks = _results("bitwise", tmp_path, optimizer)
    expected = _train_summing_shards(optimizer, epochs=2)
    for result in ranks:
        assert int(result["size"]) == 2
        for got, want in zip(_weights(result), expected):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_two_ranks_train_as_one_process_on_the_global_batch(tmp_path, optimizer):
    """Uneven last batch (37 = 4 x 8 + 5), dropout (GRU input dropout and a Dropout layer),
    validation, EarlyStopping and a best-only checkpoint: within 1e-6 of plain fit."""
    mpi_dir, one_dir = tmp_path / "mpi", tmp_path / "one"
    mpi_dir.mkdir()
    one_dir.mkdir()
    done, ranks = _results("fit", mpi_dir, optimizer)
    x, y, x_val, y_val = worker.make_data()
    model = worker.make_model(optimizer)
    history = model.fit(x, y, batch_size=worker.BATCH, epochs=worker.EPOCHS,
                        validation_data=(x_val, y_val),
                        callbacks=worker.fit_callbacks(str(one_dir)), verbose=0)
    epochs = len(history.history["loss"])
    assert 1 < epochs < worker.EPOCHS          # EarlyStopping stopped the run
    for result in ranks:
        for got, want in zip(_weights(result), model.get_weights()):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        for key, values in history.history.items():
            np.testing.assert_allclose(result["history_" + key], values, rtol=0, atol=1e-6)
        np.testing.assert_allclose(result["evaluate"], model.evaluate(
            x_val, y_val, batch_size=4), rtol=0, atol=1e-6)
        np.testing.assert_allclose(result["predict"], model.predict(x_val, batch_size=4),
                                   rtol=0, atol=1e-6)
    for a, b in zip(_weights(ranks[0]), _weights(ranks[1])):
        np.testing.assert_array_equal(a, b)     # every rank holds the same weights
    # the checkpoint (written by rank 0) holds the same best model as one process's
    best = cgru.load_model(str(mpi_dir / "best.npz"))
    for got, want in zip(best.get_weights(),
                         cgru.load_model(str(one_dir / "best.npz")).get_weights()):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # only rank 0 printed (mpiexec -prepend-rank labels each line with its rank)
    lines = done.stdout.splitlines()
    assert any(line.startswith("[0]") and "val_loss" in line for line in lines)
    assert not any(line.startswith("[1]") for line in lines), done.stdout
    # predict_on="root": the array on rank 0, None elsewhere
    assert not ranks[0]["predict_root_is_none"] and ranks[1]["predict_root_is_none"]
    np.testing.assert_array_equal(ranks[0]["predict_root"], ranks[0]["predict"])


def test_a_failing_rank_ends_the_job_within_seconds(tmp_path):
    done, seconds = _launch("fail", tmp_path, timeout=60)
    assert done.returncode != 0
    assert "rank 1 fails on purpose" in done.stderr
    assert seconds < 30, f"the job took {seconds:.1f} s to end"


def test_different_shapes_on_different_ranks_are_a_clear_error_on_every_rank(tmp_path):
    _, ranks = _results("shapes", tmp_path)
    for result in ranks:
        message = str(result["error"])
        assert "different arguments" in message and "x" in message
        assert "(37, 5, 3)" in message and "(36, 5, 3)" in message


def test_without_mpi4py_and_without_a_launcher_the_strategy_is_one_process(monkeypatch):
    import cgru.distributed as distributed
    monkeypatch.setattr(distributed, "_import_mpi", lambda: None)
    strategy = distributed.MPIStrategy()
    assert (strategy.rank, strategy.size, strategy.local_size) == (0, 1, 1)
    model = worker.make_model(dropout=0.0)
    x, y, _, _ = worker.make_data()
    assert model.predict(x, distribute=strategy).shape == (len(x), 3)


def test_without_mpi4py_under_a_launcher_the_error_says_what_to_install(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_mpi4py(name, *args, **kwargs):
        if name.startswith("mpi4py"):
            raise ImportError("No module named 'mpi4py'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_mpi4py)
    monkeypatch.setenv("PMI_SIZE", "4")
    with pytest.raises(ImportError, match=r"cgru\[mpi\]"):
        MPIStrategy()


def test_ranks_on_a_node_are_counted_and_oversubscription_warns(tmp_path):
    _, ranks = _results("threads", tmp_path)
    for result in ranks:
        assert int(result["local_size"]) == 2           # both ranks run on this machine
        assert int(result["threads"]) == int(result["cores"])
        assert "2 ranks on this node" in str(result["warning"])


def test_the_readme_example_runs_on_two_ranks(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(cgru.__file__)),
                                           os.environ.get("PYTHONPATH", "")]))
    script = os.path.join(os.path.dirname(HERE), "examples", "train_mpi.py")
    done = subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", script],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("2 ranks: validation accuracy") == 1
    assert (tmp_path / "best.npz").exists()


def test_a_dataset_of_global_batches_and_a_non_finite_loss_on_one_share(tmp_path):
    _, ranks = _results("more", tmp_path)
    x, y, _, _ = worker.make_data()
    model = worker.make_model()
    model.fit(worker.Batches(x, y), epochs=2, verbose=0)
    expected = np.concatenate([w.ravel() for w in model.get_weights()])
    for result in ranks:
        np.testing.assert_allclose(result["dataset_weights"], expected, rtol=0, atol=1e-6)
        # one process stops after the first batch, with its epoch's loss not finite
        loss = result["nan_loss"]
        assert loss.shape == (1,) and not np.isfinite(loss[0])
    np.testing.assert_array_equal(ranks[0]["dataset_weights"], ranks[1]["dataset_weights"])


def test_ranks_without_rows_in_a_step_keep_training_as_one_process(tmp_path):
    """3 ranks, a last batch of one row: two ranks draw nothing and then take rank 0's
    dropout generators; dropout masks and weights stay those of one process."""
    _, ranks = _results("tiny", tmp_path, ranks=3)
    x, y, _, _ = worker.make_data()
    model = worker.make_model()
    model.fit(x[:9], y[:9], batch_size=4, epochs=3, verbose=0)
    for result in ranks:
        assert int(result["size"]) == 3
        for got, want in zip(_weights(result), model.get_weights()):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        for got, want in zip(_weights(result), _weights(ranks[0])):
            np.testing.assert_array_equal(got, want)


def _train_two_input_model_summing_shards(optimizer, epochs):
    """One process, for the two-input, two-output functional model: per global batch, the
    engine's loss gradients of its two halves (every input, target and sample weight cut
    alike), each scaled by its share of the rows, summed in rank order, one update."""
    x, y, sw = worker.make_two_input_data()
    model = worker.make_two_input_model(optimizer)
    xs = model._prepare_inputs(x)
    ys = model._prepare_targets(y, xs)
    sws = model._prepare_sample_weights(sw, ys)
    variables = model._trainable_variables()
    n_all = len(xs[0])
    losses = []
    for _ in range(epochs):
        order = model._shuffle_rng.permutation(n_all)
        total = 0.0
        for step in range(math.ceil(n_all / worker.BATCH)):
            rows = order[step * worker.BATCH:(step + 1) * worker.BATCH]
            xb, yb, swb = ([a[rows] for a in xs], [a[rows] for a in ys],
                           [a[rows] for a in sws])
            n = len(rows)
            half = (n + 1) // 2
            summed = None
            for a, b in [(0, half), (half, n)]:
                part = slice(a, b)
                xp, yp, swp = ([v[part] for v in xb], [v[part] for v in yb],
                               [v[part] for v in swb])
                ys_pred, trace = model._run_graph(xp, training=True, need_grad=True)
                loss, _ = model._compute_loss(yp, ys_pred, swp, trace, variables)
                total += loss * (b - a)
                grads = model._compute_gradients(yp, ys_pred, trace, variables, swp)
                scaled = [g * g.dtype.type((b - a) / n) for g in grads]
                summed = scaled if summed is None else [s + g for s, g in zip(summed, scaled)]
            model._apply_gradients(variables, summed)
        losses.append(total / n_all)
    return model, losses


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_two_input_functional_model_on_two_ranks_equals_one_process_summing_the_shards(
        tmp_path, optimizer):
    """Inputs as a dict, two outputs with loss_weights, metrics, weighted metrics and sample
    weights: the weights bit for bit those of one process summing the two shards; History,
    evaluate and predict within 1e-6 of plain fit, evaluate and predict in one process."""
    _, ranks = _results("two_inputs", tmp_path, optimizer)
    reference, shard_losses = _train_two_input_model_summing_shards(optimizer, epochs=2)
    x, y, sw = worker.make_two_input_data()
    model = worker.make_two_input_model(optimizer)
    history = model.fit(x, y, sample_weight=sw, batch_size=worker.BATCH, epochs=2, verbose=0)
    assert {"loss", "classes_loss", "values_loss", "classes_accuracy",
            "values_mae"} <= set(history.history)
    for result in ranks:
        assert int(result["size"]) == 2
        for got, want in zip(_weights(result), reference.get_weights()):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(result["history_loss"], shard_losses, rtol=0, atol=1e-6)
        for got, want in zip(_weights(result), model.get_weights()):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        for key, values in history.history.items():
            np.testing.assert_allclose(result["history_" + key], values, rtol=0, atol=1e-6)
        np.testing.assert_allclose(result["evaluate"], model.evaluate(
            x, y, sample_weight=sw, batch_size=4), rtol=0, atol=1e-6)
        for i, want in enumerate(model.predict(x, batch_size=4)):
            np.testing.assert_allclose(result[f"predict{i}"], want, rtol=0, atol=1e-6)
    for a, b in zip(_weights(ranks[0]), _weights(ranks[1])):
        np.testing.assert_array_equal(a, b)

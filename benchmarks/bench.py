#!/usr/bin/env python
"""Time cgru against torch.nn.GRU, Keras 3's GRU (TensorFlow) and the GEMM floor, on the CPU.

    python benchmarks/bench.py                 # everything (several minutes)
    python benchmarks/bench.py --quick         # a reduced set, a couple of minutes
    python benchmarks/bench.py --threads 1 --cases medium,large --modes train --json out.json

Each system runs in its own worker process, with float32 data and the same thread count
(environment variables set before the libraries load, plus the libraries' own settings and
threadpoolctl when installed). The parent first checks that every system computes the same
numbers on the same weights (printing the largest differences; a system that disagrees is not
timed on that case), then for each mode and case warms every worker up and asks them in turn,
in a rotating order with a pause between requests (OpenBLAS threads keep spinning for about
0.1 s after a call), for one timed repetition each. Reported: the median and the minimum over
the repetitions of the time per call (per step for the stream case, per fit for fit-seed).

Systems:
  floor  only the matrix products an ideal GRU must do (benchmarks/_floor.pyx), from a compiled loop
         with the GIL released, through scipy.linalg.cython_blas, the BLAS cgru uses;
  cgru   the functional kernels (cgru.gru_forward / cgru.gru_backward) and, for fit-seed,
         the Keras-style models (cgru.Sequential, cgru.GRU, cgru.Dense);
  torch  torch.nn.GRU (time-major) and an idiomatic PyTorch training loop;
  keras  keras.layers.GRU on TensorFlow, called through tf.function, and model.fit.

Variants: a system name may carry a GRU activation pair, `cgru+relu/hard_sigmoid`,
`keras+gelu/silu` (activation/recurrent_activation, Keras's names): that system's GRU computes
them (cgru's functional kernels and GRUCell, Keras's GRU layer). A variant is checked against
the Keras variant of the same pair when it runs (torch's GRU is tanh/sigmoid only), and the
table adds its time over the plain system's: the option's cost.

    python benchmarks/bench.py --cases medium --modes infer,train --systems \
        cgru,cgru+relu/hard_sigmoid,cgru+gelu/silu,keras,keras+relu/hard_sigmoid,keras+gelu/silu

Modes: infer (forward only, no gradient state), train (forward and backward of the scalar loss
sum(y * gy) + sum(h_n * gh), with fixed random cotangents, with respect to the input, the initial
state and every weight), fit-seed (the seed example end to end: GRU(32) on (10, 20) inputs +
Dense(1, sigmoid), binary crossentropy, Adam, 100 samples, 10 epochs, batch 32, timed after one
warm-up fit).

Memory (train mode): the growth of the worker's peak resident set size during one train step,
over its resident size just before it (Linux: /proc/self/clear_refs resets the peak, VmHWM is
read after the step while its results are still alive). Freed memory is handed back to the
system first (gc, malloc_trim), so the step's arrays, cache, gradients and temporaries are all
counted; inputs and weights, allocated beforehand, are not. cgru's pool of reused arrays is
emptied first, so its step is counted in full; memory that another library keeps in its own
pool from earlier calls and reuses is not counted.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# (T, B, I, H)
CASES = {
    "seed": (10, 32, 20, 32),
    "small": (50, 32, 64, 128),
    "medium": (100, 64, 128, 256),
    "large": (100, 64, 256, 512),
    "long": (1000, 16, 32, 64),
    "stream": (1000, 1, 32, 128),
}
SYSTEMS = ("floor", "cgru", "cgru-base", "torch", "keras")
MODES = ("infer", "train", "fit-seed")
QUICK_CASES = ("seed", "medium", "long", "stream")
FIT = dict(samples=100, timesteps=10, features=20, units=32, epochs=10, batch_size=32)
STREAM_CHECK_STEPS = 50
TOLERANCE = 2e-3     # largest difference allowed, relative to max(1, largest reference value)


class Unavailable(Exception):
    """A system cannot run this case or mode; the message says why."""


def split_system(name):
    """'cgru+relu/hard_sigmoid' -> ('cgru', ('relu', 'hard_sigmoid')); 'cgru' -> ('cgru', None)."""
    base, _, pair = name.partition("+")
    return base, (tuple(pair.split("/", 1)) if pair else None)


def activation_kwargs(system):
    """The GRU keyword arguments of a system's activation pair ({} for the plain system)."""
    pair = getattr(system, "activations", None)
    if pair is None:
        return {}
    if len(pair) != 2:
        raise Unavailable(f"activation pair {'/'.join(pair)!r} is not activation/recurrent")
    return dict(activation=pair[0], recurrent_activation=pair[1])


# --------------------------------------------------------------------------------------------
# data shared by every worker (generated, not sent, so that all see the same numbers)

def case_data(case, dtype="float32"):
    import numpy as np
    T, B, I, H = CASES[case]
    rng = np.random.default_rng([2024, T, B, I, H])
    k = 1.0 / np.sqrt(H)

    def u(*shape):
        return rng.uniform(-k, k, shape).astype(dtype)

    def n(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    return dict(w_ih=u(3 * H, I), w_hh=u(3 * H, H), b_ih=u(3 * H), b_hh=u(3 * H),
                x=n(T, B, I), h0=n(B, H, scale=0.5), dy=n(T, B, H), dh=n(B, H))


def fit_data():
    import numpy as np
    rng = np.random.default_rng(7)
    x = rng.random((FIT["samples"], FIT["timesteps"], FIT["features"])).astype("float32")
    y = (rng.random((FIT["samples"], 1)) > 0.5).astype("float32")
    units, feat = FIT["units"], FIT["features"]
    k1, k2 = np.sqrt(6 / (feat + 3 * units)), np.sqrt(6 / (units + 1))
    # Keras layout: GRU kernel, recurrent_kernel, bias (2, 3H); Dense kernel, bias
    q, _ = np.linalg.qr(rng.standard_normal((3 * units, units)))
    weights = [rng.uniform(-k1, k1, (feat, 3 * units)).astype("float32"),
               np.ascontiguousarray(q.T).astype("float32"),
               np.zeros((2, 3 * units), "float32"),
               rng.uniform(-k2, k2, (units, 1)).astype("float32"),
               np.zeros((1,), "float32")]
    return x, y, weights


def torch_to_keras_gates(a, H, axis=0):
    """PyTorch gate order (r, z, n) to Keras (z, r, h) along ``axis``; the inverse is the same."""
    import numpy as np
    r, z, n = np.split(a, [H, 2 * H], axis=axis)
    return np.concatenate([z, r, n], axis=axis)


def torch_to_keras(w_ih, w_hh, b_ih, b_hh):
    H = w_hh.shape[1]
    import numpy as np
    return [torch_to_keras_gates(w_ih, H).T.copy(), torch_to_keras_gates(w_hh, H).T.copy(),
            np.stack([torch_to_keras_gates(b_ih, H), torch_to_keras_gates(b_hh, H)])]


def keras_to_torch(kernel, recurrent_kernel, bias):
    H = recurrent_kernel.shape[0]
    return (torch_to_keras_gates(kernel.T, H), torch_to_keras_gates(recurrent_kernel.T, H),
            torch_to_keras_gates(bias[0], H), torch_to_keras_gates(bias[1], H))


# --------------------------------------------------------------------------------------------
# systems (run inside a worker). Each returns a callable for a (case, mode), or raises
# Unavailable; check() returns the forward outputs and gradients in PyTorch's layout.

class KerasStyleFit:
    """fit-seed for the systems with Keras's API (cgru and Keras): `_model()` builds the seed
    model, compiled."""

    def _fit_runner(self):
        model = self._model()
        x, y, _ = fit_data()
        return lambda: model.fit(x, y, epochs=FIT["epochs"], batch_size=FIT["batch_size"],
                                 verbose=0)

    def fit_check(self):
        model = self._model()
        x, y, weights = fit_data()
        model.set_weights(weights)
        h = model.fit(x, y, epochs=FIT["epochs"], batch_size=FIT["batch_size"], verbose=0,
                      shuffle=False)
        return {"loss": [float(v) for v in h.history["loss"]]}


class FloorSystem:
    name = "floor"

    def __init__(self, threads):
        try:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import build_floor
            self.mod = build_floor.load()        # compiled on first use
        except Exception as e:
            raise Unavailable(f"the GEMM floor (benchmarks/_floor.pyx) cannot be built ({e}); "
                              "run `python benchmarks/build_floor.py`")

    def versions(self):
        import scipy
        return {"scipy": scipy.__version__}

    def runner(self, case, mode):
        if mode == "fit-seed":
            raise Unavailable("no floor for an end-to-end fit")
        f = self.mod.GRUFloor(*CASES[case])
        if case == "stream":
            return lambda: f.stream(1)
        return (lambda: f.forward(1)) if mode == "infer" else (lambda: f.train(1))

    def check(self, case):
        raise Unavailable("GEMMs only, no GRU math (its products are checked by "
                          "tests/test_floor.py)")


class CgruSystem(KerasStyleFit):
    name = "cgru"

    def __init__(self, threads):
        try:
            import cgru
        except ImportError as e:
            raise Unavailable(f"cgru is not importable ({e})")
        self.cgru = cgru
        fwd = getattr(cgru, "gru_forward", None)
        bwd = getattr(cgru, "gru_backward", None)
        if fwd is None or bwd is None:
            try:
                from cgru import functional
                fwd, bwd = functional.gru_forward, functional.gru_backward
            except (ImportError, AttributeError):
                fwd = bwd = None
        if os.environ.get("CGRU_BENCH_REFERENCE") == "1":     # harness self-test only
            from cgru import _reference
            fwd, bwd = _reference.gru_forward, _reference.gru_backward
        self.fwd, self.bwd = fwd, bwd

    def release(self):
        """Lets go of cgru's pool of reused arrays, so that the memory figure counts them."""
        pool = getattr(getattr(self.cgru, "functional", None), "POOL", None)
        if pool is not None:
            pool.clear()

    def versions(self):
        return {"cgru": getattr(self.cgru, "__version__", "?"),
                "cgru_path": os.path.dirname(getattr(self.cgru, "__file__", "") or "")}

    def _need_kernels(self):
        if self.fwd is None:
            raise Unavailable("cgru kernels not available (cgru.gru_forward/gru_backward)")

    def runner(self, case, mode):
        self.variant = None
        if mode == "fit-seed":
            if activation_kwargs(self):
                raise Unavailable("fit-seed runs the plain seed model")
            return self._fit_runner()
        self._need_kernels()
        d = case_data(case)
        fwd, bwd = self.fwd, self.bwd
        w = (d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"])
        kw = activation_kwargs(self)
        if case == "stream":
            return self._stepper(d)
        x, h0, dy, dh = d["x"], d["h0"], d["dy"], d["dh"]
        if mode == "infer":
            return lambda: fwd(x, h0, *w, training=False, **kw)

        def train():
            y, h_n, cache = fwd(x, h0, *w, training=True, **kw)
            return bwd(dy, dh, cache)
        return train

    def _stepper(self, d):
        """1000 single steps carrying h: cgru.functional.GRUCell (weights prepared once) when
        this cgru has it, else gru_forward on T = 1."""
        w = (d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"])
        h0 = d["h0"]
        cell_cls = getattr(getattr(self.cgru, "functional", None), "GRUCell", None)
        if cell_cls is not None:
            self.variant = "GRUCell"
            cell = cell_cls(*w, **activation_kwargs(self))
            xs = [d["x"][t] for t in range(d["x"].shape[0])]

            def stream():
                h = h0
                for xt in xs:
                    h = cell(xt, h)
                return h
            return stream
        self.variant = "gru_forward T=1"
        if activation_kwargs(self):
            raise Unavailable("this cgru has no GRUCell for the activation pair")
        fwd = self.fwd
        xs = [d["x"][t:t + 1] for t in range(d["x"].shape[0])]

        def stream():
            h = h0
            for xt in xs:
                _, h, _ = fwd(xt, h, *w, training=False)
            return h
        return stream

    def check(self, case):
        self._need_kernels()
        d = case_data(case)
        w = (d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"])
        if case == "stream":
            d["x"] = d["x"][:STREAM_CHECK_STEPS]
            return {"h_n": self._stepper(d)()}
        y, h_n, cache = self.fwd(d["x"], d["h0"], *w, training=True, **activation_kwargs(self))
        g = self.bwd(d["dy"], d["dh"], cache)
        return dict(y=y, h_n=h_n, dx=g.dx, dh0=g.dh0, dw_ih=g.dw_ih, dw_hh=g.dw_hh,
                    db_ih=g.db_ih, db_hh=g.db_hh)

    def _model(self):
        c = self.cgru
        if not all(hasattr(c, n) for n in ("Sequential", "GRU", "Dense")):
            raise Unavailable("cgru training API not available")
        model = c.Sequential([c.GRU(FIT["units"], input_shape=(FIT["timesteps"],
                                                                FIT["features"])),
                              c.Dense(1, activation="sigmoid")])
        model.compile(optimizer="adam", loss="binary_crossentropy")
        return model



class TorchSystem:
    name = "torch"

    def __init__(self, threads):
        try:
            import torch
        except ImportError as e:
            raise Unavailable(f"torch not installed ({e})")
        torch.set_num_threads(threads)
        self.torch = torch

    def versions(self):
        return {"torch": self.torch.__version__,
                "torch_threads": self.torch.get_num_threads()}

    def _gru(self, d, dtype=None):
        torch = self.torch
        T, B, I = d["x"].shape
        H = d["w_hh"].shape[1]
        gru = torch.nn.GRU(I, H)
        with torch.no_grad():
            gru.weight_ih_l0.copy_(torch.from_numpy(d["w_ih"]))
            gru.weight_hh_l0.copy_(torch.from_numpy(d["w_hh"]))
            gru.bias_ih_l0.copy_(torch.from_numpy(d["b_ih"]))
            gru.bias_hh_l0.copy_(torch.from_numpy(d["b_hh"]))
        if dtype is not None:
            gru = gru.to(dtype)
        return gru

    def runner(self, case, mode):
        torch = self.torch
        if mode == "fit-seed":
            return self._fit_runner()
        d = case_data(case)
        gru = self._gru(d)
        x = torch.from_numpy(d["x"])
        h0 = torch.from_numpy(d["h0"])[None]
        if case == "stream":
            xs = [x[t:t + 1] for t in range(x.shape[0])]

            def stream():
                with torch.inference_mode():
                    h = h0
                    for xt in xs:
                        _, h = gru(xt, h)
                return h
            return stream
        if mode == "infer":
            def infer():
                with torch.inference_mode():
                    return gru(x, h0)
            return infer
        x = x.clone().requires_grad_(True)
        h0 = h0.clone().requires_grad_(True)
        gy, gh = torch.from_numpy(d["dy"]), torch.from_numpy(d["dh"])[None]
        params = list(gru.parameters())

        def train():
            y, h_n = gru(x, h0)
            loss = (y * gy).sum() + (h_n * gh).sum()
            return torch.autograd.grad(loss, [x, h0] + params)
        return train

    def check(self, case, dtype=None):
        torch = self.torch
        d = case_data(case)
        gru = self._gru(d, dtype)
        cast = (lambda a: torch.from_numpy(a).to(dtype)) if dtype else torch.from_numpy
        if case == "stream":
            with torch.no_grad():
                h = cast(d["h0"])[None]
                for t in range(STREAM_CHECK_STEPS):
                    _, h = gru(cast(d["x"][t:t + 1]), h)
            return {"h_n": h[0].float().numpy()}
        x = cast(d["x"]).requires_grad_(True)
        h0 = cast(d["h0"])[None].clone().requires_grad_(True)
        y, h_n = gru(x, h0)
        loss = (y * cast(d["dy"])).sum() + (h_n * cast(d["dh"])[None]).sum()
        g = torch.autograd.grad(loss, [x, h0] + list(gru.parameters()))
        out = [y, h_n[0], g[0], g[1][0], *g[2:]]
        names = ("y", "h_n", "dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh")
        return {k: v.detach().double().numpy() for k, v in zip(names, out)}

    def reference(self, case):
        """The float64 result, against which every system is compared."""
        return self.check(case, dtype=self.torch.float64)

    def _fit_model(self):
        torch = self.torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.gru = torch.nn.GRU(FIT["features"], FIT["units"], batch_first=True)
                self.out = torch.nn.Linear(FIT["units"], 1)

            def forward(self, x):
                y, _ = self.gru(x)
                return self.out(y[:, -1])
        return Net()

    def _fit(self, model, x, y, shuffle=True):
        torch = self.torch
        opt = self._opt
        loss_fn = torch.nn.BCEWithLogitsLoss()
        n, bs = x.shape[0], FIT["batch_size"]
        history = []
        model.train()
        for _ in range(FIT["epochs"]):
            idx = torch.randperm(n) if shuffle else torch.arange(n)
            total = 0.0
            for s in range(0, n, bs):
                b = idx[s:s + bs]
                xb, yb = x[b], y[b]
                opt.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
            history.append(total / n)
        return history

    def _fit_runner(self):
        torch = self.torch
        xn, yn, _ = fit_data()
        x, y = torch.from_numpy(xn), torch.from_numpy(yn)
        model = self._fit_model()
        self._opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
        return lambda: self._fit(model, x, y)

    def fit_check(self):
        torch = self.torch
        xn, yn, weights = fit_data()
        model = self._fit_model()
        w_ih, w_hh, b_ih, b_hh = keras_to_torch(*weights[:3])
        with torch.no_grad():
            for p, a in zip([model.gru.weight_ih_l0, model.gru.weight_hh_l0,
                             model.gru.bias_ih_l0, model.gru.bias_hh_l0,
                             model.out.weight, model.out.bias],
                            [w_ih, w_hh, b_ih, b_hh, weights[3].T, weights[4]]):
                p.copy_(torch.from_numpy(a.copy()))
        self._opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
        return {"loss": self._fit(model, torch.from_numpy(xn), torch.from_numpy(yn),
                                  shuffle=False)}


class KerasSystem(KerasStyleFit):
    name = "keras"

    def __init__(self, threads):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ["KERAS_BACKEND"] = "tensorflow"
        try:
            import tensorflow as tf
        except ImportError as e:
            raise Unavailable(f"tensorflow not installed ({e})")
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        try:
            import keras
        except ImportError as e:
            raise Unavailable(f"keras not installed ({e})")
        if not keras.__version__.startswith("3"):
            raise Unavailable(f"keras {keras.__version__} is not Keras 3")
        self.tf, self.keras = tf, keras
        self.xla = os.environ.get("CGRU_BENCH_KERAS_XLA", "auto")   # auto, on, off
        self.variant = None

    def versions(self):
        return {"keras": self.keras.__version__, "tensorflow": self.tf.__version__,
                "keras_xla": self.xla}

    def _pick(self, make):
        """make(jit) -> callable. With --keras-xla auto, keep the faster of plain and XLA."""
        choices = {"on": [True], "off": [False]}.get(self.xla, [False, True])
        best = None
        for jit in choices:
            fn = make(jit)
            for _ in range(2):
                fn()                               # trace, compile, warm
            if len(choices) == 1:
                best = (0.0, jit, fn)
                break
            took = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                took.append(time.perf_counter() - t0)
            t = statistics.median(took)
            if best is None or t < best[0]:
                best = (t, jit, fn)
        self.variant = "xla" if best[1] else "graph"
        return best[2]

    def _layer(self, d):
        T, B, I = d["x"].shape
        H = d["w_hh"].shape[1]
        layer = self.keras.layers.GRU(H, return_sequences=True, return_state=True,
                                      **activation_kwargs(self))
        layer.build((B, T, I))
        layer.set_weights(torch_to_keras(d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"]))
        return layer

    def _functions(self, layer, jit=False):
        tf = self.tf

        @tf.function(jit_compile=jit)
        def infer(x, h0):
            y, h = layer(x, initial_state=h0, training=False)
            return y, h

        @tf.function(jit_compile=jit)
        def train(x, h0, gy, gh):
            with tf.GradientTape() as tape:
                tape.watch(x)
                tape.watch(h0)
                y, h = layer(x, initial_state=h0, training=True)
                loss = tf.reduce_sum(y * gy) + tf.reduce_sum(h * gh)
            return tape.gradient(loss, [x, h0] + list(layer.trainable_weights)), y, h
        return infer, train

    def _inputs(self, d):
        tf = self.tf
        return (tf.constant(d["x"].transpose(1, 0, 2)), tf.constant(d["h0"]),
                tf.constant(d["dy"].transpose(1, 0, 2)), tf.constant(d["dh"]))

    def runner(self, case, mode):
        if mode == "fit-seed":
            if activation_kwargs(self):
                raise Unavailable("fit-seed runs the plain seed model")
            return self._fit_runner()
        d = case_data(case)
        layer = self._layer(d)
        x, h0, gy, gh = self._inputs(d)
        if case == "stream":
            xs = [x[:, t:t + 1] for t in range(x.shape[1])]

            def make(jit):
                infer = self._functions(layer, jit)[0]

                def stream():
                    h = h0
                    for xt in xs:
                        _, h = infer(xt, h)
                    return h
                return stream
            return self._pick(make)
        if mode == "infer":
            return self._pick(lambda jit: (lambda f=self._functions(layer, jit)[0]: f(x, h0)))
        return self._pick(lambda jit: (lambda f=self._functions(layer, jit)[1]:
                                       f(x, h0, gy, gh)))

    def check(self, case):
        d = case_data(case)
        layer = self._layer(d)
        infer, train = self._functions(layer)
        x, h0, gy, gh = self._inputs(d)
        if case == "stream":
            h = h0
            for t in range(STREAM_CHECK_STEPS):
                _, h = infer(x[:, t:t + 1], h)
            return {"h_n": h.numpy()}
        g, y, h = train(x, h0, gy, gh)
        g = [v.numpy() for v in g]
        dw_ih, dw_hh, db_ih, db_hh = keras_to_torch(g[2], g[3], g[4])
        return dict(y=y.numpy().transpose(1, 0, 2), h_n=h.numpy(),
                    dx=g[0].transpose(1, 0, 2), dh0=g[1], dw_ih=dw_ih, dw_hh=dw_hh,
                    db_ih=db_ih, db_hh=db_hh)

    def _model(self):
        keras = self.keras
        model = keras.Sequential([keras.Input((FIT["timesteps"], FIT["features"])),
                                  keras.layers.GRU(FIT["units"]),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer="adam", loss="binary_crossentropy")
        return model

    def _fit_runner(self):
        self.variant = "fit, jit_compile=auto"
        return super()._fit_runner()


class CgruBaseSystem(CgruSystem):
    """Another build of cgru (--base-path), timed beside this one in the same run."""
    name = "cgru-base"

    def __init__(self, threads):
        if not os.environ.get("CGRU_BENCH_BASE_PATH"):
            raise Unavailable("no --base-path given")
        super().__init__(threads)


SYSTEM_CLASSES = {"floor": FloorSystem, "cgru": CgruSystem, "cgru-base": CgruBaseSystem,
                  "torch": TorchSystem, "keras": KerasSystem}


# --------------------------------------------------------------------------------------------
# worker process: one system, commands as JSON lines on stdin, answers on its own stdout copy

def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _peak_step_kib(fn, tries=3, release=None):
    """Growth of peak RSS during one call of fn, over RSS just before it (KiB); max of tries.
    ``release()``, when given, first lets go of the memory a system keeps for reuse."""
    import ctypes
    import gc
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        libc = None
    best = 0
    for _ in range(tries):
        if release is not None:
            release()
        gc.collect()
        if libc is not None:
            libc.malloc_trim(0)
        rss0 = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        out = fn()
        peak = _status_kib("VmHWM")
        del out
        best = max(best, peak - rss0)
    return best


def worker_main(system, threads):
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                  # stray prints of the libraries go to the log, not the pipe
    sys.path.insert(0, ROOT)
    base, pair = split_system(system)
    if base == "cgru" and os.environ.get("CGRU_BENCH_PATH"):
        sys.path.insert(0, os.environ["CGRU_BENCH_PATH"])
    if base == "cgru-base" and os.environ.get("CGRU_BENCH_BASE_PATH"):
        sys.path.insert(0, os.environ["CGRU_BENCH_BASE_PATH"])

    def send(**msg):
        proto.write(json.dumps(msg) + "\n")

    try:
        sysobj = SYSTEM_CLASSES[base](threads)
        if pair is not None:
            if base in ("floor", "torch"):
                raise Unavailable(f"{base} has no GRU activation options")
            sysobj.activations = pair
        import numpy  # noqa: F401  (so that threadpoolctl sees its BLAS too)
        pools = []
        try:
            import threadpoolctl
            worker_main.limiter = threadpoolctl.threadpool_limits(threads)
            pools = [dict(api=p.get("internal_api"), version=p.get("version"),
                          threads=p.get("num_threads"), lib=os.path.basename(p.get("filepath", "")))
                     for p in threadpoolctl.threadpool_info()]
        except ImportError:
            pass
        send(ok=True, versions=sysobj.versions(), threadpools=pools)
    except Unavailable as e:
        send(ok=False, reason=str(e))
        return
    except Exception as e:
        send(ok=False, reason=f"failed to start: {e!r}", error=traceback.format_exc())
        return

    run = None
    n_inner = 1
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req["cmd"]
        try:
            if cmd == "quit":
                break
            elif cmd == "setup":
                run = None
                run = sysobj.runner(req["case"], req["mode"])
                # warm-up: at least min_calls calls and warm seconds, then calibrate
                t_start, took = time.perf_counter(), []
                while True:
                    t0 = time.perf_counter()
                    run()
                    took.append(time.perf_counter() - t0)
                    if len(took) >= req["min_calls"] and \
                            time.perf_counter() - t_start >= req["warm"]:
                        break
                typical = statistics.median(took[1:] or took)
                n_inner = max(1, min(100000, round(req["target"] / max(typical, 1e-9))))
                send(ok=True, n=n_inner, first=took[0], typical=typical,
                     variant=getattr(sysobj, "variant", None))
            elif cmd == "time":
                t0 = time.perf_counter()
                for _ in range(n_inner):
                    run()
                send(ok=True, t=(time.perf_counter() - t0) / n_inner)
            elif cmd == "mem":
                send(ok=True, kib=_peak_step_kib(run, release=getattr(sysobj, "release", None)))
            elif cmd == "check":
                import numpy as np
                if req["case"] == "fit-seed":
                    out = sysobj.fit_check()
                elif req.get("reference"):
                    out = sysobj.reference(req["case"])
                else:
                    out = sysobj.check(req["case"])
                np.savez(req["path"], **{k: np.asarray(v) for k, v in out.items()})
                send(ok=True)
            else:
                send(ok=False, reason=f"unknown command {cmd}")
        except Unavailable as e:
            run = None
            send(ok=False, reason=str(e))
        except Exception as e:
            run = None
            send(ok=False, reason=f"error: {e!r}", error=traceback.format_exc())


# --------------------------------------------------------------------------------------------
# parent

class Worker:
    def __init__(self, system, threads, log_path):
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            env[var] = str(threads)
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        env["KERAS_BACKEND"] = "tensorflow"
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.system = system
        self.log = open(log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", system,
             "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            bufsize=1, env=env, cwd=ROOT)
        self.hello = self._read()
        self.ok = self.hello.get("ok", False)
        self.reason = self.hello.get("reason", "")

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            return {"ok": False, "reason": f"worker exited (see {self.log.name})"}
        return json.loads(line)

    def ask(self, **req):
        if self.proc.poll() is not None:
            return {"ok": False, "reason": f"worker exited (see {self.log.name})"}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"cmd": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
        self.log.close()


def fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}"


def max_diff(a, b):
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)))


def run_checks(workers, cases, want_fit, tmp, log):
    """Compare every system with a float64 reference; returns {(system, case): ok}."""
    import numpy as np
    verdict = {}
    said = set()
    ref_worker = workers.get("torch")
    for case in cases:
        ref = None
        if ref_worker is not None and ref_worker.ok:
            path = os.path.join(tmp, f"ref-{case}.npz")
            r = ref_worker.ask(cmd="check", case=case, reference=True, path=path)
            if r["ok"]:
                ref = dict(np.load(path))
                ref_name = "torch float64"
        results = {}
        for name, w in workers.items():
            if not w.ok:
                continue
            path = os.path.join(tmp, f"{name.replace('/', '_')}-{case}.npz")
            r = w.ask(cmd="check", case=case, path=path)
            if r["ok"]:
                results[name] = dict(np.load(path))
            else:
                results[name] = r["reason"]
                if r.get("error"):
                    log.write(r["error"])
        if ref is None:
            got = [n for n, v in results.items() if isinstance(v, dict)]
            if not got:
                log(f"  check {case}: no system to compare")
                continue
            ref, ref_name = results[got[0]], got[0] + " float32"
        parts = []
        plain_ref = ref
        for name, res in results.items():
            ref = plain_ref
            if isinstance(res, str):
                if (name, res) not in said:
                    parts.append(f"{name}: skipped ({res})")
                    said.add((name, res))
                continue
            pair = split_system(name)[1]
            if pair is not None:
                # a variant: against Keras's GRU with the same activations
                ref = results.get("keras+" + "/".join(pair))
                if not isinstance(ref, dict):
                    parts.append(f"{name}: no reference (run keras+{'/'.join(pair)})")
                    continue
            if res is ref:
                parts.append(f"{name}: the reference")
                continue
            scale = max(1.0, max(float(np.max(np.abs(v))) if v.size else 0.0
                                 for v in ref.values()))
            fwd = max(max_diff(res[k], ref[k]) for k in ("y", "h_n") if k in ref)
            grads = [k for k in ("dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh") if k in ref]
            bwd = max((max_diff(res[k], ref[k]) / max(1.0, float(np.max(np.abs(ref[k]))))
                       for k in grads), default=0.0)
            ok = fwd <= TOLERANCE * scale and bwd <= TOLERANCE
            verdict[(name, case)] = ok
            txt = f"{name}: out {fwd:.1e}" + (f", grads {bwd:.1e} rel" if grads else "")
            if pair is not None:
                txt += f" (vs keras+{'/'.join(pair)})"
            parts.append(txt + ("" if ok else "  MISMATCH, not timed"))
        log(f"  check {case} (vs {ref_name}): " + "; ".join(parts))
    if want_fit:
        losses = {}
        for name, w in workers.items():
            if not w.ok or name == "floor":
                continue
            path = os.path.join(tmp, f"{name.replace('/', '_')}-fit.npz")
            r = w.ask(cmd="check", case="fit-seed", path=path)
            if r["ok"]:
                losses[name] = np.load(path)["loss"]
            else:
                log(f"  check fit-seed: {name} skipped ({r['reason']})")
        if losses:
            ref_name = "keras" if "keras" in losses else next(iter(losses))
            parts = [f"{n}: {max_diff(v, losses[ref_name]):.1e}" for n, v in losses.items()
                     if n != ref_name]
            log(f"  check fit-seed (same initial weights, no shuffle; loss history vs "
                f"{ref_name}, first {losses[ref_name][0]:.4f} last {losses[ref_name][-1]:.4f}): "
                + ("; ".join(parts) or "nothing to compare"))
            for n, v in losses.items():
                verdict[(n, "fit-seed")] = max_diff(v, losses[ref_name]) <= 1e-3
    return verdict


def machine_info(threads):
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return dict(cpu=cpu, cores=os.cpu_count(), threads=threads, python=platform.python_version(),
                platform=platform.platform())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count()
    p.add_argument("--threads", type=int, default=default_threads,
                   help=f"threads for every system (default: {default_threads}, the cores)")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated, of " + ", ".join(SYSTEMS))
    p.add_argument("--cases", default=None, help="comma-separated, of " + ", ".join(CASES))
    p.add_argument("--modes", default=None, help="comma-separated, of " + ", ".join(MODES))
    p.add_argument("--quick", action="store_true",
                   help=f"fewer cases ({', '.join(QUICK_CASES)}) and repetitions")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (7; quick 3)")
    p.add_argument("--target", type=float, default=None,
                   help="seconds per repetition, calls are batched up to it (0.25; quick 0.1)")
    p.add_argument("--pause", type=float, default=0.15,
                   help="seconds between two timed repetitions (default 0.15)")
    p.add_argument("--no-check", action="store_true", help="skip the numerical check")
    p.add_argument("--keras-xla", choices=("auto", "on", "off"), default="auto",
                   help="compile Keras's infer/train functions with XLA (jit_compile=True): "
                        "on, off, or auto (default): per case, the faster of the two")
    p.add_argument("--cgru-path", default=None,
                   help="import cgru from this directory (default: this checkout, built in "
                        "place, else the installed one)")
    p.add_argument("--base-path", default=None,
                   help="system cgru-base: import cgru from this directory (another build, e.g. "
                        "an older commit built in place), timed beside cgru in the same run")
    p.add_argument("--json", default=None, help="also write the results to this path")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        return worker_main(args.worker, args.threads)

    systems = [s for s in args.systems.split(",") if s]
    cases = args.cases.split(",") if args.cases else list(QUICK_CASES if args.quick else CASES)
    modes = args.modes.split(",") if args.modes else list(MODES)
    for s in systems:
        if split_system(s)[0] not in SYSTEMS:
            p.error(f"unknown system {s!r}")
    for c in cases:
        if c not in CASES:
            p.error(f"unknown case {c!r}")
    for m in modes:
        if m not in MODES:
            p.error(f"unknown mode {m!r}")
    reps = args.reps or (3 if args.quick else 7)
    target = args.target or (0.1 if args.quick else 0.25)
    warm = 0.15 if args.quick else 0.5
    os.environ["CGRU_BENCH_KERAS_XLA"] = args.keras_xla
    if args.cgru_path:
        os.environ["CGRU_BENCH_PATH"] = os.path.abspath(args.cgru_path)
    if args.base_path:
        os.environ["CGRU_BENCH_BASE_PATH"] = os.path.abspath(args.base_path)

    jobs = []   # (mode, case)
    for m in modes:
        if m == "fit-seed":
            jobs.append((m, "seed"))
        else:
            jobs += [(m, c) for c in cases if not (m == "train" and c == "stream")]

    outdir = os.path.join(HERE, "results")
    os.makedirs(outdir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_path = os.path.join(outdir, f"workers-{stamp}.log")

    def log(msg):
        print(msg, flush=True)
    log.write = lambda text: open(log_path, "a").write(text)

    t_all = time.perf_counter()
    info = machine_info(args.threads)
    log(f"# cgru benchmark: {info['cpu']}, {info['cores']} cores, {args.threads} thread(s), "
        f"float32, {reps} repetitions of >= {target:g} s, median (min)")
    workers = {}
    for s in systems:
        w = Worker(s, args.threads, log_path)
        workers[s] = w
        if w.ok:
            v = ", ".join(f"{k} {val}" for k, val in w.hello["versions"].items())
            log(f"  {s}: ready ({v})")
        else:
            log(f"  {s}: skipped ({w.reason})")

    verdict = {}
    if not args.no_check:
        check_cases = sorted({c for m, c in jobs if m != "fit-seed"}, key=list(CASES).index)
        with tempfile.TemporaryDirectory() as tmp:
            verdict = run_checks(workers, check_cases, "fit-seed" in modes, tmp, log)

    results = []
    for mode, case in jobs:
        label = "fit-seed" if mode == "fit-seed" else case
        live = {}
        entry = dict(mode=mode, case=label, shape=CASES[case], systems={})
        for s, w in workers.items():
            if not w.ok:
                entry["systems"][s] = dict(skipped=w.reason)
                continue
            if verdict.get((s, case if mode != "fit-seed" else "fit-seed")) is False:
                entry["systems"][s] = dict(skipped="numerical check failed")
                continue
            r = w.ask(cmd="setup", case=case, mode=mode, target=target, warm=warm,
                      min_calls=1 if mode == "fit-seed" else 3)
            if r["ok"]:
                live[s] = w
                entry["systems"][s] = dict(n=r["n"], times=[])
                if r.get("variant"):
                    entry["systems"][s]["variant"] = r["variant"]
            else:
                entry["systems"][s] = dict(skipped=r["reason"])
                if r.get("error"):
                    log.write(r["error"])
        order = list(live)
        for rep in range(reps):
            k = rep % max(1, len(order))
            for s in order[k:] + order[:k]:
                r = live[s].ask(cmd="time")
                if r["ok"]:
                    entry["systems"][s]["times"].append(r["t"])
                time.sleep(args.pause)
        per = CASES[case][0] if case == "stream" else 1
        for s in live:
            e = entry["systems"][s]
            if e["times"]:
                e["times"] = [t / per for t in e["times"]]
                e["median"] = statistics.median(e["times"])
                e["min"] = min(e["times"])
            if mode == "train" and s != "floor":
                r = live[s].ask(cmd="mem")
                if r["ok"]:
                    e["peak_kib"] = r["kib"]
                    e["peak_kib_per_sample"] = r["kib"] / CASES[case][1]
        results.append(entry)
        cells = []
        for s in workers:
            e = entry["systems"][s]
            cells.append(f"{s} {fmt_time(e.get('median'))}" if "median" in e else f"{s} -")
        unit = " per step" if case == "stream" else ""
        log(f"  {mode:8s} {label:8s}{unit}: " + ", ".join(cells))

    for w in workers.values():
        w.close()

    table = markdown(results, systems, info, reps)
    print()
    print(table)
    doc = dict(machine=info, threads=args.threads, reps=reps, target_seconds=target,
               pause_seconds=args.pause, keras_xla=args.keras_xla, date=stamp,
               versions={s: w.hello.get("versions") for s, w in workers.items() if w.ok},
               threadpools={s: w.hello.get("threadpools") for s, w in workers.items() if w.ok},
               results=results,
               check={f"{s}/{c}": ok for (s, c), ok in verdict.items()},
               seconds=time.perf_counter() - t_all,
               memory_measure="growth of peak RSS (VmHWM after /proc/self/clear_refs) during "
                              "one train step over RSS before it, after gc and malloc_trim",
               table=table)
    paths = [os.path.join(outdir, f"bench-{stamp}-t{args.threads}.json")]
    if args.json:
        paths.append(args.json)
    for path in paths:
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
    print(f"\nJSON: {', '.join(paths)}  ({time.perf_counter() - t_all:.0f} s)")


def markdown(results, systems, info, reps):
    shown = [s for s in SYSTEMS if s in systems]
    variants = [s for s in systems if split_system(s)[1] is not None]
    shown += variants
    head = ["mode", "case"] + shown
    peers = [s for s in ("torch", "keras") if s in shown]
    ratios = []
    if "cgru" in shown and "floor" in shown:
        ratios.append("cgru x floor")
    ratios += [f"{s} x floor" for s in peers if "floor" in shown]
    if "cgru" in shown:
        ratios += [f"x {s}" for s in peers]
    costs = [(v, split_system(v)[0]) for v in variants if split_system(v)[0] in shown]
    ratios += [f"{v} / {b}" for v, b in costs]
    lines = [f"{info['cpu']}, {info['threads']} thread(s), float32; median (min) of {reps} "
             "repetitions; stream is per step, fit-seed per fit.",
             "`a x floor`: a's time over the GEMM floor's (1.00 = at the floor); "
             "`x torch`, `x keras`: the peer's time over cgru's (above 1: cgru is faster)"
             + ("; `a+pair / a`: the activation pair's time over the plain call's (its cost)."
                if costs else "."),
             "",
             "| " + " | ".join(head + ratios) + " |",
             "|" + "---|" * (len(head) + len(ratios))]
    for e in results:
        med = {s: e["systems"].get(s, {}).get("median") for s in shown}
        row = [e["mode"], e["case"]]
        for s in shown:
            d = e["systems"].get(s, {})
            mark = "*" if d.get("variant") == "xla" else ""
            row.append(f"{fmt_time(d['median'])} ({fmt_time(d['min'])}){mark}"
                       if "median" in d else "-")
        if "cgru x floor" in ratios:
            row.append(fmt_ratio(ratio(med.get("cgru"), med.get("floor"))))
        if "floor" in shown:
            row += [fmt_ratio(ratio(med.get(s), med.get("floor"))) for s in peers]
        if "cgru" in shown:
            row += [fmt_ratio(ratio(med.get(s), med.get("cgru"))) for s in peers]
        row += [fmt_ratio(ratio(med.get(v), med.get(b))) for v, b in costs]
        lines.append("| " + " | ".join(row) + " |")
    mem = [e for e in results if e["mode"] == "train"]
    msys = [s for s in shown if s != "floor"]
    if mem and msys:
        lines += ["", "Peak resident memory of one train step (growth over the resident size "
                  "before it), MiB (KiB per sample):", "",
                  "| case | B | " + " | ".join(msys) + " |", "|---|---|" + "---|" * len(msys)]
        for e in mem:
            row = [e["case"], str(e["shape"][1])]
            for s in msys:
                d = e["systems"].get(s, {})
                row.append(f"{d['peak_kib'] / 1024:.1f} ({d['peak_kib_per_sample']:.0f})"
                           if "peak_kib" in d else "-")
            lines.append("| " + " | ".join(row) + " |")
    if any(d.get("variant") == "xla" for e in results for d in e["systems"].values()):
        lines += ["", "*: Keras function compiled with XLA (jit_compile=True), the faster "
                  "variant on that case; model.fit uses Keras's default (jit_compile='auto'). "
                  "XLA reuses its own buffers from call to call, which the memory figure "
                  "cannot see."]
    for e in results:
        v = e["systems"].get("cgru", {}).get("variant")
        if v:
            lines += ["", f"cgru {e['mode']} {e['case']}: {v}."]
    skipped = sorted({f"{s}: {d['skipped']}" for e in results
                      for s, d in e["systems"].items() if "skipped" in d})
    if skipped:
        lines += ["", "Not timed: " + "; ".join(skipped) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

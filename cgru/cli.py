"""``python -m cgru``: train a GRU on recorded speech, or describe this installation.

    python -m cgru [--epochs N] [--units N] [--seed N] [--save PATH] [--plot PATH]
    python -m cgru info

The main job trains ``GRU -> Dense(softmax)`` to recognise which of nine speakers uttered a
vowel pair (the Japanese Vowels data set, shipped in ``cgru/data``) and prints its accuracy on
the held-out test split beside the figure published with the data set.
"""
import argparse
import os
import sys
import time

import numpy as np

# Defaults chosen on a split of the training set (6 utterances per speaker held out, five
# seeds: 96-100% there), not on the test split, and so that the whole run stays well under
# a minute on two cores.
DEFAULT_EPOCHS = 30
DEFAULT_UNITS = 64
DEFAULT_SEED = 0
BATCH_SIZE = 32

_DESCRIPTION = """\
Train a GRU classifier on recorded speech and report its held-out accuracy.

The data set is Japanese Vowels (UCI; Kudo, Toyama & Shimbo 1999; CC BY 4.0): nine speakers,
12 LPC cepstrum coefficients per frame, 7 to 29 frames per utterance, 270 training and 370
test utterances, shipped with cgru (no network needed). The model is
GRU(units) -> Dense(9, softmax), trained with Adam on sparse categorical cross-entropy."""

_EPILOG = """\
Without a command, python -m cgru trains and evaluates as described above; the options
apply to that run.

examples:
  python -m cgru
  python -m cgru --epochs 10 --units 64 --save vowels.cgru --plot history.png
  python -m cgru info"""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m cgru", description=_DESCRIPTION, epilog=_EPILOG,
        usage="%(prog)s [--epochs N] [--units N] [--seed N] [--save PATH] [--plot PATH]\n"
              "       %(prog)s info",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS,
                        help=f"training epochs (default {DEFAULT_EPOCHS})")
    parser.add_argument("--units", type=_positive_int, default=DEFAULT_UNITS,
                        help=f"GRU hidden units (default {DEFAULT_UNITS})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"seed for the initial weights and the shuffling "
                             f"(default {DEFAULT_SEED})")
    parser.add_argument("--save", metavar="PATH",
                        help="save the trained model to PATH (reload with cgru.load_model)")
    parser.add_argument("--plot", metavar="PATH",
                        help="write a PNG of loss and accuracy per epoch to PATH "
                             "(needs matplotlib: pip install 'cgru[plot]')")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    sub.add_parser("info", help="print the cgru version, the BLAS in use and its thread "
                                "count, and whether the extension has debug checks",
                   description="Print the cgru version, the BLAS library in use and its "
                               "thread count, and whether the compiled extension was built "
                               "with debug checks.")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "info":
        return run_info()
    return run_train(args)


# --------------------------------------------------------------------------- info

def _version():
    import cgru
    version = getattr(cgru, "__version__", None)
    if version:
        return version
    try:
        from importlib.metadata import version as dist_version
        return dist_version("cgru")
    except Exception:
        return "unknown"


def _extension_status():
    """Return (built, debug_checks) for the compiled kernels, each a short string."""
    try:
        from cgru._native import _loops as _gru
    except ImportError:
        return "not built (cgru._native._loops cannot be imported)", "n/a"
    debug = getattr(_gru, "DEBUG_CHECKS", None)
    if debug is None:
        return f"yes ({os.path.basename(getattr(_gru, '__file__', '?'))})", "unknown"
    return (f"yes ({os.path.basename(getattr(_gru, '__file__', '?'))})",
            "yes (CGRU_DEBUG=1 build: bounds, None and initialisation checks)"
            if debug else "no")


def _blas_lines():
    """Describe the BLAS that cgru's kernels call: SciPy's (scipy.linalg.cython_blas)."""
    import scipy.linalg  # noqa: F401  (loads SciPy's BLAS so that it can be inspected)
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        blas = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
        if blas:
            lines = []
            for lib in blas:
                path = lib.get("filepath", "")
                owner = ("SciPy's, used by cgru" if "scipy.libs" in path or
                         os.sep + "scipy" + os.sep in path else
                         "NumPy's" if "numpy" in path else os.path.basename(path))
                lines.append(f"{lib.get('internal_api', '?')} {lib.get('version', '?')} "
                             f"({lib.get('architecture') or '?'}), "
                             f"{lib.get('num_threads', '?')} threads [{owner}]")
            return lines
    # Without threadpoolctl: the build configuration, and the thread count the usual
    # environment variables ask for.
    name = "unknown"
    try:
        import scipy
        deps = scipy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        name = f"{deps.get('name', '?')} {deps.get('version', '?')}"
    except Exception:
        pass
    threads = next((f"{os.environ[v]} ({v})" for v in
                    ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")
                    if os.environ.get(v)), f"unknown (up to {os.cpu_count()} cores)")
    return [f"{name}, threads: {threads} [SciPy's, used by cgru; pip install threadpoolctl "
            f"for the live thread count]"]


def run_info():
    import scipy
    built, debug = _extension_status()
    blas = _blas_lines()
    rows = [("cgru", _version()),
            ("python", sys.version.split()[0]),
            ("numpy", np.__version__),
            ("scipy", scipy.__version__),
            ("extension", built),
            ("debug checks", debug),
            ("BLAS", blas[0])]
    rows += [("", line) for line in blas[1:]]
    rows.append(("cores", str(os.cpu_count())))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key + ':' if key else '':<{width + 1}} {value}")
    return 0


# -------------------------------------------------------------------------- train

def _standardize(x_train, lengths_train, arrays):
    """Scale each coefficient to zero mean and unit variance over the recorded training
    frames; padding stays zero. ``arrays`` is a list of (x, lengths), padded at the front."""
    T = x_train.shape[1]
    frames = np.concatenate([x_train[i, T - n:] for i, n in enumerate(lengths_train)])
    mean, std = frames.mean(axis=0), frames.std(axis=0)
    out = []
    for x, lengths in arrays:
        valid = (np.arange(T)[None, :] >= (T - lengths)[:, None])[:, :, None]
        out.append(np.where(valid, (x - mean) / std, 0).astype(x.dtype))
    return out


def load_data(return_lengths=False):
    """The data exactly as the main job trains and tests on it: Japanese Vowels padded at
    the front (zeros first, frames last, so that the GRU's final state follows the last
    recorded frame with no mask needed), each coefficient standardized with the training
    frames' mean and standard deviation."""
    from cgru.datasets import load_japanese_vowels
    (x_train, y_train, len_train), (x_test, y_test, len_test) = load_japanese_vowels(
        padding="pre", return_lengths=True)
    x_train, x_test = _standardize(x_train, len_train,
                                   [(x_train, len_train), (x_test, len_test)])
    if return_lengths:
        return (x_train, y_train, len_train), (x_test, y_test, len_test)
    return (x_train, y_train), (x_test, y_test)


def _check_plot_available():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_plot(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    h = history.history
    epochs = np.arange(1, len(h["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, h["loss"], label="training")
    if "val_loss" in h:
        ax_loss.plot(epochs, h["val_loss"], label="held-out test")
    ax_loss.set(xlabel="epoch", ylabel="loss (cross-entropy)", title="Loss")
    ax_acc.plot(epochs, h["accuracy"], label="training")
    if "val_accuracy" in h:
        ax_acc.plot(epochs, h["val_accuracy"], label="held-out test")
    from cgru.datasets import JAPANESE_VOWELS_PUBLISHED_ACCURACY as published
    ax_acc.axhline(published, color="grey", linestyle="--", label=f"published ({published:.1%})")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("cgru GRU on Japanese Vowels (speaker recognition)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_train(args):
    if args.plot and not _check_plot_available():
        print("error: --plot needs matplotlib, which is not installed.\n"
              "Install it with:  pip install 'cgru[plot]'   (or: pip install matplotlib)",
              file=sys.stderr)
        return 2

    import cgru
    from cgru.datasets import JAPANESE_VOWELS_PUBLISHED_ACCURACY, JAPANESE_VOWELS_REFERENCE

    start = time.perf_counter()
    np.random.seed(args.seed)
    (x_train, y_train, len_train), (x_test, y_test, len_test) = load_data(
        return_lengths=True)
    n_classes = int(y_train.max()) + 1
    print(f"Japanese Vowels: {len(x_train)} training and {len(x_test)} test utterances, "
          f"{x_train.shape[2]} features, {len_train.min()}-{max(len_train.max(), len_test.max())}"
          f" frames, {n_classes} speakers")

    model = cgru.Sequential()
    model.add(cgru.GRU(units=args.units, input_shape=x_train.shape[1:], seed=args.seed))
    model.add(cgru.Dense(units=n_classes, activation="softmax"))
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam",
                  metrics=["accuracy"])
    print(f"Model: GRU({args.units}) -> Dense({n_classes}, softmax); "
          f"{args.epochs} epochs, batch size {BATCH_SIZE}, seed {args.seed}")

    # The test split is passed as validation data only so that its curve can be shown;
    # nothing is chosen by it.
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=BATCH_SIZE,
                        validation_data=(x_test, y_test), verbose=1)
    loss, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    elapsed = time.perf_counter() - start

    print(f"Test accuracy: {accuracy:.1%} (test loss {loss:.4f}) on the {len(x_test)} "
          f"held-out utterances")
    print(f"Published:     {JAPANESE_VOWELS_PUBLISHED_ACCURACY:.1%} "
          f"({JAPANESE_VOWELS_REFERENCE})")
    print(f"Time:          {elapsed:.1f} s")
    if args.save:
        model.save(args.save)
        print(f"Saved the model to {args.save} (reload with cgru.load_model)")
    if args.plot:
        write_plot(history, args.plot)
        print(f"Wrote the loss and accuracy plot to {args.plot}")
    return 0

"""Atomic file output: write to a temporary name beside the target, then rename over it.

A crash or an exception mid-write leaves the previous file (or none) in place, never a
half-written one.
"""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_output(path):
    """``with atomic_output(path) as f:`` yields a binary file; on a clean exit its bytes are
    flushed to disk and the file is renamed to ``path``; on an exception it is removed."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "w+b") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the usual umask-based mode
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

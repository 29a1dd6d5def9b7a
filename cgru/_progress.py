"""A Keras-style progress bar.

On a terminal it redraws one line in place with ``\\r``:

    3/4 [======================>.......] - ETA: 0s - loss: 0.6931 - accuracy: 0.5000

and ends the epoch with the elapsed time and time per step. When the stream is not a
terminal (a log file, a CI job) it writes plain lines instead, at most about ten per
epoch, and no control characters. ``verbose=2`` writes one line per epoch, without a bar.
"""
import sys
import time


def _format_value(v):
    return f"{v:.4f}" if abs(v) > 1e-3 or v == 0 else f"{v:.4e}"


def _format_eta(eta):
    if eta > 3600:
        return "%d:%02d:%02d" % (eta // 3600, (eta % 3600) // 60, eta % 60)
    if eta > 60:
        return "%d:%02d" % (eta // 60, eta % 60)
    return "%ds" % eta


def _format_per_step(seconds):
    if seconds >= 1:
        return f"{seconds:.0f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


class Progbar:
    def __init__(self, target, verbose=1, width=30, stream=None, interval=0.05):
        # None: the number of steps is not known (a generator without steps_per_epoch)
        self.target = None if target is None else int(target)
        self.verbose = verbose
        self.width = width
        self.stream = stream if stream is not None else sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.dynamic = bool(isatty and isatty())
        self.interval = interval
        self._start = time.time()
        self._last_update = 0.0
        self._prev_width = 0
        self._last_plain_step = 0

    def _bar(self, current):
        if self.target is None:
            return f"{current}/Unknown"
        digits = len(str(self.target))
        bar = f"{current:{digits}d}/{self.target} ["
        done = int(self.width * current / self.target) if self.target else self.width
        if done > 0:
            bar += "=" * (done - 1)
            bar += ">" if current < self.target else "="
        bar += "." * (self.width - done) + "]"
        return bar

    def _info(self, current, values, finalize):
        now = time.time()
        elapsed = now - self._start
        per_step = elapsed / max(current, 1)
        if finalize:
            info = f" - {elapsed:.0f}s {_format_per_step(per_step)}"
        elif self.target is None:
            info = f" - {elapsed:.0f}s {_format_per_step(per_step)}"
        else:
            info = f" - ETA: {_format_eta(per_step * (self.target - current))}"
        for name, v in values:
            info += f" - {name}: {_format_value(v)}"
        return info

    def update(self, current, values=(), finalize=None):
        """Show step ``current`` of ``target`` with running ``values`` [(name, value)]."""
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        if self.verbose == 0:
            return
        if self.verbose == 2:       # one line at the end, no bar: "3/3 - 0s - 3ms/step - ..."
            if finalize:
                elapsed = time.time() - self._start
                target = current if self.target is None else self.target
                line = (f"{current:{len(str(target))}d}/{target} - {elapsed:.0f}s - "
                        f"{_format_per_step(elapsed / max(current, 1))}")
                for name, v in values:
                    line += f" - {name}: {_format_value(v)}"
                self.stream.write(line + "\n")
                self.stream.flush()
            return
        now = time.time()
        if self.dynamic:
            if not finalize and now - self._last_update < self.interval:
                return
            line = self._bar(current) + self._info(current, values, finalize)
            pad = " " * max(0, self._prev_width - len(line))
            self.stream.write("\r" + line + pad + ("\n" if finalize else ""))
            self._prev_width = len(line)
        else:
            every = 10 if self.target is None else max(1, self.target // 10)
            if not finalize and current - self._last_plain_step < every:
                return
            self._last_plain_step = current
            self.stream.write(self._bar(current) + self._info(current, values, finalize) + "\n")
        self.stream.flush()
        self._last_update = now

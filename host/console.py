"""What the console shows: a one-line progress bar (done/total, a bar, named values, time left)
and the way numbers and sizes are written in it and in messages.

Used for the first pass over the data (input_pipeline, which reports it to a PassProgress and never
prints) and for each training epoch (training), so it belongs to neither package. On a terminal
the line is redrawn in place; in a log file (a cluster job's output) a line is written at most
every 30 s, and always at the end, so logs stay short.
"""
import os
import sys
import time
from typing import Dict, Optional


def _interactive():
    try:
        return os.isatty(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        return False


def format_value(value: object) -> str:
    """Rates and counts as whole numbers with thousands separators; other floats to 4 digits."""
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_bytes(nbytes: int) -> str:
    """A size as people read it: '1.23 GB' from 100 MB up, else '12.3 MB'."""
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


class ProgressBar:
    """done/total of a loop on one line; `enabled=False` keeps the timing but draws nothing."""

    def __init__(self, total: int, enabled: bool = True, interval: Optional[float] = None,
                 width: int = 20) -> None:
        self.total = max(int(total), 1)
        self.enabled = enabled
        self.tty = _interactive()
        self.interval = interval if interval is not None else (0.2 if self.tty else 30.0)
        self.width = width
        self.start = time.perf_counter()
        self._first = None  # (time, done) of the first update: the rate is measured from there
        self._last_draw = -float("inf")

    def line(self, done: int, values: Dict[str, object]) -> str:
        """The bar's text at `done` of total, with `values` by name and the time left."""
        filled = int(self.width * min(done, self.total) / self.total)
        bar = "=" * filled + (">" if filled < self.width else "") + "." * (self.width - filled - 1)
        digits = len(f"{self.total:,}")
        text = f"{done:>{digits},}/{self.total:,} [{bar[:self.width]}]"
        text += "".join(f" - {name}: {format_value(v)}" for name, v in values.items())
        now = time.perf_counter()
        if done >= self.total:
            text += f" - {now - self.start:.0f}s"
        elif self._first is not None and done > self._first[1]:
            rate = (done - self._first[1]) / max(now - self._first[0], 1e-9)
            left = (self.total - done) / rate
            text += f" - {int(left) // 60}:{int(left) % 60:02d} left"
        return text

    def update(self, done: int, **values: object) -> None:
        """Draws the bar at `done` (on a terminal at most every `interval` seconds, in a log
        every 30 s), and always at the end."""
        if self._first is None:
            self._first = (time.perf_counter(), done)
        if not self.enabled:
            return
        now = time.perf_counter()
        final = done >= self.total
        if not final and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        text = self.line(done, values)
        if self.tty:
            sys.stdout.write("\r" + text + ("\n" if final else "\x1b[K"))
        else:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()


class PassProgress:
    """An input pipeline's first pass on the console (input_pipeline.first_pass.Progress): its
    lines printed, its images done drawn as a ProgressBar, a new bar for each pass."""

    def __init__(self) -> None:
        self._bar: Optional[ProgressBar] = None

    def line(self, text: str) -> None:
        self._bar = None  # a line starts or ends a pass
        print(text, flush=True)

    def advance(self, done: int, total: int, images_per_second: int) -> None:
        if self._bar is None:
            self._bar = ProgressBar(total)
        self._bar.update(done, **{"img/s": images_per_second})

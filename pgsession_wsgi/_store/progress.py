"""Internal: how the command line shows a long job's progress (cleanup, the migration).

A writer of our own, not tqdm or rich: one status line is not worth a dependency for every app."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["TTY_REFRESH", "Progress", "describe", "format_duration"]

#: Seconds between redraws on a terminal.
TTY_REFRESH = 0.2
_DEFAULT_WIDTH = 80
_ERASE = "\x1b[K"  # ANSI: erase to the end of the line


def format_duration(seconds: float) -> str:
    """A duration for a status line: ``45s``, ``1m13s``, ``2h05m``; rounded up, so the time
    left never reads ``0s`` while work remains."""
    whole = max(0, math.ceil(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def describe(done: int, total: int | None, elapsed: float, *, what: str, approximate: bool) -> str:
    """One progress sentence: ``120000 of ~1000000 expired rows removed (12000/s, about 1m13s left)``.

    The rate is the average since the start. A total that ``done`` has passed (an estimate, or
    rows that expired meanwhile) is no longer shown; ``approximate`` shows it as ``~N``.
    """
    if total is None or done > total:
        head = f"{done} {what}"
    else:
        head = f"{done} of {'~' if approximate else ''}{total} {what}"
    details = []
    if done > 0 and elapsed > 0:
        per_second = done / elapsed
        details.append(f"{per_second:.0f}/s" if per_second >= 10 else f"{per_second:.1f}/s")
        if total is not None and total > done:
            details.append(f"about {format_duration((total - done) / per_second)} left")
    return f"{head} ({', '.join(details)})" if details else head


class Progress:
    """Shows how far a long job is on ``stream`` without flooding it; :meth:`update` is an
    ``on_batch`` callback.

    On a terminal (``tty``; None asks ``stream``) one line is redrawn in place; anywhere else a
    line is written every ``interval`` seconds (0: every update), so logs stay readable. ``width``
    is the terminal's (None asks it); a line too wide loses its label first, then its end.
    """

    def __init__(
        self,
        label: str,
        what: str,
        stream: TextIO,
        *,
        approximate: bool = False,
        interval: float = 10.0,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self.label = label
        self.what = what
        self.approximate = approximate
        self.interval = interval
        self.tty = stream.isatty() if tty is None else tty
        self._stream = stream
        self._clock = clock
        self._width = width
        self._started: float | None = None
        self._last_write: float | None = None
        self._drawn = False
        self._written = 0  # the count in the last line written (not on a terminal)

    def update(self, done: int, total: int | None) -> None:
        """Record how far the work is (``total`` None: unknown); write if the last write is old
        enough. The first call starts the clock."""
        now = self._clock()
        if self._started is None:
            self._started = now
        sentence = describe(done, total, now - self._started, what=self.what, approximate=self.approximate)
        text = f"{self.label}: {sentence}"
        if self.tty:
            if self._last_write is None or now - self._last_write >= TTY_REFRESH:
                room = max(self._columns() - 1, 1)  # the last column would wrap on some terminals
                line = text if len(text) <= room else sentence  # the label goes first, then the tail
                self._stream.write("\r" + line[:room] + _ERASE)
                self._stream.flush()
                self._last_write = now
                self._drawn = True
            return
        # Not a terminal: nothing for a job that ends within one interval, then a line per
        # interval, and never the same count twice (the purge's last batch may remove nothing).
        since = self._started if self._last_write is None else self._last_write
        if done > self._written and now - since >= self.interval:
            self._stream.write(text + "\n")
            self._stream.flush()
            self._last_write = now
            self._written = done

    def finish(self) -> None:
        """Erase the line on a terminal, so the next message (the summary) takes its place."""
        if self.tty and self._drawn:
            self._stream.write("\r" + _ERASE)
            self._stream.flush()
            self._drawn = False

    def _columns(self) -> int:
        if self._width is not None:
            return self._width
        try:
            return os.get_terminal_size(self._stream.fileno()).columns or _DEFAULT_WIDTH
        except (AttributeError, OSError, ValueError):  # no descriptor, or not a terminal after all
            return _DEFAULT_WIDTH

"""Internal: how the command line shows a long job's progress (cleanup, the migration).

On a terminal one line is redrawn in place a few times a second; anywhere else (cron, a log
file, a pipe) a plain line is written every few seconds, so logs stay readable. It is a small
writer of our own rather than tqdm or rich: the command ships in the core package, and one
status line is not worth a dependency for every application that installs the library.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["TTY_REFRESH", "Progress", "describe", "format_duration"]

#: Seconds between redraws on a terminal: smooth to watch, and never a flood of writes.
TTY_REFRESH = 0.2
# The width assumed when the terminal does not say.
_DEFAULT_WIDTH = 80
# Erase from the cursor to the end of the line (ANSI; every terminal emulator in use knows it).
_ERASE = "\x1b[K"


def format_duration(seconds: float) -> str:
    """A duration short enough for a status line: ``45s``, ``1m13s``, ``2h05m``.

    Rounded up, so the time left never reads ``0s`` while work remains.

    :param seconds: the duration; negative counts as 0.
    """
    whole = max(0, math.ceil(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _rate(per_second: float) -> str:
    return f"{per_second:.0f}/s" if per_second >= 10 else f"{per_second:.1f}/s"


def describe(done: int, total: int | None, elapsed: float, *, what: str, approximate: bool) -> str:
    """One progress sentence: ``120000 of ~1000000 expired rows removed (12000/s, about 1m13s left)``.

    The rate is the average since the start; the time left assumes it holds. A total that
    ``done`` has passed (an estimate, or rows that expired meanwhile) is no longer shown.

    :param done: units finished so far.
    :param total: units expected in all; None when unknown.
    :param elapsed: seconds since the work started.
    :param what: what ``done`` counts, e.g. ``"expired rows removed"``.
    :param approximate: whether ``total`` is an estimate (shown as ``~N``).
    """
    if total is None or done > total:
        head = f"{done} {what}"
    else:
        head = f"{done} of {'~' if approximate else ''}{total} {what}"
    details = []
    if done > 0 and elapsed > 0:
        per_second = done / elapsed
        details.append(_rate(per_second))
        if total is not None and total > done:
            details.append(f"about {format_duration((total - done) / per_second)} left")
    return f"{head} ({', '.join(details)})" if details else head


class Progress:
    """Shows how far a long job is on ``stream`` without flooding it; feed it :meth:`update`.

    Its :meth:`update` takes ``(done, total)``, the arguments ``PostgresStore.purge_expired``
    and ``migrate_flask_pg_session`` pass their ``on_batch`` callback.

    :param label: what starts every line, e.g. ``"pgsession-wsgi cleanup"``.
    :param what: what is counted, e.g. ``"expired rows removed"``.
    :param stream: where to write; the command line passes stderr, so stdout keeps the summary.
    :param approximate: whether the total is an estimate (shown as ``~N``).
    :param interval: seconds between lines when not on a terminal; 0 for a line per update.
    :param tty: redraw one line in place (a terminal) or append lines; None asks ``stream``.
    :param clock: monotonic seconds; tests pass a fake one.
    :param width: the terminal's width in columns; None asks the terminal at each redraw. A
        line too wide for it loses its label first, then its end.
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
        """Record how far the work is; write if the last write is old enough.

        The first call starts the clock the rate is measured from.

        :param done: units finished so far.
        :param total: units expected in all; None when unknown.
        """
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

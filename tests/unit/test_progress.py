"""The command line's progress display (pgsession_wsgi._store.progress), on a fake clock: what a terminal
and what a log file get, and when."""

from __future__ import annotations

import io

import pytest

from pgsession_wsgi._store.progress import TTY_REFRESH, Progress, describe, format_duration

ERASE = "\x1b[K"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (-3, "0s"), (0.2, "1s"), (45, "45s"), (59.5, "1m00s"), (73, "1m13s"),
    (3599, "59m59s"), (3600, "1h00m"), (2 * 3600 + 5 * 60, "2h05m"),
])
def test_durations_are_short_and_round_up(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_sentence_says_done_total_rate_and_time_left() -> None:
    text = describe(120000, 1000000, 10.0, what="expired rows removed", approximate=True)
    assert text == "120000 of ~1000000 expired rows removed (12000/s, about 1m14s left)"
    exact = describe(10, 40, 4.0, what="rows handled", approximate=False)
    assert exact == "10 of 40 rows handled (2.5/s, about 12s left)"


def test_a_sentence_leaves_out_what_it_cannot_know() -> None:
    assert describe(0, 500, 0.0, what="rows", approximate=True) == "0 of ~500 rows"
    assert describe(7, None, 1.0, what="rows", approximate=False) == "7 rows (7.0/s)"
    assert describe(500, 500, 2.0, what="rows", approximate=False) == "500 of 500 rows (250/s)"
    # An estimate the work has passed is not shown any more ("600 of ~500" would be nonsense).
    assert describe(600, 500, 2.0, what="rows", approximate=True) == "600 rows (300/s)"


def log_progress(interval: float) -> tuple[Progress, io.StringIO, Clock]:
    stream, clock = io.StringIO(), Clock()
    return Progress("job", "rows", stream, interval=interval, tty=False, clock=clock), stream, clock


def test_off_a_terminal_a_line_every_interval_and_none_for_a_short_job() -> None:
    progress, stream, clock = log_progress(interval=10)
    progress.update(0, 100)  # at 1000.0: the clock starts
    for done, at in ((10, 1003.0), (20, 1009.9)):
        clock.now = at
        progress.update(done, 100)
    assert stream.getvalue() == ""  # a job done within one interval prints no progress at all
    clock.now = 1010.0
    progress.update(30, 100)
    assert stream.getvalue() == "job: 30 of 100 rows (3.0/s, about 24s left)\n"
    clock.now = 1019.0
    progress.update(40, 100)
    assert stream.getvalue().count("\n") == 1  # 9 s after the last line: not yet
    clock.now = 1020.0
    progress.update(50, 100)
    assert stream.getvalue().splitlines()[-1] == "job: 50 of 100 rows (2.5/s, about 20s left)"
    progress.finish()
    assert "\r" not in stream.getvalue() and ERASE not in stream.getvalue()


def test_off_a_terminal_interval_zero_is_a_line_per_batch_never_the_same_count_twice() -> None:
    progress, stream, clock = log_progress(interval=0)
    progress.update(0, 20)  # the call before the first batch
    for done in (10, 20, 20):  # a purge's last batch may remove nothing
        clock.now += 1
        progress.update(done, 20)
    assert stream.getvalue().splitlines() == [
        "job: 10 of 20 rows (10/s, about 1s left)",
        "job: 20 of 20 rows (10/s)",
    ]


def tty_progress(width: int = 200) -> tuple[Progress, io.StringIO, Clock]:
    stream, clock = io.StringIO(), Clock()
    progress = Progress("job", "rows", stream, approximate=True, tty=True, clock=clock, width=width)
    return progress, stream, clock


def test_on_a_terminal_one_line_is_redrawn_at_most_every_refresh() -> None:
    progress, stream, clock = tty_progress()
    progress.update(0, 100)  # drawn at once: the user sees the job has started
    assert stream.getvalue() == "\rjob: 0 of ~100 rows" + ERASE
    clock.now += TTY_REFRESH / 2
    progress.update(10, 100)
    assert stream.getvalue().count("\r") == 1  # too soon
    clock.now += TTY_REFRESH / 2
    progress.update(20, 100)
    assert stream.getvalue().endswith("\rjob: 20 of ~100 rows (100/s, about 1s left)" + ERASE)
    assert "\n" not in stream.getvalue()
    progress.finish()  # erased, so the summary takes its place
    assert stream.getvalue().endswith(ERASE + "\r" + ERASE)


def test_on_a_narrow_terminal_the_label_goes_first_then_the_tail() -> None:
    sentence = "20 of ~100 rows (100/s, about 1s left)"
    for width, shown in ((60, "job: " + sentence), (40, sentence), (11, sentence[:10])):
        progress, stream, clock = tty_progress(width)
        progress.update(0, 100)
        clock.now += TTY_REFRESH
        progress.update(20, 100)
        assert stream.getvalue().rsplit("\r", 1)[1] == shown + ERASE, width


def test_finish_writes_nothing_when_nothing_was_drawn() -> None:
    progress, stream, _ = tty_progress()
    progress.finish()
    assert stream.getvalue() == ""


def test_the_stream_says_whether_it_is_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert Progress("job", "rows", Terminal()).tty
    assert not Progress("job", "rows", io.StringIO()).tty

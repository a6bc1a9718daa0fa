"""Internal: connection helpers both drivers share. An idle connection the server closed is found
with one system call and no round trip: it has something to read (the goodbye, or end of stream)."""

from __future__ import annotations

import select
from collections.abc import Callable, Mapping
from typing import Any

from ..dsn import hide_password
from ..errors import StoreUnavailable

__all__ = ["choose_readable", "first_line", "gone", "refused"]


def first_line(exc: BaseException | None) -> str:
    """The first line of an error's message, or its class name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def refused(exc: BaseException | None, secrets: Mapping[str, Any]) -> StoreUnavailable:
    """The error for a connection PostgreSQL refused, quoting why without the password."""
    reason = hide_password(first_line(exc), secrets) if exc is not None else "the attempt failed"
    return StoreUnavailable(
        f"cannot connect to PostgreSQL ({reason}); check that the server is running and the DSN is right"
    )


def _readable_poll(fd: int) -> bool:
    """Whether ``fd`` has something to read, an error or a hang-up, without waiting."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def _readable_select(fd: int) -> bool:
    """The same with select(), for platforms without poll() (Windows); a hang-up reads as EOF."""
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


def choose_readable() -> Callable[[int], bool]:
    """poll() where it exists: unlike select() it takes descriptors above FD_SETSIZE (1024)."""
    return _readable_poll if hasattr(select, "poll") else _readable_select


readable = choose_readable()


def gone(closed: bool, fileno: Callable[[], int], driver_error: type[Exception]) -> bool:
    """Whether an idle connection was closed; ``driver_error`` is what the driver raises on a gone socket."""
    if closed:
        return True
    try:
        return readable(fileno())
    except (OSError, ValueError, driver_error):
        return True

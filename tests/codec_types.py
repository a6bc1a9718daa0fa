"""The app types the codec registry tests register: a dataclass, one holding it, a lazy string."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pgsession_wsgi.codec import Codec


@dataclass
class Point:
    x: int
    y: int


@dataclass
class Stop:
    where: Point
    at: datetime
    fare: Decimal


class LazyText:
    """A stand-in for flask-babel's LazyString: not a str, but text when asked."""

    def __init__(self, make: Callable[[], str]) -> None:
        self._make = make

    def __str__(self) -> str:
        return self._make()


def with_app_types(codec: Codec) -> Codec:
    codec.register_type(Point, " pt", lambda p: [p.x, p.y], lambda data: Point(*data))
    codec.register_type(
        Stop, " stop", lambda s: {"where": s.where, "at": s.at, "fare": s.fare}, lambda data: Stop(**data)
    )
    codec.register_type(LazyText, None, str)
    return codec


STOP = Stop(Point(1, 2), datetime(2026, 3, 4, 5, 6), Decimal("2.50"))

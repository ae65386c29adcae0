"""When a schedule's runs fall due: every N seconds, or at the times of a cron expression.

A ``Ticks`` object (``Every`` or ``Cron``) answers ``next(due)``: the tick after ``due``,
in the clock's seconds since the epoch; ``make_ticks`` builds one from ``schedule()``'s
``every=`` or ``cron=`` and checks it before anything runs. ``WallClock`` is the scheduler's
default time source. ``croniter`` is imported only when ``cron=`` is used.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import time
from typing import Any

from ..core.errors import DefinitionError

__all__ = ["Cron", "Every", "Ticks", "WallClock", "make_ticks"]


class WallClock:
    """The scheduler's default clock: ``time.time`` (seconds since the epoch) and ``asyncio.sleep``.

    Wall time, not monotonic: cron expressions and the tick times shown in the history are
    wall-clock times. Deadlines are re-read after every sleep, so a clock change shifts one
    tick at most.
    """

    now = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Every:
    """Ticks ``seconds`` apart, counted from the first one (no drift from run durations)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.first: float | None = None
        self.k = 0

    def next(self, due: float) -> float:
        if self.first is None:
            self.first = due
        self.k += 1
        return self.first + self.k * self.seconds

    def __str__(self) -> str:
        return f"every {self.seconds:g}s"


class Cron:
    """Ticks at the times of a cron expression, read in the local time zone."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.croniter = _croniter()
        try:
            self.next(time.time())  # parse now: a bad expression fails before anything runs
        except Exception as err:  # croniter raises several types (CroniterBadCronError, KeyError...)
            raise DefinitionError(
                f"cron= expression {expression!r} is not valid ({err}). A cron expression has five "
                "fields, minute hour day-of-month month day-of-week, e.g. '*/5 * * * *'."
            ) from None

    def next(self, due: float) -> float:
        # an aware local datetime: "0 9 * * *" means 9:00 where the user is, DST included
        start = datetime.datetime.fromtimestamp(due).astimezone()
        return float(self.croniter(self.expression, start).get_next(float))

    def __str__(self) -> str:
        return f"cron {self.expression!r}"


def _croniter() -> Any:
    try:
        from croniter import croniter
    except ImportError as err:
        raise ImportError(
            "nborch.schedule(cron=...) needs the croniter package: pip install croniter"
        ) from err
    return croniter


Ticks = Every | Cron


def make_ticks(every: Any, cron: Any) -> Ticks:
    """The ticks of ``every=`` seconds (or a timedelta) or, when it is None, of ``cron=``."""
    if every is not None:
        return Every(_seconds(every))
    if not isinstance(cron, str) or not cron.strip():
        raise DefinitionError(
            f"cron= expects a cron expression string such as '*/5 * * * *', got {cron!r}"
        )
    return Cron(cron.strip())


def _seconds(every: Any) -> float:
    """``every=`` in seconds (a number or a timedelta); ``DefinitionError`` unless it is > 0."""
    if isinstance(every, datetime.timedelta):
        every = every.total_seconds()
    number = isinstance(every, int | float) and not isinstance(every, bool)
    if not number or not math.isfinite(every) or every <= 0:
        raise DefinitionError(f"every= expects a number of seconds > 0, got {every!r}")
    return float(every)

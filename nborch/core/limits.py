"""Rate limits: small state objects the engine consults.

**Rates.** ``@task(rate="10/s")`` spaces the starts of a task's bodies evenly over the run:
one every 0.1 s, never a burst (a generic cell rate algorithm with no burst tolerance: a
start is due ``period / count`` after the one before it). Every attempt takes a start, so a
retry waits for the rate as a first attempt does; ``rate_by=`` keeps one schedule per value of
those arguments (as ``limit_by=`` keeps one limit). A task whose start is not due gives its
slots back (``max_concurrency``, its pool, ``limit=``, a Parallel's ``limit``) and waits in its
limiter's line: the first in line sleeps on the run's clock until its start is due, takes its
slots back (ahead of new work), starts, and only then hands the turn to the next. So starts
keep to the rate even when slots are scarce, waiters start in the order they arrived, and
one sleep per start is enough (a fake clock's time advances exactly as a real one's). A
cached call (``cache=True`` hit) runs no body and takes no start.

Why not aiolimiter, limits or pyrate-limiter: none takes the run's ``Clock``. aiolimiter reads
``loop.time()`` and waits with loop timers (and lets ``max_rate`` starts through at once);
limits' strategies read ``time.time()`` and do not wait; pyrate-limiter takes a clock for its
timestamps but sleeps with ``asyncio.sleep``/``time.sleep``. Tests with a fake clock would
sleep for real, and the core would gain a dependency for some 60 lines.

The slot pools (``max_concurrency=``, ``slots=``, ``pool=``) are ``nborch.core.slots``'.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import DefinitionError
from .eventbus import TaskWaiting

if TYPE_CHECKING:
    from .engine import Engine
    from .invocation import Inv

__all__ = ["Rate", "RateLimiter", "Rates", "call_values", "parse_rate"]

# -- rates ----------------------------------------------------------------------------------------

_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
}
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_RATE = re.compile(rf"\s*({_NUMBER})\s*/\s*({_NUMBER})?\s*([a-z]+)\s*", re.IGNORECASE)
_RATE_HELP = "such as '10/s', '100/min' or '5000/h' (also '2/5s': 2 starts every 5 seconds)"


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` starts every ``per`` seconds, evenly spaced (see the module)."""

    count: float
    per: float
    text: str = field(default="", compare=False)  # as written; "10/s" and "10 / s" are one rate

    @property
    def interval(self) -> float:
        """Seconds between two starts."""
        return self.per / self.count

    def __str__(self) -> str:
        return self.text


def parse_rate(value: Any, who: str = "") -> Rate:
    """``"10/s"``, ``"100/min"``, ``"5000/h"``, ``"2/5s"``, ``"0.5/s"`` -> Rate; DefinitionError
    otherwise (``who`` names the task: ``"task 'fetch': "``)."""
    if isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        fix = f" Write rate='{value}/s'." if isinstance(value, int | float) and not isinstance(value, bool) else ""
        raise DefinitionError(f"{who}rate= expects starts per period {_RATE_HELP}, got {value!r}.{fix}")
    match = _RATE.fullmatch(value)
    if match is None:
        raise DefinitionError(f"{who}rate= expects starts per period {_RATE_HELP}, got {value!r}.")
    unit = _UNITS.get(match.group(3).lower())
    if unit is None:
        raise DefinitionError(
            f"{who}rate= got {value!r}: its period must be in seconds (s), minutes (min) or hours (h), "
            f"not {match.group(3)!r}. For 10 a day, write '10/24h'."
        )
    count, times = float(match.group(1)), float(match.group(2) or 1)
    if not (count > 0 and times > 0 and math.isfinite(count) and math.isfinite(times)):
        raise DefinitionError(
            f"{who}rate= needs a count and a period above zero, got {value!r} (leave rate= out for no limit)."
        )
    return Rate(count, times * unit, value.strip())


class RateLimiter:
    """The starts of one rate in one run: one task function's, or one ``rate_by`` key's."""

    __slots__ = ("interval", "next_at", "head", "queue")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at = -math.inf  # the earliest start that keeps to the rate
        self.head = False  # a task is first in line: it sleeps until next_at, then starts
        self.queue: deque[asyncio.Future[None]] = deque()  # those behind it, woken one by one

    def take(self, now: float) -> bool:
        """Take a start now if one is due and nobody is in line; False: wait your turn."""
        if self.head or now < self.next_at:
            return False
        self.next_at = now + self.interval
        return True

    def expected(self) -> float:
        """When a task joining the line now may expect its turn."""
        return self.next_at + self.interval * (len(self.queue) + (1 if self.head else 0))

    def pass_turn(self) -> None:
        """The first in line started (or gave up): wake the next, if any."""
        queue = self.queue
        while queue:
            fut = queue.popleft()
            if not fut.done():  # a cancelled waiter's future is cancelled with it
                fut.set_result(None)
                return
        self.head = False


class Rates:
    """This run's rate limiters, and how a task waits for its turn (one per ``Engine``)."""

    __slots__ = ("engine", "limiters")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.limiters: dict[Any, RateLimiter] = {}

    def limiter(self, inv: Inv, args: Any, kwargs: Any) -> RateLimiter:
        """The limiter ``inv``'s starts go through (shared by every call of its function, or
        by every call with the same ``rate_by`` values)."""
        opts = inv.spec.task.options
        rate: Rate = opts.rate  # type: ignore[assignment]
        values = call_values(inv, opts.rate_by, args, kwargs) if opts.rate_by else None
        key = (inv.spec.task.fn, rate, values)
        lim = self.limiters.get(key)
        if lim is None:
            lim = self.limiters[key] = RateLimiter(rate.interval)
        return lim

    async def turn(self, inv: Inv, lim: RateLimiter) -> None:
        """Return when ``inv`` may start an attempt, holding its slots again.

        It waits without its slots: another task may run meanwhile. The wait is published as a
        ``TaskWaiting`` (reason "rate"); the RUNNING that follows ends it."""
        engine = self.engine
        if lim.take(engine.now()):
            return
        if engine.publisher.listening:
            engine.publisher.publish(TaskWaiting(engine.run_id, inv.name, "rate", inv.attempts + 1, lim.expected(), engine.now()))
        engine.slots.release(inv)  # not due: its slots go to other work meanwhile
        if lim.head:
            fut = engine.loop.create_future()  # type: ignore[union-attr]
            lim.queue.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():  # it was woken as it was cancelled
                    lim.pass_turn()
                raise
        else:
            lim.head = True
        try:
            delay = lim.next_at - engine.now()
            if delay > 0:
                await engine.clock.sleep(delay)
            await engine.slots.reacquire(inv)
            now = engine.now()
            lim.next_at = max(lim.next_at, now) + lim.interval
            if not inv.attempts:  # its first attempt starts now, not when it was launched
                inv.started = now
        finally:
            lim.pass_turn()


def call_values(inv: Inv, names: tuple[str, ...], args: Any, kwargs: Any) -> tuple[Any, ...]:
    """The values of parameters ``names`` in a call of ``inv``'s function (the key of
    ``limit_by``/``rate_by``); reprs when a value cannot be hashed."""
    try:
        bound = inv.spec.task.info.signature.bind(*args, **kwargs).arguments  # type: ignore[union-attr]
        values = tuple(bound.get(name) for name in names)
        hash(values)
    except TypeError:
        values = tuple(repr(kwargs.get(name)) for name in names)
    return values

"""Time, in one place: the engine and the breakers read the clock only through a ``Clock``."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """What nborch needs of time: a monotonic ``now()`` and an awaitable ``sleep()``."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (retry back-off goes through here, so tests can skip it)."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def wall_time() -> float:
    """Seconds since the epoch, for records people read (run start and end)."""
    return time.time()

"""Shared fixtures: ``recorder`` (collects a run's events) and ``fake_clock`` (no real sleeps)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from nborch import TaskEvent, TaskState


class Recorder:
    """Collects every event it is given; pass it as ``run(..., on_event=recorder)``."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self._lock:
            self.events.append(event)

    def task_events(self, task: str | None = None) -> list[TaskEvent]:
        """The TaskEvents, all or those of one task, in the order they were published."""
        return [e for e in self.events if isinstance(e, TaskEvent) and (task is None or e.task == task)]

    def states(self, task: str) -> list[TaskState]:
        """The states one task went through, in order."""
        return [e.state for e in self.task_events(task)]

    def of_type(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class FakeClock:
    """A ``Clock`` whose ``sleep`` records the delay, advances ``now()`` and returns at once."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.time += seconds
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.time += seconds


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


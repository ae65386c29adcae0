"""``nborch.progress``: tqdm-like progress from inside a task, shown by the live display."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from .engine import current_frame
from .eventbus import TaskProgress

__all__ = ["progress"]

T = TypeVar("T")

_INTERVAL = 0.1  # seconds between two reports of one task: a display repaints at ~10 Hz anyway


def progress(iterable: Iterable[T], total: int | None = None) -> Iterator[T]:
    """Yield from ``iterable``, reporting how far the current task got.

    ``total`` defaults to ``len(iterable)`` when it has one. Reports are throttled to about
    ten a second (and one at the end), so a tight loop costs almost nothing. Outside a
    running task, or with nobody listening, it just yields.
    """
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    frame = current_frame()
    if frame is None or not frame.engine.publisher.listening:
        yield from iterable
        return
    engine, name = frame.engine, frame.inv.name
    now, publish = engine.now, engine.publisher.publish_threadsafe
    done = 0
    last = now()
    publish(TaskProgress(engine.run_id, name, 0, total, last))
    for item in iterable:
        yield item
        done += 1
        t = now()
        if t - last >= _INTERVAL:
            last = t
            publish(TaskProgress(engine.run_id, name, done, total, t))
    publish(TaskProgress(engine.run_id, name, done, total, now()))

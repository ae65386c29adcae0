"""Per-task output capture: what a task prints or logs is kept under its name.

While a run is active, ``sys.stdout`` and ``sys.stderr`` are wrapped by a router that looks at
the current task (a context variable, so it follows coroutines and worker threads alike) and
hands the text to that task's run; text written outside any task goes through untouched.
This is what keeps output from worker threads out of the wrong notebook cell
(ipywidgets#4020): nothing is printed "somewhere", everything is filed by task.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from typing import Any, TextIO

from ..core.engine import current_frame

__all__ = ["install", "uninstall"]


class _Router(io.TextIOBase):
    """Stands in for ``sys.stdout`` / ``sys.stderr`` while runs are active.

    It does not own the stream it wraps: ``close()`` leaves that stream alone and ``closed``
    is the stream's own state. This matters when the router is collected: io's finalizer
    calls ``close()``, which by default flushes, and a router kept alive past the end of the
    runs (by a ``logging.StreamHandler(sys.stdout)`` made in a task, say) is often collected
    after its stream was closed (pytest's and IPython's capture files), which raised
    "I/O operation on closed file" from the finalizer.
    """

    def __init__(self, original: TextIO, stream: str) -> None:
        self.original = original
        self.stream = stream

    def close(self) -> None:
        """Nothing to do: the wrapped stream belongs to whoever installed it."""

    @property
    def closed(self) -> bool:
        return bool(getattr(self.original, "closed", False))

    def write(self, text: str) -> int:
        frame = current_frame()
        if frame is None or not text:
            return self.original.write(text)
        through = frame.engine.output.capture(frame.inv.name, self.stream, text)
        if through:
            self.original.write(through)
        return len(text)

    def flush(self) -> None:
        self.original.flush()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")

    def isatty(self) -> bool:
        return bool(getattr(self.original, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self.original.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


class _LogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        frame = current_frame()
        if frame is None:
            return
        try:
            text = self.format(record)
        except Exception:  # a bad log call must not break the task
            text = str(record.msg)
        frame.engine.output.capture(frame.inv.name, "log", text + "\n")


_lock = threading.Lock()
_active = 0
_saved: dict[str, Any] = {}
_handler = _LogHandler()
_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))


def install() -> None:
    """Start routing output by task (reference counted: runs may overlap)."""
    global _active
    with _lock:
        _active += 1
        if _active > 1:
            return
        _saved["stdout"], _saved["stderr"] = sys.stdout, sys.stderr
        sys.stdout = _Router(sys.stdout, "stdout")
        sys.stderr = _Router(sys.stderr, "stderr")
        task_logger = logging.getLogger("nborch.task")
        task_logger.addHandler(_handler)
        if task_logger.level == logging.NOTSET:
            # task.logger.info(...) must reach the capture even when the root logger says WARNING
            task_logger.setLevel(logging.INFO)
            _saved["level"] = True


def flush(engine: Any) -> None:
    """Write out what the run's tasks printed without a final newline."""
    for stream, text in engine.output.flush_partial():
        target = _saved.get(stream) or getattr(sys, stream)
        if isinstance(target, _Router):
            target = target.original
        target.write(text + "\n")


def uninstall() -> None:
    """Stop routing when the last active run ends."""
    global _active
    with _lock:
        _active -= 1
        if _active > 0:
            return
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if isinstance(current, _Router):
                setattr(sys, name, current.original)
        task_logger = logging.getLogger("nborch.task")
        task_logger.removeHandler(_handler)
        if _saved.pop("level", False):
            task_logger.setLevel(logging.NOTSET)
        _saved.clear()

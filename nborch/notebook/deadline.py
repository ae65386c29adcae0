"""``nborch run --timeout S``: one deadline for a whole headless run (cells and task graph)."""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading
import time
from collections.abc import Iterator

__all__ = ["Deadline"]


class Deadline:
    """A deadline ``seconds`` from now (None: none). Cells are stopped at it as Ctrl-C stops
    them (``interrupting``); the task graph gets what is left as its ``run(timeout=)``."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.start = time.monotonic()
        self.expired = False
        self._lock = threading.Lock()
        self._armed = False

    def remaining(self) -> float | None:
        """Seconds left (possibly <= 0), or None without a deadline."""
        if self.seconds is None:
            return None
        return self.seconds - (time.monotonic() - self.start)

    def check(self) -> None:
        """Raise KeyboardInterrupt (and mark the deadline expired) when it has passed."""
        left = self.remaining()
        if left is not None and left <= 0:
            self.expired = True
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def interrupting(self) -> Iterator[None]:
        """While the block runs, the deadline interrupts it with SIGINT, as Ctrl-C would: the
        cell's code sees KeyboardInterrupt. Only on the main thread (where Python handles
        signals); elsewhere the block is not interrupted, and the next ``check`` stops the run."""
        self.check()
        left = self.remaining()
        if left is None or threading.current_thread() is not threading.main_thread():
            yield
            return
        main = threading.main_thread().ident
        assert main is not None

        def fire() -> None:
            with self._lock:
                if not self._armed:  # the block ended meanwhile: nothing to interrupt
                    return
                self.expired = True
                if hasattr(signal, "pthread_kill"):  # wakes a main thread blocked in a system call
                    signal.pthread_kill(main, signal.SIGINT)
                else:  # pragma: no cover - Windows
                    _thread.interrupt_main()

        timer = threading.Timer(max(left, 0.0), fire)
        timer.daemon = True
        with self._lock:
            self._armed = True
        timer.start()
        try:
            yield
        finally:
            with self._lock:
                self._armed = False
            timer.cancel()

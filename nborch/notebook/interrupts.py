"""A Ctrl-C that a headless run's main thread would sleep through wakes it.

CPython handles a signal in two steps: a C handler, run at once in whichever thread the
signal landed in, only notes it; the Python handler (KeyboardInterrupt) runs in the main
thread between two bytecodes. A blocking call (``time.sleep``, a lock, a socket read) is
woken by the signal only if it is already blocked in the system call when the signal lands
on the main thread. So a SIGINT that arrives in the few microseconds between a cell's last
bytecode and the start of its ``time.sleep(3600)``, or that lands on another thread, is noted
and then slept through: the cell runs on for an hour. (Rare: a process that writes a line and
sleeps, sent SIGINT as the line arrives, slept through 2 of 2,120 on a loaded 2-core machine;
``benchmarks/interrupts.py``.) ``nborch run --fail-fast`` stops the other notebooks with a SIGINT.

``relay_interrupts()``, around a headless run's cells and task graph: a thread sees every
SIGINT through the signal wakeup fd. If the main thread has not moved since (the same frame
at the same instruction) ``GRACE`` seconds later, it sends the main thread ``WAKE``, a signal
whose handler does nothing: the blocking call returns early with EINTR, CPython runs the
handlers of the signals it noted (the SIGINT's: KeyboardInterrupt, or asyncio's graceful
cancel) and, if none raised, resumes the call where it was (PEP 475: the standard library
retries every call a signal interrupts). So a wake that was not needed changes nothing, and no
SIGINT is ever sent twice. The relay does not replace SIGINT's handler, so ``asyncio.run``
still installs its own and a run is cancelled as without it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["GRACE", "WAKE", "relay_interrupts"]

GRACE = 0.2  # seconds the main thread has to act on a SIGINT before it is woken
WAKES = 5  # wakes at most, GRACE apart, while it has not moved (a long C call does not wake)
WAKE = getattr(signal, "SIGURG", None)  # ignored by default, and seldom used (out-of-band socket data)
_STOP = b"\0"  # written to the wakeup pipe once the relay is closed, to wake its thread (no signal is 0)


def _woken(signum: int, frame: Any) -> None:
    """WAKE's handler: nothing; the signal only makes the main thread's blocking call return."""


class _Relay:
    def __init__(self, read_fd: int) -> None:
        self.read_fd = read_fd
        self.main = threading.main_thread().ident
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self.watch, name="nborch-interrupt-relay", daemon=True)

    def drain(self) -> bytes:
        try:
            return os.read(self.read_fd, 4096)
        except BlockingIOError:
            return b""

    def watch(self) -> None:
        try:
            while not self.closed.is_set():
                select.select([self.read_fd], [], [])
                data = self.drain()
                if self.closed.is_set():  # set before _STOP is written
                    return
                if signal.SIGINT in data:
                    self.wake_if_stuck()
        except OSError:  # the pipe was closed under it
            return

    def wake_if_stuck(self) -> None:
        """Wake the main thread while it stays where it was when a SIGINT was read."""
        assert WAKE is not None and self.main is not None
        frame = sys._current_frames().get(self.main)
        if frame is None:
            return
        where = frame.f_lasti
        try:
            for _ in range(WAKES):
                if self.closed.wait(GRACE):
                    return
                if sys._current_frames().get(self.main) is not frame or frame.f_lasti != where:
                    return  # it moved on: the SIGINT was seen
                signal.pthread_kill(self.main, WAKE)
        finally:
            del frame  # a frame keeps its locals alive


@contextlib.contextmanager
def relay_interrupts() -> Iterator[None]:
    """While the block runs on the main thread, a SIGINT its main thread would sleep through
    wakes it (see the module's docstring). Elsewhere, when another wakeup fd is set (an asyncio
    loop's ``add_signal_handler``), or when WAKE has a handler of its own, it does nothing."""
    if (WAKE is None or not hasattr(signal, "pthread_kill")
            or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(WAKE) is not signal.SIG_DFL):
        yield
        return
    read_fd, write_fd = os.pipe()
    for fd in (read_fd, write_fd):
        os.set_blocking(fd, False)
    try:
        old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError):  # pragma: no cover - not the main interpreter
        old_fd = None
    if old_fd != -1:  # someone else reads the signals: leave them theirs
        if old_fd is not None:
            signal.set_wakeup_fd(old_fd)
        os.close(read_fd)
        os.close(write_fd)
        yield
        return
    signal.signal(WAKE, _woken)
    relay = _Relay(read_fd)
    relay.thread.start()
    try:
        yield
    finally:
        relay.closed.set()
        current = signal.set_wakeup_fd(-1)
        if current not in (write_fd, -1):  # replaced meanwhile: put theirs back
            signal.set_wakeup_fd(current)
        if signal.getsignal(WAKE) is _woken:
            signal.signal(WAKE, signal.SIG_DFL)
        with contextlib.suppress(OSError):
            os.write(write_fd, _STOP)
        relay.thread.join(timeout=5)
        os.close(read_fd)
        os.close(write_fd)

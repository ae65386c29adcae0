"""Is the process that wrote a row or a file still there? Processes named so that a later one can tell.

A run row records its process (pid, host, and ``PROC``: the boot and the process's start in
clock ticks since boot, which guard against a reused pid), so that a store opened later marks
the runs of a process that is gone as "crashed". A cache write's temporary file is named after
its process the same way (``temp_name``), so that a later process removes those of a killed
writer and leaves a write in progress alone.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

__all__ = ["HOST", "PROC", "WRITING", "is_alive", "run_is_gone", "temp_name", "temp_writer_alive"]

HOST = os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "")


def _stat(pid: int) -> tuple[bytes, int] | None:
    """(state, start time in clock ticks since boot) of a Linux process; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


_HAVE_PROC = os.path.isdir("/proc/self")
_TICKS = (_stat(os.getpid()) or (b"", 0))[1]  # this process's start: guards against pid reuse


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


PROC = f"{_boot_id()}:{_TICKS}"  # this process, for run rows (pids and ticks restart at boot)


def is_alive(pid: int, ticks: int | None = None, boot: str | None = None) -> bool:
    """Whether process ``pid`` lives and (when given) is the one that started at ``ticks``
    after boot ``boot``, not a later process that got the same pid."""
    if _HAVE_PROC:
        if boot is not None and boot != PROC.partition(":")[0]:
            return False  # written before the last reboot
        stat = _stat(pid)
        if stat is None or stat[0] == b"Z":  # gone, or killed and not yet reaped
            return False
        return ticks is None or stat[1] == ticks
    if os.name != "posix":  # pragma: no cover - no cheap, safe test: assume it lives
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_is_gone(run: dict[str, Any]) -> bool:
    """Whether the process that recorded run row ``run`` (on this machine) is gone."""
    pid, proc = run.get("pid"), run.get("proc")
    if not pid or run.get("host") != HOST:  # not recorded (version 1), or on another machine
        return False
    boot, _, ticks = (proc or "").rpartition(":")
    return not is_alive(pid, int(ticks) if ticks.isdigit() else None, boot if proc else None)


# Temporary files of cache writes are named .<value>.<pid>.<ticks>.<n>.tmp: a later process
# removes those whose writer is gone. WRITING: the ones this process is writing right now.
WRITING: set[str] = set()
_counter = itertools.count()


def temp_name(final: str) -> str:
    """A temporary file name for writing ``final``, unique per write, naming this process."""
    return f".{final}.{os.getpid()}.{_TICKS}.{next(_counter)}.tmp"


def temp_writer_alive(name: str) -> bool:
    """Whether the writer of temporary file ``name`` may still be writing it (a name that is
    not one of ours counts as alive: it is left alone)."""
    parts = name.split(".")
    try:
        if len(parts) >= 7:
            pid, ticks = int(parts[-4]), int(parts[-3])
        else:  # an older name, .<value>.<pid>.tmp
            pid, ticks = int(parts[-2]), None
    except (ValueError, IndexError):
        return True  # not one of ours: leave it
    if pid == os.getpid() and (ticks is None or ticks == _TICKS):
        return name in WRITING
    return is_alive(pid, ticks)

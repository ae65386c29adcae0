"""Real faults for store tests: a locked database, a full disk, a read-only folder."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def write_lock(db_path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holds the database's write lock (a DB browser mid-transaction)."""
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()


def _mount(args: list[str]) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or done.returncode}): needs root")


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


@contextlib.contextmanager
def tiny_disk(path: Path, size: str = "64k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (skips the test where mounting is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    _mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    try:
        yield path
    finally:
        umount(path)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    for name, chunk in (("filler", 4096), ("filler2", 1)):
        with open(folder / name, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * chunk)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` as a read-only bind mount of itself (root ignores chmod, not a read-only mount)."""
    _mount(["--bind", str(path), str(path)])
    try:
        _mount(["-o", "remount,ro,bind", str(path)])
        probe = path / ".probe"
        try:
            probe.write_text("x")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("the read-only mount still accepts writes")
        yield path
    finally:
        umount(path)


def is_mounted(path: Path) -> bool:
    return os.path.ismount(path)

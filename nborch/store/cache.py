"""Cached task results: values on disk with cloudpickle, by the key of their call.

The keys come from ``nborch.keys`` (the same key decides incremental re-runs in a kernel and
``%orch why``): code and helpers, the globals and closures read by value, the arguments and
the upstreams. A value that cannot be hashed for its key leaves the task uncached, with one
warning naming it. Values are written atomically (a temporary file unique per write, then
rename) before SUCCEEDED is published; a value that cannot be written gives one warning and
the task succeeds uncached.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.keys import HASH_LIMIT, CallKey, Unhashable, call_key, code_hash, fingerprint
from ..core.introspection import fn_name
from .liveness import WRITING, temp_name

if TYPE_CHECKING:
    from .sqlite import SqliteStore

__all__ = ["HASH_LIMIT", "Cache", "CallKey", "Unhashable", "call_key", "code_hash", "fingerprint"]


class Cache:
    """Task results by key, in a ``SqliteStore``'s ``values/`` folder: one file per key."""

    def __init__(self, store: SqliteStore, run_id: str | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.folder = store.values
        self._warned = store.warned  # one warning per task and store, not one per run
        self.failed = False  # values cannot be written here (warned): this run stops trying

    def key(self, fn: Any, args: Any, kwargs: dict[str, Any], upstream_keys: Iterable[str]) -> str | None:
        """The key of one call, or None (with one warning) when it cannot be computed."""
        key = self.call_key(fn, args, kwargs, upstream_keys)
        return key.digest if key is not None else None

    def call_key(self, fn: Any, args: Any, kwargs: dict[str, Any], upstream_keys: Iterable[str]) -> CallKey | None:
        """``key`` with each part's digest (to say why it missed), or None (with one warning)."""
        try:
            return call_key(fn, args, kwargs, upstream_keys)
        except Unhashable as err:
            why = "is too big to hash" if err.too_big else "cannot be hashed"
            self._warn(f"key {fn_name(fn)} {err.what}",
                       f"nborch: {fn_name(fn)!r} {err.what}, which {why} for its cache key ({err.reason}); "
                       "its calls are not cached.")
        except Exception as err:  # a key must never fail the task: it is just not cached
            self._warn(f"key {fn_name(fn)}", f"nborch: the cache key of {fn_name(fn)!r} could not be computed "
                       f"({type(err).__name__}: {err}); its calls are not cached.")
        return None

    def _warn(self, topic: str, message: str) -> None:
        if topic not in self._warned:
            self._warned.add(topic)
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    def load(self, key: str) -> tuple[bool, Any, int]:
        """(hit, value, size in bytes). A missing or damaged file is a miss."""
        import cloudpickle

        try:
            with open(self.folder / f"{key}.pkl", "rb") as f:
                size = os.fstat(f.fileno()).st_size
                return True, cloudpickle.load(f), size
        except Exception:
            return False, None, 0

    def temp_path(self, name: str) -> Path:
        """Where a write of ``name`` goes first: unique per write, naming this process, so that
        a later process can tell the file of a killed writer from a write in progress."""
        return self.folder / temp_name(name)

    def save(self, key: str, task: str, value: Any) -> int | None:
        """Store a value; returns its size, or None if it is not cached. Never raises: a value
        that cannot be pickled gives one warning per task, a value that cannot be written (a
        full disk, a read-only folder) one warning per run."""
        import cloudpickle

        if self.failed:
            return None
        try:
            data = cloudpickle.dumps(value, protocol=5)
        except Exception as err:
            self._warn(task, f"nborch: the value of task {task!r} cannot be pickled ({type(err).__name__}: "
                       f"{err}); it is not cached.")
            return None
        name = f"{key}.pkl"
        tmp = self.temp_path(name)
        WRITING.add(tmp.name)
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.folder / name)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self.failed = True
            self.store.trouble(self.run_id, f"cannot store cached values in {self.folder} ({err}); run "
                               f"{self.run_id!r} goes on without caching.")
            return None
        finally:
            WRITING.discard(tmp.name)
        try:
            self.store.index_value(key, task, name, len(data), self.run_id)
        except (sqlite3.Error, OSError) as err:  # the value is on disk, and lookups read the file
            self.store.trouble(self.run_id, f"cannot record run {self.run_id!r} in {self.store.path} ({err}); "
                               "it goes on unrecorded.")
        return len(data)

"""Durable runs: the SQLite store (history, attempts, the cache index) and cached values.

Imported lazily by the runner: ``import nborch`` does not open a database.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from pathlib import Path
from typing import Any

from ..core.errors import NborchError
from ..core.record import ErrorRecord, Run
from ..core.state import TaskState
from .recorder import DurableRecorder, Recorder
from .resume import resume_key
from .schema import ITEMS_KEY, decode_graph
from .sqlite import SqliteStore, StoreError, default_home

__all__ = [
    "HISTORY_HEAD", "DurableRecorder", "Recorder", "SqliteStore", "StoreError", "default_home", "get_store",
    "history", "history_rows", "load_run", "open_for_run", "start_recording",
]

_stores: dict[Path, SqliteStore] = {}
_resolved: dict[tuple[Any, str], Path] = {}  # (home as given, cwd) -> its resolved path
_lock = threading.Lock()


def get_store(home: Any = None) -> SqliteStore:
    """The store at ``home`` (default: ``$NBORCH_HOME`` or ``./.nborch``), opened once per process
    (a store that cannot be written is opened again next time: the folder may have been fixed).
    Raises ``StoreError`` for a damaged database."""
    # resolved once per home as given and working directory: resolve() stats each folder of
    # the path, 50 us of a small run (a symlink retargeted meanwhile keeps its first target)
    given = os.fspath(home) if home is not None else os.environ.get("NBORCH_HOME") or ""
    key = (given, "" if given and os.path.isabs(given) else os.getcwd())
    path = _resolved.get(key)
    if path is None:
        path = _resolved[key] = Path(home).resolve() if home is not None else default_home().resolve()
    with _lock:
        store = _stores.get(path)
        if store is None:
            store = SqliteStore(path)
            if store.unwritable is None:
                _stores[path] = store
        return store


def open_for_run(option: Any) -> SqliteStore | None:
    """The store a run records into (``store=True``, a path or a ``SqliteStore``), or None
    with a warning when it cannot be used (damaged, read-only): the run goes on without it."""
    try:
        store = option if isinstance(option, SqliteStore) else get_store(None if option is True else option)
    except StoreError as err:
        warnings.warn(f"nborch: {err} This run is not recorded and not cached.", RuntimeWarning, stacklevel=2)
        return None
    if store.unwritable is not None:
        warnings.warn(f"nborch: the store at {store.home} cannot be written ({store.unwritable}); this run is "
                      "not recorded and not cached.", RuntimeWarning, stacklevel=2)
        return None
    return store


def start_recording(store: SqliteStore, run_id: str, *, name: str | None = None, durable: bool = False,
                    given_id: bool = False) -> Recorder:
    """The recorder of a run about to start. A ``run_id`` the caller gave (``given_id``) that
    is recorded already raises ``DefinitionError``."""
    store.claim(run_id, check=given_id)
    return (DurableRecorder if durable else Recorder)(store, run_id, name=name)


def load_run(run_id: str, store: SqliteStore | str | os.PathLike[str] | None = None, *, values: bool = True) -> Run:
    """Reopen a recorded run: states, durations, attempts, cached values (unless
    ``values=False``), errors as records."""
    from .cache import Cache

    store = store if isinstance(store, SqliteStore) else get_store(store)  # a path, as run(store=) takes
    store.flush()
    row, tasks, attempts = store.run_rows(run_id)
    if row is None:
        known = [r["id"] for r in store.runs(limit=5)]
        raise NborchError(
            f"no run {run_id!r} in {store.path}. Recent runs: {', '.join(known) or '(none)'}; "
            "see nborch.history()."
        )
    cache = Cache(store)
    run = Run(
        row["id"],
        started=row["started"] or 0.0,
        finished=row["finished"] or 0.0,
        duration=max((row["finished"] or 0.0) - (row["started"] or 0.0), 0.0),
        states={}, errors={}, attempts={}, durations={}, parents={},
        upstreams=_upstreams(row),
    )
    run.name = row["name"]
    run.recorded_state = row["state"]
    params = run.upstreams.pop(ITEMS_KEY, None)
    if isinstance(params, dict):
        run.recorded_params = params
    for t in tasks:
        name = t["task"]
        run.states[name] = TaskState(t["state"])
        run.attempts[name] = t["attempts"] or 0
        if t["started"] is not None and t["finished"] is not None and t["attempts"]:
            run.durations[name] = max(t["finished"] - t["started"], 0.0)
        if t["error_type"] and t["state"] == "failed":
            run.errors[name] = ErrorRecord(t["error_type"], t["message"] or "", t["traceback"] or "")
        if t["parent"]:
            run.parents[name] = t["parent"]
        if t["cached"]:
            run.cached.add(name)
        if t["cache_key"]:
            run.cache_keys[name] = t["cache_key"]
            if not values:
                continue
            hit, value, size = cache.load(t["cache_key"])
            if hit:
                run.results[name] = value
                run.sizes[name] = size
        if t["state"] == "failed" and run.first_failure is None:
            run.first_failure = name
    if values:  # a failed or cancelled run's values that no cache stored (``keep_for_resume``)
        hit, kept, _ = cache.load(resume_key(run_id))
        if hit and isinstance(kept, dict):
            import cloudpickle

            for name, data in kept.items():
                if name not in run.results and name in run.states:
                    with contextlib.suppress(Exception):  # a value that no longer unpickles: that task runs again
                        run.results[name] = cloudpickle.loads(data)
    run.attempt_records = [dict(a) for a in attempts]
    return run


def _upstreams(row: Any) -> dict[str, list[str]]:
    """The run's edges as recorded (an empty table for runs recorded before they were)."""
    try:
        value = row["graph"]
    except (IndexError, KeyError):
        return {}
    return decode_graph(value)


HISTORY_HEAD = ("run", "name", "state", "started", "duration", "tasks")


def history_rows(limit: int | None = 20, store: SqliteStore | None = None) -> list[tuple[str, ...]]:
    """Recorded runs, newest first, as text rows (``HISTORY_HEAD``) for tables. Reads the
    store's rows only: no task record is built and no cached value unpickled."""
    import datetime

    from ..core.record import _fmt_seconds

    store = store or get_store()
    store.flush()
    runs = store.runs(limit)
    all_counts = store.state_counts([r["id"] for r in runs])
    rows: list[tuple[str, ...]] = []
    for r in runs:
        counts = all_counts.get(r["id"], [])
        started = "-"
        if r["started"]:
            started = datetime.datetime.fromtimestamp(r["started"]).strftime("%Y-%m-%d %H:%M:%S")
        duration = _fmt_seconds(r["finished"] - r["started"]) if r["finished"] and r["started"] else "-"
        rows.append((r["id"], r["name"] or "-", r["state"] or "-", started, duration,
                     ", ".join(f"{n} {s}" for s, n in counts) or "-"))
    return rows


def history(limit: int | None = 20, store: SqliteStore | None = None) -> list[Run]:
    """Recorded runs, newest first (``limit=None`` for all). Cached values are not loaded
    here (a long history would unpickle them all): ``Run.load(run.id)`` brings them back."""
    store = store or get_store()
    store.flush()
    return [load_run(r["id"], store, values=False) for r in store.runs(limit)]

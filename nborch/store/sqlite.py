"""The embedded store: one SQLite file (WAL) with every run, every attempt and the cache index.

Recording is a subscriber (``Recorder``): the engine only publishes events. Rows are handed
to a writer thread that commits a batch at least every 50 ms, so a finished attempt is on disk
within 100 ms while a 10,000-task run pays for a few dozen transactions, not 10,000.
The schema lives here only and is versioned with ``PRAGMA user_version``.
"""

from __future__ import annotations

import itertools
import os
import queue
import sqlite3
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import NborchError
from ..eventbus import RunEvent, TaskEvent
from ..state import TaskState

__all__ = ["Recorder", "SqliteStore", "StoreError", "default_home"]

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT, state TEXT NOT NULL, started REAL, finished REAL,
    tasks INTEGER DEFAULT 0
);
-- tasks: one row per task, its final state (and so its last attempt); kept narrow because a
-- 10,000-task run writes 10,000 of them
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL, task TEXT NOT NULL, attempts INTEGER, state TEXT NOT NULL,
    started REAL, finished REAL
);
CREATE INDEX IF NOT EXISTS tasks_run ON tasks(run_id);
-- details: what only some tasks have (an error, a cached value, a parent task)
CREATE TABLE IF NOT EXISTS details (
    run_id TEXT NOT NULL, task TEXT NOT NULL, error_type TEXT, message TEXT, traceback TEXT,
    cached INTEGER DEFAULT 0, cache_key TEXT, parent TEXT
);
CREATE INDEX IF NOT EXISTS details_run ON details(run_id);
-- attempts: the earlier attempts of retried tasks (each failed, then was tried again)
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL, task TEXT NOT NULL, attempt INTEGER NOT NULL, started REAL, finished REAL,
    error_type TEXT, message TEXT, traceback TEXT, delay REAL
);
CREATE INDEX IF NOT EXISTS attempts_run ON attempts(run_id);
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY, task TEXT, path TEXT NOT NULL, size INTEGER, created REAL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started);
"""


class StoreError(NborchError):
    """The store cannot be opened or written (a path that is not writable, a damaged file)."""


def default_home() -> Path:
    """Where nborch keeps its database and cached values: ``$NBORCH_HOME`` or ``./.nborch``."""
    return Path(os.environ.get("NBORCH_HOME") or Path.cwd() / ".nborch")


_TASK = "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?)"
_DETAIL = "INSERT INTO details VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_ATTEMPT = "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _error_fields(error: BaseException | None) -> tuple[str | None, str | None, str | None]:
    if error is None:
        return None, None, None
    tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return type(error).__name__, str(error), tb


class SqliteStore:
    """Runs, attempts and the cache index in ``<home>/nborch.db``; values in ``<home>/values/``."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        try:
            (self.home / "values").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the nborch store at {self.home}: {err}. "
                             "Set NBORCH_HOME to a writable folder.") from err
        self.path = self.home / "nborch.db"
        self._local = threading.local()
        self._rows: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self.interval = 0.05
        self.write_error: BaseException | None = None
        self.warned: set[str] = set()  # tasks whose values could not be pickled (warned once)
        with self.connect() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer nborch (schema {version})")
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.home)!r})"

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections are not shared between threads)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives a killed process
            self._local.db = db
        return db

    # -- writing --------------------------------------------------------------------------

    def write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run a batch of statements in one transaction (runs of one statement: executemany)."""
        db = self.connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, group in itertools.groupby(statements, key=lambda s: s[0]):
                db.executemany(sql, [params for _, params in group])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def enqueue(self, sql: str, params: tuple[Any, ...]) -> None:
        """Queue a statement for the writer thread (committed within ``interval`` seconds)."""
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write_loop, name="nborch-store", daemon=True)
                    self._writer.start()
        self._rows.put((sql, params))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything queued so far is committed."""
        if self._writer is None:
            return
        done = threading.Event()
        self._rows.put(done)
        done.wait(timeout)

    def _write_loop(self) -> None:
        while True:
            batch: list[tuple[str, tuple[Any, ...]]] = []
            markers: list[threading.Event] = []
            item = self._rows.get()
            deadline = time.monotonic() + self.interval
            while True:
                if isinstance(item, threading.Event):
                    markers.append(item)
                    break  # a flush: commit now
                batch.append(item)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._rows.get(timeout=remaining)
                except queue.Empty:
                    break
            if batch:
                try:
                    self.write(batch)
                except Exception as err:  # recording must never break a run: keep the error
                    self.write_error = err
            for m in markers:
                m.set()

    # -- reading --------------------------------------------------------------------------

    def runs(self, limit: int | None = None) -> list[sqlite3.Row]:
        db = self.connect()
        db.row_factory = sqlite3.Row
        sql = "SELECT * FROM runs ORDER BY started DESC, rowid DESC"
        rows = db.execute(sql + (f" LIMIT {int(limit)}" if limit else "")).fetchall()
        db.row_factory = None
        return rows

    def run_rows(self, run_id: str) -> tuple[sqlite3.Row | None, list[sqlite3.Row], list[sqlite3.Row]]:
        db = self.connect()
        db.row_factory = sqlite3.Row
        try:
            run = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            tasks = db.execute(
                "SELECT t.*, d.error_type, d.message, d.traceback, d.cached, d.cache_key, d.parent"
                " FROM tasks t LEFT JOIN details d ON d.run_id = t.run_id AND d.task = t.task"
                " WHERE t.run_id = ? ORDER BY t.rowid",
                (run_id,),
            ).fetchall()
            attempts = db.execute(
                "SELECT * FROM attempts WHERE run_id = ? ORDER BY rowid", (run_id,)
            ).fetchall()
        finally:
            db.row_factory = None
        return run, tasks, attempts

    def cache_entry(self, key: str) -> tuple[str, int] | None:
        row = self.connect().execute("SELECT path, size FROM cache WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else None

    def add_cache_entry(self, key: str, task: str, path: str, size: int) -> None:
        self.write([("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?, ?)", (key, task, path, size, time.time()))])

    def clear_cache(self) -> int:
        db = self.connect()
        rows = db.execute("SELECT path FROM cache").fetchall()
        db.execute("DELETE FROM cache")
        for (path,) in rows:
            try:
                os.unlink(self.home / "values" / path)
            except OSError:
                pass
        return len(rows)


class Recorder:
    """A run subscriber that records the run, its tasks and their attempts into a store.

    Rows go to the store's writer thread, which commits what has arrived at least every
    50 ms (one transaction a batch). ``close(run)`` writes the run's end and waits for the
    commit, so a finished run is on disk when ``run()`` returns.
    """

    shows_output = False
    wants_running = False  # the start comes with the final event (TaskEvent.started)

    def __init__(self, store: SqliteStore, run_id: str, *, name: str | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.name = name
        self.started: dict[str, float] = {}
        self.put = store.enqueue
        self.offset = time.time() - time.monotonic()  # engine clock -> wall time (SystemClock)

    def __call__(self, event: Any) -> None:
        if isinstance(event, TaskEvent):
            self.task_event(event)
        elif isinstance(event, RunEvent):
            if event.state is TaskState.RUNNING:
                self.put(
                    "INSERT OR REPLACE INTO runs (id, name, state, started) VALUES (?, ?, ?, ?)",
                    (self.run_id, self.name, "running", time.time()),
                )

    def task_event(self, e: TaskEvent) -> None:
        state = e.state
        if state is TaskState.RUNNING:
            self.started[e.task] = e.time  # the engine's clock; turned into wall time on write
            return
        if state is TaskState.PENDING:
            return
        error = e.error
        if error is None or state is TaskState.SKIPPED:
            etype = tb = None
            message = str(error) if error is not None else None
        else:
            etype, message, tb = _error_fields(error)
        started = self.started.get(e.task, e.started)
        wall = self.offset
        start = None if started is None else started + wall
        if state is TaskState.RETRYING:  # a failed attempt that is tried again
            self.put(_ATTEMPT, (self.run_id, e.task, e.attempt, start, e.time + wall, etype, message, tb, e.delay))
            return
        self.put(_TASK, (self.run_id, e.task, e.attempt, state.value, start, e.time + wall))
        if message is not None or e.cached or e.cache_key or e.parent:
            self.put(_DETAIL, (self.run_id, e.task, etype, message, tb, int(e.cached), e.cache_key, e.parent))

    def close(self, run: Any) -> None:
        self.put(
            "UPDATE runs SET state = ?, finished = ?, tasks = ? WHERE id = ?",
            (run.status, time.time(), len(run.states), self.run_id),
        )
        self.store.flush()

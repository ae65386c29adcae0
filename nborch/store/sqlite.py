"""The embedded store: one SQLite file (WAL) with every run, every attempt and the cache index.

Recording is a subscriber (``Recorder``): the engine only publishes events. The recorder
commits its rows in one transaction every 50 ms from the run's own loop, so a finished attempt
is on disk within 100 ms while a 10,000-task run pays for a handful of transactions, not 10,000.
A writer thread takes over when another connection holds the write lock, writes the rows of
``enqueue`` (schedules' skipped ticks) and runs WAL checkpoints.
The schema lives here only and is versioned with ``PRAGMA user_version``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import sqlite3
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import NborchError, safe_str
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
_RUN_END = "UPDATE runs SET state = ?, finished = ?, tasks = ? WHERE id = ?"
_SUCCEEDED = TaskState.SUCCEEDED
_CHECKPOINT = object()  # a request to the writer thread


def _error_fields(error: BaseException | None) -> tuple[str | None, str | None, str | None]:
    if error is None:
        return None, None, None
    tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return type(error).__name__, safe_str(error), tb


def _insert_rows(db: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """``db.executemany(sql, rows)`` for an ``INSERT ... VALUES (?, ...)``, as INSERTs of up to
    500 rows each (fewer if this SQLite allows fewer parameters): about twice as fast, and SQLite
    is stepped, and the GIL given up, once per statement instead of once per row."""
    head, _, one = sql.partition(" VALUES ")
    limit = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // (one.count("?") or 1)
    size = max(1, min(500, limit))
    full = f"{head} VALUES {','.join([one] * size)}"
    for i in range(0, len(rows), size):
        chunk = rows[i : i + size]
        statement = full if len(chunk) == size else f"{head} VALUES {','.join([one] * len(chunk))}"
        db.execute(statement, list(itertools.chain.from_iterable(chunk)))


Groups = list[tuple[str, list[tuple[Any, ...]]]]  # (statement, the parameters of each row)


def _write_groups(db: sqlite3.Connection, groups: Groups) -> None:
    """The body of a write transaction that has begun: commit it, or roll it back and raise.
    A group of several INSERT rows goes in as multi-row INSERTs, other groups by executemany."""
    try:
        for sql, rows in groups:
            if len(rows) > 1 and sql.startswith("INSERT INTO ") and " VALUES (" in sql:
                _insert_rows(db, sql, rows)
            elif rows:
                db.executemany(sql, rows)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


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
        self._hurry = threading.Event()  # set by flush(): commit what is queued now
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

    def connect(self, *, wait: bool = True) -> sqlite3.Connection:
        """This thread's connection (SQLite connections are not shared between threads).
        ``wait=False``: a second one that fails at once, instead of waiting, when another
        connection holds the write lock."""
        name = "db" if wait else "db_nowait"
        db = getattr(self._local, name, None)
        if db is None:
            db = sqlite3.connect(
                self.path, timeout=30 if wait else 0, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives a killed process
            if not wait:  # the recorder's, on the run's loop: checkpoints (and their fsync) are
                db.execute("PRAGMA wal_autocheckpoint=0")  # left to the writer thread
            setattr(self._local, name, db)
        return db

    # -- writing --------------------------------------------------------------------------

    def write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run statements, each with its parameters, in one transaction (waiting for the lock)."""
        self.write_groups([(sql, [params]) for sql, params in statements])

    def write_groups(self, groups: Groups, *, wait: bool = True) -> bool:
        """Run groups of rows ``(statement, [parameters, ...])`` in one transaction.

        ``wait=False``: if another connection holds the write lock, return False at once with
        nothing written, instead of waiting for it (the recorder writes from the run's loop)."""
        db = self.connect(wait=wait)
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # "database is locked": someone else is writing
            if wait:
                raise
            return False
        _write_groups(db, groups)
        return True

    def enqueue(self, sql: str, params: tuple[Any, ...]) -> None:
        """Queue a statement for the writer thread (committed within ``interval`` seconds)."""
        self._put([(sql, [params])])

    def enqueue_groups(self, groups: Groups) -> None:
        """Queue groups of rows for the writer thread, which waits for the write lock if need be."""
        self._put(groups)

    def _put(self, item: Any) -> None:
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write_loop, name="nborch-store", daemon=True)
                    self._writer.start()
        self._rows.put(item)

    def checkpoint_later(self) -> None:
        """Have the writer thread copy the write-ahead log into the database (in the background)."""
        self._put(_CHECKPOINT)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything queued so far is committed."""
        if self._writer is None:
            return
        done = threading.Event()
        self._rows.put(done)
        self._hurry.set()
        done.wait(timeout)

    def _write_loop(self) -> None:
        # The writer wakes once per batch, not once per row: it waits for a first row, lets rows
        # gather for ``interval`` seconds (a flush cuts that short), then takes all that came.
        rows = self._rows
        while True:
            first = rows.get()
            if not isinstance(first, threading.Event):
                self._hurry.wait(self.interval)
            self._hurry.clear()
            batch: Groups = []
            markers: list[threading.Event] = []
            checkpoint = False
            item: Any = first
            while True:
                if isinstance(item, threading.Event):
                    markers.append(item)
                elif item is _CHECKPOINT:
                    checkpoint = True
                else:
                    batch.extend(item)
                try:
                    item = rows.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    self.write_groups(batch)
                except Exception as err:  # recording must never break a run: keep the error
                    self.write_error = err
            if checkpoint:
                try:
                    self.connect().execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:  # busy: the next one, or SQLite's own, will do it
                    pass
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

    Rows gather in a list and are committed in one transaction ``store.interval`` (50 ms)
    after the first of them, by a timer on the run's own loop: events are published on that
    loop, and a writer thread would have to win the GIL from it, which a loop busy with many
    short tasks does not give up (CPython hands the GIL back to the thread that released it
    for its poll; measured: a 10,000-task run's rows all waited for the end of the run). If
    another process holds the write lock, the batch goes to the store's writer thread, which
    waits for it, instead of blocking the loop. ``close(run)`` writes the run's end and waits
    for the commit, so a finished run is on disk when ``run()`` returns.
    """

    shows_output = False
    wants_running = False  # the start comes with the final event (TaskEvent.started)
    keep_on_error = True  # one event it fails on must not cost the run its record

    def __init__(self, store: SqliteStore, run_id: str, *, name: str | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.name = name
        self.started: dict[str, float] = {}
        # rows waiting for the next commit, one list per statement (a dict keeps their order),
        # and the plain SUCCEEDED events, turned into rows all at once when committed
        self.succeeded: list[TaskEvent] = []
        self.pending: dict[str, list[tuple[Any, ...]]] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.handed_off = False  # a batch went to the writer thread: later ones must follow it
        self.outcome: str | None = None
        self.count = 0  # tasks that reached a final state: every task of the run, at its end
        self.offset = time.time() - time.monotonic()  # engine clock -> wall time (SystemClock)

    def __call__(self, e: Any) -> None:
        if type(e) is TaskEvent:
            # the common case: a task succeeded, with nothing for the details table
            if e.state is _SUCCEEDED and e.cache_key is None and e.parent is None and not e.cached:
                self.succeeded.append(e)
                if self.timer is None:
                    self.arm()
            else:
                self.task_event(e)
        elif isinstance(e, RunEvent):
            if e.state is TaskState.RUNNING:
                self.put(
                    "INSERT OR REPLACE INTO runs (id, name, state, started) VALUES (?, ?, ?, ?)",
                    (self.run_id, self.name, "running", time.time()),
                )
            else:  # the run's outcome: the same word as Run.status, without a pass over its tasks
                self.outcome = e.state.value

    def put(self, sql: str, params: tuple[Any, ...]) -> None:
        rows = self.pending.get(sql)
        if rows is None:
            rows = self.pending[sql] = []
        rows.append(params)
        if self.timer is None:
            self.arm()

    def arm(self) -> None:
        """Commit ``store.interval`` seconds from now, on the run's loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # published outside a loop: nothing will come back to commit
            self.commit()
            return
        self.timer = loop.call_later(self.store.interval, self.commit)

    def take(self) -> Groups:
        """The rows gathered since the last commit, grouped by statement."""
        groups = [(sql, rows) for sql, rows in self.pending.items() if rows]
        if self.succeeded:  # a task's start is its first attempt's (engine clock -> wall time)
            run_id, wall = self.run_id, self.offset
            rows = [
                (run_id, e.task, e.attempt, "succeeded", (e.time if e.started is None else e.started) + wall,
                 e.time + wall)
                for e in self.succeeded
            ]
            groups.insert(0, (_TASK, rows))
            self.count += len(rows)
        self.succeeded = []
        self.pending = {}
        return groups

    def commit(self) -> None:
        """Commit the rows so far: now, from this thread, or through the writer thread when the
        database is locked by someone else (and from then on, to keep the rows in order)."""
        self.timer = None
        groups = self.take()
        if not groups:
            return
        try:
            if not self.handed_off and self.store.write_groups(groups, wait=False):
                return
        except Exception as err:  # recording must never break a run: keep the error
            self.store.write_error = err
            return
        self.handed_off = True
        self.store.enqueue_groups(groups)

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
            message = safe_str(error) if error is not None else None
        else:
            etype, message, tb = _error_fields(error)
        wall = self.offset
        if state is TaskState.RETRYING:  # a failed attempt that is tried again: its own start
            started = self.started.get(e.task)
            start = None if started is None else started + wall
            self.put(_ATTEMPT, (self.run_id, e.task, e.attempt, start, e.time + wall, etype, message, tb, e.delay))
            return
        self.count += 1
        started = e.started if e.started is not None else self.started.get(e.task)  # the first attempt's
        start = None if started is None else started + wall
        self.put(_TASK, (self.run_id, e.task, e.attempt, state.value, start, e.time + wall))
        if message is not None or e.cached or e.cache_key or e.parent:
            self.put(_DETAIL, (self.run_id, e.task, etype, message, tb, int(e.cached), e.cache_key, e.parent))

    def close(self, run: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
        tasks = self.count + len(self.succeeded)  # the last batch is counted when taken
        end = (self.outcome or run.status, time.time(), tasks, self.run_id)
        self.pending.setdefault(_RUN_END, []).append(end)
        self.commit()
        if self.handed_off:  # rows went to the writer thread: the run ends once they are on disk
            self.store.flush()
        self.store.checkpoint_later()

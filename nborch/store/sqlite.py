"""The embedded store: one SQLite file (WAL) with every run, every attempt and the cache index.

Recording is a subscriber (``Recorder``): the engine only publishes events. By default the
recorder commits its rows in one transaction every 50 ms from the run's own loop (or at the
first event after that, when the loop is too busy for its timer), so a finished task is on
disk within 0.1 s of its SUCCEEDED event (a SIGKILL lost at most 75 ms of them in 70 kills,
benchmarks/durability.py) while a 10,000-task run pays for a handful of transactions. With ``durable=True`` (``DurableRecorder``, subscribed first),
each row is committed before the event reaches any other subscriber: one transaction per task.

Nothing on a run's path waits for SQLite's write lock: the foreground connection gives up at
once when another connection holds it (a DB browser, a backup), and the rows go to the
store's writer thread, which keeps them, in order, and tries again until the lock frees. Rows
still waiting when the interpreter exits are reported in a warning naming the store and the
run; rows that cannot be written at all (a full disk, a read-only file) give one warning per
run. The writer thread also runs the WAL checkpoints, so their fsync stays off the loop.

Reading never writes: each read opens a short-lived read-only connection. Opening a store
whose schema is current takes no write lock; it marks the runs of processes that are gone as
"crashed" and removes the temporary files of cache writers that are gone, both without
waiting. The schema lives here only and is versioned with ``PRAGMA user_version``; version 1
files are migrated.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.errors import DefinitionError, NborchError, safe_str
from ..core.eventbus import RunEvent, TaskEvent
from ..core.state import TaskState

__all__ = ["DurableRecorder", "Recorder", "SqliteStore", "StoreError", "default_home", "is_alive"]

SCHEMA_VERSION = 3
_TABLES = [
    # runs: pid, host and proc (the process's start) tell a crashed run from one still going
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY, name TEXT, state TEXT NOT NULL, started REAL, finished REAL,
        tasks INTEGER DEFAULT 0, pid INTEGER, host TEXT, proc TEXT, graph TEXT)""",
    # tasks: one row per task, its final state (and so its last attempt); kept narrow because a
    # 10,000-task run writes 10,000 of them
    """CREATE TABLE IF NOT EXISTS tasks (
        run_id TEXT NOT NULL, task TEXT NOT NULL, attempts INTEGER, state TEXT NOT NULL,
        started REAL, finished REAL)""",
    "CREATE INDEX IF NOT EXISTS tasks_run ON tasks(run_id)",
    # details: what only some tasks have (an error, a cached value, a parent task)
    """CREATE TABLE IF NOT EXISTS details (
        run_id TEXT NOT NULL, task TEXT NOT NULL, error_type TEXT, message TEXT, traceback TEXT,
        cached INTEGER DEFAULT 0, cache_key TEXT, parent TEXT)""",
    "CREATE INDEX IF NOT EXISTS details_run ON details(run_id)",
    # attempts: the earlier attempts of retried tasks (each failed, then was tried again)
    """CREATE TABLE IF NOT EXISTS attempts (
        run_id TEXT NOT NULL, task TEXT NOT NULL, attempt INTEGER NOT NULL, started REAL,
        finished REAL, error_type TEXT, message TEXT, traceback TEXT, delay REAL)""",
    "CREATE INDEX IF NOT EXISTS attempts_run ON attempts(run_id)",
    # cache: an index of values/ (a lookup reads the value's file itself)
    """CREATE TABLE IF NOT EXISTS cache (
        key TEXT PRIMARY KEY, task TEXT, path TEXT NOT NULL, size INTEGER, created REAL)""",
    "CREATE INDEX IF NOT EXISTS runs_started ON runs(started)",
]
_MIGRATIONS = {  # version -> the statements that take a file from it to the next version
    1: ["ALTER TABLE runs ADD COLUMN pid INTEGER", "ALTER TABLE runs ADD COLUMN host TEXT",
        "ALTER TABLE runs ADD COLUMN proc TEXT"],
    # graph: the run's edges as JSON {task: [its upstream tasks]}, so a past run can be drawn
    2: ["ALTER TABLE runs ADD COLUMN graph TEXT"],
}

CLOSE_WAIT = 0.25  # s a run's end gives rows waiting for another process's lock
EXIT_WAIT = 1.0  # s the interpreter's exit gives them
IDLE = 10.0  # s after which an idle writer thread ends (it starts again when needed)


class StoreError(NborchError):
    """The store cannot be opened or read (a damaged file, a schema from a newer nborch)."""


def default_home() -> Path:
    """Where nborch keeps its database and cached values: ``$NBORCH_HOME`` or ``./.nborch``."""
    return Path(os.environ.get("NBORCH_HOME") or Path.cwd() / ".nborch")


# -- processes: is the writer of a row or a file still there? -------------------------------------

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


_PROC = f"{_boot_id()}:{_TICKS}"  # this process, for run rows (pids and ticks restart at boot)


def is_alive(pid: int, ticks: int | None = None, boot: str | None = None) -> bool:
    """Whether process ``pid`` lives and (when given) is the one that started at ``ticks``
    after boot ``boot``, not a later process that got the same pid."""
    if _HAVE_PROC:
        if boot is not None and boot != _PROC.partition(":")[0]:
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


def _run_is_gone(run: dict[str, Any]) -> bool:
    pid, proc = run.get("pid"), run.get("proc")
    if not pid or run.get("host") != HOST:  # not recorded (version 1), or on another machine
        return False
    boot, _, ticks = (proc or "").rpartition(":")
    return not is_alive(pid, int(ticks) if ticks.isdigit() else None, boot if proc else None)


# Temporary files of cache writes are named .<value>.<pid>.<ticks>.<n>.tmp: a later process
# removes those whose writer is gone. _WRITING: the ones this process is writing right now.
_WRITING: set[str] = set()
_counter = itertools.count()


def temp_name(final: str) -> str:
    """A temporary file name for writing ``final``, unique per write, naming this process."""
    return f".{final}.{os.getpid()}.{_TICKS}.{next(_counter)}.tmp"


def _temp_writer_alive(name: str) -> bool:
    parts = name.split(".")
    try:
        if len(parts) >= 7:
            pid, ticks = int(parts[-4]), int(parts[-3])
        else:  # an older name, .<value>.<pid>.tmp
            pid, ticks = int(parts[-2]), None
    except (ValueError, IndexError):
        return True  # not one of ours: leave it
    if pid == os.getpid() and (ticks is None or ticks == _TICKS):
        return name in _WRITING
    return is_alive(pid, ticks)


# -- writing rows ---------------------------------------------------------------------------------

_TASK = "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?)"
_DETAIL = "INSERT INTO details VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_ATTEMPT = "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_RUN_START = "INSERT OR REPLACE INTO runs (id, name, state, started, pid, host, proc) VALUES (?, ?, ?, ?, ?, ?, ?)"
_RUN_END = "UPDATE runs SET state = ?, finished = ?, tasks = ?, graph = ? WHERE id = ?"
_CRASHED = (
    "UPDATE runs SET state = 'crashed', tasks = (SELECT COUNT(*) FROM tasks WHERE run_id = runs.id),"
    " finished = COALESCE((SELECT MAX(finished) FROM tasks WHERE run_id = runs.id), started)"
    " WHERE id = ? AND state = 'running'"
)
_SUCCEEDED = TaskState.SUCCEEDED
log = logging.getLogger(__name__)
_NEVER = float("inf")
_CHECKPOINT = object()  # requests to the writer thread
_STOP = object()

Groups = list[tuple[str, list[tuple[Any, ...]]]]  # (statement, the parameters of each row)


def _busy(err: BaseException) -> bool:
    """True for "database is locked": another connection holds the lock (try again later)."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return isinstance(err, sqlite3.OperationalError) and "locked" in str(err)


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


def _write_groups(db: sqlite3.Connection, groups: Groups) -> None:
    """The body of a write transaction that has begun: commit it, or roll it back and raise.
    A group of several INSERT rows goes in as multi-row INSERTs, other groups by executemany."""
    try:
        for sql, rows in groups:
            if len(rows) > 1 and sql.startswith("INSERT INTO ") and " VALUES (" in sql:
                _insert_rows(db, sql, rows)
            elif rows:
                db.executemany(sql, rows)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def _runs_of(backlog: list[tuple[Groups, str | None]]) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for groups, run in backlog:
        counts[run] = counts.get(run, 0) + sum(len(rows) for _, rows in groups)
    return counts


class SqliteStore:
    """Runs, attempts and the cache index in ``<home>/nborch.db``; values in ``<home>/values/``.

    Opening one never fails for a folder that cannot be written (``unwritable`` says why, and
    runs then go on unrecorded); it raises ``StoreError`` for a damaged file."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.path = self.home / "nborch.db"
        self.values = self.home / "values"
        self.interval = 0.05
        self.warned: set[Any] = set()  # what was warned about once (tasks whose values cannot be pickled, ...)
        self.write_error: BaseException | None = None  # the last failure to write rows
        self.unwritable: str | None = None  # why runs cannot be recorded here, or None
        self.ready = False  # the schema is current: rows can be written as they come
        self._lock = threading.RLock()  # the foreground connection, claimed run ids, warnings
        self._db: sqlite3.Connection | None = None  # the foreground connection: never waits
        self._claimed: set[str] = set()  # run ids recorded (or being recorded) from this process
        self._rows: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._hurry = threading.Event()  # set by flush(): commit what is queued now
        self._waiting: dict[str | None, int] = {}  # rows the writer thread keeps for the lock, by run
        self._open()
        _STORES.add(self)  # at exit: what waits is written, or reported, and the connections closed

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.home)!r})"

    def _open(self) -> None:
        try:
            self.values.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            if not self.home.is_dir():
                self.unwritable = f"cannot create {self.home}: {err.strerror or err}"
        if self.path.exists():
            version = self._version()
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer nborch (schema {version}); "
                                 "upgrade nborch, or set NBORCH_HOME to another folder.")
            self.ready = version == SCHEMA_VERSION
        if self.unwritable is None:
            self.unwritable = self._why_unwritable()
        if self.unwritable is not None:
            return
        dead = self._dead_runs()
        if not self.ready or dead:
            db = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            try:
                if not self.ready:
                    self._migrate(db)
                    dead = self._dead_runs()
                if dead:  # runs left "running" by a process that is gone (killed): "crashed"
                    db.execute("BEGIN IMMEDIATE")
                    _write_groups(db, [(_CRASHED, [(run_id,) for run_id in dead])])
            except sqlite3.Error as err:
                if not _busy(err):  # busy: someone is writing; the writer thread migrates first
                    self.unwritable = str(err)
                    return
            finally:
                db.close()
        self.sweep_temp_files()

    def _version(self) -> int:
        with self.reading() as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])

    def _why_unwritable(self) -> str | None:
        for path in (self.home, self.path, self.path.with_name("nborch.db-wal"),
                     self.path.with_name("nborch.db-shm")):
            if path.exists() and not os.access(path, os.W_OK):
                return f"{path} is read-only"
        return None

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Create the schema, or bring an older one up to date; raises sqlite3's "database is
        locked" when another connection holds the write lock."""
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer nborch (schema {version})")
            statements = _TABLES if version == 0 else [
                s for v in range(version, SCHEMA_VERSION) for s in _MIGRATIONS[v]
            ]
            for statement in statements:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.ready = True

    def _dead_runs(self) -> list[str]:
        """Runs recorded as "running" whose process is gone."""
        if not self.ready:
            return []
        return [run["id"] for run in self._select("SELECT * FROM runs WHERE state = 'running'")
                if _run_is_gone(dict(run))]

    # -- connections ------------------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A short-lived read-only connection: reading never writes, nor waits for writers."""
        db = self._connect_read()
        try:
            yield db
        except sqlite3.DatabaseError as err:
            raise self._error(err) from err
        finally:
            db.close()

    def _connect_read(self) -> sqlite3.Connection:
        if not self.path.exists():  # nothing recorded yet: read an empty store
            db = sqlite3.connect(":memory:", check_same_thread=False)
            for statement in _TABLES:
                db.execute(statement)
            return db
        uri = self.path.resolve().as_uri()
        for mode in ("mode=ro", "immutable=1"):  # immutable: a read-only folder without the WAL's files
            try:
                db = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=5, check_same_thread=False)
            except sqlite3.OperationalError as err:
                failure: sqlite3.DatabaseError = err
                continue
            try:
                db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                return db
            except sqlite3.DatabaseError as err:
                db.close()
                failure = err
                if not isinstance(err, sqlite3.OperationalError):  # "file is not a database"
                    break
        raise self._error(failure)

    def _error(self, err: sqlite3.DatabaseError) -> StoreError:
        if isinstance(err, sqlite3.OperationalError):  # cannot open, I/O error
            return StoreError(f"cannot read {self.path}: {err}")
        return StoreError(
            f"{self.path} is damaged or is not an nborch database ({err}). Move it aside "
            f"(mv {self.path} {self.path}.damaged) or set NBORCH_HOME to another folder."
        )

    def _foreground(self) -> sqlite3.Connection:
        """The connection that writes without waiting (call with ``_lock`` held). The writer
        thread runs while it is open, and closes it when both have been idle for ``IDLE`` s."""
        db = self._db
        if db is None:
            db = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            try:  # reading the schema meets the writer thread's checkpoint: busy, try later
                db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a killed process
                db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints (and their fsync) are the writer thread's
            except BaseException:
                db.close()
                raise
            self._db = db
            self.checkpoint_later()
        return db

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued (waiting up to ``timeout`` s for the lock) and close the
        connections; they open again when needed. False if rows are still waiting for the lock
        (they stay queued)."""
        written = self.flush(timeout)
        if written:
            with self._writer_lock:
                writer = self._writer
                if writer is not None:
                    self._rows.put(_STOP)
            if writer is not None:
                writer.join(timeout)
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
        return written

    # -- writing ----------------------------------------------------------------------------

    def write_now(self, groups: Groups) -> bool:
        """Commit ``groups`` at once, without waiting: False (nothing written) when another
        connection holds the write lock or the schema is not there yet. Other failures (a full
        disk, a read-only or damaged file) raise sqlite3's error."""
        if not self.ready:
            return False
        with self._lock:
            try:
                db = self._foreground()
                db.execute("BEGIN IMMEDIATE")
                _write_groups(db, groups)  # rolled back if it raises
            except sqlite3.OperationalError as err:
                # busy at BEGIN, or later (COMMIT meets a checkpoint or another process's
                # lock): nothing was written, the writer thread tries again; never a lost run
                if _busy(err):
                    return False
                raise
        return True

    def write_or_queue(self, groups: Groups, run: str | None = None) -> None:
        """Commit ``groups`` now, or queue them for the writer thread if the lock is taken."""
        if not self.write_now(groups):
            self.enqueue_groups(groups, run)

    def enqueue(self, sql: str, params: tuple[Any, ...]) -> None:
        """Queue a statement for the writer thread (committed within ``interval`` seconds)."""
        self._put(([(sql, [params])], None))

    def enqueue_groups(self, groups: Groups, run: str | None = None) -> None:
        """Queue rows of ``run`` for the writer thread, which keeps them until they are written."""
        self._put((groups, run))

    def _put(self, item: Any) -> None:
        with self._writer_lock:
            self._rows.put(item)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="nborch-store", daemon=True)
                self._writer.start()

    def checkpoint_later(self) -> None:
        """Have the writer thread copy the write-ahead log into the database (in the background)."""
        self._put(_CHECKPOINT)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait (up to ``timeout`` s) until everything queued so far is written; False if rows
        are still waiting for another process's lock (they stay queued)."""
        with self._writer_lock:
            if self._writer is None:
                return True
        done = threading.Event()
        self._put(done)
        self._hurry.set()
        return done.wait(timeout)

    def trouble(self, run: str | None, message: str) -> None:
        """Warn about a failed write, once per run: ``nborch: <message>``."""
        with self._lock:
            if ("trouble", run) in self.warned:
                return
            self.warned.add(("trouble", run))
        warnings.warn(f"nborch: {message}", RuntimeWarning, stacklevel=2)

    def _write_loop(self) -> None:
        # The writer wakes once per batch, not once per row: it waits for a first item, lets rows
        # gather for ``interval`` seconds (a flush cuts that short), then takes all that came.
        # Rows that meet another process's lock stay in ``backlog``, in order, and are tried
        # again (every 0.05 s, backing off to 1 s) until they are written.
        rows = self._rows
        db: sqlite3.Connection | None = None
        backlog: list[tuple[Groups, str | None]] = []
        markers: list[threading.Event] = []
        retry = 0.0
        try:
            while True:
                try:
                    item: Any = rows.get(timeout=retry or IDLE)
                except queue.Empty:
                    item = None
                    if not backlog:
                        with self._lock, self._writer_lock:
                            if rows.empty():  # idle: end; _put starts another when needed
                                self._writer = None
                                if self._db is not None:
                                    self._db.close()
                                    self._db = None
                                return
                        continue
                if item is not None and isinstance(item, tuple):
                    self._hurry.wait(self.interval)
                self._hurry.clear()
                checkpoint = stop = False
                while item is not None:
                    if isinstance(item, threading.Event):
                        markers.append(item)
                    elif item is _CHECKPOINT:
                        checkpoint = True
                    elif item is _STOP:
                        stop = True
                    else:
                        backlog.append(item)
                    try:
                        item = rows.get_nowait()
                    except queue.Empty:
                        item = None
                if backlog or checkpoint:
                    try:
                        if db is None:
                            db = sqlite3.connect(self.path, timeout=0.2, isolation_level=None,
                                                 check_same_thread=False)
                            db.execute("PRAGMA synchronous=NORMAL")
                        if backlog:
                            if not self.ready:
                                self._migrate(db)
                            db.execute("BEGIN IMMEDIATE")
                            _write_groups(db, [g for groups, _ in backlog for g in groups])
                            backlog = []
                        retry = 0.0
                    except (sqlite3.Error, OSError) as err:
                        if _busy(err):
                            retry = min(max(retry * 2, 0.05), 1.0)
                        else:
                            self._give_up(backlog, err)
                            backlog = []
                            retry = 0.0
                    self._waiting = _runs_of(backlog)
                if checkpoint and not backlog and db is not None:
                    with contextlib.suppress(sqlite3.Error):  # busy: the next one, or SQLite's own
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                if not backlog:
                    for m in markers:
                        m.set()
                    markers = []
                    if stop:
                        with self._writer_lock:
                            if rows.empty():
                                self._writer = None
                                return
        finally:
            if db is not None:
                db.close()
            with self._writer_lock:  # ended by a bug: let the next item start another writer
                if self._writer is threading.current_thread():
                    self._writer = None

    def _give_up(self, backlog: list[tuple[Groups, str | None]], err: BaseException) -> None:
        self.write_error = err
        for run in _runs_of(backlog):
            what = f"run {run!r}" if run else "cache entries and skipped ticks"
            self.trouble(run, f"cannot record {what} in {self.path} ({err}); its rows are not recorded.")

    def _at_exit(self) -> None:
        if not self.flush(EXIT_WAIT):
            for run, n in sorted(self._waiting.items(), key=lambda kv: str(kv[0])):
                what = f"run {run!r}" if run else "cache entries and skipped ticks"
                warnings.warn(
                    f"nborch: {n} rows of {what} were not written to {self.path}: another process "
                    "holds its write lock. They are lost.", RuntimeWarning, stacklevel=1,
                )
            return
        self.close(EXIT_WAIT)

    # -- runs -------------------------------------------------------------------------------

    def claim(self, run_id: str, *, check: bool = True) -> None:
        """Take ``run_id`` for a run about to start; ``DefinitionError`` if it is recorded
        already (``check=False``: a fresh id, only noted)."""
        with self._lock:
            if check and (run_id in self._claimed or self._select("SELECT 1 FROM runs WHERE id = ?", (run_id,))):
                raise DefinitionError(
                    f"run_id {run_id!r} is already recorded in {self.path}: each run needs its own id. "
                    f"Pass another run_id= (or none, for a fresh one); nborch.Run.load({run_id!r}) "
                    "reopens the recorded run."
                )
            self._claimed.add(run_id)

    # -- reading ----------------------------------------------------------------------------

    def _select(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self.reading() as db:
            db.row_factory = sqlite3.Row
            try:
                return db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as err:
                if "no such table" in str(err):  # a store another process is creating
                    return []
                raise

    def runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The run rows, newest first; a run whose process is gone reads "crashed"."""
        sql = "SELECT * FROM runs ORDER BY started DESC, rowid DESC"
        return [_run_row(r) for r in self._select(sql + (f" LIMIT {int(limit)}" if limit else ""))]

    def state_counts(self, run_ids: list[str]) -> dict[str, list[tuple[str, int]]]:
        """Run id -> (state, number of tasks) in the order the states first occurred."""
        if not run_ids:
            return {}
        marks = ",".join("?" * len(run_ids))
        found = self._select(
            f"SELECT run_id, state, COUNT(*) FROM tasks WHERE run_id IN ({marks})"
            " GROUP BY run_id, state ORDER BY MIN(rowid)", tuple(run_ids),
        )
        counts: dict[str, list[tuple[str, int]]] = {}
        for run_id, state, n in found:
            counts.setdefault(run_id, []).append((state, n))
        return counts

    def run_rows(self, run_id: str) -> tuple[dict[str, Any] | None, list[sqlite3.Row], list[sqlite3.Row]]:
        with self.reading() as db:
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
            except sqlite3.OperationalError as err:
                if "no such table" in str(err):
                    return None, [], []
                raise
        return (None if run is None else _run_row(run)), tasks, attempts

    # -- the cache index and values/ ----------------------------------------------------------

    def cache_entry(self, key: str) -> tuple[str, int] | None:
        found = self._select("SELECT path, size FROM cache WHERE key = ?", (key,))
        return (found[0][0], found[0][1]) if found else None

    def index_value(self, key: str, task: str, path: str, size: int, run: str | None = None) -> None:
        """Note a stored value in the cache index (now, or through the writer if locked)."""
        row = (key, task, path, size, time.time())
        self.write_or_queue([("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?, ?)", [row])], run)

    def clear_cache(self) -> int:
        """Remove every cached value; returns how many were removed."""
        removed = 0
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.values):
                if entry.name.endswith(".pkl") and not entry.name.startswith("."):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        removed += 1
        self.sweep_temp_files()
        if self.unwritable is None:
            with contextlib.suppress(sqlite3.Error, OSError):
                self.write_or_queue([("DELETE FROM cache", [()])])
        return removed

    def sweep_temp_files(self) -> int:
        """Remove the temporary files of cache writes whose writer is gone (killed mid-write);
        returns how many."""
        removed = 0
        try:
            entries = list(os.scandir(self.values))
        except OSError:
            return 0
        for entry in entries:
            name = entry.name
            if name.startswith(".") and name.endswith(".tmp") and not _temp_writer_alive(name):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
        return removed


_STORES: weakref.WeakSet[SqliteStore] = weakref.WeakSet()


@atexit.register
def _close_stores() -> None:
    for store in list(_STORES):
        store._at_exit()


def _run_row(row: sqlite3.Row) -> dict[str, Any]:
    run = dict(row)
    if run["state"] == "running" and _run_is_gone(run):
        run["state"] = "crashed"
    return run


# -- recording a run --------------------------------------------------------------------------------


class Recorder:
    """A run subscriber that records the run, its tasks and their attempts into a store.

    Rows gather in a list and are committed in one transaction ``store.interval`` (50 ms)
    after the first of them, by a timer on the run's own loop: events are published on that
    loop, and a writer thread would have to win the GIL from it, which a loop busy with many
    short tasks does not give up (CPython hands the GIL back to the thread that released it
    for its poll; measured: a 10,000-task run's rows all waited for the end of the run). A
    loop too busy to run the timer on time (bursts of 1,000 tasks) commits at the first
    SUCCEEDED after it was due (measured: the oldest row lost to a SIGKILL went from 283 ms
    to 75 ms; it costs one float comparison per event). If
    another process holds the write lock, the batch goes to the store's writer thread, which
    keeps it until the lock frees, instead of blocking the loop. ``close(run)`` writes the
    run's end; the run's end waits at most ``CLOSE_WAIT`` for rows that meet a lock.
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
        self.done: list[Any] = []  # and the plain successes the engine journaled (their Invs)
        self.pending: dict[str, list[tuple[Any, ...]]] = {}
        self.timer: Any = None  # an asyncio.TimerHandle while a commit is due
        self.due = _NEVER  # the engine-clock time the timer was meant for
        self.handed_off = False  # a batch went to the writer thread: later ones must follow it
        self.failed = False  # the store cannot take this run's rows (warned): the rest is dropped
        self.outcome: str | None = None
        self.count = 0  # tasks that reached a final state: every task of the run, at its end
        self.offset = time.time() - time.monotonic()  # engine clock -> wall time (SystemClock)

    def __call__(self, e: Any) -> None:
        if type(e) is TaskEvent:
            # the common case: a task succeeded, with nothing for the details table
            if e.state is _SUCCEEDED and e.cache_key is None and e.parent is None and not e.cached:
                self.succeeded.append(e)
                self.row_due(e.time)
            else:
                self.task_event(e)
        elif isinstance(e, RunEvent):
            if e.state is TaskState.RUNNING:
                self.put(_RUN_START, (self.run_id, self.name, "running", time.time(), os.getpid(), HOST, _PROC))
            else:  # the run's outcome: the same word as Run.status, without a pass over its tasks
                self.outcome = e.state.value

    def journal(self, inv: Any) -> None:
        """A plain success (no cache key; perhaps a child task), handed over by the engine
        (``EventBus.journal``) instead of an event when no other subscriber wants it: its rows
        are built from the engine's own record of the task (``Inv``) when committed."""
        self.done.append(inv)
        self.row_due(inv.finished)

    def row_due(self, now: float) -> None:
        """A row was gathered at ``now`` (the engine's clock): commit within ``interval``."""
        if self.timer is None:
            self.arm()
            self.due = now + self.store.interval
        elif now >= self.due:  # the loop is too busy to run the timer: commit now
            self.timer.cancel()
            self.commit()

    def put(self, sql: str, params: tuple[Any, ...]) -> None:
        rows = self.pending.get(sql)
        if rows is None:
            rows = self.pending[sql] = []
        rows.append(params)
        if self.timer is None:
            self.arm()
            self.due = _NEVER  # the timer commits (a SUCCEEDED that comes first sets a time)

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
        if self.done:
            run_id, wall = self.run_id, self.offset
            rows = [(run_id, i.name, i.attempts, "succeeded", i.started + wall, i.finished + wall) for i in self.done]
            children = [(run_id, i.name, None, None, None, 0, None, i.parent.name) for i in self.done if i.parent]
            if children:  # the task that called them: the details table has it (as task_event writes it)
                groups.insert(0, (_DETAIL, children))
            groups.insert(0, (_TASK, rows))
            self.count += len(rows)
            self.done = []
        self.succeeded = []
        self.pending = {}
        return groups

    def commit(self) -> None:
        """Commit the rows so far: now, from this thread, or through the writer thread when the
        database is locked by someone else (and from then on, to keep the rows in order)."""
        self.timer = None
        groups = self.take()
        if not groups or self.failed:
            return
        store = self.store
        if not self.handed_off:
            try:
                if store.write_now(groups):
                    return
            except (sqlite3.Error, OSError) as err:  # a full disk, a read-only or damaged file
                self.failed = True
                store.write_error = err
                store.trouble(self.run_id, f"cannot record run {self.run_id!r} in {store.path} ({err}); "
                              "it goes on unrecorded.")
                return
            self.handed_off = True
            self.locked()
        store.enqueue_groups(groups, self.run_id)

    def locked(self) -> None:
        """The store is locked by someone else: this run's rows now go through the writer."""

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
            self.timer = None
        keep_for_resume(self.store, self.run_id, run, self.outcome)
        tasks = self.count + len(self.succeeded) + len(self.done)  # the last batch is counted when taken
        try:  # the run's edges, for drawing it later (a task is listed even with no upstream)
            table: dict[str, Any] = run.upstreams
            params = run.item_params()
            if params:  # the items' parameters, for Run.items of the loaded run (not JSON: their repr)
                table = {**table, ITEMS_KEY: params}
            graph = json.dumps(table, separators=(",", ":"), default=repr)
        except Exception:  # recording must never break a run's end
            graph = None
        end = (self.outcome or run.status, time.time(), tasks, graph, self.run_id)
        self.pending.setdefault(_RUN_END, []).append(end)
        self.commit()
        if self.handed_off:  # rows wait for another process's lock: a moment, not the run's end
            self.store.flush(CLOSE_WAIT)
        self.store.checkpoint_later()


ITEMS_KEY = "\x00items"  # in a run's recorded graph: each item's parameters (no task has that name)


def resume_key(run_id: str) -> str:
    """The values file of a run that did not succeed (``keep_for_resume``)."""
    return f"resume-{run_id}"


def keep_for_resume(store: SqliteStore, run_id: str, run: Any, outcome: str | None = None) -> None:
    """A run that failed or was cancelled keeps the values of its succeeded tasks that no cache
    stored, in one file, so that ``resume=`` need not run them again to feed what it re-runs
    (items of a mapped node above all: one failed item of 10,000 re-runs alone). A succeeded run
    writes nothing. Values that cannot be pickled are left out (those tasks run again). One
    pickle and one write for the whole run: the cost falls on the failed run's end only. The
    newest ``RESUME_KEPT`` such files are kept (``prune_resume_files``)."""
    try:
        if (outcome or run.status) == "succeeded" or not run.results:  # outcome: the run's, as published
            return
        import cloudpickle

        stored = run.cache_keys
        kept: dict[str, bytes] = {}
        for name, value in run.results.items():
            if name in stored or run.states.get(name) is not _SUCCEEDED:
                continue
            try:
                kept[name] = cloudpickle.dumps(value, protocol=5)
            except Exception:  # this task runs again on resume, as without a store
                continue
        if kept:
            from .cache import Cache

            Cache(store, run_id).save(resume_key(run_id), "(resume)", kept)
            prune_resume_files(store)
    except Exception:  # recording must never break a run's end
        log.debug("values of run %s not kept for resume", run_id, exc_info=True)


RESUME_KEPT = 10  # failed runs whose values are kept for resume; older ones' files are removed


def prune_resume_files(store: SqliteStore, keep: int = RESUME_KEPT) -> None:
    """Keep the values of the newest ``keep`` failed runs only: a notebook that fails again and
    again must not fill the disk (a run whose file is gone resumes as without one)."""
    with contextlib.suppress(OSError):
        found = [e for e in os.scandir(store.values) if e.name.startswith("resume-") and e.name.endswith(".pkl")]
        found.sort(key=lambda e: e.stat().st_mtime, reverse=True)
        for old in found[keep:]:
            with contextlib.suppress(OSError):
                os.unlink(old.path)


class DurableRecorder(Recorder):
    """``durable=True``: each row is committed before the event goes on to the next
    subscriber (this one is subscribed first), so a task the outside world has heard of is on
    disk even if the process is killed the next instant. One transaction per task."""

    commits = 0

    journal = None  # type: ignore[assignment]  # every success is an event, committed before the next subscriber hears of it

    def __call__(self, e: Any) -> None:
        Recorder.__call__(self, e)
        if self.succeeded or self.pending:
            self.commit()
            self.commits += 1
            if self.commits % 1000 == 0:  # one WAL page per commit: have the writer thread fold
                self.store.checkpoint_later()  # them into the database as the run goes

    def arm(self) -> None:  # nothing waits for a timer
        pass

    def locked(self) -> None:
        self.store.trouble(
            ("locked", self.run_id),  # type: ignore[arg-type]
            f"{self.store.path} is locked by another process: run {self.run_id!r} goes on and its rows "
            "wait in memory until the lock frees (durable=True cannot hold meanwhile).",
        )

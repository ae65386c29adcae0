"""The embedded store: one SQLite file (WAL) with every run, every attempt and the cache index.

``SqliteStore`` opens the file and reads it; recording a run is a subscriber
(``recorder.py``), and writing rows is the store's ``RowWriter`` (``writer.py``): nothing on a
run's path waits for SQLite's write lock, and rows still waiting for it when the interpreter
exits are reported in a warning naming the store and the run.

Reading never writes: each read opens a short-lived read-only connection. Opening a store
whose schema is current takes no write lock; it marks the runs of processes that are gone as
"crashed" and removes the temporary files of cache writers that are gone (``liveness.py``),
both without waiting. The schema lives in ``schema.py`` only and is versioned with ``PRAGMA
user_version``; older files are migrated. ``Recorder``, ``DurableRecorder`` and ``is_alive``
are importable from here as before.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sqlite3
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.errors import DefinitionError, NborchError
from .liveness import is_alive, run_is_gone, temp_writer_alive
from .recorder import DurableRecorder, Recorder
from .schema import MARK_CRASHED, MIGRATIONS, SCHEMA_VERSION, TABLES
from .writer import Groups, RowWriter, is_busy, write_groups

__all__ = ["DurableRecorder", "Recorder", "SqliteStore", "StoreError", "default_home", "is_alive"]

EXIT_WAIT = 1.0  # s the interpreter's exit gives rows waiting for another process's lock


class StoreError(NborchError):
    """The store cannot be opened or read (a damaged file, a schema from a newer nborch)."""


def default_home() -> Path:
    """Where nborch keeps its database and cached values: ``$NBORCH_HOME`` or ``./.nborch``."""
    return Path(os.environ.get("NBORCH_HOME") or Path.cwd() / ".nborch")


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
        self._lock = threading.RLock()  # the writer's foreground connection, claimed run ids, warnings
        self._claimed: set[str] = set()  # run ids recorded (or being recorded) from this process
        self.writer = RowWriter(self, self._lock)  # every write goes through it
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
                    self.migrate(db)
                    dead = self._dead_runs()
                if dead:  # runs left "running" by a process that is gone (killed): "crashed"
                    db.execute("BEGIN IMMEDIATE")
                    write_groups(db, [(MARK_CRASHED, [(run_id,) for run_id in dead])])
            except sqlite3.Error as err:
                if not is_busy(err):  # busy: someone is writing; the writer thread migrates first
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

    def migrate(self, db: sqlite3.Connection) -> None:
        """Create the schema, or bring an older one up to date (on opening, or in the writer
        thread); raises sqlite3's "database is locked" when another connection holds the write
        lock."""
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer nborch (schema {version})")
            statements = TABLES if version == 0 else [
                s for v in range(version, SCHEMA_VERSION) for s in MIGRATIONS[v]
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
                if run_is_gone(dict(run))]

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
            for statement in TABLES:
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

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued and close the connections, which open again when needed
        (``RowWriter.close``); False if rows still wait for another process's lock."""
        return self.writer.close(timeout)

    # -- writing: through the writer ----------------------------------------------------------

    def write_now(self, groups: Groups) -> bool:
        """Commit ``groups`` at once, without waiting: False (nothing written) when another
        connection holds the write lock or the schema is not there yet (``RowWriter.write_now``)."""
        return self.writer.write_now(groups)

    def write_or_queue(self, groups: Groups, run: str | None = None) -> None:
        """Commit ``groups`` now, or queue them for the writer thread if the lock is taken."""
        self.writer.write_or_queue(groups, run)

    def enqueue(self, sql: str, params: tuple[Any, ...]) -> None:
        """Queue a statement for the writer thread (committed within ``interval`` seconds)."""
        self.writer.enqueue(sql, params)

    def enqueue_groups(self, groups: Groups, run: str | None = None) -> None:
        """Queue rows of ``run`` for the writer thread, which keeps them until they are written."""
        self.writer.enqueue_groups(groups, run)

    def checkpoint_later(self) -> None:
        """Have the writer thread copy the write-ahead log into the database (in the background)."""
        self.writer.checkpoint_later()

    def checkpoint_if_due(self) -> None:
        """``checkpoint_later`` once the write-ahead log has grown (``writer.CHECKPOINT_AT``)."""
        self.writer.checkpoint_if_due()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait (up to ``timeout`` s) until everything queued so far is written; False if rows
        are still waiting for another process's lock (they stay queued)."""
        return self.writer.flush(timeout)

    def trouble(self, run: str | None, message: str) -> None:
        """Warn about a failed write, once per run: ``nborch: <message>``."""
        with self._lock:
            if ("trouble", run) in self.warned:
                return
            self.warned.add(("trouble", run))
        warnings.warn(f"nborch: {message}", RuntimeWarning, stacklevel=2)

    def _at_exit(self) -> None:
        if not self.flush(EXIT_WAIT):
            for run, n in sorted(self.writer.waiting.items(), key=lambda kv: str(kv[0])):
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
            if name.startswith(".") and name.endswith(".tmp") and not temp_writer_alive(name):
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
    if run["state"] == "running" and run_is_gone(run):
        run["state"] = "crashed"
    return run

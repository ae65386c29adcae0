"""Writing a store's rows: at once, or, when another process holds the lock, by the writer thread.

Nothing on a run's path waits for SQLite's write lock: the foreground connection
(``RowWriter.write_now``) gives up at once when another connection holds it (a DB browser, a
backup), and the rows go to the writer thread, which keeps them, in order, and tries again
(every 0.05 s, backing off to 1 s) until the lock frees. The writer thread also runs the WAL
checkpoints (once the log holds ``CHECKPOINT_AT`` bytes at a run's end, and when the store's
last connection closes), so their fsync stays off the loop, and ends after ``IDLE`` seconds with nothing to
do (closing the foreground connection too); it starts again when needed. Rows go in as
multi-row INSERTs (``write_groups``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
import os
import queue
import sqlite3
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sqlite import SqliteStore

__all__ = ["CHECKPOINT_AT", "IDLE", "Groups", "RowWriter", "Successes", "is_busy", "write_groups"]

IDLE = 10.0  # s after which an idle writer thread ends (it starts again when needed)
# a run's end has the write-ahead log copied into the database once it holds this much (SQLite's
# own default is 1,000 pages, 4 MB): a checkpoint after every run cost a run of 10 tasks 0.6 ms,
# two thirds of what recording it cost (the checkpoint's fsync, and the writer thread taking the
# GIL from the next run). The log's file size tells what it holds because both connections set
# ``journal_size_limit=0``: once copied, it starts again from an empty file (else it would keep
# its largest size). The last connection to close checkpoints what is left (SQLite does).
CHECKPOINT_AT = 4 << 20
_CHECKPOINT = object()  # requests to the writer thread
_STOP = object()

Groups = list[tuple[str, list[Any]]]  # (statement, the parameters of each row, or ``Successes``)


class Successes(list[Any]):
    """Plain successes of a run, as the engine's own records of them (``Inv``: ``name``,
    ``attempts``, ``started``, ``finished``, times in the engine's clock): a group's rows for
    ``schema.SUCCESS_ROW``, which SQLite itself turns into ``tasks`` rows (the run's id, the
    state, the times plus ``wall``). No tuple is built in Python for them: ``attrgetter`` takes
    each one's four fields, and the run's id and the clock's offset are bound once a statement."""

    def __init__(self, run_id: str, wall: float, invs: list[Any]) -> None:
        super().__init__(invs)
        self.run_id = run_id
        self.wall = wall


_fields = operator.attrgetter("name", "attempts", "started", "finished")


def is_busy(err: BaseException) -> bool:
    """True for "database is locked": another connection holds the lock (try again later)."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return isinstance(err, sqlite3.OperationalError) and "locked" in str(err)


def _chunk_sizes(n: int, size: int) -> Iterator[int]:
    """``n`` rows as chunks of ``size`` rows, then the rest as powers of two, largest first:
    a commit of 1,337 rows in chunks of 512 is 512, 512, 256, 32, 16, 8, 1."""
    while n >= size:
        yield size
        n -= size
    bit = 1 << (n.bit_length() - 1) if n else 0
    while bit:
        if n & bit:
            yield bit
        bit >>= 1


def _chunks(db: sqlite3.Connection, sql: str, count: int, fixed: int = 0) -> Iterator[tuple[str, int, int]]:
    """(statement, first row, rows) for each chunk of ``count`` rows into ``sql``, an INSERT
    whose ``VALUES`` list is one row's parameters (after ``fixed`` parameters bound once per
    statement, and before what closes it): up to 512 rows a statement, fewer if this SQLite
    allows fewer parameters. SQLite is stepped, and the GIL given up, once per statement
    instead of once per row (about twice as fast as ``executemany``). The chunks' sizes are
    powers of two, so that the statements are few and the connection's statement cache keeps
    them: a statement of 500 rows with a size of its own at each commit was parsed anew each
    time (callgrind: about 4,000 instructions a row in ``sqlite3_prepare_v2``)."""
    head, _, rest = sql.partition("VALUES ")
    one = rest[: rest.index(")") + 1]  # "(?, ?, ...)", and after it what closes the statement
    tail, head = rest[len(one) :], head.rstrip()
    limit = (db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - fixed) // (one.count("?") or 1)
    size = 1 << (max(1, min(512, limit)).bit_length() - 1)
    start = 0
    for n in _chunk_sizes(count, size):
        yield _statement(head, one, n, tail), start, n
        start += n


def _insert_rows(db: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """``db.executemany(sql, rows)`` for an ``INSERT ... VALUES (?, ...)``, as multi-row INSERTs
    (``_chunks``)."""
    chain = itertools.chain.from_iterable
    for statement, start, n in _chunks(db, sql, len(rows)):
        db.execute(statement, list(chain(rows[start : start + n])))


@functools.lru_cache(maxsize=64)
def _statement(head: str, one: str, n: int, tail: str = "") -> str:
    """``INSERT INTO t VALUES (?, ?), (?, ?), ...``: ``n`` rows, then ``tail`` (the same string
    object each time, which the statement cache finds at once)."""
    return f"{head} VALUES {','.join([one] * n)}{tail}"


def _insert_successes(db: sqlite3.Connection, sql: str, rows: Successes) -> None:
    """``rows`` into ``sql`` (``schema.SUCCESS_ROW``: the run's id and offset as ``?1`` and ``?2``,
    then a ``VALUES`` list of four parameters a row), in ``_chunks``."""
    fixed, chain, fields = [rows.run_id, rows.wall], itertools.chain.from_iterable, _fields
    for statement, start, n in _chunks(db, sql, len(rows), fixed=len(fixed)):
        db.execute(statement, fixed + list(chain(map(fields, rows[start : start + n]))))


def write_groups(db: sqlite3.Connection, groups: Groups) -> None:
    """The body of a write transaction that has begun: commit it, or roll it back and raise.
    A group of several INSERT rows goes in as multi-row INSERTs, other groups by executemany."""
    try:
        for sql, rows in groups:
            if type(rows) is Successes:
                _insert_successes(db, sql, rows)
            elif len(rows) > 1 and sql.startswith("INSERT INTO ") and " VALUES (" in sql:
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


class RowWriter:
    """A store's writing: the foreground connection, which commits at once or not at all, and
    the writer thread, which keeps what it is given until it is written.

    ``lock`` is the store's: it is held while the foreground connection is used or closed,
    and taken before the writer's own lock. ``waiting`` counts the rows the writer thread keeps
    for another process's lock, by run."""

    def __init__(self, store: SqliteStore, lock: threading.RLock) -> None:
        self.store = store
        self.lock = lock
        self.db: sqlite3.Connection | None = None  # the foreground connection: never waits
        self.waiting: dict[str | None, int] = {}
        self._rows: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._hurry = threading.Event()  # set by flush(): commit what is queued now
        self._checkpoint_asked = False  # checkpoint_if_due asked the thread for one, not yet run

    def _foreground(self) -> sqlite3.Connection:
        """The connection that writes without waiting (call with ``lock`` held). The writer
        thread runs while it is open, and closes it when both have been idle for ``IDLE`` s."""
        db = self.db
        if db is None:
            db = sqlite3.connect(self.store.path, timeout=0, isolation_level=None, check_same_thread=False)
            try:  # reading the schema meets the writer thread's checkpoint: busy, try later
                db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a killed process
                db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints (and their fsync) are the writer thread's
                db.execute("PRAGMA journal_size_limit=0")  # once copied, the log starts again empty
            except BaseException:
                db.close()
                raise
            self.db = db
            self.checkpoint_later()
        return db

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued (waiting up to ``timeout`` s for the lock) and close the
        connections; they open again when needed. False if rows are still waiting for the lock
        (they stay queued)."""
        written = self.flush(timeout)
        if written:
            with self._thread_lock:
                thread = self._thread
                if thread is not None:
                    self._rows.put(_STOP)
            if thread is not None:
                thread.join(timeout)
        with self.lock:
            if self.db is not None:
                self.db.close()
                self.db = None
        return written

    def write_now(self, groups: Groups) -> bool:
        """Commit ``groups`` at once, without waiting: False (nothing written) when another
        connection holds the write lock or the schema is not there yet. Other failures (a full
        disk, a read-only or damaged file) raise sqlite3's error."""
        if not self.store.ready:
            return False
        with self.lock:
            try:
                db = self._foreground()
                db.execute("BEGIN IMMEDIATE")
                write_groups(db, groups)  # rolled back if it raises
            except sqlite3.OperationalError as err:
                # busy at BEGIN, or later (COMMIT meets a checkpoint or another process's
                # lock): nothing was written, the writer thread tries again; never a lost run
                if is_busy(err):
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
        with self._thread_lock:
            self._rows.put(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._write_loop, name="nborch-store", daemon=True)
                self._thread.start()

    def checkpoint_later(self) -> None:
        """Have the writer thread copy the write-ahead log into the database (in the background)."""
        self._put(_CHECKPOINT)

    def checkpoint_if_due(self) -> None:
        """``checkpoint_later`` once the write-ahead log holds ``CHECKPOINT_AT`` bytes."""
        try:
            size = os.stat(f"{self.store.path}-wal").st_size
        except OSError:  # no log (yet, or any more): nothing to copy
            return
        # Asked once until the thread has run it; then again at the next run's end while the log
        # is still that big: runs that end faster than a checkpoint goes add to the log while it
        # copies, and SQLite starts the log again only once a checkpoint has copied all of it.
        if size >= CHECKPOINT_AT and not self._checkpoint_asked:
            self._checkpoint_asked = True
            self.checkpoint_later()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait (up to ``timeout`` s) until everything queued so far is written; False if rows
        are still waiting for another process's lock (they stay queued)."""
        with self._thread_lock:
            if self._thread is None:
                return True
        done = threading.Event()
        self._put(done)
        self._hurry.set()
        return done.wait(timeout)

    def _write_loop(self) -> None:
        # The writer wakes once per batch, not once per row: it waits for a first item, lets rows
        # gather for ``interval`` seconds (a flush cuts that short), then takes all that came.
        # Rows that meet another process's lock stay in ``backlog``, in order, and are tried
        # again (every 0.05 s, backing off to 1 s) until they are written.
        store, rows = self.store, self._rows
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
                        with self.lock, self._thread_lock:
                            if rows.empty():  # idle: end; _put starts another when needed
                                self._thread = None
                                if self.db is not None:
                                    self.db.close()
                                    self.db = None
                                return
                        continue
                if item is not None and isinstance(item, tuple):
                    self._hurry.wait(store.interval)
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
                            db = sqlite3.connect(self.store.path, timeout=0.2, isolation_level=None,
                                                 check_same_thread=False)
                            db.execute("PRAGMA synchronous=NORMAL")
                            db.execute("PRAGMA journal_size_limit=0")
                        if backlog:
                            if not store.ready:
                                store.migrate(db)
                            db.execute("BEGIN IMMEDIATE")
                            write_groups(db, [g for groups, _ in backlog for g in groups])
                            backlog = []
                        retry = 0.0
                    except (sqlite3.Error, OSError) as err:
                        if is_busy(err):
                            retry = min(max(retry * 2, 0.05), 1.0)
                        else:
                            self._give_up(backlog, err)
                            backlog = []
                            retry = 0.0
                    self.waiting = _runs_of(backlog)
                if checkpoint and not backlog and db is not None:
                    with contextlib.suppress(sqlite3.Error):  # busy: the next one, or SQLite's own
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                if checkpoint:  # (run or not: the next run's end may ask again)
                    self._checkpoint_asked = False
                if not backlog:
                    for m in markers:
                        m.set()
                    markers = []
                    if stop:
                        with self._thread_lock:
                            if rows.empty():
                                self._thread = None
                                return
        finally:
            if db is not None:
                db.close()
            with self._thread_lock:  # ended by a bug: let the next item start another writer
                if self._thread is threading.current_thread():
                    self._thread = None

    def _give_up(self, backlog: list[tuple[Groups, str | None]], err: BaseException) -> None:
        store = self.store
        store.write_error = err
        for run in _runs_of(backlog):
            what = f"run {run!r}" if run else "cache entries and skipped ticks"
            store.trouble(run, f"cannot record {what} in {store.path} ({err}); its rows are not recorded.")

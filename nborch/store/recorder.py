"""Recording a run: a subscriber that writes the run, its tasks and their attempts into a store.

The engine only publishes events. By default the recorder (``Recorder``) commits its rows in
one transaction every 50 ms from the run's own loop (or at the first event after that, when
the loop is too busy for its timer), so a finished task is on disk within 0.1 s of its
SUCCEEDED event (a SIGKILL lost at most 75 ms of them in 70 kills, benchmarks/durability.py)
while a 10,000-task run pays for a handful of transactions. With ``durable=True``
(``DurableRecorder``, subscribed first), each row is committed before the event reaches any
other subscriber: one transaction per task. Rows that meet another process's lock go to the
store's writer thread (``writer.py``); rows that cannot be written at all give one warning per
run. A run that did not succeed keeps its values for resume (``resume.py``).
"""

from __future__ import annotations

import asyncio
import operator
import os
import sqlite3
import time
import traceback
from typing import TYPE_CHECKING, Any

from ..core.errors import safe_str
from ..core.eventbus import Journal, RunEvent, TaskEvent
from ..core.state import TaskState
from .liveness import HOST, PROC
from .resume import keep_for_resume
from .schema import ATTEMPT_ROW, DETAIL_ROW, RUN_END, RUN_START, SUCCESS_ROW, TASK_ROW, encode_graph
from .writer import Groups, Successes

if TYPE_CHECKING:
    from .sqlite import SqliteStore

__all__ = ["CLOSE_WAIT", "DurableRecorder", "Recorder"]

CLOSE_WAIT = 0.25  # s a run's end gives rows waiting for another process's lock
_SUCCEEDED = TaskState.SUCCEEDED
_parent = operator.attrgetter("parent")
_NOW = -float("inf")  # Journal.due with no commit time set: the next success sets one (arming the timer)


def _error_fields(error: BaseException | None) -> tuple[str | None, str | None, str | None]:
    if error is None:
        return None, None, None
    tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return type(error).__name__, safe_str(error), tb


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
        # and the plain successes the engine journaled (their Invs, in ``successes.entries``);
        # ``successes.due`` is the engine-clock time the timer was meant for (-inf: none set)
        self.successes = Journal(self.row_due)
        self.journal: Journal | None = self.successes  # what the event bus hands the engine
        self.pending: dict[str, list[tuple[Any, ...]]] = {}
        self.timer: Any = None  # an asyncio.TimerHandle while a commit is due
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
                self.put(RUN_START, (self.run_id, self.name, "running", time.time(), os.getpid(), HOST, PROC))
            else:  # the run's outcome: the same word as Run.status, without a pass over its tasks
                self.outcome = e.state.value

    def row_due(self, now: float) -> None:
        """A row was gathered at ``now`` (the engine's clock): commit within ``interval``.

        The engine calls this (``Journal.overdue``) for a plain success it journaled (no
        cache key; perhaps a child task) only when ``now`` reaches ``successes.due``: at the
        first one after a commit, and when the loop is too busy to run the timer. Its row is
        built from the engine's own record of the task (``Inv``) when committed."""
        journal = self.successes
        if self.timer is None:
            self.arm()
            if self.timer is not None:
                journal.due = now + self.store.interval
        elif journal.due == _NOW:  # the timer was armed by a row without the engine's time (put)
            journal.due = now + self.store.interval
        elif now >= journal.due:  # the loop is too busy to run the timer: commit now
            self.timer.cancel()
            self.commit()

    def put(self, sql: str, params: tuple[Any, ...]) -> None:
        rows = self.pending.get(sql)
        if rows is None:
            rows = self.pending[sql] = []
        rows.append(params)
        if self.timer is None:  # the timer commits; the next SUCCEEDED sets the time it is due by
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
            groups.insert(0, (TASK_ROW, rows))
            self.count += len(rows)
        done = self.successes.entries
        if done:
            run_id = self.run_id
            called = list(filter(_parent, done))  # child tasks (a pass in C, not a comprehension)
            if called:  # the task that called them: the details table has it (as task_event writes it)
                children = [(run_id, i.name, None, None, None, 0, None, i.parent.name) for i in called]
                groups.insert(0, (DETAIL_ROW, children))
            groups.insert(0, (SUCCESS_ROW, Successes(run_id, self.offset, done)))  # rows made by SQLite
            self.count += len(done)
            self.successes.entries = []
        self.succeeded = []
        self.pending = {}
        return groups

    def commit(self) -> None:
        """Commit the rows so far: now, from this thread, or through the writer thread when the
        database is locked by someone else (and from then on, to keep the rows in order)."""
        self.timer = None
        self.successes.due = _NOW
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
            self.put(ATTEMPT_ROW, (self.run_id, e.task, e.attempt, start, e.time + wall, etype, message, tb, e.delay))
            return
        self.count += 1
        started = e.started if e.started is not None else self.started.get(e.task)  # the first attempt's
        start = None if started is None else started + wall
        self.put(TASK_ROW, (self.run_id, e.task, e.attempt, state.value, start, e.time + wall))
        if message is not None or e.cached or e.cache_key or e.parent:
            self.put(DETAIL_ROW, (self.run_id, e.task, etype, message, tb, int(e.cached), e.cache_key, e.parent))

    def close(self, run: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        keep_for_resume(self.store, self.run_id, run, self.outcome)
        # the last batch is counted when taken
        tasks = self.count + len(self.succeeded) + len(self.successes.entries)
        try:  # the run's edges, for drawing it later (a task is listed even with no upstream),
            # and the items' parameters, for Run.items of the loaded run
            graph: bytes | None = encode_graph(run._edges(), run.item_params())
        except Exception:  # recording must never break a run's end
            graph = None
        end = (self.outcome or run.status, time.time(), tasks, graph, self.run_id)
        self.pending.setdefault(RUN_END, []).append(end)
        self.commit()
        if self.handed_off:  # rows wait for another process's lock: a moment, not the run's end
            self.store.flush(CLOSE_WAIT)
        self.store.checkpoint_if_due()


class DurableRecorder(Recorder):
    """``durable=True``: each row is committed before the event goes on to the next
    subscriber (this one is subscribed first), so a task the outside world has heard of is on
    disk even if the process is killed the next instant. One transaction per task."""

    commits = 0

    def __init__(self, store: SqliteStore, run_id: str, *, name: str | None = None) -> None:
        super().__init__(store, run_id, name=name)
        self.journal = None  # every success is an event, committed before the next subscriber hears of it

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

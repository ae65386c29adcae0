"""Durable runs: a real SQLite file, history, Run.load, crash safety."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import nborch
from nborch import Parallel, Sequence, TaskState, task
from nborch.core.record import ErrorRecord
from nborch.store import SqliteStore, history, load_run


@pytest.fixture
def store(tmp_path):
    return SqliteStore(tmp_path / "home")


def test_a_run_is_recorded_and_reopened_with_states_attempts_and_errors(store):
    calls = {"n": 0}

    @task(retries=1)
    def flaky():
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("first try fails")
        return "ok"

    @task
    def broken():
        raise KeyError("missing column")

    @task
    def after(broken):
        return 1

    run = nborch.run(Parallel(flaky(), Sequence(broken(), after())), store=store)
    loaded = load_run(run.id, store)

    assert loaded.states == {"flaky": TaskState.SUCCEEDED, "broken": TaskState.FAILED,
                             "after": TaskState.UPSTREAM_FAILED}
    assert loaded.attempts["flaky"] == 2 and loaded.attempts["after"] == 0
    assert set(loaded.durations) == {"flaky", "broken"}
    err = loaded.errors["broken"]
    assert isinstance(err, ErrorRecord)
    assert err.type_name == "KeyError" and err.message == "'missing column'"
    assert "raise KeyError(\"missing column\")" in err.traceback
    assert loaded.first_failure == "broken" and loaded.ok is False
    retried = [a for a in loaded.attempt_records if a["task"] == "flaky"]
    assert [(a["attempt"], a["error_type"]) for a in retried] == [(1, "ConnectionError")]


def test_the_run_row_counts_every_task(store):
    @task
    def one(i):
        return i

    run = nborch.run(Parallel(*[one(i) for i in range(7)]), store=store)  # one short batch
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        assert db.execute("SELECT state, tasks FROM runs WHERE id = ?", (run.id,)).fetchone() == ("succeeded", 7)
        assert db.execute("SELECT COUNT(*) FROM tasks WHERE run_id = ?", (run.id,)).fetchone() == (7,)


def test_history_lists_runs_newest_first(store):
    ids = [nborch.run(Sequence(task(lambda: i)()), store=store).id for i in range(3)]
    assert [r.id for r in history(store=store)][:3] == ids[::-1]
    assert [r.id for r in history(limit=2, store=store)] == ids[::-1][:2]


def test_run_load_names_recent_runs_when_the_id_is_unknown(store):
    nborch.run(task(lambda: 1)(), store=store)
    with pytest.raises(nborch.NborchError, match=r"^no run 'nope' in .*nborch\.db\. Recent runs: [0-9a-f]{12}"):
        nborch.Run.load("nope", store=store)


def test_store_false_records_nothing(store):
    run = nborch.run(task(lambda: 1)(), store=False)
    with pytest.raises(nborch.NborchError):
        load_run(run.id, store)


def test_a_finished_task_is_on_disk_while_the_run_is_still_going(store):
    release = threading.Event()

    @task
    def quick():
        return 1

    @task
    def waits():
        assert release.wait(10)
        return 2

    seen_at: list[float] = []

    def watch():
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                row = db.execute("SELECT state FROM tasks WHERE task = 'quick'").fetchone()
                if row:
                    seen_at.append(time.monotonic())
                    break
                time.sleep(0.005)
        release.set()

    finished: list[float] = []
    watcher = threading.Thread(target=watch)
    watcher.start()
    nborch.run(Parallel(quick(), waits()), store=store,
               on_event=lambda e: finished.append(time.monotonic())
               if getattr(e, "task", None) == "quick" and e.state is TaskState.SUCCEEDED else None)
    watcher.join()
    assert seen_at, "the finished task never reached the database while the run was going"
    assert seen_at[0] - finished[0] < 1.0  # committed in batches every 50 ms; generous bound


WATCH = textwrap.dedent(
    """
    import sqlite3, sys, time
    db_path, task_name = sys.argv[1], sys.argv[2]
    print("watching", flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            db = sqlite3.connect(db_path)
            row = db.execute("SELECT 1 FROM tasks WHERE task = ?", (task_name,)).fetchone()
            db.close()
        except sqlite3.Error:
            row = None
        if row:
            print(time.time(), flush=True)
            break
        time.sleep(0.005)
    """
)


def test_a_finished_task_is_on_disk_while_async_tasks_keep_the_loop_busy(store, tmp_path):
    """A loop that never idles (an async task working a millisecond at a time between yields)
    gives up the GIL at every poll and takes it straight back: a writer thread waited for the
    end of the run (measured: 3.0 s here).
    The rows must reach the disk during the run all the same. Watched from another process,
    since a thread here would be held back the same way."""
    script = tmp_path / "watch.py"
    script.write_text(WATCH)
    watcher = subprocess.Popen(
        [sys.executable, str(script), str(store.path), "quick"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout.readline().strip() == "watching"

        @task
        async def quick():
            return 1

        @task
        async def busy():
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                sum(range(20_000))  # about a millisecond of work between polls
                await asyncio.sleep(0)

        finished: list[float] = []

        def on_event(e):
            if getattr(e, "task", None) == "quick" and e.state is TaskState.SUCCEEDED:
                finished.append(time.time())

        run = nborch.run(Parallel(quick(), busy()), store=store, on_event=on_event)
        seen = float(watcher.communicate(timeout=30)[0].strip())
    finally:
        watcher.kill()
        watcher.wait(10)
    assert run.ok
    assert seen - finished[0] < 1.0  # 50 ms batches; were they held to the end, it would be ~3 s


def test_plain_successes_are_committed_when_due_even_if_the_loop_never_ran_the_timer(store):
    """The engine hands plain successes to the recorder without events (eventbus.Journal) and
    tells it when a commit is overdue: a task that holds the loop past the 50 ms interval keeps
    the commit timer from running, so the rows so far must be committed as it settles, before
    the task after it starts (which reads the file from its own connection)."""

    @task
    async def quick():
        return 1

    @task
    async def hog(_):
        time.sleep(store.interval * 4)  # holds the loop: the timer armed for quick cannot run
        return 2

    @task
    async def look(_):
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            return sorted(db.execute("SELECT task, state FROM tasks"))

    q = quick()
    h = hog(q)
    run = nborch.run(Sequence(q, h, look(h)), store=store)
    assert run.ok
    assert run.results["look"] == [("hog", "succeeded"), ("quick", "succeeded")]
    store.flush()
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        assert sorted(db.execute("SELECT task FROM tasks WHERE run_id = ?", (run.id,))) == [
            ("hog",), ("look",), ("quick",)]


def test_a_run_recorded_while_another_process_holds_the_write_lock_is_complete(store):
    """The recorder commits from the run's loop without waiting for the lock; when another
    connection holds it, the rows go to the store's writer thread, which waits, in order."""
    other = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # a writer in another notebook, mid-transaction
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()

    @task
    def step(i):
        time.sleep(0.05)
        return i

    run = nborch.run(Sequence(*[step(i) for i in range(8)]), store=store)
    release.join()
    loaded = load_run(run.id, store)
    assert loaded.recorded_state == "succeeded"
    assert loaded.states == run.states and len(loaded.states) == 8
    other.close()


CRASH = textwrap.dedent(
    """
    import time, nborch
    from nborch import Parallel, task

    @task(cache=True)
    def part(i):
        return {"part": i}

    @task
    def forever():
        while True:
            time.sleep(0.05)

    print("starting", flush=True)
    nborch.run(Parallel(*[part(i) for i in range(5)], forever()))
    """
)


@pytest.mark.timeout(60)
def test_sigkill_mid_run_leaves_a_readable_database_with_finished_tasks_and_values(tmp_path):
    home = tmp_path / "home"
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    env = {**os.environ, "NBORCH_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        db_path = home / "nborch.db"
        deadline = time.monotonic() + 30
        done = 0
        while time.monotonic() < deadline:
            if db_path.exists():
                try:
                    with contextlib.closing(sqlite3.connect(db_path)) as db:
                        done = db.execute("SELECT COUNT(*) FROM tasks WHERE state = 'succeeded'").fetchone()[0]
                except sqlite3.Error:
                    done = 0
                if done == 5:
                    break
            time.sleep(0.02)
        assert done == 5, proc.stderr.read1().decode() if proc.poll() is not None else "timed out"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    store = SqliteStore(home)
    (run_row,) = store.runs()
    loaded = load_run(run_row["id"], store)
    assert {n: s for n, s in loaded.states.items() if n.startswith("part")} == {
        n: TaskState.SUCCEEDED for n in ["part", "part[2]", "part[3]", "part[4]", "part[5]"]
    }
    assert sorted(v["part"] for v in loaded.results.values()) == [0, 1, 2, 3, 4]
    assert loaded.recorded_state == "crashed"  # it never finished, and its process is gone


def test_a_subscriber_that_does_not_want_running_events_still_gets_start_times():
    class Quiet:
        wants_running = False

        def __init__(self):
            self.events = []

        def __call__(self, event):
            self.events.append(event)

    quiet = Quiet()
    run = nborch.run(task(lambda: 1)(), store=False, on_event=quiet)
    states = [e.state for e in quiet.events if hasattr(e, "task")]
    assert states == [TaskState.SUCCEEDED]  # no RUNNING was built for it
    (done,) = [e for e in quiet.events if hasattr(e, "task")]
    assert done.started is not None and done.started <= done.time
    loud = []
    nborch.run(task(lambda: 1)(), store=False, on_event=loud.append)
    assert [e.state for e in loud if hasattr(e, "task")] == [TaskState.RUNNING, TaskState.SUCCEEDED]
    assert run.ok


def test_a_loaded_run_keeps_its_edges_and_shows_errors_by_their_own_type(tmp_path):
    from nborch import DAG, Task
    from nborch.store import get_store

    def extract():
        return 1

    def transform(extract):
        raise KeyError("missing column")

    run = nborch.run(DAG(extract, Task(transform)), store=str(tmp_path))
    loaded = nborch.Run.load(run.id, store=get_store(tmp_path))

    assert loaded.upstreams == {"extract": [], "transform": ["extract"]} == run.upstreams
    assert "KeyError: 'missing column'" in loaded.report()
    assert "ErrorRecord" not in loaded.report()


def test_child_tasks_and_plain_successes_are_recorded_with_their_parent_rows(store):
    """Plain successes reach the store through the engine's journal, not as events; a child
    task's row still names the task that called it, read back from the file itself."""

    @task
    async def leaf(i: int) -> int:
        return i

    @task
    async def parent() -> int:
        return sum([await leaf(i) for i in range(3)])

    run = nborch.run(Parallel(parent(), leaf(10)), store=store)
    store.flush()

    with sqlite3.connect(store.path) as db:
        tasks = dict(db.execute("SELECT task, state FROM tasks WHERE run_id = ?", (run.id,)))
        parents = dict(db.execute("SELECT task, parent FROM details WHERE run_id = ?", (run.id,)))
    assert tasks == {name: "succeeded" for name in run.states}
    children = {name for name in run.states if name not in ("parent", "leaf")}
    assert len(children) == 3 and parents == dict.fromkeys(children, "parent")
    assert load_run(run.id, store).parents == dict.fromkeys(children, "parent")


def test_the_names_sqlite_exported_before_its_split_are_still_importable_from_it():
    from nborch.store import liveness, recorder, sqlite

    assert (sqlite.Recorder, sqlite.DurableRecorder) == (recorder.Recorder, recorder.DurableRecorder)
    assert sqlite.is_alive is liveness.is_alive
    assert [name for name in sqlite.__all__ if not hasattr(sqlite, name)] == []


@pytest.mark.parametrize("limit", [None, 999, 12])
def test_rows_written_in_chunks_arrive_all_and_in_order_at_every_size(tmp_path, limit):
    # rows go in as multi-row INSERTs whose sizes are powers of two (so SQLite's statement
    # cache keeps them); no row may be lost or doubled at a chunk's edge, whatever the
    # parameter limit of this SQLite (999 on old builds; 12 leaves two rows a statement)
    from nborch.store.writer import write_groups

    db = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    if limit is not None:
        db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    db.execute("CREATE TABLE t (batch INTEGER, i INTEGER, a TEXT, b REAL, c INTEGER, d TEXT)")
    sizes = [0, 1, 2, 3, 127, 128, 129, 511, 512, 513, 1337, 2048]
    for batch, n in enumerate(sizes):
        db.execute("BEGIN IMMEDIATE")
        rows = [(batch, i, f"task{i}", i / 7, None, "x" * (i % 5)) for i in range(n)]
        write_groups(db, [("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", rows)])
    for batch, n in enumerate(sizes):
        got = db.execute("SELECT i, a, b, c, d FROM t WHERE batch = ? ORDER BY rowid", (batch,)).fetchall()
        assert got == [(i, f"task{i}", i / 7, None, "x" * (i % 5)) for i in range(n)], n
    db.close()


class _Done:
    """What the recorder reads off a settled task (the engine's Inv)."""

    def __init__(self, i: int) -> None:
        self.name, self.attempts, self.started, self.finished = f"task{i}", 1 + i % 3, i / 7, i / 7 + 0.5


@pytest.mark.parametrize("limit", [None, 999, 12, 6])
def test_plain_successes_turned_into_rows_by_sqlite_arrive_all_and_in_order(tmp_path, limit):
    # a run's plain successes go in as the engine's records (writer.Successes), and SQLite
    # adds the run's id, the state and the clock's offset: every row, in order, with the
    # same times Python's arithmetic gives, at every chunk size this SQLite allows
    from nborch.store.schema import SUCCESS_ROW, TABLES
    from nborch.store.writer import Successes, write_groups

    db = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    if limit is not None:
        db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    db.execute(TABLES[1])
    wall = 1_764_000_000.123
    sizes = [1, 2, 3, 127, 128, 129, 511, 512, 513, 1337]
    for batch, n in enumerate(sizes):
        db.execute("BEGIN IMMEDIATE")
        write_groups(db, [(SUCCESS_ROW, Successes(f"run{batch}", wall, [_Done(i) for i in range(n)]))])
    for batch, n in enumerate(sizes):
        got = db.execute("SELECT * FROM tasks WHERE run_id = ? ORDER BY rowid", (f"run{batch}",)).fetchall()
        assert got == [(f"run{batch}", d.name, d.attempts, "succeeded", d.started + wall, d.finished + wall)
                       for d in map(_Done, range(n))], n
    db.close()


def test_a_big_runs_rows_on_disk_hold_each_tasks_own_times(store):
    # through the public API: 1,300 plain successes (several chunks) and their recorded
    # times, read from the file, are the run's own durations, within the run's wall window
    from nborch import DAG, Task

    def one(*_: int) -> int:
        return 1

    before = time.time()
    tasks: list[Task[int]] = []
    for i in range(1_300):
        tasks.append(Task(one, *tasks[max(0, i - 2): i], name=f"t{i}"))
    run = nborch.run(DAG(*tasks), store=store)
    after = time.time()
    store.flush()
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT task, attempts, state, started, finished FROM tasks WHERE run_id = ?",
                          (run.id,)).fetchall()
    assert sorted(r[0] for r in rows) == sorted(run.states) and len(rows) == 1_300
    for name, attempts, state, started, finished in rows:
        assert (attempts, state) == (1, "succeeded")
        assert before - 1 <= started <= finished <= after + 1
        assert finished - started == pytest.approx(run.durations[name], abs=1e-6)


def test_the_recorded_outcome_of_a_run_is_its_worst_end(store):
    # the runs row's state: "failed" when a task failed, even though its fail_fast siblings
    # ended CANCELLED; "cancelled" when the run was stopped; else "succeeded"
    release = threading.Event()

    @task
    def fine():
        return 1

    @task
    def broken():
        raise ValueError("no")

    @task
    def slow():
        release.wait(5)

    def state_of(run_id):
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            return db.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()[0]

    ok = nborch.run(Parallel(*[fine() for _ in range(3)]), store=store)
    failed = nborch.run(Parallel(broken(), slow(), fail_fast=True), store=store)
    release.set()
    release.clear()
    with pytest.raises(nborch.RunTimeoutError) as stopped:
        nborch.run(Parallel(fine(), slow()), store=store, timeout=0.3)
    release.set()

    assert failed.states["slow"] is TaskState.CANCELLED and failed.states["broken"] is TaskState.FAILED
    assert [state_of(r.id) for r in (ok, failed, stopped.value.run)] == ["succeeded", "failed", "cancelled"]

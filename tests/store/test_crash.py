"""Killed runs: what a SIGKILL leaves in the store, checked against an independent witness;
crashed runs marked as such; ``durable=True``; the schema's migration from version 1."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

import nborch
from nborch import DefinitionError, TaskState, task
from nborch.store import SqliteStore, history, load_run
from nborch.store.schema import SCHEMA_VERSION

# A task whose SUCCEEDED event a subscriber saw more than this long before a SIGKILL is in the
# store (default mode). Measured: at most 75 ms in 70 kills (benchmarks/durability.py); the
# test allows a loaded machine more than six times that.
WINDOW = 0.5


def query(db_path, sql, params=()):
    db = sqlite3.connect(db_path)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except sqlite3.Error:
            pass
        time.sleep(0.01)
    return False


HANGS = textwrap.dedent(
    """
    import sys, time, nborch
    from nborch import Parallel, task

    @task
    def done():
        return 1

    @task
    def forever():
        while True:
            time.sleep(0.05)

    nborch.run(Parallel(done(), forever()), run_id=sys.argv[2], store=sys.argv[1])
    """
)


@pytest.fixture
def hanging(tmp_path):
    """A run in another process that never ends, once its finished task is on disk."""
    home = tmp_path / "home"
    script = tmp_path / "hangs.py"
    script.write_text(HANGS)
    proc = subprocess.Popen([sys.executable, str(script), str(home), "victim"])
    db = home / "nborch.db"
    try:
        assert wait_for(lambda: query(db, "SELECT 1 FROM tasks WHERE task = 'done'")), "the run never started"
        yield home, proc
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.timeout(60)
def test_a_killed_run_is_marked_crashed_when_a_later_process_opens_the_store(hanging):
    home, proc = hanging
    store = SqliteStore(home)
    assert query(store.path, "SELECT state FROM runs") == [("running",)]  # its process is alive
    assert history(store=store)[0].status == "running"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    SqliteStore(home)  # a later process opens the store
    ((state, finished, tasks),) = query(home / "nborch.db", "SELECT state, finished, tasks FROM runs")
    assert state == "crashed" and finished is not None and tasks == 1
    (run,) = history(store=SqliteStore(home))
    assert run.status == "crashed" and run.recorded_state == "crashed"
    assert load_run("victim", SqliteStore(home)).states == {"done": TaskState.SUCCEEDED}


def test_a_running_row_whose_pid_was_reused_is_crashed(tmp_path):
    store = SqliteStore(tmp_path / "home")
    nborch.run(task(lambda: 1)(), store=store)
    db = sqlite3.connect(store.path, isolation_level=None)
    host = db.execute("SELECT host FROM runs").fetchone()[0]
    # our own pid, but another process's start time: the process that wrote it is gone
    db.execute("INSERT INTO runs (id, name, state, started, pid, host, proc) VALUES "
               "('old', 'x', 'running', 1.0, ?, ?, 'another-boot:12')", (os.getpid(), host))
    db.execute("INSERT INTO runs (id, name, state, started, pid, host, proc) VALUES "
               "('elsewhere', 'x', 'running', 1.0, 1, 'another-host', 'b:1')")
    db.close()
    SqliteStore(store.home)
    assert dict(query(store.path, "SELECT id, state FROM runs WHERE id != (SELECT id FROM runs "
                                  "WHERE state = 'succeeded')")) == {"old": "crashed", "elsewhere": "running"}


# -- durable=True ----------------------------------------------------------------------------------


def test_durable_commits_each_task_before_any_other_subscriber_sees_it(tmp_path):
    store = SqliteStore(tmp_path / "home")
    seen = []

    def witness(e):  # an independent connection, at the moment the event arrives
        if getattr(e, "state", None) is TaskState.SUCCEEDED and hasattr(e, "task"):
            seen.append((e.task, query(store.path, "SELECT state FROM tasks WHERE task = ?", (e.task,))))

    @task
    def step(i):
        return i

    run = nborch.run(nborch.Sequence(*[step(i) for i in range(30)]), store=store, durable=True,
                     on_event=witness)
    assert run.ok and len(seen) == 30
    assert [rows for _, rows in seen] == [[("succeeded",)]] * 30


def test_durable_without_a_store_is_a_definition_error():
    with pytest.raises(DefinitionError, match=r"^durable=True commits each task's row as it ends, but "
                       r"store=False records nothing"):
        nborch.run(task(lambda: 1)(), store=False, durable=True)


# -- SIGKILL, checked against an independent witness ---------------------------------------------

KILLED = textwrap.dedent(
    """
    import asyncio, os, sys, time, nborch
    from nborch import Parallel, Task, TaskState

    home, log, mode = sys.argv[1:4]
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def witness(e):  # subscribed after the recorder: an independent record of what finished
        if type(e).__name__ == "TaskEvent" and e.state is TaskState.SUCCEEDED:
            os.write(fd, f"{e.task} {time.time():.6f}\\n".encode())

    async def tick(i):
        await asyncio.sleep(0.001 * (i % 3))
        return i

    def sync_tick(i):
        return i

    tasks = [Task(tick if i % 4 else sync_tick, i, name=f"t{i}") for i in range(int(sys.argv[4]))]
    nborch.run(Parallel(*tasks, limit=8), store=home, run_id="killed", durable=mode == "durable",
               on_event=witness)
    """
)


def kill_once(tmp_path, mode, delay, n=20_000):
    """Run ``n`` short tasks in a subprocess, SIGKILL it ``delay`` s after its first finished
    task; returns (witnessed {task: time}, stored task names, kill time, the store's home)."""
    home, log = tmp_path / f"home-{mode}-{delay}", tmp_path / f"log-{mode}-{delay}"
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    proc = subprocess.Popen([sys.executable, str(script), str(home), str(log), mode, str(n)])
    try:
        assert wait_for(lambda: log.exists() and log.stat().st_size > 0), "no task finished"
        time.sleep(delay)  # the moment of the kill is the point: anywhere in the run
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait(10)
    witnessed = {}
    for line in log.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            name, at = line.split()
            witnessed[name] = float(at)
    assert len(witnessed) < n, "the run ended before the kill: make it longer"
    store = SqliteStore(home)
    stored = {t for (t,) in query(store.path, "SELECT task FROM tasks WHERE run_id = 'killed'")}
    assert query(store.path, "SELECT state FROM runs") == [("crashed",)]
    return witnessed, stored, killed_at


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["default", "durable"])
def test_sigkill_keeps_what_finished_as_the_stated_window_says(tmp_path, mode):
    rng = random.Random(9)
    for delay in [rng.uniform(0.05, 0.6) for _ in range(3)]:
        witnessed, stored, killed_at = kill_once(tmp_path, mode, round(delay, 3))
        assert witnessed, "nothing finished before the kill"
        if mode == "durable":  # committed before the witness heard of it: every one is there
            assert sorted(set(witnessed) - stored) == []
            assert len(stored - set(witnessed)) <= 1  # at most the one committed when the kill came
        else:
            old = {t for t, at in witnessed.items() if at < killed_at - WINDOW}
            assert sorted(old - stored) == [], f"finished over {WINDOW}s before the kill, not in the store"
            assert stored <= set(witnessed)  # what the store has really finished


# -- the schema's migration -------------------------------------------------------------------------

SCHEMA_V1 = """
CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT, state TEXT NOT NULL, started REAL, finished REAL,
    tasks INTEGER DEFAULT 0);
CREATE TABLE tasks (run_id TEXT NOT NULL, task TEXT NOT NULL, attempts INTEGER, state TEXT NOT NULL,
    started REAL, finished REAL);
CREATE INDEX tasks_run ON tasks(run_id);
CREATE TABLE details (run_id TEXT NOT NULL, task TEXT NOT NULL, error_type TEXT, message TEXT,
    traceback TEXT, cached INTEGER DEFAULT 0, cache_key TEXT, parent TEXT);
CREATE INDEX details_run ON details(run_id);
CREATE TABLE attempts (run_id TEXT NOT NULL, task TEXT NOT NULL, attempt INTEGER NOT NULL, started REAL,
    finished REAL, error_type TEXT, message TEXT, traceback TEXT, delay REAL);
CREATE INDEX attempts_run ON attempts(run_id);
CREATE TABLE cache (key TEXT PRIMARY KEY, task TEXT, path TEXT NOT NULL, size INTEGER, created REAL);
CREATE INDEX runs_started ON runs(started);
INSERT INTO runs VALUES ('old1', 'nightly', 'succeeded', 100.0, 101.0, 1);
INSERT INTO runs VALUES ('old2', 'nightly', 'running', 200.0, NULL, 0);
INSERT INTO tasks VALUES ('old1', 'extract', 1, 'succeeded', 100.0, 101.0);
PRAGMA user_version = 1;
PRAGMA journal_mode = WAL;
"""


def test_a_version_1_store_is_migrated_and_keeps_its_runs(tmp_path):
    home = tmp_path / "home"
    (home / "values").mkdir(parents=True)
    db = sqlite3.connect(home / "nborch.db")
    db.executescript(SCHEMA_V1)
    db.close()

    store = SqliteStore(home)
    assert query(store.path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    old = load_run("old1", store)
    assert old.ok and old.states == {"extract": TaskState.SUCCEEDED} and old.name == "nightly"
    assert load_run("old2", store).recorded_state == "running"  # no pid was kept then: left as it was
    new = nborch.run(task(lambda: 1)(), store=store)
    assert query(store.path, "SELECT pid FROM runs WHERE id = ?", (new.id,)) == [(os.getpid(),)]
    assert [r.id for r in history(store=store)] == [new.id, "old2", "old1"]
    assert load_run(new.id, store).upstreams == {"task": []}  # a migrated store records edges too

"""The store under faults: a lock held by another process, a damaged or read-only file, a full
disk, a reused run id, connections left open. A run never fails or stalls because of its
store: it goes on (unrecorded if it must, with one warning), and no row is dropped silently."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

import nborch
from nborch import DefinitionError, Parallel, Sequence, task
from nborch.store import SqliteStore, StoreError, history, load_run

from .helpers import fill, read_only, tiny_disk, write_lock


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def rows(db_path, sql, params=()):
    db = sqlite3.connect(db_path)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


@task
def step(i):
    return i


# -- a reused run id ---------------------------------------------------------------------------------


def test_a_reused_run_id_is_refused_before_anything_runs(home):
    ran = []

    @task
    def work():
        ran.append(1)
        return 1

    store = SqliteStore(home)
    assert nborch.run(work(), run_id="nightly", store=store).ok
    with pytest.raises(DefinitionError, match=r"^run_id 'nightly' is already recorded in .*nborch\.db: each run "
                       r"needs its own id\. Pass another run_id="):
        nborch.run(work(), run_id="nightly", store=store)
    assert ran == [1]
    assert rows(store.path, "SELECT id, state, tasks FROM runs") == [("nightly", "succeeded", 1)]
    assert rows(store.path, "SELECT COUNT(*) FROM tasks WHERE run_id = 'nightly'") == [(1,)]
    # another process (a fresh store object) sees it too; store=False records nothing, so it may
    with pytest.raises(DefinitionError, match="already recorded"):
        nborch.run(work(), run_id="nightly", store=SqliteStore(home))
    assert nborch.run(work(), run_id="nightly", store=False).ok


def test_a_run_id_whose_rows_are_still_waiting_for_the_lock_is_refused_too(home):
    store = SqliteStore(home)
    with write_lock(store.path):
        assert nborch.run(step(1), run_id="r1", store=store).ok
        with pytest.raises(DefinitionError, match="^run_id 'r1' is already recorded"):
            nborch.run(step(1), run_id="r1", store=store)
    assert store.flush(10)
    assert rows(store.path, "SELECT id FROM runs") == [("r1",)]


# -- another process holds the write lock --------------------------------------------------------------


@pytest.mark.timeout(60)
def test_opening_a_current_store_needs_no_write_lock(home):
    SqliteStore(home)  # created
    with write_lock(home / "nborch.db"):
        start = time.monotonic()
        store = SqliteStore(home)  # another process opening it
        assert time.monotonic() - start < 2.0
        assert store.runs() == []


@pytest.mark.timeout(60)
def test_a_run_on_a_cold_store_whose_lock_is_held_runs_and_is_recorded_when_it_frees(home):
    home.mkdir()
    with write_lock(home / "nborch.db") as other:  # a new, empty database someone else is writing
        start = time.monotonic()
        store = SqliteStore(home)
        run = nborch.run(Sequence(step(1), step(2)), store=store)
        assert time.monotonic() - start < 5.0  # was: 30 s, then a raw sqlite3.OperationalError
        assert run.ok and run.value == [1, 2]
        other.execute("COMMIT")
    loaded = load_run(run.id, store)  # waits for the rows kept while the lock was held
    assert loaded.recorded_state == "succeeded" and len(loaded.states) == 2


@pytest.mark.timeout(60)
def test_a_run_whose_store_stays_locked_does_not_stall_and_its_rows_come_when_the_lock_frees(home):
    store = SqliteStore(home)
    nborch.run(step(0), store=store)  # warm: schema, WAL
    release = threading.Event()

    def hold():
        with write_lock(store.path):
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        time.sleep(0.1)  # let it take the lock (it is held until released below, however long)
        start = time.monotonic()
        run = nborch.run(Parallel(*[step(i) for i in range(20)]), store=store)
        took = time.monotonic() - start
        assert run.ok
        assert took < 3.0, f"the run's end waited {took:.1f}s for the store"  # was: 30 s
        assert store.flush(0.2) is False  # still locked: kept, not written, not dropped
        assert rows(store.path, "SELECT COUNT(*) FROM runs WHERE id = ?", (run.id,)) == [(0,)]
    finally:
        release.set()
        holder.join()
    assert store.flush(10) is True
    loaded = load_run(run.id, store)
    assert loaded.recorded_state == "succeeded" and len(loaded.states) == 20


EXIT_LOCKED = textwrap.dedent(
    """
    import sys, nborch

    @nborch.task
    def one():
        return 1

    run = nborch.run(one(), store=sys.argv[1])
    print(run.id, flush=True)
    """
)


@pytest.mark.timeout(60)
def test_rows_never_written_are_reported_at_exit_naming_the_store_and_the_run(home, tmp_path):
    SqliteStore(home)
    script = tmp_path / "job.py"
    script.write_text(EXIT_LOCKED)
    with write_lock(home / "nborch.db"):
        done = subprocess.run([sys.executable, str(script), str(home)], capture_output=True, text=True, timeout=60)
    run_id = done.stdout.strip()
    assert done.returncode == 0 and run_id, done.stderr
    assert rows(home / "nborch.db", "SELECT COUNT(*) FROM runs WHERE id = ?", (run_id,)) == [(0,)]
    assert f"rows of run {run_id!r} were not written to {home / 'nborch.db'}" in done.stderr
    assert "holds its write lock" in done.stderr


# -- damaged, read-only, full -------------------------------------------------------------------------


def test_a_damaged_database_is_a_store_error_naming_the_file_and_the_fix(home):
    home.mkdir()
    db = home / "nborch.db"
    db.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match=rf"^{db} is damaged or is not an nborch database \(.*\)\. Move it aside "
                       r"\(mv .*nborch\.db .*nborch\.db\.damaged\) or set NBORCH_HOME to another folder\.$"):
        SqliteStore(home)


def test_history_of_a_damaged_store_is_a_store_error(home, monkeypatch):
    home.mkdir()
    (home / "nborch.db").write_bytes(b"not a database, " * 512)
    monkeypatch.setenv("NBORCH_HOME", str(home))
    with pytest.raises(StoreError, match=r"nborch\.db is damaged or is not an nborch database"):
        nborch.history()


def test_a_run_on_a_damaged_store_warns_once_and_goes_on_unrecorded(home, monkeypatch):
    home.mkdir()
    damaged = os.urandom(8192)
    (home / "nborch.db").write_bytes(damaged)
    monkeypatch.setenv("NBORCH_HOME", str(home))
    ran = []

    @task(cache=True)
    def work():
        ran.append(1)
        return 1

    with pytest.warns(RuntimeWarning, match=r"^nborch: .*nborch\.db is damaged .* This run is not recorded "
                      r"and not cached\.$") as caught:
        run = nborch.run(Sequence(work(), step(2)))
    assert run.ok and run.value == [1, 2] and ran == [1]
    assert len([w for w in caught if "nborch" in str(w.message)]) == 1
    assert (home / "nborch.db").read_bytes() == damaged  # left for the user to look at


def test_a_read_only_store_reads_history_and_runs_unrecorded(home):
    store = SqliteStore(home)
    first = nborch.run(step(1), store=store)
    store.close()
    before = {p.name: p.read_bytes() for p in home.iterdir() if p.is_file()}
    with read_only(home):
        reader = SqliteStore(home)  # opening only to read needs no write
        assert [r.id for r in history(store=reader)] == [first.id]
        assert load_run(first.id, reader).ok
        with pytest.warns(RuntimeWarning, match=r"^nborch: the store at .* cannot be written \(.*read-only.*\); "
                          r"this run is not recorded and not cached\.$"):
            run = nborch.run(step(2), store=home)
        assert run.ok and run.value == 2
    assert {p.name: p.read_bytes() for p in home.iterdir() if p.is_file()} == before


@pytest.mark.timeout(60)
def test_a_full_disk_warns_once_and_the_run_goes_on(tmp_path):
    home = tmp_path / "home"
    with tiny_disk(home, "512k"):
        store = SqliteStore(home)
        nborch.run(step(0), store=store)
        ran = []

        @task(cache=True)
        def big(i):
            ran.append(i)
            return os.urandom(200_000)

        fill(home)
        with pytest.warns(RuntimeWarning, match=r"^nborch: cannot (store cached values in|record run) ") as caught:
            run = nborch.run(Parallel(*[big(i) for i in range(3)], *[step(i) for i in range(200)]), store=store)
        assert run.ok and sorted(ran) == [0, 1, 2]
        assert len([w for w in caught if str(w.message).startswith("nborch:")]) == 1
        assert not [p for p in (home / "values").iterdir() if p.name.endswith(".tmp")]
        assert history(limit=None, store=store)[-1].ok  # reading needs no space


# -- connections ---------------------------------------------------------------------------------------


def test_blocking_runs_inside_a_running_loop_close_their_connections(home, monkeypatch):
    made: list[tuple[sqlite3.Connection, str]] = []
    real = sqlite3.connect

    def connect(*args, **kwargs):
        db = real(*args, **kwargs)
        made.append((db, threading.current_thread().name))
        return db

    monkeypatch.setattr(sqlite3, "connect", connect)
    store = SqliteStore(home)

    @task(cache=True)
    def cached(i):
        return i

    async def main():
        for i in range(3):  # nborch.run inside a running loop: each run on its own loop thread
            assert nborch.run(Parallel(step(i), cached(i)), store=store).ok
            history(store=store)

    asyncio.run(main())
    store.flush()
    # the store's own two (one that never waits, its writer thread's), however many runs
    assert len([db for db, _ in made if _is_open(db)]) <= 2
    assert len(made) > 6  # reads opened (and closed) their own
    store.close()
    assert [name for db, name in made if _is_open(db)] == []


def _is_open(db):
    try:
        db.total_changes  # noqa: B018 - raises on a closed connection
    except sqlite3.ProgrammingError:
        return False
    return True


RESOURCES = textwrap.dedent(
    """
    import asyncio, gc, sys, nborch

    @nborch.task(cache=True)
    def one(i):
        return i

    async def main():
        for i in range(3):
            nborch.run(one(i), store=sys.argv[1])
            nborch.history()

    asyncio.run(main())
    gc.collect()
    print("done", flush=True)
    """
)


def test_no_unclosed_database_warning_under_dev_mode(home, tmp_path):
    """Python 3.13 warns for every connection left to the garbage collector."""
    script = tmp_path / "job.py"
    script.write_text(RESOURCES)
    env = {**os.environ, "NBORCH_HOME": str(home)}
    done = subprocess.run([sys.executable, "-X", "dev", "-W", "error::ResourceWarning", str(script), str(home)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
    assert "unclosed database" not in done.stderr


@pytest.mark.timeout(60)
def test_a_run_whose_first_connection_cannot_even_read_the_schema_is_recorded_when_the_lock_frees(home):
    """Opening the store's connection reads the schema (PRAGMA synchronous): with another
    connection holding the file exclusively (as the writer thread's checkpoint did between two
    big runs), that read is busy too. The run was left unrecorded; its rows now wait instead."""
    store = SqliteStore(home)
    nborch.run(step(0), store=store)  # warm: schema, WAL
    assert store.close()
    other = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    try:
        with warnings.catch_warnings():  # "cannot record run ... it goes on unrecorded" fails here
            warnings.simplefilter("error", RuntimeWarning)
            run = nborch.run(Parallel(*[step(i) for i in range(5)]), store=store)
        assert run.ok
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.flush(10) is True
    loaded = load_run(run.id, store)
    assert loaded.recorded_state == "succeeded" and len(loaded.states) == 5


"""The store's upkeep between runs: which folder a run records into when the working
directory or ``$NBORCH_HOME`` changes (the resolved home is remembered per both), and a
write-ahead log that stays bounded over many runs though it is no longer checkpointed after
every run."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import nborch
from nborch import task
from nborch.store import SqliteStore, get_store, load_run, writer


@task
def step(i: int) -> int:
    return i


def recorded(home: Path) -> list[str]:
    with sqlite3.connect(home / "nborch.db") as db:
        return [r[0] for r in db.execute("SELECT id FROM runs ORDER BY started")]


def log_sizes(store: SqliteStore, runs: int, *, flush: bool) -> list[int]:
    """The write-ahead log's size after each of ``runs`` runs of 20 tasks (``flush``: waiting
    for the store's writer thread after each)."""
    wal = Path(f"{store.path}-wal")
    sizes = []
    for _ in range(runs):
        nborch.run(nborch.Parallel(*[step(j) for j in range(20)]), store=store)
        if flush:
            store.flush()
        sizes.append(wal.stat().st_size if wal.exists() else 0)
    return sizes


def test_a_relative_home_is_the_one_under_the_working_directory_of_each_run(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.chdir(a)
    first = nborch.run(step(1), store="rel")
    monkeypatch.chdir(b)
    second = nborch.run(step(2), store="rel")
    assert get_store(a / "rel").flush() and get_store(b / "rel").flush()
    assert recorded(a / "rel") == [first.id]
    assert recorded(b / "rel") == [second.id]


def test_the_default_home_follows_nborch_home_and_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("NBORCH_HOME", str(tmp_path / "one"))
    first = nborch.run(step(1))
    monkeypatch.setenv("NBORCH_HOME", str(tmp_path / "two"))
    second = nborch.run(step(2))
    monkeypatch.delenv("NBORCH_HOME")
    monkeypatch.chdir(tmp_path)
    third = nborch.run(step(3))
    for home in ("one", "two", ".nborch"):
        get_store(tmp_path / home).flush()
    assert recorded(tmp_path / "one") == [first.id]
    assert recorded(tmp_path / "two") == [second.id]
    assert recorded(tmp_path / ".nborch") == [third.id]


def test_an_absolute_home_works_from_a_working_directory_that_was_deleted(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    run = nborch.run(step(1), store=str(tmp_path / "home"))
    assert load_run(run.id, str(tmp_path / "home")).states == run.states


def test_the_write_ahead_log_stays_bounded_over_many_runs(tmp_path, monkeypatch):
    # a run's end checkpoints once the log holds CHECKPOINT_AT bytes (here a small size, to
    # need few runs); the log is then reused from its start, so it never grows much past it
    monkeypatch.setattr(writer, "CHECKPOINT_AT", 64 << 10)
    store = SqliteStore(tmp_path)
    sizes = log_sizes(store, 150, flush=True)
    assert max(sizes) < 4 * (64 << 10), sizes[-10:]
    assert len(store.runs(limit=None)) == 150
    assert store.close()


def test_runs_written_without_a_checkpoint_are_read_by_another_process(tmp_path):
    """A small run leaves its rows in the write-ahead log: a reader in another process
    (nborch's own, or plain sqlite3) sees them there."""
    store = SqliteStore(tmp_path)
    ids = [nborch.run(step(i), store=store).id for i in range(3)]
    assert Path(f"{store.path}-wal").exists()
    code = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]);"
            "print(','.join(r[0] for r in db.execute('SELECT id FROM runs ORDER BY started')))")
    out = subprocess.run([sys.executable, "-c", code, str(store.path)], capture_output=True, text=True,
                         check=True, env={**os.environ}).stdout.strip()
    assert out.split(",") == ids


@pytest.mark.timeout(60)
def test_closing_the_store_folds_the_log_into_the_database(tmp_path):
    store = SqliteStore(tmp_path)
    ids = [nborch.run(step(i), store=store).id for i in range(3)]
    assert store.close()
    wal = Path(f"{store.path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # the last connection checkpointed it
    db = sqlite3.connect(f"file:{store.path}?mode=ro&immutable=1", uri=True)  # the file alone
    assert [r[0] for r in db.execute("SELECT id FROM runs ORDER BY started")] == ids
    db.close()


def test_the_write_ahead_log_stays_bounded_when_runs_follow_each_other_at_once(tmp_path, monkeypatch):
    # no flush between runs: each run's end comes while the writer thread may still be copying
    # the log for an earlier one, and adds to it; the log must still start again, not grow
    monkeypatch.setattr(writer, "CHECKPOINT_AT", 64 << 10)
    store = SqliteStore(tmp_path)
    sizes = log_sizes(store, 400, flush=False)
    assert max(sizes) < 16 * (64 << 10), max(sizes)
    assert min(sizes[200:]) < 64 << 10  # it started again, more than once
    assert store.close()
    last = nborch.last_run()
    assert last is not None and len(load_run(last.id, store).states) == 20

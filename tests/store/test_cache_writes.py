"""Writing cached values: concurrent writers, writes that fail, writers that are killed.

Storing a value is a by-product of a task that already did its work: it never fails the task.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import nborch
from nborch import Parallel, task
from nborch.store import SqliteStore

from .helpers import fill, read_only, tiny_disk


@pytest.fixture
def store(tmp_path):
    return SqliteStore(tmp_path / "home")


def temp_files(store):
    return sorted(p.name for p in (store.home / "values").iterdir() if p.name.endswith(".tmp"))


class Quiet:
    """Holds test machinery; its ``__reduce__`` keeps it out of the cache keys of the tasks
    that reach it (a key hashes what a task reads by value, and a barrier cannot be hashed)."""

    def __init__(self, **parts):
        self.__dict__.update(parts)

    def __reduce__(self):
        return (Quiet, ())


SYNC = Quiet(barrier=threading.Barrier(4, timeout=20))


class Rendezvous:
    """A value whose pickling waits until four of them are being pickled: the four writes of
    one key then go to disk at the same moment."""

    def __reduce__(self):
        SYNC.barrier.wait()
        return (Rendezvous, ())


def test_identical_cached_calls_writing_at_once_all_succeed(store):
    SYNC.barrier.reset()

    @task(cache=True)
    def make(i):
        return Rendezvous()

    run = nborch.run(Parallel(*[make(1) for _ in range(4)]), store=store)  # one key, four writers
    assert run.ok, run.report()
    assert len(run.states) == 4
    assert temp_files(store) == []
    again = nborch.run(make(1), store=store)
    assert again.cached == {"make"} and isinstance(again.value, Rendezvous)


def test_threads_writing_one_key_into_one_store_all_succeed(store):
    from nborch.store.cache import Cache

    cache = Cache(store)
    errors = []
    start = threading.Barrier(8)

    def write():
        start.wait()
        try:
            for _ in range(20):
                assert cache.save("k" * 32, "t", b"x" * 100_000) is not None
        except BaseException as err:  # noqa: BLE001 - collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.load("k" * 32)[:2] == (True, b"x" * 100_000)
    assert temp_files(store) == []


def test_a_read_only_values_folder_warns_once_and_the_task_succeeds_uncached(store):
    ran = []

    @task(cache=True)
    def work(i):
        ran.append(i)
        return i

    with read_only(store.home / "values"):
        with pytest.warns(RuntimeWarning, match=r"^nborch: cannot store cached values in .*values \(.*\); run "
                          r"'[0-9a-f]+' goes on without caching\.$") as caught:
            run = nborch.run(Parallel(*[work(i) for i in range(3)]), store=store)
        assert run.ok and sorted(ran) == [0, 1, 2] and run.cached == set()
        assert len([w for w in caught if str(w.message).startswith("nborch:")]) == 1
    assert nborch.Run.load(run.id, store).ok  # the run itself is recorded


@pytest.mark.timeout(60)
def test_a_full_values_folder_warns_and_the_task_succeeds_uncached(store):
    with tiny_disk(store.home / "values", "64k"):
        fill(store.home / "values")

        @task(cache=True)
        def big():
            return os.urandom(100_000)

        with pytest.warns(RuntimeWarning, match=r"^nborch: cannot store cached values in .*No space left"):
            run = nborch.run(big(), store=store)
        assert run.ok and len(run.value) == 100_000 and run.cached == set()
        assert temp_files(store) == []


# -- temporary files of killed writers --------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import os, sys, nborch
    from nborch.store import SqliteStore
    from nborch.store.cache import Cache

    cache = Cache(SqliteStore(sys.argv[1]))
    print("writing", flush=True)
    cache.save("a" * 32, "big", os.urandom(200 * 2**20))
    """
)


@pytest.mark.timeout(120)
def test_a_writer_killed_mid_write_leaves_a_temporary_file_that_the_next_open_removes(tmp_path):
    home = tmp_path / "home"
    SqliteStore(home)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(home)], stdout=subprocess.PIPE, text=True)
    values = home / "values"
    try:
        assert proc.stdout.readline() == "writing\n"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not [p for p in values.iterdir() if p.name.endswith(".tmp")]:
            time.sleep(0.001)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    left = [p for p in values.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and str(proc.pid) in left[0].name  # the writer's pid is in the name
    SqliteStore(home)  # a later process opens the store
    assert [p.name for p in values.iterdir()] == []


HOLDER = textwrap.dedent(
    """
    import sys, time
    from nborch.store import SqliteStore
    from nborch.store.cache import Cache

    cache = Cache(SqliteStore(sys.argv[1]))
    tmp = cache.temp_path("b" * 32 + ".pkl")  # a write in progress, as save() names it
    tmp.write_bytes(b"partial")
    print(tmp.name, flush=True)
    time.sleep(60)
    """
)


@pytest.mark.timeout(60)
def test_a_temporary_file_of_a_live_writer_is_left_alone_and_clear_removes_it_once_it_is_gone(tmp_path):
    home = tmp_path / "home"
    SqliteStore(home)
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen([sys.executable, str(script), str(home)], stdout=subprocess.PIPE, text=True)
    try:
        name = proc.stdout.readline().strip()
        assert name.endswith(".tmp") and str(proc.pid) in name
        store = SqliteStore(home)
        assert nborch.cache.clear(store) == 0
        assert (home / "values" / name).exists()  # its writer is alive
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    assert nborch.cache.clear(store) == 0
    assert not (home / "values" / name).exists()


def test_our_own_stale_temporary_files_are_removed(store):
    from nborch.store.cache import Cache

    cache = Cache(store)
    stale = cache.temp_path("c" * 32 + ".pkl")  # ours, but no write of ours is using it
    stale.write_bytes(b"left over")
    SqliteStore(store.home)
    assert not stale.exists()

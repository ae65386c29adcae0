"""@task(cache=True): keys from code and inputs, hits across interpreters, invalidation, resume."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

import nborch
from nborch import DAG, Parallel, TaskState, task
from nborch.store import SqliteStore, load_run
from nborch.store.cache import code_hash


@pytest.fixture
def store(tmp_path):
    return SqliteStore(tmp_path / "home")


class Log(list):
    """Records calls. A cache key hashes what a task reads by value, this list included; its
    ``__reduce__`` leaves the entries out, so that recording a call is not a change of input."""

    def __reduce__(self):
        return (Log, ())


def test_a_hit_skips_the_work_and_is_flagged_everywhere(store):
    calls = Log()

    @task(cache=True)
    def load(n):
        calls.append(n)
        return list(range(n))

    first = nborch.run(load(3), store=store)
    events = []
    second = nborch.run(load(3), store=store, on_event=events.append)

    assert calls == [3]
    assert second.value == [0, 1, 2] and second.ok
    assert second.cached == {"load"} and first.cached == set()
    (done,) = [e for e in events if getattr(e, "task", None) == "load"]
    assert done.state is TaskState.SUCCEEDED and done.cached is True
    assert "succeeded (cached)" in second.report() and "stored" in second.report()
    assert second.sizes["load"] > 0
    assert "(cached)" in second._repr_html_()


def test_the_value_is_on_disk_before_succeeded_goes_out(store):
    checked = []

    @task(cache=True)
    def make():
        return {"big": list(range(1000))}

    def on_event(e):
        if getattr(e, "state", None) is TaskState.SUCCEEDED and e.task == "make":
            entry = store.cache_entry(e.cache_key)
            checked.append(entry is not None and (store.home / "values" / entry[0]).exists())

    nborch.run(make(), store=store, on_event=on_event)
    assert checked == [True]


def test_changed_arguments_code_or_helpers_invalidate_the_key():
    def helper(x):
        return x + 1

    def f(x):
        return helper(x)

    before = code_hash(f)

    def helper(x):  # noqa: F811 - the point: a changed helper changes the task's key
        return x + 2

    def f(x):  # noqa: F811
        return helper(x)

    assert code_hash(f) != before

    def g(x):
        return x * 2

    def g2(x):
        return x * 3

    assert code_hash(g) != code_hash(g2)


def test_a_changed_closure_value_invalidates_the_key():
    def make(k):
        def f(x):
            return x * k
        return f

    assert code_hash(make(2)) != code_hash(make(3))
    assert code_hash(make(2)) == code_hash(make(2))


def test_changed_upstream_invalidates_downstream(store):
    ran = Log()
    factor = {"v": 1}

    @task(cache=True)
    def source():
        ran.append("source")
        return factor["v"]

    @task(cache=True)
    def double(source):
        ran.append("double")
        return source * 2

    nborch.run(DAG(source, double), store=store)
    nborch.run(DAG(source, double), store=store)
    assert ran == ["source", "double"]  # the second run was all hits

    nborch.run(DAG(source, double), store=store, force=True)
    assert ran[2:] == ["source", "double"]  # force ignores the cache


def test_a_value_that_cannot_be_pickled_warns_once_and_is_not_cached(store):
    @task(cache=True)
    def lock():
        return threading.Lock()

    with pytest.warns(RuntimeWarning, match=r"the value of task 'lock' cannot be pickled .*; it is not cached\."):
        run = nborch.run(lock(), store=store)
    assert run.ok and "lock" not in run.cached
    assert nborch.run(lock(), store=store).cached == set()


def test_cache_clear_empties_it(store):
    calls = Log()

    @task(cache=True)
    def one():
        calls.append(1)
        return 1

    nborch.run(one(), store=store)
    assert nborch.cache.clear(store) == 1
    nborch.run(one(), store=store)
    assert calls == [1, 1]


FRESH = textwrap.dedent(
    """
    import pathlib, sys, nborch

    marker = pathlib.Path(sys.argv[1])

    @nborch.task(cache=True)
    def expensive(n):
        with marker.open("a") as f:
            f.write("ran\\n")
        return sum(range(n))

    run = nborch.run(expensive(1000))
    print(run.value, sorted(run.cached))
    """
)


def test_a_hit_survives_a_fresh_interpreter(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(FRESH)
    marker = tmp_path / "ran.txt"
    env = {**os.environ, "NBORCH_HOME": str(tmp_path / "home")}
    outs = [
        subprocess.run([sys.executable, str(script), str(marker)], env=env, capture_output=True, text=True,
                       check=True, timeout=60).stdout
        for _ in range(2)
    ]
    assert outs == ["499500 []\n", "499500 ['expensive']\n"]
    assert marker.read_text() == "ran\n"  # the second interpreter did not run it


def test_resume_reruns_what_did_not_succeed(store):
    ran = Log()
    broken = {"yes": True}

    @task(cache=True)
    def extract():
        ran.append("extract")
        return [1, 2, 3]

    @task
    def plain():
        ran.append("plain")
        return Unpicklable(10)

    @task
    def transform(extract, plain):
        ran.append("transform")
        if broken["yes"]:
            raise ValueError("bug")
        return [x + plain.n for x in extract]

    failed = nborch.run(DAG(extract, plain, transform), store=store)
    assert not failed.ok and sorted(ran) == ["extract", "plain", "transform"]

    broken["yes"] = False
    ran.clear()
    resumed = nborch.run(DAG(extract, plain, transform), store=store, resume=failed.id)
    assert resumed.ok and resumed.value["transform"] == [11, 12, 13]
    # extract's value was stored: reused; plain's could not be but transform needs it: run again
    assert sorted(ran) == ["plain", "transform"]
    assert "extract" in resumed.cached


class Unpicklable:
    def __init__(self, n: int) -> None:
        self.n = n
        self.lock = threading.Lock()


def test_a_failed_run_keeps_its_values_for_resume(store, tmp_path):
    """A run that fails keeps the values of its succeeded tasks (one file, in the store's
    values folder), so resume re-runs only the failed task, even with no cache: the value fed
    to it is the one the first run made, read back from disk."""
    ran = Log()
    broken = {"yes": True}

    @task
    def load():
        ran.append("load")
        return {"rows": [1, 2, 3]}

    @task
    def total(load):
        ran.append("total")
        if broken["yes"]:
            raise ValueError("bug")
        return sum(load["rows"])

    dag = DAG(load, total)
    failed = nborch.run(dag, store=store)
    assert list(store.values.glob(f"resume-{failed.id}.pkl"))  # on disk, next to the cached values
    broken["yes"] = False
    ran.clear()
    resumed = nborch.run(dag, store=store, resume=failed.id)
    assert ran == ["total"] and resumed.value["total"] == 6
    assert "load" in resumed.reused and "load" not in resumed.cached
    ok = nborch.run(dag, store=store)
    assert not list(store.values.glob(f"resume-{ok.id}.pkl"))  # a run that succeeded keeps nothing


def test_only_the_newest_failed_runs_keep_their_values(store, monkeypatch):
    from nborch.store import resume

    monkeypatch.setattr(resume, "RESUME_KEPT", 3)
    monkeypatch.setattr(resume.prune_resume_files, "__defaults__", (3,))

    @task
    def ok():
        return 1

    @task
    def bad(ok):
        raise ValueError("again")

    ids = [nborch.run(bad(ok()), store=store).id for _ in range(5)]
    kept = sorted(p.name for p in store.values.glob("resume-*.pkl"))
    assert kept == sorted(f"resume-{i}.pkl" for i in ids[-3:])


def test_resume_of_an_unknown_run_is_a_clear_error(store):
    with pytest.raises(nborch.NborchError, match=r"^no run 'nope'"):
        nborch.run(task(lambda: 1)(), store=store, resume="nope")


def test_run_load_brings_back_cached_values(store):
    @task(cache=True)
    def value():
        return {"k": [1, 2]}

    run = nborch.run(Parallel(value()), store=store)
    assert load_run(run.id, store).results == {"value": {"k": [1, 2]}}


def test_resume_never_makes_up_a_value_for_a_task_whose_value_was_not_stored(store):
    """A succeeded, uncached task that no re-run task needs stands as it was: reused, reported
    without a value (not as cached, not as None in the results)."""
    ran = []
    broken = {"yes": True}

    @task
    def side():  # succeeds, not cached (its value cannot be pickled), nothing downstream re-runs
        ran.append("side")
        return Unpicklable(1)

    @task
    def flaky():
        ran.append("flaky")
        if broken["yes"]:
            raise ValueError("bug")
        return "fixed"

    failed = nborch.run(DAG(side, flaky), store=store)
    broken["yes"] = False
    ran.clear()
    resumed = nborch.run(DAG(side, flaky), store=store, resume=failed.id)

    assert ran == ["flaky"]
    assert resumed.ok
    assert "side" not in resumed.results  # no value was stored: none is made up
    assert resumed.results["flaky"] == "fixed"
    assert "side" in resumed.reused and "side" not in resumed.cached
    assert "succeeded (reused)" in resumed.report()

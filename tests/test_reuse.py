"""Issue 10, §1 in Python: `nborch.run(node, reuse=True)` and `node.run(reuse=True)` reuse the
values of tasks whose key is unchanged since their last successful run in this process.

What ran is read from the tasks' own side effects (``Calls``, a log in a file), never only from
nborch's record. Each test makes its own ``Calls`` (a new file), and every task closes over it,
so a task's key differs from one test to the next and no test can reuse another's values.
"""

from __future__ import annotations

import sys
import threading
import warnings
from pathlib import Path

import pytest

import nborch
from nborch import DAG, TaskEvent, TaskState, task

S = TaskState

THRESHOLD = 3  # a plain global that tasks read; tests change it with monkeypatch


class Calls:
    """A log of task calls kept in a file, one line each. Its only state is the file's path, so
    recording a call does not change the key of the task that records it (a key hashes the
    globals and closure variables a task reads by value: a list would change with every call)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def append(self, entry: str) -> None:
        with open(self.path, "a") as f:  # one short write in append mode: threads cannot mix lines
            f.write(entry + "\n")

    def lines(self) -> list[str]:
        try:
            with open(self.path) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def take(self) -> list[str]:
        """What was recorded since the last take, sorted (parallel tasks race)."""
        lines = self.lines()
        open(self.path, "w").close()
        return sorted(lines)

    def count(self, entry: str) -> int:
        return self.lines().count(entry)


@pytest.fixture
def calls(tmp_path) -> Calls:
    return Calls(tmp_path / "calls.jsonl")


def final_events(recorder, run: nborch.Run) -> dict[str, TaskEvent]:
    return {e.task: e for e in recorder.task_events() if e.run_id == run.id and e.state.is_final}


def report_rows(run: nborch.Run) -> dict[str, str]:
    return {line.split()[0]: line for line in run.report().splitlines()[2:] if line.strip()}


def make_pipeline(calls: Calls, factor: int = 10):
    """extract -> clean -> report, and `other` beside them; `clean` multiplies by ``factor``
    (a different factor is different code: the constant is in the function's bytecode)."""

    @task
    def extract():
        calls.append("extract")
        return [1, 2, 3]

    if factor == 10:

        @task
        def clean(extract):
            calls.append(f"clean {extract}")
            return [x * 10 for x in extract]

    else:

        @task
        def clean(extract):
            calls.append(f"clean {extract}")
            return [x * 100 for x in extract]

    @task
    def report(clean):
        calls.append(f"report {clean}")
        return sum(clean)

    @task
    def other():
        calls.append("other")
        return "other"

    return DAG(extract, clean, report, other)


# -- today's behaviour (passes today) ------------------------------------------------------------


def test_without_reuse_every_run_runs_every_task(calls):
    dag = make_pipeline(calls)
    for _ in range(2):
        run = nborch.run(dag)
        assert run.ok and run.reused == set()
        assert calls.take() == ["clean [1, 2, 3]", "extract", "other", "report [10, 20, 30]"]
        assert run.results["report"] == 60


def test_reuse_false_runs_every_task(calls):
    dag = make_pipeline(calls)
    for _ in range(2):
        run = nborch.run(dag, reuse=False)
        assert run.ok and run.reused == set()
        assert calls.take() == ["clean [1, 2, 3]", "extract", "other", "report [10, 20, 30]"]


# -- reuse=True ------------------------------------------------------------------------------------


def test_reuse_true_reuses_every_task_whose_key_is_unchanged(calls, recorder):
    first = nborch.run(make_pipeline(calls), reuse=True)
    assert first.ok and calls.take() == ["clean [1, 2, 3]", "extract", "other", "report [10, 20, 30]"]
    assert first.reused == set()  # nothing had run before

    second = nborch.run(make_pipeline(calls), reuse=True, on_event=recorder)  # the same code, rebuilt
    assert calls.take() == []
    assert second.ok
    assert second.reused == {"extract", "clean", "report", "other"}
    assert second.results == {"extract": [1, 2, 3], "clean": [10, 20, 30], "report": 60, "other": "other"}
    events = final_events(recorder, second)
    assert {name: (e.state, e.reused) for name, e in events.items()} == dict.fromkeys(
        ["extract", "clean", "report", "other"], (S.SUCCEEDED, True)
    )
    rows = report_rows(second)
    assert all("succeeded (reused)" in rows[name] for name in events), second.report()


def test_node_run_reuse_true_returns_the_reused_values(calls):
    dag = make_pipeline(calls)
    values = {"extract": [1, 2, 3], "clean": [10, 20, 30], "report": 60, "other": "other"}
    assert dag.run(reuse=True) == values
    calls.take()
    assert dag.run(reuse=True) == values
    assert calls.take() == []
    assert nborch.last_run().reused == {"extract", "clean", "report", "other"}


def test_a_single_task_node_run_reuse_true_is_reused(calls):
    @task
    def answer():
        calls.append("answer")
        return 42

    assert answer().run(reuse=True) == 42
    assert answer().run(reuse=True) == 42
    assert calls.take() == ["answer"]


def test_changed_code_reruns_that_task_and_its_downstream_fed_by_the_kept_values(calls, recorder):
    nborch.run(make_pipeline(calls), reuse=True)
    calls.take()

    run = nborch.run(make_pipeline(calls, factor=100), reuse=True, on_event=recorder)  # clean edited
    assert run.ok
    # clean received extract's kept value, report the new clean's
    assert calls.take() == ["clean [1, 2, 3]", "report [100, 200, 300]"]
    assert run.reused == {"extract", "other"}
    assert run.results["report"] == 600
    events = final_events(recorder, run)
    assert events["extract"].reused and events["other"].reused
    assert not events["clean"].reused and not events["report"].reused
    rows = report_rows(run)
    assert "(reused)" in rows["extract"] and "(reused)" not in rows["clean"], run.report()


def test_a_changed_global_reruns_the_tasks_that_read_it_and_their_downstream(calls, monkeypatch):
    @task
    def extract():
        calls.append("extract")
        return list(range(1, 7))

    @task
    def keep(extract):
        calls.append("keep")
        return [x for x in extract if x > THRESHOLD]

    @task
    def count(keep):
        calls.append("count")
        return len(keep)

    @task
    def other():
        calls.append("other")
        return 1

    dag = DAG(extract, keep, count, other)
    assert nborch.run(dag, reuse=True).results["count"] == 3
    calls.take()

    monkeypatch.setattr(sys.modules[__name__], "THRESHOLD", 5)
    run = nborch.run(dag, reuse=True)
    assert calls.take() == ["count", "keep"]
    assert run.results["count"] == 1
    assert run.reused == {"extract", "other"}

    run = nborch.run(dag, reuse=True)  # unchanged since: all reused
    assert calls.take() == []
    assert run.results["count"] == 1


def test_a_changed_argument_reruns_that_call_and_its_downstream(calls):
    @task
    def fetch(x):
        calls.append(f"fetch {x}")
        return x

    @task
    def total(a, b):
        calls.append("total")
        return a + b

    assert nborch.run(total(fetch(1), fetch(10)), reuse=True).value == 11
    calls.take()
    run = nborch.run(total(fetch(1), fetch(20)), reuse=True)
    assert run.value == 21
    assert calls.take() == ["fetch 20", "total"]
    assert run.reused == {"fetch"}  # fetch(1); fetch[2] is the changed call


def test_a_reuse_false_task_runs_every_time_and_so_does_its_downstream(calls, recorder):
    @task(reuse=False)
    def prices():
        calls.append("prices")
        return [3, 4]

    @task
    def report(prices):
        calls.append("report")
        return sum(prices)

    @task
    def other():
        calls.append("other")
        return 0

    dag = DAG(prices, report, other)
    nborch.run(dag, reuse=True)
    calls.take()
    run = nborch.run(dag, reuse=True, on_event=recorder)
    assert calls.take() == ["prices", "report"]
    assert run.reused == {"other"}
    events = final_events(recorder, run)
    assert not events["prices"].reused and events["prices"].state is S.SUCCEEDED


def test_a_task_that_failed_is_never_reused_its_succeeded_upstream_is(calls):
    @task
    def extract():
        calls.append("extract")
        return 5

    tries = Calls(Path(calls.path + ".tries"))

    @task
    def flaky(extract):  # fails on its first call only; it counts its calls in a file, not a global
        calls.append("flaky")
        tries.append("flaky")
        if tries.count("flaky") < 2:
            raise ValueError("first try")
        return extract * 2

    @task
    def after(flaky):
        calls.append("after")
        return flaky + 1

    dag = DAG(extract, flaky, after)
    first = nborch.run(dag, reuse=True)
    assert first.states == {"extract": S.SUCCEEDED, "flaky": S.FAILED, "after": S.UPSTREAM_FAILED}
    assert calls.take() == ["extract", "flaky"]

    second = nborch.run(dag, reuse=True)
    assert second.ok and second.results["after"] == 11
    assert calls.take() == ["after", "flaky"]  # only what failed or did not run
    assert second.reused == {"extract"}


def test_reuse_true_runs_a_task_whose_code_changed_under_the_same_name(calls):
    """A notebook cell re-executed with new code makes a new function of the same name."""

    @task
    def value():
        calls.append("v1")
        return 1

    assert value().run(reuse=True) == 1

    @task
    def value():  # the same name, new code: the point of the test
        calls.append("v2")
        return 2

    assert value().run(reuse=True) == 2
    assert calls.take() == ["v1", "v2"]


def test_reuse_is_not_a_cache_hit(calls):
    nborch.run(make_pipeline(calls), reuse=True)
    run = nborch.run(make_pipeline(calls), reuse=True)
    assert run.cached == set() and run.reused == {"extract", "clean", "report", "other"}


def double(x):
    return x * 2


def triple(x):
    return x * 3


HELPER = double  # a plain global holding a helper; tests rebind it with monkeypatch


def test_a_changed_helper_reruns_the_tasks_that_call_it(calls, monkeypatch):
    @task
    def scaled():
        calls.append("scaled")
        return HELPER(7)

    @task
    def other():
        calls.append("other")
        return 0

    dag = DAG(scaled, other)
    assert nborch.run(dag, reuse=True).results["scaled"] == 14
    calls.take()
    monkeypatch.setattr(sys.modules[__name__], "HELPER", triple)
    run = nborch.run(dag, reuse=True)
    assert calls.take() == ["scaled"]
    assert run.results["scaled"] == 21 and run.reused == {"other"}


def test_a_changed_closure_variable_reruns_the_task(calls):
    def make(rate):
        @task
        def priced():
            calls.append(f"priced {rate}")
            return 100 * rate

        return priced

    assert make(1)().run(reuse=True) == 100
    assert make(1)().run(reuse=True) == 100
    assert make(2)().run(reuse=True) == 200
    assert calls.take() == ["priced 1", "priced 2"]


def test_a_bigger_workflow_reuses_the_tasks_it_shares_with_an_earlier_run(calls):
    @task
    def extract():
        calls.append("extract")
        return [1, 2, 3]

    @task
    def clean(extract):
        calls.append("clean")
        return [x * 10 for x in extract]

    @task
    def report(clean):
        calls.append("report")
        return sum(clean)

    nborch.run(DAG(extract, clean), reuse=True)
    calls.take()
    run = nborch.run(DAG(extract, clean, report), reuse=True)
    assert calls.take() == ["report"]
    assert run.results["report"] == 60 and run.reused == {"extract", "clean"}


def test_a_task_whose_key_cannot_be_computed_is_never_reused(calls):
    lock = threading.Lock()  # a value that cannot be hashed: its task has no key

    @task
    def guarded():
        calls.append("guarded")
        with lock:
            return 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # whether it warns is not what this test pins
        for _ in range(2):
            run = nborch.run(guarded(), reuse=True)
            assert run.ok and run.reused == set()
    assert calls.take() == ["guarded", "guarded"]

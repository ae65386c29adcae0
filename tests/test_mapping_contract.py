"""The mapping contract (issue 11, API items 1-9 and "Bad input"), tested from the issue's text
and the public API only, as a user would rely on it: ``fn.map`` / ``fn.product``, item tasks
named ``NAME:i``, reduces and their trigger rules, element-wise stages that stream, ``Run.items``,
per-item cache / reuse / resume, ``%%task NAME --map ITEM in SOURCE`` in a real IPython shell and
headless, and maps started from inside running tasks.

Every test checks effects: which item bodies ran (they append to a list or a file), what a
reduce received, what is in the store. Waits are bounded (``asyncio.wait_for``, ``Event.wait``
with generous timeouts); nothing sleeps to win a race.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import nborch
import nborch.core.reuse
from nborch import (
    DAG,
    CircuitBreaker,
    CircuitOpenError,
    DefinitionError,
    NborchError,
    RetryPolicy,
    Skip,
    Task,
    TaskState,
    TaskTimeoutError,
    task,
)

pytestmark = pytest.mark.timeout(120)

S = TaskState
WAIT = 30.0  # bound of every wait for something that must happen (seconds); never reached when it works


def run(node, **options):
    """``nborch.run`` without a store unless one is given."""
    options.setdefault("store", False)
    return nborch.run(node, **options)


def states(r) -> dict[str, str]:
    return {name: str(state) for name, state in r.states.items()}


class Calls:
    """What item bodies did, from threads and coroutines alike."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[object] = []

    def __call__(self, what: object) -> None:
        with self.lock:
            self.log.append(what)

    def __reduce__(self):  # left out of cache keys (README: "a __reduce__ that leaves its state out")
        return (Calls, ())

    def take(self) -> list[object]:
        with self.lock:
            out, self.log = self.log, []
        return out


# -- 1. fn.map(*iterables, **fixed) -------------------------------------------------------------


def test_one_item_task_per_element_named_name_colon_index_and_the_value_is_the_list():
    calls = Calls()

    @task
    def fetch(url):
        calls(url)
        return url.upper()

    node = fetch.map(["a", "b", "c"])
    assert calls.log == []  # nothing runs until the node is run
    r = run(node)
    assert r.ok
    assert sorted(calls.log) == ["a", "b", "c"]  # each body once
    assert {n: s for n, s in states(r).items() if n.startswith("fetch:")} == {
        "fetch:0": "succeeded", "fetch:1": "succeeded", "fetch:2": "succeeded"
    }
    assert r.states["fetch"] is S.SUCCEEDED  # the placeholder ends SUCCEEDED
    assert r.value == ["A", "B", "C"]
    assert r.results["fetch"] == ["A", "B", "C"]
    assert [r.results[f"fetch:{i}"] for i in range(3)] == ["A", "B", "C"]
    assert fetch.map(["x", "y"]).run(store=False) == ["X", "Y"]  # node.run() gives the list too


def test_values_are_in_input_order_when_items_finish_in_reverse():
    last_done = asyncio.Event()

    @task
    async def slow_first(i):
        if i == 0:
            await asyncio.wait_for(last_done.wait(), WAIT)  # item 0 finishes after item 3
        if i == 3:
            last_done.set()
        return i * 10

    async def go():
        return await nborch.run_async(slow_first.map(range(4)), store=False)

    r = asyncio.run(go())
    assert r.value == [0, 10, 20, 30]
    assert [row.value for row in r.items("slow_first")] == [0, 10, 20, 30]


def test_several_iterables_are_zipped_in_positional_order_and_fixed_keywords_reach_every_item():
    calls = Calls()

    @task
    def score(x, y, *, scale=1, offset=0):
        calls((x, y, scale, offset))
        return (x - y) * scale + offset

    r = run(score.map([1, 2, 3], [10, 20, 30], scale=2, offset=5))
    assert r.value == [(1 - 10) * 2 + 5, (2 - 20) * 2 + 5, (3 - 30) * 2 + 5]
    assert sorted(calls.log) == [(1, 10, 2, 5), (2, 20, 2, 5), (3, 30, 2, 5)]
    assert [row.params for row in r.items("score")] == [
        {"x": 1, "y": 10}, {"x": 2, "y": 20}, {"x": 3, "y": 30}
    ]


def test_any_iterable_is_read_when_map_is_called():
    @task
    def ident(v):
        return v

    xs = [1, 2]
    node = ident.map(xs)
    xs.append(3)  # read at .map(): a later change does not reach the node
    assert node.run(store=False) == [1, 2]
    assert ident.map(v * v for v in range(3)).run(store=False) == [0, 1, 4]  # a generator
    assert ident.map(range(2, 5)).run(store=False) == [2, 3, 4]
    assert ident.map(("p", "q")).run(store=False) == ["p", "q"]


def test_unequal_concrete_lengths_are_refused_before_anything_runs_naming_both_lengths():
    calls = Calls()

    @task
    def add(a, b):
        calls((a, b))
        return a + b

    with pytest.raises(NborchError, match=r"add\.map\(\).*3 items.*2"):
        run(add.map([1, 2, 3], [10, 20]))
    assert calls.log == []


def test_unequal_dynamic_lengths_fail_the_node_at_run_time_naming_both_lengths_and_nothing_else_is_lost():
    calls = Calls()

    @task
    def three():
        return [1, 2, 3]

    @task
    def add(a, b):
        calls((a, b))
        return a + b

    @task
    def elsewhere():
        calls("elsewhere")
        return "fine"

    r = run(DAG(add.map(three(), [10, 20]), elsewhere()))
    assert r.states["add"] is S.FAILED
    assert re.search(r"3 items.*2", str(r.errors["add"])), r.errors["add"]
    assert calls.log == ["elsewhere"]  # no item ran; the independent branch did
    assert r.results["three"] == [1, 2, 3] and r.results["elsewhere"] == "fine"


def test_an_upstream_task_is_mapped_when_it_has_run():
    calls = Calls()

    @task
    def listing(n):
        calls("listing")
        return [f"u{i}" for i in range(n)]  # its length is known only at run time

    @task
    def fetch(url):
        calls(url)
        return len(url)

    r = run(fetch.map(listing(4)))
    assert r.value == [2, 2, 2, 2]
    assert calls.log[0] == "listing" and sorted(calls.log[1:]) == ["u0", "u1", "u2", "u3"]
    assert [row.params for row in r.items("fetch")] == [{"url": f"u{i}"} for i in range(4)]


def test_a_dag_member_is_mapped_and_a_parameter_named_after_the_map_receives_the_list():
    @task
    def listing():
        return [1, 2, 3]

    @task
    def fetch(x):
        return x * 10

    @task
    def total(fetch):  # named after the mapped node: its value, the list
        return sum(fetch)

    src = listing()
    r = run(DAG(src, fetch.map(src), total))
    assert r.value["fetch"] == [10, 20, 30]
    assert r.value["total"] == 60


def test_upstream_nodes_as_iterables_and_as_fixed_keywords():
    @task
    def one():
        return 1

    @task
    def two():
        return 2

    @task
    def conf():
        return "cfg"

    @task
    def ident(v):
        return v

    @task
    def pair(a, b=None):
        return (a, b)

    parallel = nborch.Parallel(one(), two())  # its value is a list
    assert pair.map(parallel).run(store=False) == [(1, None), (2, None)]
    assert pair.map([1, 2], b=conf()).run(store=False) == [(1, "cfg"), (2, "cfg")]  # a node fixed: its value
    assert pair.map([1, 2], b=ident.map([7, 8])).run(store=False) == [(1, [7, 8]), (2, [7, 8])]
    assert pair.map(ident.map([1, 2]), ident.map([10, 20])).run(store=False) == [(1, 10), (2, 20)]
    sweep = pair.product(a=ident.map([1, 2]), b=[10, 20])
    assert sweep.run(store=False) == [(1, 10), (1, 20), (2, 10), (2, 20)]
    r = run(pair.map(ident.map([1, 2]), ident.map([10])))
    assert r.states["pair"] is S.FAILED
    assert re.search(r"iterable 1 has 2 items and iterable 2 has 1", str(r.errors["pair"])), r.errors["pair"]


def test_task_fn_map_keeps_the_task_options_and_its_keyword_arguments_for_every_item():
    calls = Calls()

    @task
    def flaky(x, *, scale):
        calls(x)
        if x == 2 and calls.log.count(2) == 1:
            raise ConnectionError("first attempt of item 1 fails")
        return x * scale

    r = run(Task(flaky, retries=1, scale=3).map([1, 2, 3]))
    assert r.value == [3, 6, 9]
    assert [row.attempts for row in r.items("flaky")] == [1, 2, 1]  # retries= reached the items
    assert sorted(calls.log) == [1, 2, 2, 3]


def test_task_fn_map_with_a_bound_positional_argument_is_refused():
    @task
    def fetch(x):
        return x

    with pytest.raises(NborchError, match=r"binds positional arguments.*Task\(fetch\)\.map"):
        Task(fetch, 1).map([1, 2])


# -- 2. fn.product(**iterables) -----------------------------------------------------------------


def test_product_sweeps_the_cartesian_product_in_itertools_order():
    calls = Calls()

    @task
    def train(lr, depth, *, seed=0):
        calls((lr, depth))
        return f"{lr}/{depth}"

    lrs, depths = [0.1, 0.01], [2, 4, 8]
    r = run(train.product(lr=lrs, depth=depths))
    combos = list(itertools.product(lrs, depths))
    assert r.value == [f"{lr}/{d}" for lr, d in combos]
    assert [row.params for row in r.items("train")] == [{"lr": lr, "depth": d} for lr, d in combos]
    assert [row.index for row in r.items("train")] == list(range(6))
    assert sorted(calls.log) == sorted(combos)


def test_product_over_an_upstream_node_and_over_an_empty_iterable():
    @task
    def depths():
        return [1, 2]

    @task
    def train(lr, depth):
        return lr * depth

    @task
    def best(train):
        return ("best", train)

    assert train.product(lr=[10, 100], depth=depths()).run(store=False) == [10, 20, 100, 200]
    r = run(DAG(train.product(lr=[10, 100], depth=[]), best))
    assert r.value["train"] == [] and r.value["best"] == ("best", [])


# -- 3. item tasks are full tasks -----------------------------------------------------------------


def test_each_item_retries_on_its_own_and_publishes_its_own_events(recorder):
    failures = {1: 2, 2: 5}  # item index -> attempts that fail
    calls = Calls()

    @task(retry=RetryPolicy(max_attempts=3, delay=0))
    def fetch(i):
        calls(i)
        if calls.log.count(i) <= failures.get(i, 0):
            raise ConnectionError(f"item {i} attempt {calls.log.count(i)}")
        return i

    r = run(fetch.map([0, 1, 2]), on_event=recorder)
    rows = r.items("fetch")
    assert [row.state for row in rows] == [S.SUCCEEDED, S.SUCCEEDED, S.FAILED]
    assert [row.attempts for row in rows] == [1, 3, 3]
    assert sorted(calls.log) == [0, 1, 1, 1, 2, 2, 2]
    assert str(rows[2].error) == "item 2 attempt 3"
    assert S.RETRYING not in recorder.states("fetch:0")
    assert recorder.states("fetch:1").count(S.RETRYING) == 2
    assert recorder.states("fetch:2")[-1] is S.FAILED
    assert r.attempts["fetch:1"] == 3


def test_an_item_timeout_fails_that_item_only():
    @task(timeout=0.5)
    async def fetch(i):
        if i == 1:
            await asyncio.sleep(WAIT)  # cancelled by its timeout
        return i

    r = run(fetch.map([0, 1, 2]))
    assert [row.state for row in r.items("fetch")] == [S.SUCCEEDED, S.FAILED, S.SUCCEEDED]
    assert isinstance(r.errors["fetch:1"], TaskTimeoutError)
    assert "fetch:1" in str(r.errors["fetch:1"])


def test_a_breaker_counts_item_failures_and_stops_later_items_from_running():
    calls = Calls()
    breaker = CircuitBreaker(fail_max=2, reset_timeout=1000)

    @task(breaker=breaker)
    def fetch(i):
        calls(i)
        raise ConnectionError(f"down {i}")

    r = run(fetch.map(range(5)), max_concurrency=1)
    assert len(calls.log) == 2  # the breaker opened after two failing items; the rest never ran
    assert sum(isinstance(r.errors[f"fetch:{i}"], CircuitOpenError) for i in range(5)) == 3


def test_limit_holds_across_items():
    running = 0
    peak = 0
    four_in = asyncio.Event()

    @task(limit=4)
    async def fetch(i):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 4:
            four_in.set()
        await asyncio.wait_for(four_in.wait(), WAIT)  # the first four meet; the rest pass
        await asyncio.sleep(0)
        running -= 1
        return i

    r = asyncio.run(nborch.run_async(fetch.map(range(12)), store=False))
    assert r.value == list(range(12))
    assert peak == 4


def test_limit_by_holds_per_value_across_items():
    lock = threading.Lock()
    running: dict[str, int] = {}
    peak: dict[str, int] = {}

    @task(limit=1, limit_by=("host",))
    def fetch(host, path):
        with lock:
            running[host] = running.get(host, 0) + 1
            peak[host] = max(peak.get(host, 0), running[host])
        with lock:
            running[host] -= 1
        return f"{host}/{path}"

    hosts = ["a", "b", "a", "b", "a", "c"]
    r = run(fetch.map(hosts, range(6)))
    assert r.value == [f"{h}/{i}" for i, h in enumerate(hosts)]
    assert max(peak.values()) == 1


def test_each_item_captures_its_own_output():
    @task
    def fetch(url):
        print("fetching", url)
        return url

    r = run(fetch.map(["a", "b"]))
    assert r.logs["fetch:0"] == "fetching a\n"
    assert r.logs["fetch:1"] == "fetching b\n"


def test_items_have_their_own_cache_keys_and_store_rows(tmp_path):
    from nborch.store import SqliteStore

    @task(cache=True)
    def fetch(x):
        if x == 2:
            raise ValueError("no 2")
        return x * 10

    r = run(fetch.map([1, 2, 3]), store=tmp_path / "home")
    keys = [r.cache_keys.get(f"fetch:{i}") for i in range(3)]
    assert all(keys) and len(set(keys)) == 3
    loaded = nborch.Run.load(r.id, store=SqliteStore(tmp_path / "home"))
    assert {n: str(s) for n, s in loaded.states.items() if n.startswith("fetch:")} == {
        "fetch:0": "succeeded", "fetch:1": "failed", "fetch:2": "succeeded"
    }
    assert loaded.errors["fetch:1"].message == "no 2"


def test_item_names_cannot_clash_with_repeated_call_names():
    @task
    def fetch(x):
        return x * 10

    r = run(DAG(fetch(7), fetch.map([1, 2]), fetch.map([3])))
    names = list(r.states)
    assert len(names) == len(set(names)) == 1 + (1 + 2) + (1 + 1)
    maps = [n for n, v in r.results.items() if isinstance(v, list)]
    assert sorted(r.results[m] for m in maps) == [[10, 20], [30]]
    for m in maps:  # every item named after its own map, NAME:i
        assert [row.task for row in r.items(m)] == [f"{m}:{i}" for i in range(len(r.results[m]))]
    assert "fetch[2]" not in [row.task for m in maps for row in r.items(m)]


@pytest.mark.parametrize("other", ["call", "map", "child map"])
def test_maps_of_a_named_task_function_are_numbered_like_its_calls(other):
    calls = Calls()

    @task(name="get")
    def fetch(x):
        calls(x)
        return x * 10

    @task
    def crawl():
        return fetch.map([3, 4]).result

    second = {"call": lambda: fetch(9), "map": lambda: fetch.map([9]), "child map": crawl}[other]()
    r = run(DAG(fetch.map([1, 2]), second))
    assert r.ok, r.errors
    assert sorted(calls.log) == sorted([1, 2, *({"call": [9], "map": [9], "child map": [3, 4]}[other])])
    assert len(r.states) == len(set(r.states))


def test_a_task_named_like_an_item_of_a_concrete_map_is_refused_before_anything_runs():
    calls = Calls()

    @task
    def fetch(x):
        calls(x)
        return x

    @task
    def other():
        calls("other")

    with pytest.raises(NborchError, match=r"'fetch:0'"):
        run(DAG(Task(other, name="fetch:0"), fetch.map([1, 2])))
    assert calls.log == []


CLASH_WITH_A_DYNAMIC_ITEM = """
import nborch
from nborch import DAG, NborchError, Task, task

ran = []

@task
def fetch(x):
    ran.append(x)
    return x

@task
def other():
    ran.append("other")

@task
def listing():
    ran.append("listing")
    return [1, 2]

try:
    r = nborch.run(DAG(Task(other, name="fetch:1"), fetch.map(listing())), store=False)
except NborchError as exc:
    print("REFUSED", exc, "RAN", ran)
else:
    print("STATE", r.states["fetch"], "ERROR", r.errors.get("fetch"), "RAN", ran)
"""


def test_a_task_named_like_an_item_of_a_dynamic_map_is_refused_and_the_run_ends(tmp_path):
    """It hung the run once (the clash was found in an engine callback). Refused before anything
    runs, or the map fails naming the clash: either way the run ends, and no item runs."""
    try:
        proc = subprocess.run([sys.executable, "-c", CLASH_WITH_A_DYNAMIC_ITEM], cwd=tmp_path,
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the run never ended")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^(REFUSED .*'fetch:1'.* RAN \[\]|STATE failed ERROR .*'fetch:1'.* RAN \[[^12]*\])$",
                     proc.stdout.strip()), proc.stdout


# -- 4. reduces -----------------------------------------------------------------------------------


def _flaky_fetch(calls: Calls, fail=(), skip=()):
    @task
    def fetch(i):
        calls(("fetch", i))
        if i in fail:
            raise ValueError(f"item {i} failed")
        if i in skip:
            raise Skip(f"item {i} skipped")
        return i * 10

    return fetch


def test_a_reduce_receives_the_item_values_in_input_order_after_every_item():
    calls = Calls()
    fetch = _flaky_fetch(calls)

    @task
    def total(values):
        calls(("total", sorted(c for c in calls.log if c[0] == "fetch")))
        return values

    r = run(total(fetch.map([3, 1, 2])))
    assert r.value == [30, 10, 20]
    assert r.upstreams["total"] == ["fetch:0", "fetch:1", "fetch:2"]  # every item is an upstream
    assert calls.log[-1] == ("total", [("fetch", 1), ("fetch", 2), ("fetch", 3)])  # after all items


def test_an_all_success_reduce_does_not_run_after_an_item_fails():
    calls = Calls()
    fetch = _flaky_fetch(calls, fail={1})

    @task
    def total(values):
        calls("total")
        return values

    r = run(total(fetch.map([0, 1, 2])))
    assert r.states["total"] is S.UPSTREAM_FAILED
    assert "total" not in calls.log
    assert sorted(calls.log) == [("fetch", 0), ("fetch", 1), ("fetch", 2)]  # the other items still ran


def test_an_all_done_reduce_receives_the_succeeded_items_values_in_input_order():
    calls = Calls()
    fetch = _flaky_fetch(calls, fail={1, 4}, skip={3})
    got = []

    @task(trigger_rule="all_done")
    def total(values):
        got.append((values, len(calls.log)))
        return sum(values)

    r = run(total(fetch.map([5, 1, 2, 3, 4, 0])))
    assert got == [([50, 20, 0], 6)]  # the succeeded items, in input order; after all six settled
    assert r.states["total"] is S.SUCCEEDED and r.value == 70


@pytest.mark.parametrize("dynamic", [False, True], ids=["list", "upstream"])
def test_an_empty_input_gives_an_empty_list_and_the_reduce_runs(dynamic):
    calls = Calls()
    fetch = _flaky_fetch(calls)

    @task
    def nothing():
        return []

    @task
    def total(values):
        calls(("total", values))
        return len(values)

    r = run(total(fetch.map(nothing() if dynamic else [])))
    assert calls.log == [("total", [])]
    assert r.ok and r.value == 0
    assert r.results["fetch"] == [] and r.states["fetch"] is S.SUCCEEDED
    assert list(r.items("fetch")) == []


def test_a_one_failed_reduce_fires_as_soon_as_one_item_fails():
    alerted = asyncio.Event()

    @task
    async def fetch(i):
        if i == 0:
            raise ValueError("item 0 failed")
        await asyncio.wait_for(alerted.wait(), WAIT)  # held until the alert ran
        return i

    @task(trigger_rule="one_failed")
    async def alert(values):
        alerted.set()
        return "alerted"

    r = asyncio.run(nborch.run_async(alert(fetch.map(range(3))), store=False))
    assert r.results["alert"] == "alerted"
    assert [row.state for row in r.items("fetch")] == [S.FAILED, S.SUCCEEDED, S.SUCCEEDED]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("all_success", "upstream_failed"),
        ("all_done", "succeeded"),
        ("all_failed", "skipped"),
        ("none_failed", "upstream_failed"),
        ("none_skipped", "skipped"),
        ("one_success", "succeeded"),
        ("one_failed", "succeeded"),
    ],
)
def test_the_reduce_counts_every_item_as_an_upstream(rule, expected):
    calls = Calls()
    fetch = _flaky_fetch(calls, fail={1}, skip={2})

    @task(trigger_rule=rule)
    def total(values):
        return "ran"

    # one item at a time, in input order: the failed item settles before the skipped one. Rules
    # are decided as upstreams settle (Airflow's way), so with both at once in two threads the
    # outcome of all_success (failed first: upstream_failed; skipped first: skipped) would be
    # whichever thread finished first (it was, on Python 3.13).
    r = run(total(fetch.map([0, 1, 2])), max_concurrency=1)
    assert str(r.states["total"]) == expected


def test_the_placeholder_ends_upstream_failed_and_run_raises_the_items_own_error():
    calls = Calls()
    fetch = _flaky_fetch(calls, fail={1})

    r = run(fetch.map([0, 1, 2]))
    assert r.states["fetch"] is S.UPSTREAM_FAILED
    assert isinstance(r.error, ValueError) and str(r.error) == "item 1 failed"
    with pytest.raises(ValueError, match=r"^item 1 failed") as info:
        fetch.map([0, 1, 2]).run(store=False)
    assert info.value.__notes__ == ["nborch: raised in task 'fetch:1', attempt 1 of 1"]


def test_a_sequence_step_after_a_map_gets_the_list_and_a_task_ordered_after_it_waits_for_every_item():
    calls = Calls()
    fetch = _flaky_fetch(calls)

    @task
    def total(values):
        return (values, len(calls.log))

    @task
    def after():
        return len(calls.log)

    value = nborch.Sequence(fetch.map([1, 2, 3]), total()).run(store=False)
    assert value == [[10, 20, 30], ([10, 20, 30], 3)]
    calls.take()
    r = run(DAG(fetch.map([1, 2, 3]) >> after()))
    assert r.value["after"] == 3


def test_the_upstream_failed_placeholder_carries_the_failed_items_error(recorder):
    calls = Calls()
    fetch = _flaky_fetch(calls, fail={1})

    run(fetch.map([0, 1, 2]), on_event=recorder)
    (final,) = [e for e in recorder.task_events("fetch") if e.state is S.UPSTREAM_FAILED]
    assert isinstance(final.error, ValueError) and str(final.error) == "item 1 failed"


# -- 5. element-wise stages -----------------------------------------------------------------------


def test_mapping_a_mapped_node_is_element_wise_and_one_failing_item_fails_only_its_chain():
    calls = Calls()

    @task
    def fetch(i):
        calls(("fetch", i))
        if i == 2:
            raise ValueError("fetch 2")
        return i

    @task
    def clean(v):
        calls(("clean", v))
        return v * 10

    @task
    def load(v):
        calls(("load", v))
        return v + 1

    r = run(load.map(clean.map(fetch.map([0, 1, 2, 3]))))
    chain = [S.SUCCEEDED, S.SUCCEEDED, S.UPSTREAM_FAILED, S.SUCCEEDED]
    assert [row.state for row in r.items("clean")] == chain
    assert [row.state for row in r.items("load")] == chain
    assert [row.value for row in r.items("load")] == [1, 11, None, 31]
    assert sorted(c for c in calls.log if c[0] != "fetch") == [
        ("clean", 0), ("clean", 1), ("clean", 3), ("load", 0), ("load", 10), ("load", 30)
    ]
    assert [r.upstreams[f"clean:{i}"] for i in range(4)] == [[f"fetch:{i}"] for i in range(4)]


def test_items_stream_through_the_stages():
    """load:0 finishes before the last fetch starts: fetch runs one at a time and every fetch
    after the first waits (bounded) until load:0 is done."""
    order: list[str] = []
    loaded_0 = asyncio.Event()

    @task(limit=1)
    async def fetch(i):
        order.append(f"fetch:{i} starts")
        if i > 0:
            await asyncio.wait_for(loaded_0.wait(), WAIT)
        return i

    @task
    async def clean(v):
        return v

    @task
    async def load(v):
        if v == 0:
            order.append("load:0 done")
            loaded_0.set()
        return v

    r = asyncio.run(nborch.run_async(load.map(clean.map(fetch.map(range(5)))), store=False))
    assert r.ok, r.errors
    assert order.index("load:0 done") < order.index("fetch:4 starts")


def test_a_mapped_node_zipped_with_a_list_and_a_dynamic_first_stage():
    @task
    def listing():
        return [1, 2, 3]

    @task
    def fetch(x):
        return x * 10

    @task
    def add(a, b):
        return a + b

    assert add.map(fetch.map(listing()), [1, 2, 3]).run(store=False) == [11, 22, 33]


# -- 6. the value and Run.items -----------------------------------------------------------------


def test_run_items_rows_and_to_pandas():
    @task(retries=1, retry_delay=0.01)
    def fetch(x):
        if x == "bad":
            raise ValueError("bad input")
        return x * 2

    r = run(fetch.map(["a", "bad", "c"]))
    rows = r.items("fetch")
    assert [row.index for row in rows] == [0, 1, 2]
    assert [row.params for row in rows] == [{"x": "a"}, {"x": "bad"}, {"x": "c"}]
    assert [row.state for row in rows] == [S.SUCCEEDED, S.FAILED, S.SUCCEEDED]
    assert [row.value for row in rows] == ["aa", None, "cc"]
    assert [row.attempts for row in rows] == [1, 2, 1]
    assert rows[0].error is None and isinstance(rows[1].error, ValueError)
    assert all(row.duration is not None and row.duration >= 0 for row in rows)
    pd = pytest.importorskip("pandas")
    frame = rows.to_pandas()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 3
    assert {"state", "value", "duration", "attempts", "error"} <= set(frame.columns)
    assert list(frame["x"]) == ["a", "bad", "c"]  # the parameters, one column each


def test_run_items_of_an_unknown_name_names_it():
    @task
    def fetch(x):
        return x

    r = run(fetch.map([1]))
    with pytest.raises(NborchError, match=r"'nope'"):
        r.items("nope")


def test_run_items_of_a_recorded_run_keep_the_parameters(tmp_path):
    from nborch.store import SqliteStore

    @task
    def fetch(x):
        return x

    r = run(fetch.map([5, 6]), store=tmp_path / "home")
    loaded = nborch.Run.load(r.id, store=SqliteStore(tmp_path / "home"))
    assert [row.params for row in loaded.items("fetch")] == [{"x": 5}, {"x": 6}]


# -- 7. per-item cache, reuse and resume ----------------------------------------------------------


def test_cache_adding_one_element_reruns_only_the_new_item(tmp_path):
    calls = Calls()
    home = tmp_path / "home"

    @task(cache=True)
    def square(x):
        calls(x)
        return x * x

    @task
    def total(values):
        return sum(values)

    assert run(total(square.map([1, 2, 3])), store=home).value == 14
    assert sorted(calls.take()) == [1, 2, 3]
    r = run(total(square.map([1, 2, 3, 4])), store=home)
    assert r.value == 30 and calls.take() == [4]
    assert {"square:0", "square:1", "square:2"} <= set(r.cached)
    r = run(total(square.map([0, 1, 2, 3, 4])), store=home)  # added at the front
    assert r.value == 30 and calls.take() == [0]


def test_cache_with_a_dynamic_source_reruns_only_the_new_item(tmp_path):
    calls = Calls()
    home = tmp_path / "home"
    data = {"xs": [1, 2]}

    @task
    def listing():
        return list(data["xs"])

    @task(cache=True)
    def square(x):
        calls(x)
        return x * x

    assert run(square.map(listing()), store=home).value == [1, 4]
    assert sorted(calls.take()) == [1, 2]
    data["xs"] = [1, 2, 3]
    assert run(square.map(listing()), store=home).value == [1, 4, 9]
    assert calls.take() == [3]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_reuse_appending_one_element_reruns_only_the_new_item(kind):
    calls = Calls()

    def body(x):
        calls(x)
        return x * x

    async def abody(x):
        return body(x)

    square = task(body if kind == "sync" else abody, name="square")

    @task
    def total(values):
        calls("total")
        return values

    memory = nborch.core.reuse.Memory()
    assert run(total(square.map([1, 2, 3])), reuse=memory).value == [1, 4, 9]
    assert sorted(calls.take(), key=str) == [1, 2, 3, "total"]
    r = run(total(square.map([1, 2, 3, 4])), reuse=memory)
    assert r.value == [1, 4, 9, 16] and calls.take() == [4, "total"]
    assert {"square:0", "square:1", "square:2"} <= r.reused
    r = run(total(square.map([1, 2, 3, 4])), reuse=memory)
    assert r.value == [1, 4, 9, 16] and calls.take() == []


def test_a_mapped_node_reused_whole_still_gives_its_list():
    @task
    async def square(x):
        return x * x

    memory = nborch.core.reuse.Memory()
    assert square.map([1, 2]).run(store=False, reuse=memory) == [1, 4]
    r = run(square.map([1, 2]), reuse=memory)
    assert r.reused == {"square"} and r.results["square"] == [1, 4]
    assert r.value == [1, 4]
    assert square.map([1, 2]).run(store=False, reuse=memory) == [1, 4]


def test_reuse_adding_an_element_at_the_front_reruns_only_the_new_item():
    calls = Calls()

    @task
    async def square(x):
        calls(x)
        return x

    memory = nborch.core.reuse.Memory()
    run(square.map([1, 2, 3]), reuse=memory)
    calls.take()
    r = run(square.map([0, 1, 2, 3]), reuse=memory)
    assert r.value == [0, 1, 2, 3] and calls.take() == [0]


def test_resume_reruns_only_the_items_that_did_not_succeed(tmp_path):
    """The user fixes what broke (here a set the body reads, so every key changes, as an edit of
    the code would) and resumes: only the items that failed run again, as plain tasks would."""
    calls = Calls()
    home = tmp_path / "home"
    broken = {1, 3}

    @task(cache=True)
    def fetch(i):
        calls(i)
        if i in broken:
            raise ConnectionError(f"item {i} down")
        return i * 10

    @task
    def total(values):
        calls("total")
        return values

    first = run(total(fetch.map(range(5))), store=home)
    assert first.states["total"] is S.UPSTREAM_FAILED
    calls.take()
    broken.clear()
    second = run(total(fetch.map(range(5))), store=home, resume=first.id)
    assert sorted(calls.take(), key=str) == [1, 3, "total"]
    assert second.value == [0, 10, 20, 30, 40]
    assert [row.state for row in second.items("fetch")] == [S.SUCCEEDED] * 5


# -- 9. maps started from inside running tasks --------------------------------------------------


def _child_fetch(calls: Calls, limit: int | None = None):
    @task(limit=limit) if limit else task
    def fetch(url):
        calls(url)
        return len(url)

    return fetch


@pytest.mark.parametrize("max_concurrency", [None, 1, 2])
def test_an_async_task_awaits_a_map_of_child_tasks(max_concurrency):
    calls = Calls()
    fetch = _child_fetch(calls, limit=1)

    @task
    async def crawl(urls):
        return await fetch.map(urls)

    async def go():
        return await asyncio.wait_for(
            nborch.run_async(crawl(["a", "bb", "ccc", "dddd"]), store=False, max_concurrency=max_concurrency),
            WAIT,
        )

    r = asyncio.run(go())
    assert r.value == [1, 2, 3, 4]
    assert sorted(calls.log) == ["a", "bb", "ccc", "dddd"]
    assert {r.parents.get(f"{m}:{i}") for m in r.results if r.results[m] == [1, 2, 3, 4] and m != "crawl"
            for i in range(4)} == {"crawl"}


@pytest.mark.parametrize("max_concurrency", [None, 1, 2])
def test_a_sync_task_reads_a_map_of_child_tasks_with_result(max_concurrency):
    calls = Calls()
    fetch = _child_fetch(calls, limit=1)

    @task
    def crawl(urls):
        return fetch.map(urls).result

    done = threading.Event()
    box: list[object] = []

    def go():
        box.append(run(DAG(crawl(["a", "bb", "ccc"]), crawl(["x"])), max_concurrency=max_concurrency))
        done.set()

    threading.Thread(target=go, daemon=True).start()
    assert done.wait(WAIT), "a sync parent waiting on its mapped children deadlocked"
    r = box[0]
    assert r.ok, r.errors
    assert sorted(r.value.values()) == [[1], [1, 2, 3]]
    assert sorted(calls.log) == ["a", "bb", "ccc", "x"]


def test_nested_child_maps_under_a_limit_of_one_do_not_deadlock():
    @task
    async def leaf(x):
        return x

    @task
    async def middle(x):
        return sum(await leaf.map(range(x)))

    @task
    async def top(n):
        return await middle.map(range(n))

    async def go():
        return await asyncio.wait_for(nborch.run_async(top(4), store=False, max_concurrency=1), WAIT)

    assert asyncio.run(go()).value == [0, 0, 1, 3]


def test_child_items_hold_the_task_limit_while_their_parents_wait():
    running = 0
    peak = 0
    two_in = asyncio.Event()

    @task(limit=2)
    async def fetch(i):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 2:
            two_in.set()
        await asyncio.wait_for(two_in.wait(), WAIT)
        await asyncio.sleep(0)
        running -= 1
        return i

    @task
    async def crawl(n):
        return await fetch.map(range(n))

    async def go():
        return await asyncio.wait_for(
            nborch.run_async(DAG(crawl(5), crawl(4)), store=False, max_concurrency=2), WAIT
        )

    r = asyncio.run(go())
    assert sorted(r.value.values()) == [[0, 1, 2, 3], [0, 1, 2, 3, 4]]
    assert peak == 2


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_a_failing_child_item_raises_its_own_error_in_the_parent(kind):
    calls = Calls()
    fetch = _flaky_fetch(calls, fail={1})

    if kind == "async":
        @task
        async def crawl(xs):
            try:
                return await fetch.map(xs)
            except ValueError as exc:
                return f"caught {exc}"
    else:
        @task
        def crawl(xs):
            try:
                return fetch.map(xs).result
            except ValueError as exc:
                return f"caught {exc}"

    r = run(crawl([0, 1, 2]))
    assert r.value == "caught item 1 failed"
    assert sorted(calls.log) == [("fetch", 0), ("fetch", 1), ("fetch", 2)]


# -- Bad input --------------------------------------------------------------------------------------


def test_a_non_iterable_concrete_input_is_refused_before_running_naming_the_task_and_the_type():
    calls = Calls()

    @task
    def fetch(x):
        calls(x)

    with pytest.raises(DefinitionError, match=r"^fetch\.map\(\): .*not iterable \(got int\)"):
        fetch.map(5)
    with pytest.raises(DefinitionError, match=r"not iterable \(got NoneType\)"):
        fetch.map(None)
    with pytest.raises(DefinitionError, match=r"fetch\.product\(\): 'x' is not iterable \(got int\)"):
        fetch.product(x=5)
    assert calls.log == []


def test_a_non_iterable_dynamic_input_fails_the_node_at_run_time_and_nothing_else_is_lost():
    calls = Calls()

    @task
    def five():
        return 5

    @task
    def fetch(x):
        calls(x)

    @task
    def elsewhere():
        calls("elsewhere")
        return "kept"

    r = run(DAG(fetch.map(five()), elsewhere()))
    assert r.states["fetch"] is S.FAILED
    assert re.search(r"fetch.*not iterable \(got int\)", str(r.errors["fetch"])), r.errors["fetch"]
    assert calls.log == ["elsewhere"]
    assert r.results["five"] == 5 and r.results["elsewhere"] == "kept"


def test_a_string_where_a_list_was_meant_warns_that_it_maps_over_characters():
    @task
    def fetch(x):
        return x

    characters = r"^fetch\.map\(\): iterable 1 is a string, so it maps over its 3 characters"
    with pytest.warns(UserWarning, match=characters):
        node = fetch.map("abc")
    assert node.run(store=False) == ["a", "b", "c"]

    @task
    def word():
        return "hi"

    with pytest.warns(UserWarning, match=r"is a string, so it maps over its 2 characters"):
        assert fetch.map(word()).run(store=False) == ["h", "i"]


def test_fixed_keywords_that_clash_with_mapped_ones_are_refused():
    @task
    def fetch(x, y=0):
        return x

    with pytest.raises(DefinitionError, match=r"'x' is both mapped and fixed"):
        fetch.map([1, 2], x=3)
    with pytest.raises(DefinitionError, match=r"'y' is both mapped and fixed"):
        fetch.map([1, 2], [3, 4], y=3)


def test_mapping_a_task_that_takes_no_parameters_is_refused():
    @task
    def nothing():
        return 1

    with pytest.raises(NborchError, match=r"nothing\.map\(\): nothing\(\) takes no parameters"):
        nothing.map([1, 2])
    with pytest.raises(NborchError, match=r"nothing\(\) takes no parameters|no parameter"):
        nothing.product(x=[1, 2])


def test_other_bad_maps_are_refused_with_the_culprit_named():
    @task
    def fetch(x, *, scale=1):
        return x

    with pytest.raises(NborchError, match=r"fetch\.map\(\) needs at least one iterable"):
        fetch.map()
    with pytest.raises(NborchError, match=r"fetch\.product\(\) needs at least one iterable"):
        fetch.product()
    with pytest.raises(NborchError, match=r"fetch\.map\(\) maps over 2 iterables, but fetch\(\) takes 1"):
        fetch.map([1], [2])
    with pytest.raises(NborchError, match=r"fetch\(\) has no parameter 'scal'"):
        fetch.product(x=[1], scal=[2])


# -- 8. %%task NAME --map ITEM in SOURCE ----------------------------------------------------------

NOTEBOOK_NAMES = ("urls", "size", "double", "total", "src", "square", "_orch_run")


@pytest.fixture
def ip(capsys):
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext nborch")
    magics = shell.magics_manager.registry["OrchMagics"]
    magics.workflow.remove(None)
    magics.workflow.last_run = None
    for name in NOTEBOOK_NAMES:
        shell.user_ns.pop(name, None)
    capsys.readouterr()
    yield shell
    magics.workflow.remove(None)
    for name in NOTEBOOK_NAMES:
        shell.user_ns.pop(name, None)


def cell(ip, text):
    result = ip.run_cell(text)
    assert result.error_before_exec is None and result.error_in_exec is None, (
        result.error_before_exec or result.error_in_exec
    )
    return result


class BodyLog:
    """A file each cell body appends a word to: what ran, read from disk (a path literal in the
    cell's code, so no global of the cell changes between runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def line(self, word: str) -> str:
        return f"with open({str(self.path)!r}, 'a') as _f:\n    _f.write(f'{word} ')\n"

    def take(self) -> list[str]:
        words = self.path.read_text().split()
        self.path.write_text("")
        return words


def test_a_map_cell_runs_its_body_once_per_element_of_a_variable(ip, tmp_path):
    log = BodyLog(tmp_path / "ran.txt")
    cell(ip, "urls = ['a', 'bb', 'ccc']")
    cell(ip, "%%task size --map url in urls\n" + log.line("{url}") + "len(url)")
    cell(ip, "%%task total\nsum(size)")
    cell(ip, "%orch run --no-display")
    assert ip.user_ns["size"] == [1, 2, 3]
    assert ip.user_ns["total"] == 6
    assert sorted(log.take()) == ["a", "bb", "ccc"]
    rows = ip.user_ns["_orch_run"].items("size")
    assert [(row.task, row.params) for row in rows] == [
        ("size:0", {"url": "a"}), ("size:1", {"url": "bb"}), ("size:2", {"url": "ccc"})
    ]


def test_a_map_cell_over_a_task_and_over_another_map_cell_goes_item_by_item(ip, tmp_path):
    log = BodyLog(tmp_path / "ran.txt")
    cell(ip, "%%task src\n[1, 2, 3]")
    cell(ip, "%%task square --map x in src\n" + log.line("square:{x}") + "x * x")
    cell(ip, "%%task double --map v in square\n" + log.line("double:{v}") + "v * 2")
    cell(ip, "%%task total\nsum(double)")
    cell(ip, "%orch run --no-display")
    assert ip.user_ns["square"] == [1, 4, 9]
    assert ip.user_ns["double"] == [2, 8, 18]
    assert ip.user_ns["total"] == 28
    assert sorted(log.take()) == ["double:1", "double:4", "double:9", "square:1", "square:2", "square:3"]
    r = ip.user_ns["_orch_run"]
    assert [r.upstreams[f"double:{i}"] for i in range(3)] == [["square:0"], ["square:1"], ["square:2"]]


def test_an_incremental_run_reruns_only_the_new_item_of_a_map_cell(ip, tmp_path):
    log = BodyLog(tmp_path / "ran.txt")
    cell(ip, "urls = ['a', 'bb', 'ccc']")
    cell(ip, "%%task size --map url in urls\n" + log.line("size:{url}") + "len(url)")
    cell(ip, "%%task double --map n in size\n" + log.line("double:{n}") + "n * 2")
    cell(ip, "%%task total\nsum(double)")
    cell(ip, "%orch run --no-display")
    assert len(log.take()) == 6
    cell(ip, "urls.append('dddd')")
    cell(ip, "%orch run --no-display")
    assert sorted(log.take()) == ["double:4", "size:dddd"]
    assert ip.user_ns["size"] == [1, 2, 3, 4] and ip.user_ns["total"] == 20
    cell(ip, "%orch run --no-display")
    assert log.take() == []  # nothing changed: nothing runs


def test_an_incremental_run_after_adding_an_element_at_the_front_reruns_only_the_new_item(ip, tmp_path):
    log = BodyLog(tmp_path / "ran.txt")
    cell(ip, "urls = ['a', 'bb', 'ccc']")
    cell(ip, "%%task size --map url in urls\n" + log.line("{url}") + "len(url)")
    cell(ip, "%orch run --no-display")
    log.take()
    cell(ip, "urls = ['zz', 'a', 'bb', 'ccc']")
    cell(ip, "%orch run --no-display")
    assert ip.user_ns["size"] == [2, 1, 2, 3]
    assert log.take() == ["zz"]


def test_a_failing_item_of_a_map_cell_fails_the_run_and_an_all_done_reduce_gets_the_others(ip, tmp_path):
    from nborch.notebook.magics import CellTaskFailed

    log = BodyLog(tmp_path / "ran.txt")
    cell(ip, "urls = ['a', 'bad', 'ccc']")
    cell(ip, "%%task size --map url in urls --retries 1\n" + log.line("{url}")
         + "if url == 'bad':\n    raise ValueError(f'bad url {url}')\nlen(url)")
    cell(ip, "%%task total --trigger all_done\nsum(size)")
    result = ip.run_cell("%orch run --no-display")
    assert isinstance(result.error_in_exec, CellTaskFailed)
    assert "task 'size:1' failed: ValueError: bad url bad" in str(result.error_in_exec)
    assert sorted(log.take()) == ["a", "bad", "bad", "ccc"]  # the failing item was retried once
    assert ip.user_ns["total"] == 4
    assert [row.attempts for row in ip.user_ns["_orch_run"].items("size")] == [1, 2, 1]


def test_bad_map_cells_are_refused_with_the_culprit_named(ip):
    from IPython.core.error import UsageError

    result = ip.run_cell("%%task size --map 1x in urls\nx")
    assert isinstance(result.error_in_exec, UsageError)
    assert "--map expects ITEM in SOURCE with two Python names (--map url in urls), got '1x in urls'" in str(
        result.error_in_exec
    )
    cell(ip, "%%task size --map x in nosuch\nx")
    result = ip.run_cell("%orch run --no-display")
    assert isinstance(result.error_in_exec, UsageError)
    message = str(result.error_in_exec)
    assert "task 'size' maps over 'nosuch', which is neither a task cell nor a variable" in message
    cell(ip, "urls = 5")
    cell(ip, "%%task size --map x in urls\nx")
    result = ip.run_cell("%orch run --no-display")
    assert "not iterable (got int)" in str(result.error_in_exec)


MAP_NOTEBOOK = [
    "%load_ext nborch",
    "urls = ['a', 'bb', 'ccc']",
    "%%task size --map url in urls\nprint('item', url)\nlen(url)",
    "%%task double --map n in size\nn * 2",
    "%%task total\nsum(double)",
    "%orch run",
    "print('RESULT', size, double, total)",
]


def _notebook(*sources: str) -> str:
    cells = [{"cell_type": "code", "metadata": {}, "source": src, "outputs": [], "execution_count": None}
             for src in sources]
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells})


def _nborch_run(notebook: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NBORCH_HOME": str(cwd / ".nborch"), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "nborch", "run", str(notebook)], cwd=cwd, env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=120)


def test_nborch_run_runs_a_map_cell_headless(tmp_path):
    pytest.importorskip("IPython")
    from nborch.store import SqliteStore, history

    path = tmp_path / "mapped.ipynb"
    path.write_text(_notebook(*MAP_NOTEBOOK))
    proc = _nborch_run(path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "RESULT [1, 2, 3] [2, 4, 6] 12" in proc.stdout
    assert sorted(line for line in proc.stdout.splitlines() if line.startswith("item ")) == [
        "item a", "item bb", "item ccc"
    ]
    (recorded,) = history(None, store=SqliteStore(tmp_path / ".nborch"))
    assert {n: str(s) for n, s in recorded.states.items() if ":" in n} == {
        f"{m}:{i}": "succeeded" for m in ("size", "double") for i in range(3)
    }


def test_nborch_run_of_a_map_cell_with_a_failing_item_exits_1_naming_the_item(tmp_path):
    pytest.importorskip("IPython")
    path = tmp_path / "failing.ipynb"
    path.write_text(_notebook(
        "%load_ext nborch",
        "urls = ['a', 'bad']",
        "%%task size --map url in urls\nif url == 'bad':\n    raise ValueError('bad url')\nlen(url)",
    ))
    proc = _nborch_run(path, tmp_path)
    assert proc.returncode == 1
    assert "nborch: task 'size:1' failed: ValueError: bad url" in proc.stderr
    assert "Traceback" not in proc.stderr

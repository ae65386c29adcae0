"""Point 15: max_concurrency, Parallel(limit=), @task(limit=), keyed limits, dedupe, threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict

import pytest

import nborch
from nborch import DAG, Parallel, Sequence, Task, TaskState, task

pytestmark = pytest.mark.timeout(30)


class Gauge:
    """Counts how many task bodies are inside at once; safe from threads and coroutines.

    ``wait_peak(n)`` lets a body wait (bounded) until ``n`` bodies were inside together, so a
    test can assert the peak equals the limit without racing: if the limit let more in, the
    peak would exceed it; if it let fewer in, the wait times out and the peak stays below.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.now = 0
        self.peak = 0
        self.total = 0

    def enter(self) -> None:
        with self.cond:
            self.now += 1
            self.total += 1
            self.peak = max(self.peak, self.now)
            self.cond.notify_all()

    def exit(self) -> None:
        with self.cond:
            self.now -= 1

    def wait_peak(self, n: int, timeout: float = 2.0) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.peak >= n, timeout)

    async def await_peak(self, n: int, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while self.peak < n and time.monotonic() < deadline:
            await asyncio.sleep(0.001)


def async_worker(gauge: Gauge, target: int, name: str = "work"):
    async def work(i):
        gauge.enter()
        try:
            await gauge.await_peak(target)
            await asyncio.sleep(0.005)
            return i
        finally:
            gauge.exit()

    work.__name__ = name
    return task(work)


def sync_worker(gauge: Gauge, target: int, name: str = "work"):
    def work(i):
        gauge.enter()
        try:
            gauge.wait_peak(target)
            time.sleep(0.005)
            return i
        finally:
            gauge.exit()

    work.__name__ = name
    return task(work)


WORKERS = pytest.mark.parametrize("make", [async_worker, sync_worker], ids=["async", "sync"])


# -- max_concurrency -----------------------------------------------------------------------------


@WORKERS
def test_max_concurrency_caps_the_whole_run(make):
    gauge = Gauge()
    work = make(gauge, 3)

    value = Parallel(*(work(i) for i in range(10))).run(max_concurrency=3)

    assert value == list(range(10))
    assert gauge.peak == 3
    assert gauge.total == 10


def test_max_concurrency_counts_sync_and_async_tasks_together():
    gauge = Gauge()
    a = async_worker(gauge, 4, "a")
    s = sync_worker(gauge, 4, "s")

    record = nborch.run(Parallel(*(a(i) for i in range(6)), *(s(i) for i in range(6))), max_concurrency=4)

    assert record.ok
    assert gauge.peak == 4


def test_max_concurrency_spans_nested_composites():
    gauge = Gauge()
    work = async_worker(gauge, 2)

    nested = DAG(Parallel(work(1), work(2), work(3)), Sequence(work(4), work(5)), Parallel(work(6), work(7)))
    record = nborch.run(nested, max_concurrency=2)

    assert record.ok
    assert gauge.peak == 2
    assert gauge.total == 7


def test_max_concurrency_of_one_runs_tasks_one_at_a_time():
    gauge = Gauge()
    work = sync_worker(gauge, 1)
    assert Parallel(*(work(i) for i in range(5))).run(max_concurrency=1) == [0, 1, 2, 3, 4]
    assert gauge.peak == 1


def test_without_limits_independent_tasks_all_run_at_once():
    gauge = Gauge()
    work = async_worker(gauge, 12)
    Parallel(*(work(i) for i in range(12))).run()
    assert gauge.peak == 12


def test_io_bound_async_tasks_overlap_under_max_concurrency():
    @task
    async def io(i):
        await asyncio.sleep(0.1)
        return i

    started = time.monotonic()
    value = Parallel(*(io(i) for i in range(40))).run(max_concurrency=20)
    elapsed = time.monotonic() - started

    assert value == list(range(40))
    assert elapsed < 1.0  # two waves of 0.1 s, not forty


# -- Parallel(limit=) ----------------------------------------------------------------------------


@WORKERS
def test_parallel_limit_caps_its_jobs(make):
    gauge = Gauge()
    work = make(gauge, 2)

    assert Parallel(*(work(i) for i in range(7)), limit=2).run() == list(range(7))
    assert gauge.peak == 2


def test_each_parallel_limit_caps_only_its_own_jobs():
    left, right, both = Gauge(), Gauge(), Gauge()

    def worker(gauge: Gauge, target: int, name: str):
        async def body(i):
            gauge.enter()
            both.enter()
            try:
                await both.await_peak(5)
                return i
            finally:
                both.exit()
                gauge.exit()

        body.__name__ = name
        return task(body)

    lw, rw = worker(left, 2, "left"), worker(right, 3, "right")
    record = nborch.run(
        DAG(Parallel(*(lw(i) for i in range(6)), limit=2), Parallel(*(rw(i) for i in range(6)), limit=3))
    )

    assert record.ok
    assert left.peak == 2
    assert right.peak == 3
    assert both.peak == 5  # the two groups run side by side, each under its own limit


def test_the_smaller_of_max_concurrency_and_parallel_limit_wins():
    gauge = Gauge()
    work = async_worker(gauge, 2)
    Parallel(*(work(i) for i in range(6)), limit=4).run(max_concurrency=2)
    assert gauge.peak == 2


# -- @task(limit=N) ------------------------------------------------------------------------------


@WORKERS
def test_task_limit_caps_calls_of_that_function(make):
    gauge = Gauge()
    limited = make(gauge, 2, "limited").with_options(limit=2)
    assert Parallel(*(limited(i) for i in range(8))).run() == list(range(8))
    assert gauge.peak == 2


def test_task_limit_does_not_cap_other_functions():
    limited_gauge, free_gauge = Gauge(), Gauge()
    limited = async_worker(limited_gauge, 2, "limited").with_options(limit=2)
    free = async_worker(free_gauge, 6, "free")

    record = nborch.run(Parallel(*(limited(i) for i in range(6)), *(free(i) for i in range(6))))

    assert record.ok
    assert limited_gauge.peak == 2
    assert free_gauge.peak == 6


def test_task_limit_counts_calls_from_every_composite_of_the_run():
    gauge = Gauge()

    @task(limit=1)
    def only_one(i):
        gauge.enter()
        try:
            time.sleep(0.01)
            return i
        finally:
            gauge.exit()

    record = nborch.run(DAG(Parallel(only_one(1), only_one(2)), Parallel(only_one(3), only_one(4))))
    assert record.ok
    assert gauge.peak == 1


def test_task_limit_given_to_task_directly():
    gauge = Gauge()
    work = async_worker(gauge, 3)
    record = nborch.run(Parallel(*(Task(work.fn, i, limit=3) for i in range(9))))
    assert record.ok
    assert gauge.peak == 3


# -- @task(limit=N, limit_by=...) ----------------------------------------------------------------


def test_limit_by_caps_calls_per_key_not_overall():
    per_user: dict[str, Gauge] = defaultdict(Gauge)
    overall = Gauge()

    @task(limit=1, limit_by=("user_id",))
    async def fetch(user_id, item):
        per_user[user_id].enter()
        overall.enter()
        try:
            await overall.await_peak(3)
            await asyncio.sleep(0.005)
            return (user_id, item)
        finally:
            overall.exit()
            per_user[user_id].exit()

    calls = [fetch(user, i) for i in range(3) for user in ("ann", "bob", "cy")]
    record = nborch.run(Parallel(*calls))

    assert record.ok
    assert {u: g.peak for u, g in per_user.items()} == {"ann": 1, "bob": 1, "cy": 1}
    assert overall.peak == 3  # one per user at once, three users side by side
    assert sorted(record.value) == sorted((u, i) for i in range(3) for u in ("ann", "bob", "cy"))


def test_limit_by_allows_n_per_key():
    per_user: dict[str, Gauge] = defaultdict(Gauge)

    @task(limit=2, limit_by=("user_id",))
    def sync_fetch(user_id, item):
        g = per_user[user_id]
        g.enter()
        try:
            g.wait_peak(2, timeout=1.0)
            return item
        finally:
            g.exit()

    record = nborch.run(Parallel(*(sync_fetch(u, i) for i in range(5) for u in ("a", "b"))))
    assert record.ok
    assert {u: g.peak for u, g in per_user.items()} == {"a": 2, "b": 2}


def test_limit_by_treats_positional_and_keyword_arguments_as_the_same_key():
    gauge = Gauge()

    @task(limit=1, limit_by=("user_id",))
    async def fetch(user_id, item=0):
        gauge.enter()
        try:
            await asyncio.sleep(0.01)
            return item
        finally:
            gauge.exit()

    record = nborch.run(Parallel(fetch("ann", 1), fetch(user_id="ann", item=2), fetch("ann", item=3)))
    assert record.ok
    assert gauge.peak == 1


def test_limit_by_without_limit_is_a_definition_error():
    with pytest.raises(nborch.DefinitionError, match="limit"):

        @task(limit_by=("user_id",))
        def f(user_id):
            return user_id


# -- dedupe=True ---------------------------------------------------------------------------------


def test_dedupe_reuses_an_identical_call_within_a_run():
    calls: list[int] = []

    @task(dedupe=True)
    def load(key):
        calls.append(key)
        return f"row {key}"

    value = Parallel(load(1), load(1), load(2)).run()

    assert sorted(calls) == [1, 2]
    assert value == ["row 1", "row 1", "row 2"]


def test_dedupe_shares_one_invocation_between_downstream_tasks():
    calls: list[str] = []

    @task(dedupe=True)
    def config(env):
        calls.append(env)
        return {"env": env}

    @task
    def a(cfg):
        return ("a", cfg["env"])

    @task
    def b(cfg):
        return ("b", cfg["env"])

    record = nborch.run(Parallel(a(config("prod")), b(config("prod"))))
    assert calls == ["prod"]
    assert record.value == [("a", "prod"), ("b", "prod")]
    assert sum(1 for name in record.states if name.startswith("config")) == 1


def test_dedupe_runs_again_in_the_next_run():
    calls: list[int] = []

    @task(dedupe=True)
    def load(key):
        calls.append(key)
        return key

    load(1).run()
    load(1).run()
    assert calls == [1, 1]


def test_without_dedupe_identical_calls_each_run():
    calls: list[int] = []

    @task
    def load(key):
        calls.append(key)
        return key

    record = nborch.run(Parallel(load(1), load(1)))
    assert calls == [1, 1]
    assert set(record.states) == {"load", "load[2]"}


def test_dedupe_reuses_calls_whose_arguments_are_equal_but_unhashable():
    calls: list[object] = []

    @task(dedupe=True)
    def load(keys):
        calls.append(keys)
        return len(keys)

    assert Parallel(load([1, 2]), load([1, 2])).run() == [2, 2]
    assert len(calls) == 1


# -- sync in threads, async on the loop, loop never blocked ---------------------------------------


def test_sync_tasks_run_in_worker_threads_and_async_tasks_on_the_loop():
    where: dict[str, int] = {}

    @task
    async def on_loop():
        where["loop"] = threading.get_ident()

    @task
    def in_thread():
        where["sync"] = threading.get_ident()
        where["sync_is_main"] = threading.current_thread() is threading.main_thread()

    nborch.run(Parallel(on_loop(), in_thread()))

    assert where["loop"] == threading.get_ident()  # a script's run() drives the loop here
    assert where["sync"] != where["loop"]
    assert where["sync_is_main"] is False


def test_sync_tasks_run_side_by_side_in_threads():
    barrier = threading.Barrier(6)

    @task
    def meet(i):
        barrier.wait(timeout=5)  # raises BrokenBarrierError unless all six are in flight together
        return i

    assert Parallel(*(meet(i) for i in range(6))).run() == list(range(6))


def test_the_loop_keeps_ticking_while_sync_tasks_block():
    go = threading.Event()
    ticks: list[float] = []

    @task
    async def heartbeat():
        for _ in range(10):
            await asyncio.sleep(0.005)
            ticks.append(time.monotonic())
        go.set()
        return len(ticks)

    @task
    def blocker(i):
        # blocks its thread until the heartbeat has ticked ten times: a blocked loop never gets there
        if not go.wait(5):
            raise AssertionError("the event loop was blocked by a sync task")
        time.sleep(0.01)
        return i

    record = nborch.run(Parallel(*(blocker(i) for i in range(8)), heartbeat()))

    assert record.ok, record.report()
    assert record.value[-1] == 10


def test_sync_task_sleeping_does_not_delay_async_siblings():
    release = threading.Event()
    order: list[str] = []

    @task
    def slow_sync():
        release.wait(5)
        order.append("sync done")

    @task
    async def fast_async():
        await asyncio.sleep(0)
        order.append("async done")
        release.set()

    record = nborch.run(Parallel(slow_sync(), fast_async()))
    assert record.ok
    assert order == ["async done", "sync done"]


def test_many_sync_tasks_finish_under_a_concurrency_limit():
    @task
    def tiny(i):
        return i * i

    record = nborch.run(Parallel(*(tiny(i) for i in range(200))), max_concurrency=8)
    assert record.value == [i * i for i in range(200)]
    assert set(record.states.values()) == {TaskState.SUCCEEDED}

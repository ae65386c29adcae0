"""Property tests over random DAGs: each task runs once, after its upstreams, within the limits."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nborch
from nborch import DAG, Parallel, Task, TaskState

pytestmark = pytest.mark.timeout(120)

S = TaskState
SETTINGS = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@dataclass
class Shape:
    n: int
    edges: list[tuple[int, int, str]]  # (upstream, downstream, how: "arg" | ">>" | "<<")
    kinds: list[str]  # "sync" | "async" per task
    max_concurrency: int | None
    failing: frozenset[int] = frozenset()

    def ups(self, j: int) -> list[int]:
        return sorted({u for u, d, _ in self.edges if d == j})


@st.composite
def shapes(draw, with_failures: bool = False) -> Shape:
    n = draw(st.integers(min_value=1, max_value=8))
    pairs = draw(
        st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=14)
    )
    edges = sorted({(min(a, b), max(a, b)) for a, b in pairs if a != b})
    hows = draw(st.lists(st.sampled_from(["arg", ">>", "<<"]), min_size=len(edges), max_size=len(edges)))
    kinds = draw(st.lists(st.sampled_from(["sync", "async"]), min_size=n, max_size=n))
    mc = draw(st.sampled_from([None, 1, 2, 3]))
    failing = draw(st.frozensets(st.integers(0, n - 1))) if with_failures else frozenset()
    return Shape(n, [(u, d, h) for (u, d), h in zip(edges, hows, strict=True)], kinds, mc, failing)


@dataclass
class Log:
    lock: threading.Lock = field(default_factory=threading.Lock)
    starts: list[int] = field(default_factory=list)
    ended: set[int] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)
    now: int = 0
    peak: int = 0

    def start(self, i: int, ups: list[int]) -> None:
        with self.lock:
            self.starts.append(i)
            missing = [u for u in ups if u not in self.ended]
            if missing:
                self.violations.append(f"t{i} started before upstreams {missing} ended")
            self.now += 1
            self.peak = max(self.peak, self.now)

    def end(self, i: int) -> None:
        with self.lock:
            self.now -= 1
            self.ended.add(i)


def build(shape: Shape, log: Log) -> tuple[list[Task], dict[int, int]]:
    """Tasks t0..t{n-1}; each returns 1 + the sum of the values passed to it as arguments."""
    expected_value: dict[int, int] = {}

    def make(i: int):
        ups = shape.ups(i)
        fails = i in shape.failing

        if shape.kinds[i] == "async":

            async def body(*values):
                log.start(i, ups)
                try:
                    await asyncio.sleep(0)
                    if fails:
                        raise RuntimeError(f"t{i} fails")
                    return 1 + sum(values)
                finally:
                    log.end(i)

        else:

            def body(*values):
                log.start(i, ups)
                try:
                    if fails:
                        raise RuntimeError(f"t{i} fails")
                    return 1 + sum(values)
                finally:
                    log.end(i)

        return body

    tasks: list[Task] = []
    for j in range(shape.n):
        data_ups = [u for u, d, how in shape.edges if d == j and how == "arg"]
        tasks.append(Task(make(j), *(tasks[u] for u in data_ups), name=f"t{j}"))
        expected_value[j] = 1 + sum(expected_value[u] for u in data_ups)
    for u, d, how in shape.edges:
        if how == ">>":
            tasks[u] >> tasks[d]
        elif how == "<<":
            tasks[d] << tasks[u]
    return tasks, expected_value


def expected_states(shape: Shape) -> dict[str, TaskState]:
    states: dict[int, TaskState] = {}
    for j in range(shape.n):
        if any(states[u] in (S.FAILED, S.UPSTREAM_FAILED) for u in shape.ups(j)):
            states[j] = S.UPSTREAM_FAILED
        elif j in shape.failing:
            states[j] = S.FAILED
        else:
            states[j] = S.SUCCEEDED
    return {f"t{j}": s for j, s in states.items()}


@SETTINGS
@given(shapes())
def test_every_task_runs_once_after_its_upstreams_and_within_max_concurrency(shape):
    log = Log()
    tasks, values = build(shape, log)

    record = nborch.run(DAG(*tasks), max_concurrency=shape.max_concurrency)

    assert record.ok, record.report()
    assert sorted(log.starts) == list(range(shape.n))  # each exactly once
    assert log.violations == []
    if shape.max_concurrency is not None:
        assert log.peak <= shape.max_concurrency
    assert record.value == {f"t{j}": values[j] for j in range(shape.n)}
    assert record.states == {f"t{j}": S.SUCCEEDED for j in range(shape.n)}


@SETTINGS
@given(shapes(), st.data())
def test_running_one_task_runs_exactly_its_upstream_closure(shape, data):
    log = Log()
    tasks, values = build(shape, log)
    target = data.draw(st.integers(0, shape.n - 1), label="target")

    closure: set[int] = set()
    stack = [target]
    while stack:
        j = stack.pop()
        if j not in closure:
            closure.add(j)
            stack.extend(shape.ups(j))

    record = nborch.run(tasks[target], max_concurrency=shape.max_concurrency)

    assert record.value == values[target]
    assert sorted(log.starts) == sorted(closure)
    assert log.violations == []
    assert set(record.states) == {f"t{j}" for j in closure}


@SETTINGS
@given(shapes(with_failures=True))
def test_failures_stop_exactly_the_tasks_downstream_of_them(shape):
    log = Log()
    tasks, _ = build(shape, log)
    expected = expected_states(shape)

    record = nborch.run(DAG(*tasks), max_concurrency=shape.max_concurrency)

    assert record.states == expected
    ran = sorted(int(name[1:]) for name, s in expected.items() if s in (S.SUCCEEDED, S.FAILED))
    assert sorted(log.starts) == ran  # failed tasks ran once; upstream-failed ones never
    assert log.violations == []
    if shape.max_concurrency is not None:
        assert log.peak <= shape.max_concurrency
    assert record.ok == (S.FAILED not in expected.values())


@SETTINGS
@given(
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=1, max_value=4),
    st.sampled_from([None, 1, 2, 5]),
    st.lists(st.sampled_from(["sync", "async"]), min_size=12, max_size=12),
)
def test_parallel_limit_and_max_concurrency_are_never_exceeded(n, limit, mc, kinds):
    log = Log()

    def make(i: int):
        if kinds[i] == "async":

            async def body():
                log.start(i, [])
                try:
                    await asyncio.sleep(0)
                    return i
                finally:
                    log.end(i)

        else:

            def body():
                log.start(i, [])
                try:
                    return i
                finally:
                    log.end(i)

        return body

    value = Parallel(*(Task(make(i), name=f"j{i}") for i in range(n)), limit=limit).run(max_concurrency=mc)

    assert value == list(range(n))
    assert sorted(log.starts) == list(range(n))
    assert log.peak <= min(limit, mc or limit)

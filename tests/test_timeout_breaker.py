"""Point 12 (timeout= per attempt) and point 13 (circuit breakers) of the core contract."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import nborch
from nborch import (
    BreakerState,
    CircuitBreaker,
    CircuitEvent,
    CircuitGroup,
    CircuitOpenError,
    NborchError,
    Parallel,
    Task,
    TaskEvent,
    TaskState,
    TaskTimeoutError,
    task,
)

pytestmark = pytest.mark.timeout(30)


class FakeClock:
    """A clock the test moves by hand: breakers read ``now()``, retries ``sleep()``."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def bus_events():
    """Everything published on the global bus while the test runs."""
    seen: list[object] = []
    unsubscribe = nborch.events.subscribe(seen.append)
    try:
        yield seen
    finally:
        unsubscribe()


def circuit_moves(events: list[object], name: str | None = None) -> list[tuple[str, str]]:
    return [
        (e.old_state, e.new_state)
        for e in events
        if isinstance(e, CircuitEvent) and (name is None or e.breaker == name)
    ]


# -- point 12: timeout= per attempt ---------------------------------------------------------------


def test_timeout_error_is_a_builtin_timeout_error_and_an_nborch_error():
    assert issubclass(TaskTimeoutError, TimeoutError)
    assert issubclass(TaskTimeoutError, NborchError)


def test_async_task_over_its_timeout_raises_task_timeout_error_naming_the_task():
    @task(timeout=0.05)
    async def hang():
        await asyncio.Event().wait()

    started = time.monotonic()
    with pytest.raises(TaskTimeoutError) as info:
        hang().run()
    assert time.monotonic() - started < 1.5
    assert isinstance(info.value, TimeoutError)
    assert "hang" in str(info.value) or any("hang" in n for n in getattr(info.value, "__notes__", ()))


def test_async_task_within_its_timeout_returns_its_value():
    @task(timeout=5)
    async def quick():
        await asyncio.sleep(0)
        return 42

    assert quick().run() == 42


def test_timed_out_async_task_is_cancelled_and_its_finally_runs():
    cleanup: list[str] = []
    after_wait: list[str] = []

    @task(timeout=0.05)
    async def slow():
        try:
            await asyncio.Event().wait()
            after_wait.append("continued")
        finally:
            cleanup.append("finally ran")

    record = nborch.run(slow())

    assert record.states["slow"] is TaskState.FAILED
    assert isinstance(record.errors["slow"], TaskTimeoutError)
    assert cleanup == ["finally ran"]
    assert after_wait == []


def test_a_timeout_error_raised_by_the_task_itself_is_not_a_task_timeout():
    """A TimeoutError the task raises itself is not mistaken for the task's timeout."""

    @task(timeout=5)
    async def own_timeout():
        raise TimeoutError("the remote said so")

    with pytest.raises(TimeoutError) as info:
        own_timeout().run()
    assert str(info.value) == "the remote said so"
    assert not isinstance(info.value, TaskTimeoutError)


def test_uninterruptible_sync_task_is_abandoned_and_its_late_result_discarded():
    release = threading.Event()
    finished = threading.Event()

    @task(timeout=0.1)
    def stuck():
        try:
            release.wait(10)
            return "late value"
        finally:
            finished.set()

    started = time.monotonic()
    record = nborch.run(stuck())
    elapsed = time.monotonic() - started
    try:
        assert elapsed < 2.0, "the run waited for the blocked thread instead of abandoning it"
        assert not finished.is_set()
        assert record.states["stuck"] is TaskState.FAILED
        assert isinstance(record.errors["stuck"], TaskTimeoutError)
        assert "stuck" not in record.results
        assert record.value is None
    finally:
        release.set()
        assert finished.wait(5)
    # the thread's value arrived after the run ended: the record did not change
    assert record.states["stuck"] is TaskState.FAILED
    assert "stuck" not in record.results


def test_sync_task_timeout_raises_from_node_run():
    release = threading.Event()

    @task(timeout=0.05)
    def blocked():
        release.wait(10)

    try:
        with pytest.raises(TaskTimeoutError):
            blocked().run()
    finally:
        release.set()


def test_timeout_applies_to_each_attempt_and_retries_retry_timeouts():
    calls: list[int] = []

    @task(timeout=0.05, retries=2, retry_delay=0)
    async def flaky():
        calls.append(len(calls) + 1)
        if len(calls) < 3:
            await asyncio.Event().wait()  # attempts 1 and 2 hang until their timeout
        return "third time"

    seen: list[TaskEvent] = []
    record = nborch.run(flaky(), on_event=seen.append)

    assert record.states["flaky"] is TaskState.SUCCEEDED
    assert record.value == "third time"
    assert record.attempts["flaky"] == 3
    retrying = [e for e in seen if isinstance(e, TaskEvent) and e.state is TaskState.RETRYING]
    assert [e.attempt for e in retrying] == [1, 2]
    assert all(isinstance(e.error, TaskTimeoutError) for e in retrying)


def test_timeout_is_per_attempt_not_for_all_attempts_together():
    @task(timeout=0.5, retries=2, retry_delay=0)
    async def steady():
        await asyncio.sleep(0.2)
        raise ConnectionError("nope")

    # three attempts of 0.2 s each outlast one timeout of 0.5 s, yet none of them times out
    record = nborch.run(steady())
    assert record.attempts["steady"] == 3
    assert isinstance(record.errors["steady"], ConnectionError)


def test_timeout_with_retries_gives_up_with_task_timeout_error_after_the_last_attempt():
    calls: list[int] = []

    @task(timeout=0.03, retries=2, retry_delay=0)
    async def always_hangs():
        calls.append(1)
        await asyncio.Event().wait()

    with pytest.raises(TaskTimeoutError):
        always_hangs().run()
    assert len(calls) == 3


def test_sync_retry_after_timeout_uses_the_new_attempt_and_drops_the_abandoned_one():
    release = threading.Event()
    abandoned_done = threading.Event()
    attempt = {"n": 0}
    lock = threading.Lock()

    @task(timeout=0.1, retries=1, retry_delay=0)
    def sometimes_stuck():
        with lock:
            attempt["n"] += 1
            mine = attempt["n"]
        if mine == 1:
            release.wait(10)
            abandoned_done.set()
            return "from the abandoned attempt"
        return "from attempt 2"

    try:
        record = nborch.run(sometimes_stuck())
        assert record.states["sometimes_stuck"] is TaskState.SUCCEEDED
        assert record.value == "from attempt 2"
        assert record.attempts["sometimes_stuck"] == 2
    finally:
        release.set()
        assert abandoned_done.wait(5)


# -- point 13: circuit breakers -------------------------------------------------------------------


def test_breaker_starts_closed_with_no_failures():
    b = CircuitBreaker(fail_max=3, reset_timeout=10, name="db")
    assert b.state is BreakerState.CLOSED
    assert b.failure_count == 0
    assert b.name == "db"


def test_breaker_defaults_are_five_failures_and_sixty_seconds():
    b = CircuitBreaker()
    assert b.fail_max == 5
    assert b.reset_timeout == 60


def make_failing(breaker: CircuitBreaker, calls: list[str], how: str = "decorator"):
    def boom():
        calls.append("ran")
        raise ConnectionError("down")

    if how == "decorator":
        fn = task(breaker=breaker)(boom)
        return lambda: fn()
    return lambda: Task(boom, breaker=breaker)


@pytest.mark.parametrize("how", ["decorator", "Task"], ids=["at-task-breaker", "Task-breaker"])
def test_breaker_opens_after_fail_max_consecutive_failures(clock, how):
    b = CircuitBreaker(fail_max=3, reset_timeout=10, name="api", clock=clock)
    calls: list[str] = []
    node = make_failing(b, calls, how)

    for n in (1, 2):
        with pytest.raises(ConnectionError):
            node().run()
        assert b.state is BreakerState.CLOSED
        assert b.failure_count == n
    with pytest.raises(ConnectionError):
        node().run()
    assert b.state is BreakerState.OPEN
    assert b.failure_count == 3
    assert len(calls) == 3


@pytest.mark.parametrize("how", ["decorator", "Task"], ids=["at-task-breaker", "Task-breaker"])
def test_open_breaker_fails_at_once_without_running_the_function(clock, how):
    b = CircuitBreaker(fail_max=2, reset_timeout=10, name="api", clock=clock)
    calls: list[str] = []
    node = make_failing(b, calls, how)
    for _ in range(2):
        nborch.run(node())
    assert b.state is BreakerState.OPEN
    ran_before = len(calls)

    with pytest.raises(CircuitOpenError) as info:
        node().run()
    record = nborch.run(node())

    assert len(calls) == ran_before
    assert isinstance(info.value, NborchError)
    assert record.states["boom"] is TaskState.FAILED
    assert isinstance(record.errors["boom"], CircuitOpenError)


def test_a_success_resets_the_consecutive_failure_count(clock):
    b = CircuitBreaker(fail_max=3, reset_timeout=10, clock=clock)
    outcomes = iter(["fail", "fail", "ok", "fail", "fail"])

    @task(breaker=b)
    def call():
        if next(outcomes) == "fail":
            raise ConnectionError("down")
        return "ok"

    for _ in range(5):
        nborch.run(call())
    assert b.state is BreakerState.CLOSED
    assert b.failure_count == 2


def test_after_reset_timeout_a_successful_trial_call_closes_the_breaker(clock, bus_events):
    b = CircuitBreaker(fail_max=1, reset_timeout=30, name="svc", clock=clock)
    healthy = {"now": False}
    calls: list[str] = []

    @task(breaker=b)
    def ping():
        calls.append("ran")
        if not healthy["now"]:
            raise ConnectionError("down")
        return "pong"

    nborch.run(ping())
    assert b.state is BreakerState.OPEN

    clock.advance(29)
    with pytest.raises(CircuitOpenError):
        ping().run()
    assert len(calls) == 1

    clock.advance(1)
    healthy["now"] = True
    assert ping().run() == "pong"
    assert len(calls) == 2
    assert b.state is BreakerState.CLOSED
    assert b.failure_count == 0
    assert circuit_moves(bus_events, "svc") == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


def test_a_failed_trial_call_reopens_the_breaker_for_another_reset_timeout(clock, bus_events):
    b = CircuitBreaker(fail_max=2, reset_timeout=5, name="flaky", clock=clock)
    calls: list[str] = []

    @task(breaker=b)
    def down():
        calls.append("ran")
        raise ConnectionError("still down")

    nborch.run(down())
    nborch.run(down())
    assert b.state is BreakerState.OPEN

    clock.advance(5)
    with pytest.raises(ConnectionError):  # the trial runs and fails with the task's own error
        down().run()
    assert len(calls) == 3
    assert b.state is BreakerState.OPEN

    clock.advance(4.9)
    with pytest.raises(CircuitOpenError):
        down().run()
    assert len(calls) == 3
    assert circuit_moves(bus_events, "flaky") == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
    ]


def test_half_open_breaker_lets_exactly_one_trial_call_through(clock):
    b = CircuitBreaker(fail_max=1, reset_timeout=10, name="one", clock=clock)
    ran: list[int] = []

    @task(breaker=b)
    async def probe(i):
        ran.append(i)
        if not healthy:
            raise ConnectionError("down")
        await asyncio.sleep(0.1)  # the trial is still running while the others ask
        return i

    healthy = False
    nborch.run(probe(0))
    assert b.state is BreakerState.OPEN
    clock.advance(10)
    healthy = True

    record = nborch.run(Parallel(probe(1), probe(2), probe(3)))

    assert len(ran) == 2  # probe(0) earlier, then exactly one trial now
    states = sorted(record.states.values())
    assert states.count(TaskState.SUCCEEDED) == 1
    assert states.count(TaskState.FAILED) == 2
    assert all(isinstance(e, CircuitOpenError) for e in record.errors.values())
    assert b.state is BreakerState.CLOSED


def test_breaker_outlives_runs_and_is_shared_by_tasks_using_it(clock):
    b = CircuitBreaker(fail_max=2, reset_timeout=10, clock=clock)
    other_calls: list[str] = []

    @task(breaker=b)
    def first():
        raise ConnectionError("down")

    @task(breaker=b)
    def second():
        other_calls.append("ran")
        return "fine"

    nborch.run(first())
    nborch.run(first())
    assert b.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        second().run()
    assert other_calls == []


def test_circuit_events_go_to_the_global_bus_and_to_the_runs_own_subscribers(clock, bus_events):
    b = CircuitBreaker(fail_max=1, reset_timeout=10, name="payments", clock=clock)

    @task(breaker=b)
    def charge():
        raise ConnectionError("down")

    mine: list[object] = []
    nborch.run(charge(), on_event=mine.append)

    for seen in (bus_events, mine):
        circuit = [e for e in seen if isinstance(e, CircuitEvent)]
        assert len(circuit) == 1
        event = circuit[0]
        assert event.breaker == "payments"
        assert event.old_state == BreakerState.CLOSED
        assert event.new_state == BreakerState.OPEN
        assert event.old_state == "closed" and event.new_state == "open"
        assert isinstance(event.time, float)


def test_breaker_failure_count_is_exact_when_hammered_from_threads(clock):
    b = CircuitBreaker(fail_max=10_000, reset_timeout=10, clock=clock)
    ran = []
    lock = threading.Lock()

    @task(breaker=b)
    def fail():
        with lock:
            ran.append(1)
        raise ConnectionError("down")

    def runs(_: int) -> int:
        failed = 0
        for _ in range(25):
            failed += nborch.run(fail()).states["fail"] is TaskState.FAILED
        return failed

    with ThreadPoolExecutor(max_workers=8) as pool:
        total = sum(pool.map(runs, range(8)))

    assert total == 200
    assert len(ran) == 200
    assert b.failure_count == 200
    assert b.state is BreakerState.CLOSED


def test_breaker_opens_once_when_many_threads_fail_at_the_same_time(clock, bus_events):
    b = CircuitBreaker(fail_max=5, reset_timeout=10, name="hammer", clock=clock)
    ran = []
    lock = threading.Lock()
    go = threading.Barrier(8)

    @task(breaker=b)
    def fail():
        with lock:
            ran.append(1)
        raise ConnectionError("down")

    def runs(_: int) -> list[type]:
        go.wait(5)
        return [type(nborch.run(fail()).errors["fail"]) for _ in range(20)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        kinds = [k for ks in pool.map(runs, range(8)) for k in ks]

    assert len(kinds) == 160
    assert set(kinds) <= {ConnectionError, CircuitOpenError}
    assert kinds.count(ConnectionError) == len(ran) >= 5
    assert kinds.count(CircuitOpenError) == 160 - len(ran)
    assert b.state is BreakerState.OPEN
    assert circuit_moves(bus_events, "hammer") == [(BreakerState.CLOSED, BreakerState.OPEN)]


def test_breaker_is_safe_from_concurrent_coroutines_in_one_run(clock):
    b = CircuitBreaker(fail_max=1000, reset_timeout=10, clock=clock)

    @task(breaker=b)
    async def fail(i):
        await asyncio.sleep(0)
        raise ConnectionError(i)

    record = nborch.run(Parallel(*(fail(i) for i in range(50))))
    assert len(record.errors) == 50
    assert b.failure_count == 50


def test_circuit_group_exposes_one_breaker_built_from_its_options():
    @task
    def a():
        return 1

    group = CircuitGroup(a(), fail_max=2, reset_timeout=7, name="backend")
    assert isinstance(group.breaker, CircuitBreaker)
    assert group.breaker.fail_max == 2
    assert group.breaker.reset_timeout == 7
    assert group.breaker.name == "backend"
    assert group.breaker.state is BreakerState.CLOSED


def test_circuit_group_runs_its_steps_side_by_side_and_returns_values_in_order():
    both_started = {"a": None, "b": None}

    async def meet(me, other):
        both_started[me].set()
        await asyncio.wait_for(both_started[other].wait(), 5)  # sequential steps would time out
        return me

    @task
    async def step_a():
        return await meet("a", "b")

    @task
    async def step_b():
        return await meet("b", "a")

    async def main():
        both_started["a"], both_started["b"] = asyncio.Event(), asyncio.Event()
        return await CircuitGroup(step_a(), step_b(), name="pair").run_async()

    assert asyncio.run(main()) == ["a", "b"]


def test_circuit_group_opens_after_fail_max_failing_runs_and_then_fails_fast_without_running(bus_events):
    """One run of the group is one call of its breaker: two failing steps in one run count once."""
    calls: list[str] = []

    @task
    def bad(i):
        calls.append(f"bad{i}")
        raise ConnectionError(f"down {i}")

    group = CircuitGroup(bad(1), bad(2), fail_max=2, reset_timeout=60, name="grp")
    first = nborch.run(group)
    assert not first.ok
    assert group.breaker.state is BreakerState.CLOSED
    assert group.breaker.failure_count == 1
    second = nborch.run(group)
    assert group.breaker.state is BreakerState.OPEN
    assert group.breaker.failure_count == 2
    assert sorted(calls) == ["bad1", "bad1", "bad2", "bad2"]

    calls.clear()
    third = nborch.run(group)  # the same group, next run: the breaker is still open
    assert calls == []
    assert all(isinstance(e, CircuitOpenError) for e in third.errors.values())
    assert len(third.errors) == 2
    assert third.attempts == {"bad": 0, "bad[2]": 0}
    assert circuit_moves(bus_events, "grp") == [(BreakerState.CLOSED, BreakerState.OPEN)]


def test_circuit_group_counts_a_run_with_one_failing_step_as_one_failure():
    """The async_orch example: a group of a fetch that succeeds and a service call that
    fails, run 5 times: failed, failed, then CircuitOpenError three times without calling the
    service. Counted per step, the succeeding fetch would reset the count and never open it."""
    calls: list[int] = []

    async def fetch():
        return "data"

    async def service():
        calls.append(1)
        raise ConnectionError("service unavailable")

    group = CircuitGroup(Task(fetch), Task(service), fail_max=2, reset_timeout=10, name="api")
    outcomes = []
    for _ in range(5):
        run = nborch.run(group, store=False)
        outcomes.append(type(run.errors["service"]).__name__)

    assert outcomes == ["ConnectionError", "ConnectionError", "CircuitOpenError", "CircuitOpenError",
                        "CircuitOpenError"]
    assert len(calls) == 2
    assert group.breaker.state is BreakerState.OPEN


def test_circuit_group_success_needs_every_step_to_succeed():
    healthy = {"b": False}

    async def a():
        return "a"

    async def b():
        if not healthy["b"]:
            raise ConnectionError("down")
        return "b"

    group = CircuitGroup(Task(a), Task(b), fail_max=3, reset_timeout=10, name="pair")
    nborch.run(group, store=False)
    nborch.run(group, store=False)
    assert group.breaker.failure_count == 2
    healthy["b"] = True
    assert nborch.run(group, store=False).ok
    assert group.breaker.failure_count == 0
    assert group.breaker.state is BreakerState.CLOSED


def test_task_breaker_keeps_counting_each_call():
    b = CircuitBreaker(fail_max=2, reset_timeout=60)

    @task(breaker=b)
    def bad(i):
        raise ConnectionError(f"down {i}")

    nborch.run(Parallel(bad(1), bad(2)), store=False)
    assert b.state is BreakerState.OPEN
    assert b.failure_count == 2


def test_circuit_group_closes_again_after_reset_timeout_and_a_successful_trial():
    healthy = {"now": False}

    @task
    def call():
        if not healthy["now"]:
            raise ConnectionError("down")
        return "up"

    group = CircuitGroup(call(), fail_max=1, reset_timeout=0.05, name="recovering")
    nborch.run(group)
    assert group.breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        group.run()

    time.sleep(0.1)  # longer than reset_timeout: the next call is the trial
    healthy["now"] = True
    assert group.run() == ["up"]
    assert group.breaker.state is BreakerState.CLOSED


def test_breaker_state_and_failure_count_can_be_read_while_a_task_runs(clock):
    b = CircuitBreaker(fail_max=3, reset_timeout=10, clock=clock)
    seen: list[tuple[BreakerState, int]] = []

    @task(breaker=b)
    def fails():
        seen.append((b.state, b.failure_count))
        raise ConnectionError("down")

    nborch.run(fails())
    nborch.run(fails())
    assert seen == [(BreakerState.CLOSED, 0), (BreakerState.CLOSED, 1)]
    assert repr(b)  # readable at any time, never raises

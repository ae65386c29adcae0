"""Issue 13, item 4: a task's options (cache, retry, rate, breaker, timeout) are steps wrapped one
around the next, in one order (``nborch.core.attempts``). Each test runs options together through
the public API and checks what only the right order produces: which waits come before which
attempt, what a breaker counts, what a retry restarts, what a cache hit skips."""

from __future__ import annotations

import asyncio

import pytest

import nborch
from nborch import (
    BreakerState,
    CircuitBreaker,
    CircuitEvent,
    CircuitOpenError,
    Parallel,
    RetryPolicy,
    Skip,
    TaskEvent,
    TaskState,
    TaskTimeoutError,
    TaskWaiting,
    task,
)

pytestmark = pytest.mark.timeout(30)


def trace(recorder, name: str) -> list[tuple[object, ...]]:
    """What one task went through, in the order it was published: its states (with the attempt
    and the error's type), its waits for a rate, and every breaker's moves."""
    seen: list[tuple[object, ...]] = []
    for e in recorder.events:
        if isinstance(e, TaskEvent) and e.task == name:
            seen.append((e.state.value, e.attempt, type(e.error).__name__ if e.error is not None else None))
        elif isinstance(e, TaskWaiting) and e.task == name:
            seen.append(("waiting", e.attempt, e.reason))
        elif isinstance(e, CircuitEvent):
            seen.append(("circuit", str(e.old_state), str(e.new_state)))
    return seen


def open_breaker(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.fail_max):
        breaker.before_call()
        breaker.on_failure()
    assert breaker.state is BreakerState.OPEN


def test_each_attempt_waits_for_its_rate_then_runs_under_the_breaker_and_the_timeout(fake_clock, recorder):
    breaker = CircuitBreaker(fail_max=5, reset_timeout=60, name="api", clock=fake_clock)
    counted: list[int] = []  # the breaker's failure count as each attempt's body starts

    @task(retry=RetryPolicy(max_attempts=3, delay=0.5, backoff=1.0), timeout=0.2, rate="1/s", breaker=breaker)
    async def call():
        counted.append(breaker.failure_count)
        if len(counted) == 1:
            await asyncio.Event().wait()  # the first attempt hangs until its timeout
        if len(counted) == 2:
            raise ConnectionError("down")
        return "ok"

    record = nborch.run(call(), clock=fake_clock, store=False, on_event=recorder)

    assert record.value == "ok"
    assert trace(recorder, "call") == [
        ("running", 1, None),
        ("retrying", 1, "TaskTimeoutError"),
        ("waiting", 2, "rate"),  # after the back-off, before the attempt is counted and runs
        ("running", 2, None),
        ("retrying", 2, "ConnectionError"),
        ("waiting", 3, "rate"),
        ("running", 3, None),
        ("succeeded", 3, None),
    ]
    assert counted == [0, 1, 2]  # the breaker counted the timed-out attempt and the failed one
    assert breaker.failure_count == 0  # and then the success
    assert record.attempts["call"] == 3
    # each time: the back-off, then the rest of the second that the rate asks
    assert fake_clock.slept == pytest.approx([0.5, 0.5, 0.5, 0.5])


def test_a_task_gives_its_slot_back_while_it_waits_to_retry_and_while_it_waits_for_its_rate(fake_clock):
    order: list[str] = []

    @task(rate="1/s", retries=1, retry_delay=0.5)
    async def flaky():
        attempt = sum(o.startswith("flaky") for o in order) + 1
        order.append(f"flaky attempt {attempt}")
        if attempt == 1:
            raise ConnectionError("down")

    @task
    async def other(i):
        order.append(f"other{i}")

    flow = Parallel(flaky(), other(1), other(2))
    record = nborch.run(flow, clock=fake_clock, store=False, max_concurrency=1)

    assert record.ok
    # one slot: other1 ran while flaky slept before its retry, other2 while it waited for its rate
    assert order == ["flaky attempt 1", "other1", "other2", "flaky attempt 2"]
    assert fake_clock.slept == pytest.approx([0.5, 0.5])


def test_a_timed_out_attempt_is_stopped_before_the_retry_runs_with_a_time_of_its_own(recorder):
    log: list[str] = []

    @task(timeout=0.3, retries=1)
    async def slow():
        n = sum(entry.startswith("start") for entry in log) + 1
        log.append(f"start {n}")
        try:
            await asyncio.sleep(10 if n == 1 else 0.2)  # the second alone fits in 0.3 s; both do not
        except asyncio.CancelledError:
            log.append(f"stopped {n}")
            raise
        log.append(f"done {n}")
        return n

    record = nborch.run(slow(), store=False, on_event=recorder)

    assert record.value == 2
    assert log == ["start 1", "stopped 1", "start 2", "done 2"]
    retried = [e for e in recorder.task_events("slow") if e.state is TaskState.RETRYING]
    assert [(e.attempt, type(e.error)) for e in retried] == [(1, TaskTimeoutError)]


def test_retries_that_keep_failing_open_the_breaker_whose_refusal_ends_the_retries(fake_clock, recorder):
    breaker = CircuitBreaker(fail_max=2, reset_timeout=60, name="api", clock=fake_clock)
    calls: list[int] = []

    @task(retries=5, breaker=breaker)
    async def fetch():
        calls.append(1)
        raise ConnectionError("down")

    record = nborch.run(fetch(), clock=fake_clock, store=False, on_event=recorder)

    assert len(calls) == 2  # the third attempt was refused without running
    assert breaker.state is BreakerState.OPEN
    assert isinstance(record.errors["fetch"], CircuitOpenError)
    assert trace(recorder, "fetch") == [
        ("running", 1, None),
        ("retrying", 1, "ConnectionError"),
        ("running", 2, None),
        ("circuit", "closed", "open"),  # the breaker recorded the failure before the retry was decided
        ("retrying", 2, "ConnectionError"),
        ("running", 3, None),
        ("failed", 3, "CircuitOpenError"),  # a refusal is not retried: three attempts of six
    ]


def test_a_breaker_opened_by_the_last_retry_fails_the_next_run_at_once(fake_clock):
    breaker = CircuitBreaker(fail_max=3, reset_timeout=60, clock=fake_clock)
    calls: list[int] = []

    @task(retries=2, breaker=breaker)
    def fetch():
        calls.append(1)
        raise ConnectionError("down")

    first = nborch.run(fetch(), clock=fake_clock, store=False)
    second = nborch.run(fetch(), clock=fake_clock, store=False)

    assert isinstance(first.errors["fetch"], ConnectionError)  # its own error: its retries ran out
    assert first.attempts["fetch"] == 3
    assert breaker.state is BreakerState.OPEN  # each attempt counted
    assert isinstance(second.errors["fetch"], CircuitOpenError)
    assert second.attempts["fetch"] == 1
    assert len(calls) == 3


def test_a_cache_hit_waits_for_no_rate_and_asks_no_breaker(fake_clock, recorder, tmp_path):
    breaker = CircuitBreaker(fail_max=1, reset_timeout=600, name="api", clock=fake_clock)

    @task(cache=True, rate="1/min", breaker=breaker, retries=2, timeout=5)
    def fetch(i):  # reads nothing that changes between the runs: its key stays the same
        return i * 10

    flow = Parallel(fetch(1), fetch(2))
    first = nborch.run(flow, clock=fake_clock, store=tmp_path / "store.db")
    assert first.value == [10, 20]
    assert fake_clock.slept == pytest.approx([60.0])  # the second call waited for its start
    open_breaker(breaker)

    second = nborch.run(flow, clock=fake_clock, store=tmp_path / "store.db", on_event=recorder)

    assert second.value == [10, 20]
    assert [(e.state, e.cached) for e in recorder.task_events()] == [(TaskState.SUCCEEDED, True)] * 2
    assert fake_clock.slept == pytest.approx([60.0])  # no wait for the rate this time
    assert recorder.of_type(TaskWaiting) == []
    assert recorder.of_type(CircuitEvent) == []  # the open breaker was not asked
    assert breaker.state is BreakerState.OPEN


def test_a_skip_is_not_a_failure_the_breaker_forgets_its_trial_and_nothing_retries(fake_clock):
    breaker = CircuitBreaker(fail_max=1, reset_timeout=10, clock=fake_clock)
    open_breaker(breaker)
    fake_clock.advance(10)  # the next call is the breaker's trial
    outcomes = iter(["skip", "load"])

    @task(retries=3, breaker=breaker)
    async def load():
        if next(outcomes) == "skip":
            raise Skip("nothing new")
        return "loaded"

    skipped = nborch.run(load(), clock=fake_clock, store=False)
    assert skipped.states["load"] is TaskState.SKIPPED
    assert skipped.attempts["load"] == 1
    assert breaker.state is BreakerState.HALF_OPEN and breaker.failure_count == 1  # nothing recorded

    again = nborch.run(load(), clock=fake_clock, store=False)  # the trial is free: it runs

    assert again.value == "loaded"
    assert breaker.state is BreakerState.CLOSED


def test_a_cancelled_attempt_is_not_a_failure_the_breaker_forgets_its_trial_and_nothing_retries(fake_clock):
    breaker = CircuitBreaker(fail_max=1, reset_timeout=10, clock=fake_clock)
    open_breaker(breaker)
    fake_clock.advance(10)
    running = asyncio.Event()

    @task(retries=3, retry_delay=1, breaker=breaker)
    async def slow():
        running.set()
        await asyncio.Event().wait()

    @task
    async def boom():
        await running.wait()
        raise RuntimeError("boom")

    record = nborch.run(Parallel(slow(), boom(), fail_fast=True), clock=fake_clock, store=False)

    assert record.states["slow"] is TaskState.CANCELLED
    assert record.attempts["slow"] == 1
    assert fake_clock.slept == []  # no back-off: a cancelled attempt is not retried
    assert breaker.state is BreakerState.HALF_OPEN and breaker.failure_count == 1
    breaker.before_call()  # the trial was given back: the next call is admitted

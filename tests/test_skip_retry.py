"""Points 10 and 11: Skip / skip_if, RetryPolicy and the retries= shortcut."""

from __future__ import annotations

import asyncio

import pytest

import nborch
from nborch import DAG, DefinitionError, RetryPolicy, Skip, Task, TaskState, task


def failing_then(value, failures, error=ConnectionError):
    """A function failing ``failures`` times with ``error``, then returning ``value``."""
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= failures:
            raise error(f"failure {len(calls)}")
        return value

    fn.calls = calls
    return fn


# -- 10. Skip and skip_if --------------------------------------------------------------------------


def test_raising_skip_ends_the_task_skipped():
    @task
    def optional_step():
        raise Skip("nothing to import today")

    result = nborch.run(optional_step())

    assert result.states == {"optional_step": TaskState.SKIPPED}
    assert result.ok is True
    assert result.errors == {}


def test_raising_skip_in_an_async_task_ends_it_skipped():
    @task
    async def optional_step():
        await asyncio.sleep(0)
        raise Skip("later")

    assert nborch.run(optional_step()).states == {"optional_step": TaskState.SKIPPED}


def test_skipped_event_carries_the_reason(recorder):
    @task
    def optional_step():
        raise Skip("nothing to import today")

    nborch.run(optional_step(), on_event=recorder)

    skipped = [e for e in recorder.task_events("optional_step") if e.state is TaskState.SKIPPED]
    assert len(skipped) == 1
    assert isinstance(skipped[0].error, Skip)
    assert skipped[0].error.reason == "nothing to import today"


def test_skip_is_not_retried():
    calls = []

    @task(retries=3)
    def optional_step():
        calls.append(1)
        raise Skip("not needed")

    result = nborch.run(optional_step())

    assert calls == [1]
    assert result.states == {"optional_step": TaskState.SKIPPED}
    assert result.attempts == {"optional_step": 1}


def test_skip_is_not_raised_by_node_run():
    @task
    def optional_step():
        raise Skip("not needed")

    assert optional_step().run() is None


def test_skip_if_true_skips_without_running_the_function():
    calls = []

    @task(skip_if=lambda: True)
    def step():
        calls.append(1)
        return 1

    result = nborch.run(step())

    assert calls == []
    assert result.states == {"step": TaskState.SKIPPED}
    assert result.attempts == {"step": 0}


def test_skip_if_false_runs_the_function():
    @task(skip_if=lambda: False)
    def step():
        return 1

    result = nborch.run(step())

    assert result.states == {"step": TaskState.SUCCEEDED}
    assert result.value == 1


def test_skip_if_is_evaluated_when_the_task_is_about_to_run():
    flags = {"skip": False}

    def prepare():
        flags["skip"] = True  # decided by an upstream step, after the workflow was built

    def step():
        return "ran"

    a, b = Task(prepare), Task(step, skip_if=lambda: flags["skip"])
    a >> b

    assert nborch.run(DAG(a, b)).states["step"] is TaskState.SKIPPED


def test_skip_if_option_works_on_the_task_constructor():
    def step():
        return 1

    assert nborch.run(Task(step, skip_if=lambda: True)).states == {"step": TaskState.SKIPPED}


def test_skip_if_can_read_the_shared_state():
    @task(skip_if=lambda state: state["dry_run"])
    def publish():
        return "published"

    assert nborch.run(publish(), state={"dry_run": True}).states == {"publish": TaskState.SKIPPED}
    assert nborch.run(publish(), state={"dry_run": False}).states == {"publish": TaskState.SUCCEEDED}


def test_skip_if_must_be_callable():
    with pytest.raises(DefinitionError, match=r"^skip_if= expects a callable, got True$"):

        @task(skip_if=True)
        def step():
            return 1


# -- 11. Retries ---------------------------------------------------------------------------------


def test_retry_policy_retries_until_success(fake_clock):
    fn = failing_then("ok", failures=2)

    result = nborch.run(Task(fn, retry=RetryPolicy(max_attempts=3, delay=1.0, backoff=2.0)), clock=fake_clock)

    assert result.value == "ok"
    assert result.attempts == {"fn": 3}
    assert len(fn.calls) == 3


def test_retry_policy_waits_delay_times_backoff_between_attempts(fake_clock):
    fn = failing_then("ok", failures=3)

    nborch.run(Task(fn, retry=RetryPolicy(max_attempts=4, delay=1.5, backoff=3.0)), clock=fake_clock)

    assert fake_clock.slept == [1.5, 4.5, 13.5]


def test_retry_policy_caps_each_wait_at_max_delay(fake_clock):
    fn = failing_then("ok", failures=4)

    policy = RetryPolicy(max_attempts=5, delay=1.0, backoff=10.0, max_delay=5.0)

    nborch.run(Task(fn, retry=policy), clock=fake_clock)

    assert fake_clock.slept == [1.0, 5.0, 5.0, 5.0]


def test_retry_policy_with_backoff_one_waits_a_fixed_delay(fake_clock):
    fn = failing_then("ok", failures=3)

    nborch.run(Task(fn, retry=RetryPolicy(max_attempts=4, delay=2.0, backoff=1.0)), clock=fake_clock)

    assert fake_clock.slept == [2.0, 2.0, 2.0]


def test_retry_policy_jitter_adds_at_most_jitter_seconds(fake_clock, recorder):
    fn = failing_then("ok", failures=20)

    nborch.run(
        Task(fn, retry=RetryPolicy(max_attempts=21, delay=1.0, backoff=1.0, jitter=0.5)),
        clock=fake_clock,
        on_event=recorder,
    )

    assert len(fake_clock.slept) == 20
    assert all(1.0 <= s <= 1.5 for s in fake_clock.slept)
    assert len(set(fake_clock.slept)) > 1  # random, not a constant offset
    planned = [e.delay for e in recorder.task_events("fn") if e.state is TaskState.RETRYING]
    assert planned == fake_clock.slept


def test_retry_policy_gives_up_after_max_attempts_and_fails(fake_clock):
    fn = failing_then("never", failures=10)

    result = nborch.run(Task(fn, retry=RetryPolicy(max_attempts=3, delay=1.0)), clock=fake_clock)

    assert result.states == {"fn": TaskState.FAILED}
    assert result.attempts == {"fn": 3}
    assert len(fn.calls) == 3
    assert str(result.errors["fn"]) == "failure 3"
    assert fake_clock.slept == [1.0, 2.0]


def test_exhausted_retries_raise_the_last_exception_from_run(fake_clock):
    fn = failing_then("never", failures=10)

    with pytest.raises(ConnectionError, match=r"^failure 2") as info:
        Task(fn, retry=RetryPolicy(max_attempts=2, delay=0.5)).run(clock=fake_clock)

    assert info.value.__notes__ == ["nborch: raised in task 'fn', attempt 2 of 2"]


def test_retry_on_retries_only_the_listed_exceptions(fake_clock):
    fn = failing_then("ok", failures=1, error=ValueError)

    result = nborch.run(
        Task(fn, retry=RetryPolicy(max_attempts=3, delay=1.0, retry_on=(ConnectionError, TimeoutError))),
        clock=fake_clock,
    )

    assert result.states == {"fn": TaskState.FAILED}
    assert result.attempts == {"fn": 1}
    assert isinstance(result.errors["fn"], ValueError)
    assert fake_clock.slept == []


def test_retry_on_retries_a_listed_exception(fake_clock):
    fn = failing_then("ok", failures=2, error=TimeoutError)

    result = nborch.run(
        Task(fn, retry=RetryPolicy(max_attempts=3, delay=1.0, retry_on=(ConnectionError, TimeoutError))),
        clock=fake_clock,
    )

    assert result.value == "ok"
    assert result.attempts == {"fn": 3}


def test_retry_on_matches_subclasses(fake_clock):
    fn = failing_then("ok", failures=1, error=ConnectionResetError)

    policy = RetryPolicy(max_attempts=2, delay=1.0, retry_on=(OSError,))

    result = nborch.run(Task(fn, retry=policy), clock=fake_clock)

    assert result.value == "ok"


def test_retry_on_defaults_to_any_exception(fake_clock):
    fn = failing_then("ok", failures=1, error=KeyError)

    result = nborch.run(Task(fn, retry=RetryPolicy(max_attempts=2, delay=1.0)), clock=fake_clock)

    assert result.value == "ok"


def test_retry_stops_as_soon_as_a_non_listed_exception_occurs(fake_clock):
    errors = iter([ConnectionError("flaky"), ValueError("bad data"), None])

    def fn():
        error = next(errors)
        if error is not None:
            raise error
        return "ok"

    policy = RetryPolicy(max_attempts=5, delay=1.0, retry_on=(ConnectionError,))

    result = nborch.run(Task(fn, retry=policy), clock=fake_clock)

    assert result.attempts == {"fn": 2}
    assert isinstance(result.errors["fn"], ValueError)


def test_retries_shortcut_backs_off_exponentially_from_retry_delay(fake_clock):
    fn = failing_then("ok", failures=3)

    result = nborch.run(Task(fn, retries=3, retry_delay=2.0), clock=fake_clock)

    assert result.value == "ok"
    assert fake_clock.slept == [2.0, 4.0, 8.0]


def test_retries_shortcut_counts_retries_not_attempts(fake_clock):
    fn = failing_then("never", failures=10)

    result = nborch.run(Task(fn, retries=2, retry_delay=1.0), clock=fake_clock)

    assert result.attempts == {"fn": 3}
    assert result.states == {"fn": TaskState.FAILED}


def test_retries_shortcut_on_the_decorator(fake_clock):
    attempts = []

    @task(retries=2, retry_delay=0.25)
    async def fetch():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("down")
        return "data"

    result = nborch.run(fetch(), clock=fake_clock)

    assert result.value == "data"
    assert fake_clock.slept == [0.25, 0.5]


def test_retries_without_retry_delay_retry_at_once(fake_clock):
    fn = failing_then("ok", failures=2)

    result = nborch.run(Task(fn, retries=2), clock=fake_clock)

    assert result.value == "ok"
    assert fake_clock.slept == []


def test_each_retry_emits_retrying_with_attempt_and_planned_delay(fake_clock, recorder):
    fn = failing_then("ok", failures=3)

    nborch.run(Task(fn, retries=3, retry_delay=2.0), clock=fake_clock, on_event=recorder)

    retrying = [e for e in recorder.task_events("fn") if e.state is TaskState.RETRYING]
    assert [(e.attempt, e.delay) for e in retrying] == [(1, 2.0), (2, 4.0), (3, 8.0)]
    assert all(isinstance(e.error, ConnectionError) for e in retrying)


def test_retrying_events_sit_between_the_attempts(fake_clock, recorder):
    fn = failing_then("ok", failures=2)

    nborch.run(Task(fn, retries=2, retry_delay=1.0), clock=fake_clock, on_event=recorder)

    assert [(e.state, e.attempt) for e in recorder.task_events("fn")] == [
        (TaskState.RUNNING, 1),
        (TaskState.RETRYING, 1),
        (TaskState.RUNNING, 2),
        (TaskState.RETRYING, 2),
        (TaskState.RUNNING, 3),
        (TaskState.SUCCEEDED, 3),
    ]


def test_no_retrying_event_after_the_last_attempt(fake_clock, recorder):
    fn = failing_then("never", failures=10)

    nborch.run(Task(fn, retries=1, retry_delay=1.0), clock=fake_clock, on_event=recorder)

    assert [e.state for e in recorder.task_events("fn")] == [
        TaskState.RUNNING,
        TaskState.RETRYING,
        TaskState.RUNNING,
        TaskState.FAILED,
    ]


def test_retrying_event_reaches_the_global_bus(fake_clock):
    seen = []
    fn = failing_then("ok", failures=1)
    unsubscribe = nborch.events.subscribe(seen.append)
    try:
        nborch.run(Task(fn, retries=1, retry_delay=3.0), clock=fake_clock)
    finally:
        unsubscribe()

    retrying = [e for e in seen if isinstance(e, nborch.TaskEvent) and e.state is TaskState.RETRYING]
    assert [(e.task, e.attempt, e.delay) for e in retrying] == [("fn", 1, 3.0)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_attempts": 0}, r"^RetryPolicy\(max_attempts=\.\.\.\) expects an integer >= 1, got 0$"),
        ({"delay": -1}, r"^RetryPolicy\(delay=\.\.\.\) expects a number >= 0, got -1$"),
        ({"backoff": -2}, r"^RetryPolicy\(backoff=\.\.\.\) expects a number >= 0, got -2$"),
        ({"jitter": -0.5}, r"^RetryPolicy\(jitter=\.\.\.\) expects a number >= 0, got -0\.5$"),
        ({"max_delay": -3}, r"^RetryPolicy\(max_delay=\.\.\.\) must be >= 0, got -3$"),
        (
            {"retry_on": ("ConnectionError",)},
            r"^RetryPolicy\(retry_on=\.\.\.\) expects exception classes, got 'ConnectionError'",
        ),
    ],
    ids=["max_attempts", "delay", "backoff", "jitter", "max_delay", "retry_on"],
)
def test_retry_policy_rejects_bad_values(kwargs, message):
    with pytest.raises(DefinitionError, match=message):
        RetryPolicy(**kwargs)


def test_retries_shortcut_rejects_a_negative_count():
    with pytest.raises(DefinitionError, match=r"^retries= expects an integer >= 0, got -1$"):

        @task(retries=-1)
        def fn():
            return 1

"""Points 1-3: TaskState, the @task decorator and Task(fn, *args, name=None, **options)."""

from __future__ import annotations

import asyncio
import logging

import pytest

import nborch
from nborch import CircuitBreaker, DefinitionError, RetryPolicy, Task, TaskState, task

# -- 1. TaskState --------------------------------------------------------------------------------


def test_task_state_has_exactly_the_eight_states_of_the_contract():
    assert [s.name for s in TaskState] == [
        "PENDING",
        "RUNNING",
        "RETRYING",
        "SUCCEEDED",
        "FAILED",
        "UPSTREAM_FAILED",
        "SKIPPED",
        "CANCELLED",
    ]


def test_task_state_is_importable_from_the_package_root():
    assert nborch.TaskState is TaskState
    assert TaskState.SUCCEEDED is TaskState["SUCCEEDED"]


# -- 2. @task ------------------------------------------------------------------------------------


def test_calling_a_bare_task_function_builds_a_task_and_runs_nothing():
    calls = []

    @task
    def add(a, b):
        calls.append((a, b))
        return a + b

    node = add(1, 2)

    assert isinstance(node, Task)
    assert calls == []


def test_calling_an_async_task_function_builds_a_task_and_runs_nothing():
    calls = []

    @task
    async def add(a, b):
        calls.append((a, b))
        return a + b

    node = add(1, 2)

    assert isinstance(node, Task)
    assert calls == []


def test_calling_a_configured_task_function_builds_a_task_and_runs_nothing():
    calls = []

    @task(name="adder", retries=2)
    def add(a, b):
        calls.append((a, b))
        return a + b

    node = add(1, 2)

    assert isinstance(node, Task)
    assert calls == []


def test_a_built_task_runs_only_when_run_with_its_bound_arguments():
    calls = []

    @task
    def add(a, b):
        calls.append((a, b))
        return a + b

    node = add(1, b=2)

    assert node.run() == 3
    assert calls == [(1, 2)]


def test_each_call_of_a_task_function_builds_a_separate_task():
    @task
    def double(x):
        return 2 * x

    first, second = double(1), double(2)

    assert first is not second
    assert (first.run(), second.run()) == (2, 4)


def test_sync_and_async_task_functions_both_run():
    @task
    def sync_inc(x):
        return x + 1

    @task
    async def async_inc(x):
        await asyncio.sleep(0)
        return x + 1

    assert sync_inc(1).run() == 2
    assert async_inc(1).run() == 2


def test_fn_is_the_plain_undecorated_function():
    def add(a, b):
        return a + b

    add_task = task(add)

    assert add_task.fn is add
    assert add_task.fn(2, 3) == 5


def test_fn_of_a_configured_task_function_is_the_plain_function():
    async def fetch(n):
        return n

    fetch_task = task(name="fetcher", retries=3)(fetch)

    assert fetch_task.fn is fetch


def test_logger_is_named_after_the_function():
    @task
    def fibonacci(n):
        return n

    assert isinstance(fibonacci.logger, logging.Logger)
    assert fibonacci.logger.name == "nborch.task.fibonacci"


def test_logger_is_named_after_the_explicit_task_name():
    @task(name="fib")
    def fibonacci(n):
        return n

    assert fibonacci.logger.name == "nborch.task.fib"


def test_logger_can_be_used_inside_the_running_task(caplog):
    @task
    def fibonacci(n):
        fibonacci.logger.info("computing fibonacci(%d)", n)
        return n

    with caplog.at_level(logging.INFO, logger="nborch.task.fibonacci"):
        assert fibonacci(5).run() == 5

    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("nborch.task.fibonacci", "computing fibonacci(5)")
    ]


@pytest.mark.parametrize(
    "options",
    [
        {"name": "custom"},
        {"retries": 2},
        {"retries": 2, "retry_delay": 0.5},
        {"retry": RetryPolicy(max_attempts=2, delay=0)},
        {"timeout": 5},
        {"trigger_rule": "all_done"},
        {"limit": 2},
        {"breaker": CircuitBreaker(fail_max=3, reset_timeout=10)},
    ],
    ids=["name", "retries", "retries+retry_delay", "retry", "timeout", "trigger_rule", "limit", "breaker"],
)
def test_task_decorator_accepts_each_documented_option(options):
    @task(**options)
    def answer():
        return 42

    assert answer().run() == 42


def test_name_option_names_the_task_in_the_run():
    @task(name="loader")
    def load():
        return 1

    result = nborch.run(load())

    assert result.states == {"loader": TaskState.SUCCEEDED}


def test_without_a_name_the_task_is_named_after_its_function():
    @task
    def load():
        return 1

    result = nborch.run(load())

    assert list(result.states) == ["load"]


def test_retries_option_tries_the_task_again():
    attempts = []

    @task(retries=2)
    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("down")
        return "ok"

    result = nborch.run(flaky())

    assert result.value == "ok"
    assert result.attempts == {"flaky": 3}


def test_timeout_option_fails_a_slow_attempt_with_task_timeout_error():
    @task(timeout=0.05)
    async def stuck():
        await asyncio.Event().wait()  # never set

    with pytest.raises(nborch.TaskTimeoutError, match=r"^task 'stuck' timed out after 0\.05s"):
        stuck().run()


def test_unknown_decorator_option_is_rejected_with_a_suggestion():
    message = r"^@task got an unknown option 'retry_dely'\. Did you mean 'retry_delay'\?"
    with pytest.raises(DefinitionError, match=message):

        @task(retry_dely=1)
        def f():
            return 1


# -- 3. Task(fn, *args, name=None, **options) ----------------------------------------------------


def test_task_constructor_binds_positional_arguments_and_runs_nothing():
    calls = []

    async def fetch_data(n):
        calls.append(n)
        return f"data{n}"

    node = Task(fetch_data, 1, name="Fetch1")

    assert calls == []
    assert node.run() == "data1"
    assert calls == [1]


def test_task_constructor_name_is_the_task_name_in_the_run():
    def fetch_data(n):
        return n

    result = nborch.run(Task(fetch_data, 1, name="Fetch1"))

    assert result.states == {"Fetch1": TaskState.SUCCEEDED}
    assert result.results == {"Fetch1": 1}


@pytest.mark.parametrize("bad", ["", 5, ["a"]])
def test_task_constructor_rejects_a_name_that_is_not_a_non_empty_string(bad):
    def fetch_data(n):
        return n

    with pytest.raises(nborch.DefinitionError, match=r"name= expects a non-empty string, got "):
        Task(fetch_data, 1, name=bad)


def test_task_constructor_with_name_none_is_an_unnamed_call_and_keeps_a_task_functions_options():
    @task(retries=2, name="loader")
    def load(n):
        return n

    plain = Task(load, 1, name=None)
    named = Task(load, 1, name="first")

    assert plain.name == "loader" and not plain.own_name
    assert named.name == "first" and named.own_name
    assert plain.options.retry == named.options.retry == load.options.retry  # the function's, shared
    assert nborch.run(nborch.DAG(plain, named)).results == {"loader": 1, "first": 1}


def test_task_constructor_without_name_uses_the_function_name():
    def fetch_data(n):
        return n

    result = nborch.run(Task(fetch_data, 1))

    assert list(result.states) == ["fetch_data"]


def test_task_constructor_binds_keyword_arguments_of_the_function():
    def power(base, exponent):
        return base**exponent

    assert Task(power, 2, exponent=10).run() == 1024


def test_task_constructor_takes_the_same_options_as_the_decorator():
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 2:
            raise ConnectionError("down")
        return "ok"

    result = nborch.run(Task(flaky, name="flaky_call", retries=1, trigger_rule="all_success", limit=1))

    assert result.value == "ok"
    assert result.attempts == {"flaky_call": 2}


def test_task_constructor_accepts_a_task_function_and_keeps_its_options():
    attempts = []

    @task(retries=1)
    def flaky(x):
        attempts.append(x)
        if len(attempts) < 2:
            raise ConnectionError("down")
        return x

    result = nborch.run(Task(flaky, 7, name="again"))

    assert result.value == 7
    assert result.attempts == {"again": 2}


def test_task_constructor_rejects_a_keyword_the_function_does_not_take():
    def fetch(n):
        return n

    message = r"^fetch\(\) has no parameter 'm'; its parameters are n$"
    with pytest.raises(nborch.InvalidTaskError, match=message):
        Task(fetch, m=1)


def test_task_constructor_rejects_an_unknown_trigger_rule_naming_the_task():
    def fetch():
        return 1

    message = r"^task 'f': unknown trigger rule 'all_succes'\. Did you mean 'all_success'\?"
    with pytest.raises(DefinitionError, match=message):
        Task(fetch, name="f", trigger_rule="all_succes")

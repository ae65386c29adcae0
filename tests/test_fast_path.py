"""The engine's fast path (tasks with no retry, timeout, cache, breaker or limit): an async
body's own coroutine runs and settles in one step (``Engine.body``). What a user relies on
stays as it was on the slower path: contextvars do not leak between tasks, a task cancelled
before its first step settles CANCELLED without a "never awaited" warning, a bad call fails
the task, and an interrupt stops the run."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import warnings

import pytest

import nborch
from nborch import DAG, Parallel, Task

flavour: contextvars.ContextVar[str] = contextvars.ContextVar("flavour", default="plain")


def test_a_contextvar_a_body_sets_does_not_reach_the_tasks_it_makes_ready():
    async def upstream() -> str:
        flavour.set("set by upstream")
        return flavour.get()

    async def downstream(x: str) -> tuple[str, str]:
        return x, flavour.get()

    up = Task(upstream, name="up")
    run = nborch.run(DAG(up, Task(downstream, up, name="down")), store=False)

    assert run.results["down"] == ("set by upstream", "plain")


def test_a_contextvar_set_before_the_run_reaches_every_task():
    async def read(*_: object) -> str:
        return flavour.get()

    async def main() -> dict[str, str]:
        flavour.set("outer")
        a = Task(read, name="a")
        b = Task(read, a, name="b")
        run = await nborch.run_async(DAG(a, b), store=False)
        return run.results

    assert asyncio.run(main()) == {"a": "outer", "b": "outer"}


def test_siblings_cancelled_before_their_first_step_settle_cancelled_and_nothing_is_left_unawaited():
    started: list[int] = []

    async def bad() -> None:
        raise ValueError("at once")

    async def sibling(i: int) -> int:
        started.append(i)
        await asyncio.sleep(5)
        return i

    # bad's step runs first (it was created first) and fails; the siblings' jobs exist but
    # have not begun: fail_fast cancels them before their first step
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = nborch.run(Parallel(Task(bad), *[Task(sibling, i) for i in range(5)], fail_fast=True), store=False)
        gc.collect()

    assert run.states["bad"] is nborch.TaskState.FAILED
    assert sorted(s.value for n, s in run.states.items() if n != "bad") == ["cancelled"] * 5
    assert started == []  # no sibling body ran
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_an_async_body_called_with_bad_arguments_fails_its_task_and_the_run_goes_on():
    async def one(x: int) -> int:
        return x

    async def other() -> str:
        return "ran"

    run = nborch.run(Parallel(Task(one, 1, 2), Task(other)), store=False)  # one() takes 1 argument

    assert run.states["one"] is nborch.TaskState.FAILED
    assert isinstance(run.errors["one"], TypeError)
    assert run.results["other"] == "ran"


def test_a_body_raising_cancelled_error_itself_fails_and_the_run_goes_on():
    async def gives_up() -> None:
        raise asyncio.CancelledError("my own")

    async def fine() -> int:
        return 1

    run = nborch.run(Parallel(Task(gives_up), Task(fine)), store=False)

    assert run.states["gives_up"] is nborch.TaskState.FAILED
    assert run.results["fine"] == 1


def test_keyboard_interrupt_in_an_async_body_stops_the_run_and_reaches_the_caller():
    async def interrupted() -> None:
        raise KeyboardInterrupt

    async def slow() -> None:
        await asyncio.sleep(30)

    with pytest.raises(KeyboardInterrupt):
        nborch.run(Parallel(Task(interrupted), Task(slow)), store=False)
    run = nborch.last_run()
    assert run.states["interrupted"] is nborch.TaskState.FAILED
    assert run.states["slow"] is nborch.TaskState.CANCELLED

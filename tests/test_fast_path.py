"""The engine's fast path (tasks with no retry, timeout, cache, breaker or limit): an async
body's own coroutine runs and settles in one step (``nborch.core.jobs.body``). What a user relies on
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


def test_tasks_after_sync_tasks_see_the_runs_contextvars_not_the_worker_threads():
    # a sync body's outcome is handed to the loop by its worker thread; the tasks it makes
    # ready must start in the run's context (what was set before the run), not in the worker
    # thread's (empty) one, and not in the body's (what it set itself)
    def sync_read(*_: object) -> str:
        seen = flavour.get()
        flavour.set("set by a sync body")
        return seen

    async def async_read(*_: object) -> str:
        return flavour.get()

    async def main() -> dict[str, str]:
        flavour.set("outer")
        a = Task(sync_read, name="a")
        b = Task(sync_read, a, name="b")
        c = Task(async_read, b, name="c")
        d = Task(sync_read, c, name="d")
        e = Task(async_read, a, name="e")
        run = await nborch.run_async(DAG(a, b, c, d, e), store=False)
        return run.results

    assert asyncio.run(main()) == {"a": "outer", "b": "outer", "c": "outer", "d": "outer", "e": "outer"}


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


def test_keyboard_interrupt_in_a_downstream_body_stops_the_run_and_keeps_what_finished():
    # on Python 3.12+ the body's first step runs inside its upstream's settle (an eager task):
    # the interrupt must still stop the run, and the upstream's success must stand
    async def first() -> int:
        return 1

    async def interrupted(_: int) -> None:
        raise KeyboardInterrupt

    async def slow() -> None:
        await asyncio.sleep(30)

    up = Task(first, name="first")
    with pytest.raises(KeyboardInterrupt):
        nborch.run(DAG(up, Task(interrupted, up, name="interrupted"), Task(slow, name="slow")), store=False)
    run = nborch.last_run()
    assert run.states["first"] is nborch.TaskState.SUCCEEDED
    assert run.results["first"] == 1
    assert run.states["interrupted"] is nborch.TaskState.FAILED
    assert run.states["slow"] is nborch.TaskState.CANCELLED


def test_a_body_that_never_suspends_is_its_own_current_task():
    # asyncio.timeout(), TaskGroup and many libraries need asyncio.current_task() to be the
    # task's own job, also in a first step that runs eagerly (Python 3.12+)
    seen: list[asyncio.Task[object] | None] = []

    async def probe(i: int) -> int:
        seen.append(asyncio.current_task())
        async with asyncio.timeout(5):  # raises RuntimeError outside a task, and cancels the wrong one inside another
            pass
        return i

    run = nborch.run(Parallel(*[Task(probe, i, name=f"p{i}") for i in range(5)]), store=False)

    assert run.ok, run.summary()
    assert [run.results[f"p{i}"] for i in range(5)] == list(range(5))
    assert all(t is not None for t in seen)
    assert len({id(t) for t in seen}) == 5  # one job each (all still referenced: ids are unique)


def test_a_long_chain_of_bodies_that_never_suspend_keeps_a_flat_stack_and_lets_the_loop_run():
    # 5,000 bodies that end at once, each making the next ready: deeper than the recursion
    # limit if first steps nested, and the loop still gets turns (a launch burst at most)
    n = 5000

    async def step(x: int) -> int:
        return x + 1

    tasks = [Task(step, 0, name="s0")]
    for i in range(1, n):
        tasks.append(Task(step, tasks[-1], name=f"s{i}"))
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def main() -> nborch.Run:
        stop = asyncio.Event()
        tick = asyncio.ensure_future(ticker(stop))
        try:
            return await nborch.run_async(DAG(*tasks), store=False)
        finally:
            stop.set()
            await tick

    run = asyncio.run(main())

    assert run.results[f"s{n - 1}"] == n
    assert ticks >= 3  # the engine launches at most 1,000 tasks per loop iteration (engine.BURST)


_ORDER_SCRIPT = """
import nborch
from nborch import DAG, Task
order = []
async def step(label, *_):
    order.append(label)
a = Task(step, "a", name="a")
nborch.run(DAG(a, Task(step, "b", a, name="b"), Task(step, "c", name="c")), store=False)
print("".join(order))
"""


@pytest.mark.parametrize("setting", [None, "0"])
def test_eager_first_steps_change_only_the_order_the_readme_names(setting: str | None):
    # README "Eager first steps": on 3.12+ a root that ends at once starts its downstream
    # before the next root starts; NBORCH_EAGER=0 (and Python 3.11) keep one step per iteration
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "NBORCH_EAGER"}
    if setting is not None:
        env["NBORCH_EAGER"] = setting
    out = subprocess.run([sys.executable, "-c", _ORDER_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    eager = sys.version_info >= (3, 12) and setting != "0"
    assert out == ("abc" if eager else "acb")

"""Point 16: dynamic child tasks: `await node` (async) and `node.result` (sync) inside a task."""

from __future__ import annotations

import asyncio
import re
import threading

import pytest

import nborch
from nborch import CycleError, Parallel, TaskEvent, TaskState, task

pytestmark = pytest.mark.timeout(30)

S = TaskState


def fib_value(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def fib_calls(n: int) -> int:
    """How many calls the naive recursion makes."""
    return 1 if n < 2 else 1 + fib_calls(n - 1) + fib_calls(n - 2)


class Gauge:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def exit(self) -> None:
        with self.lock:
            self.now -= 1


# -- fibonacci, async and sync -------------------------------------------------------------------


@task
async def afib(n: int) -> int:
    if n < 2:
        return n
    return await afib(n - 1) + await afib(n - 2)


@task
def sfib(n: int) -> int:
    if n < 2:
        return n
    return sfib(n - 1).result + sfib(n - 2).result


@pytest.mark.timeout(30)
def test_recursive_async_fibonacci_finishes_under_max_concurrency_two():
    record = nborch.run(afib(10), max_concurrency=2)
    assert record.ok, record.report()
    assert record.value == 55
    assert len(record.states) == fib_calls(10)
    assert set(record.states.values()) == {S.SUCCEEDED}


@pytest.mark.timeout(30)
def test_recursive_sync_fibonacci_finishes_under_max_concurrency_two():
    record = nborch.run(sfib(10), max_concurrency=2)
    assert record.ok, record.report()
    assert record.value == 55
    assert len(record.states) == fib_calls(10)


@pytest.mark.timeout(30)
def test_recursive_fibonacci_finishes_under_max_concurrency_one():
    assert afib(8).run(max_concurrency=1) == 21
    assert sfib(8).run(max_concurrency=1) == 21


@pytest.mark.timeout(30)
def test_async_fibonacci_with_gathered_children_finishes_under_max_concurrency_two():
    @task
    async def gfib(n: int) -> int:
        if n < 2:
            return n
        a, b = await asyncio.gather(gfib(n - 1), gfib(n - 2))
        return a + b

    async def main():
        return await asyncio.wait_for(gfib(4).run_async(max_concurrency=2), 2)

    assert asyncio.run(main()) == 3


@pytest.mark.timeout(30)
def test_deduped_fibonacci_runs_each_value_once():
    calls: list[int] = []

    @task(dedupe=True)
    async def mfib(n: int) -> int:
        calls.append(n)
        if n < 2:
            return n
        return await mfib(n - 1) + await mfib(n - 2)

    record = nborch.run(mfib(25), max_concurrency=2)
    assert record.value == fib_value(25)
    assert sorted(calls) == list(range(26))
    assert len(record.states) == 26


@pytest.mark.timeout(30)
def test_deduped_sync_fibonacci_runs_each_value_once():
    calls: list[int] = []
    lock = threading.Lock()

    @task(dedupe=True)
    def mfib(n: int) -> int:
        with lock:
            calls.append(n)
        if n < 2:
            return n
        return mfib(n - 1).result + mfib(n - 2).result

    assert mfib(20).run(max_concurrency=2) == fib_value(20)
    assert sorted(calls) == list(range(21))


# -- children belong to the run ------------------------------------------------------------------


def test_child_tasks_have_their_own_names_states_and_parent_in_the_record():
    record = nborch.run(afib(3))
    assert record.value == 2
    assert set(record.states) == {"afib", "afib[2]", "afib[3]", "afib[4]", "afib[5]"}
    assert set(record.states.values()) == {S.SUCCEEDED}
    assert "afib" not in record.parents
    assert all(record.parents[name] in record.states for name in record.states if name != "afib")


def test_child_task_events_name_their_parent():
    @task
    async def child(x):
        return x + 1

    @task
    async def parent():
        return await child(1)

    seen: list[object] = []
    record = nborch.run(parent(), on_event=seen.append)

    child_events = [e for e in seen if isinstance(e, TaskEvent) and e.task == "child"]
    assert [e.state for e in child_events][-2:] == [S.RUNNING, S.SUCCEEDED]
    assert {e.parent for e in child_events} == {"parent"}
    assert {e.run_id for e in child_events} == {record.id}
    assert child_events[-1].result == 2
    parent_events = [e for e in seen if isinstance(e, TaskEvent) and e.task == "parent"]
    assert {e.parent for e in parent_events} == {None}
    assert record.states == {"parent": S.SUCCEEDED, "child": S.SUCCEEDED}


def test_sync_child_via_result_is_a_task_of_the_same_run():
    @task
    def child(x):
        return x * 10

    @task
    def parent():
        return child(1).result + child(2).result

    seen: list[object] = []
    record = nborch.run(parent(), on_event=seen.append)

    assert record.value == 30
    assert set(record.states) == {"parent", "child", "child[2]"}
    children = {e.task for e in seen if isinstance(e, TaskEvent) and e.parent == "parent"}
    assert children == {"child", "child[2]"}


def test_awaiting_a_composite_inside_a_task_runs_it_as_children():
    @task
    async def leaf(i):
        return i * i

    @task
    async def parent():
        return await Parallel(leaf(1), leaf(2), leaf(3))

    record = nborch.run(parent())
    assert record.value == [1, 4, 9]
    assert {record.parents[n] for n in record.states if n != "parent"} == {"parent"}


# -- children run under the same limits ----------------------------------------------------------


@pytest.mark.timeout(30)
def test_children_count_toward_max_concurrency_and_waiting_parents_give_their_slot_back():
    gauge = Gauge()

    @task
    async def tree(depth):
        gauge.enter()
        try:
            await asyncio.sleep(0.002)
        finally:
            gauge.exit()
        if depth == 0:
            return 1
        left, right = await Parallel(tree(depth - 1), tree(depth - 1))
        return left + right

    assert tree(5).run(max_concurrency=2) == 32
    assert gauge.peak == 2


@pytest.mark.timeout(30)
def test_sync_children_count_toward_max_concurrency():
    gauge = Gauge()

    @task
    def tree(depth):
        gauge.enter()
        try:
            threading.Event().wait(0.002)
        finally:
            gauge.exit()
        if depth == 0:
            return 1
        return sum(Parallel(tree(depth - 1), tree(depth - 1)).result)

    assert tree(4).run(max_concurrency=2) == 16
    assert 1 <= gauge.peak <= 2


def test_children_respect_a_task_limit():
    gauge = Gauge()

    @task(limit=1)
    async def limited(i):
        gauge.enter()
        try:
            await asyncio.sleep(0.005)
            return i
        finally:
            gauge.exit()

    @task
    async def parent():
        return await asyncio.gather(*(limited(i) for i in range(5)))

    assert parent().run() == [0, 1, 2, 3, 4]
    assert gauge.peak == 1


# -- cycles and failures -------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_deduped_task_awaiting_an_identical_call_of_itself_raises_cycle_error():
    @task(dedupe=True)
    async def ouroboros(n):
        return await ouroboros(n)

    with pytest.raises(CycleError) as info:
        ouroboros(1).run()
    assert "ouroboros" in str(info.value)
    assert re.search(r"'?ouroboros'? -> '?ouroboros'?", str(info.value))


@pytest.mark.timeout(30)
def test_sync_deduped_task_reading_its_own_result_raises_cycle_error():
    @task(dedupe=True)
    def ouroboros(n):
        return ouroboros(n).result

    with pytest.raises(CycleError, match="ouroboros"):
        ouroboros(1).run()


@pytest.mark.timeout(30)
def test_cycle_through_two_deduped_tasks_names_the_whole_chain():
    @task(dedupe=True)
    async def ping(n):
        return await pong(n)

    @task(dedupe=True)
    async def pong(n):
        return await ping(n)

    with pytest.raises(CycleError) as info:
        ping(1).run()
    assert re.search(r"'?ping'? -> '?pong'? -> '?ping'?", str(info.value)), str(info.value)


def test_child_failure_reaches_the_parent_as_the_childs_own_exception():
    class QuotaExceeded(Exception):
        pass

    @task
    async def child():
        raise QuotaExceeded("over quota")

    caught: list[BaseException] = []

    @task
    async def parent():
        try:
            await child()
        except QuotaExceeded as exc:
            caught.append(exc)
            return "handled"

    record = nborch.run(parent())
    assert record.value == "handled"
    assert len(caught) == 1 and type(caught[0]) is QuotaExceeded
    assert record.states == {"parent": S.SUCCEEDED, "child": S.FAILED}


def test_unhandled_child_failure_fails_the_parent_with_the_childs_exception_type():
    @task
    async def child():
        raise KeyError("missing")

    @task
    async def parent():
        return await child()

    with pytest.raises(KeyError):
        parent().run()
    record = nborch.run(parent())
    assert record.states == {"parent": S.FAILED, "child": S.FAILED}
    assert isinstance(record.errors["parent"], KeyError)


def test_sync_child_failure_reaches_the_parent_as_the_childs_own_exception():
    @task
    def child():
        raise PermissionError("denied")

    @task
    def parent():
        try:
            child().result
        except PermissionError as exc:
            return f"handled {type(exc).__name__}"

    record = nborch.run(parent())
    assert record.value == "handled PermissionError"
    assert record.states == {"parent": S.SUCCEEDED, "child": S.FAILED}
    assert not record.ok  # a handled child failure still counts as a failure of the run


def test_child_that_retries_succeeds_for_its_parent():
    attempts: list[int] = []

    @task(retries=2, retry_delay=0)
    async def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("again")
        return "ok"

    @task
    async def parent():
        return await flaky()

    record = nborch.run(parent())
    assert record.value == "ok"
    assert record.attempts["flaky"] == 3


@pytest.mark.parametrize("parent_kind", ["async", "sync"])
def test_a_timed_out_parent_cancels_the_child_it_was_waiting_for(parent_kind):
    seen = {"finished": False, "cancelled": False}

    @task
    async def child():
        try:
            await asyncio.sleep(5)
            seen["finished"] = True
        except asyncio.CancelledError:
            seen["cancelled"] = True
            raise

    if parent_kind == "async":

        @task(timeout=0.2)
        async def parent():
            return await child()
    else:

        @task(timeout=0.2)
        def parent():
            return child().result

    run = nborch.run(parent(), store=False)

    assert run.states == {"parent": TaskState.FAILED, "child": TaskState.CANCELLED}
    assert isinstance(run.errors["parent"], nborch.TaskTimeoutError)
    assert seen == {"finished": False, "cancelled": True}
    assert run.duration < 3


def test_a_child_awaited_by_another_task_too_is_not_cancelled_with_one_of_them():
    @task(dedupe=True)
    async def shared():
        await asyncio.sleep(0.5)
        return "done"

    @task(timeout=0.1)
    async def impatient():
        return await shared()

    @task
    async def patient():
        return await shared()

    run = nborch.run(Parallel(impatient(), patient()), store=False)

    assert run.states["shared"] is TaskState.SUCCEEDED
    assert run.results["patient"] == "done"
    assert isinstance(run.errors["impatient"], nborch.TaskTimeoutError)


def test_awaiting_a_child_that_was_skipped_gives_none():
    @task
    async def child():
        raise nborch.Skip("nothing to do")

    @task
    async def parent():
        return ("got", await child())

    run = nborch.run(parent(), store=False)

    assert run.value == ("got", None)
    assert run.states["child"] is TaskState.SKIPPED


# -- a plain child call runs inline, in its caller's slot ------------------------------------------
# A new call of a plain async function, awaited by its caller's own coroutine, runs in that
# coroutine (no asyncio task of its own) in the slot its caller holds. These check what a user
# relies on around that: limits, recursion depth, stopping, and what is recorded.


@pytest.mark.timeout(30)
def test_deep_recursion_of_child_calls_finishes_and_records_every_call(tmp_path):
    @task
    async def down(n: int) -> int:
        return 0 if n == 0 else 1 + await down(n - 1)

    run = nborch.run(down(300), max_concurrency=2, store=tmp_path)

    assert run.value == 300
    assert len(run.states) == 301 and set(run.states.values()) == {S.SUCCEEDED}
    loaded = nborch.Run.load(run.id, store=tmp_path)
    assert len(loaded.states) == 301
    assert loaded.parents["down[2]"] == "down"  # the record names each call's caller


@pytest.mark.timeout(30)
def test_a_child_started_from_another_asyncio_task_while_an_inline_call_runs_does_not_deadlock():
    gauge = Gauge()

    @task
    async def leaf(i: int) -> int:
        gauge.enter()
        try:
            await asyncio.sleep(0.01)
        finally:
            gauge.exit()
        return i

    @task
    async def parent() -> int:
        async def side() -> int:
            return await leaf(1)

        first = await leaf(0)  # inline, in the parent's only slot
        other = asyncio.ensure_future(side())  # its own asyncio task: waits for a slot
        second = await leaf(2)  # inline again while `other` waits
        return first + second + await other

    assert nborch.run(parent(), max_concurrency=1, store=False).value == 3
    assert gauge.peak == 1


@pytest.mark.timeout(30)
def test_cancelling_a_run_stops_an_inline_child_and_leaves_nothing_running():
    started, cleaned = threading.Event(), threading.Event()

    @task
    async def child() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.set()

    @task
    async def parent() -> None:
        await child()

    async def main():
        job = asyncio.ensure_future(parent().run_async(store=False, max_concurrency=1))
        while not started.is_set():
            await asyncio.sleep(0.005)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    asyncio.run(main())
    assert cleaned.is_set()


@pytest.mark.timeout(30)
def test_a_timed_out_caller_gives_back_the_slot_its_inline_child_held():
    @task
    async def child() -> None:
        await asyncio.sleep(30)

    @task(timeout=0.2)
    async def parent() -> None:
        await child()

    @task
    async def later() -> str:
        return "ran"

    run = nborch.run(Parallel(parent(), later()), max_concurrency=1, store=False)

    assert run.states == {"parent": S.FAILED, "child": S.CANCELLED, "later": S.SUCCEEDED}
    assert run.results["later"] == "ran"


def test_an_inline_child_sees_its_callers_context_variables_and_its_own_changes_reach_the_caller():
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    @task
    async def child() -> str:
        seen = var.get()
        var.set("set by the child")
        return seen

    @task
    async def parent() -> tuple[str, str]:
        var.set("set by the parent")
        seen_by_child = await child()
        return seen_by_child, var.get()

    @task
    async def sibling(_: object) -> str:
        return var.get()

    p = parent()
    run = nborch.run(nborch.DAG(p, sibling(p)), store=False)
    assert run.results["parent"] == ("set by the parent", "set by the child")
    assert run.results["sibling"] == "unset"  # what tasks set never reaches their downstream


def test_a_run_of_many_child_tasks_freezes_them_out_of_the_gcs_sight_and_gives_everything_back():
    """Child tasks join the run one by one; once 10,000 have joined, what there is is frozen out
    of the cyclic GC's sight (collections do not rescan a big run's tasks again and again), and
    the run's end unfreezes it: the user's process is left with the GC on and nothing frozen."""
    import gc

    seen: list[int] = []

    @task
    async def fib(n):
        if n < 2:
            return n
        return await fib(n - 1) + await fib(n - 2)

    @task
    def look(value):
        seen.append(gc.get_freeze_count())  # read while the run goes on
        return value

    before = gc.get_freeze_count()  # what the interpreter keeps frozen (3.12.1: 375 objects)
    assert gc.isenabled()
    run = nborch.run(look(fib(20)), max_concurrency=2, store=False)

    assert run.ok and run.value == 6765
    assert len(run.states) == 2 * 10946 - 1 + 1  # fib(20)'s call tree and look
    assert seen[0] > before + 10_000  # the first 10,000 (and more) were frozen during the run
    assert gc.isenabled() and gc.get_freeze_count() <= before

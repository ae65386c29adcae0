"""Sync task bodies in worker threads: nothing starts after cancellation, a timeout counts
from when the body starts, and calls abandoned by a timeout do not hold a slot."""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time

import pytest

import nborch
from nborch import Parallel, Task, TaskState

POOL = 32  # the worker pool's size on a machine with few cores (max(32, cpus + 4))


def workers_alive() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "nborch-worker")


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_sync_tasks_queued_for_a_worker_never_start_once_the_run_is_cancelled():
    started: list[int] = []
    lock = threading.Lock()
    gate = threading.Event()

    def body(i):
        with lock:
            started.append(i)
        gate.wait(20)

    async def main():
        job = asyncio.create_task(nborch.run_async(Parallel(*[Task(body, i) for i in range(100)]), store=False))
        while True:  # every worker is busy and 68 calls wait in the queue
            with lock:
                if len(started) >= POOL:
                    break
            await asyncio.sleep(0.01)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    asyncio.run(main())
    run = nborch.last_run()
    gate.set()
    wait_until(lambda: workers_alive() == 0)  # every worker has exited: nothing else can start

    assert len(started) == POOL
    assert run.counts() == {TaskState.CANCELLED: 100}


def test_a_sync_timeout_counts_from_when_the_body_starts_not_from_the_queue():
    """40 one-second tasks on 32 workers: 8 wait a second for a thread, then run a second; a
    timeout of 1.8 s must not count that wait."""

    def body(i):
        time.sleep(1.0)
        return i

    run = nborch.run(Parallel(*[Task(body, i, timeout=1.8) for i in range(40)]), store=False)

    assert run.ok, run.report()
    assert run.value == list(range(40))


def test_calls_abandoned_by_a_timeout_do_not_hold_the_pool():
    """32 calls time out but keep running (a sync function cannot be stopped); the rest of
    the run must not wait for them to return."""
    gate = threading.Event()
    later_ran = threading.Event()

    def stuck(i):
        gate.wait(30)

    def later(stuck):  # runs after every stuck call settled (timed out)
        later_ran.set()
        return "ran"

    stucks = Parallel(*[Task(stuck, i, timeout=0.2) for i in range(POOL)])
    node = Task(later, stucks, trigger_rule="all_done")
    box: dict[str, object] = {}
    runner = threading.Thread(target=lambda: box.setdefault("run", nborch.run(node, store=False)))
    runner.start()
    try:
        assert later_ran.wait(20), "the run waited for abandoned calls to return"
    finally:
        gate.set()
        runner.join(30)
    run = box["run"]
    assert run.value == "ran"  # type: ignore[attr-defined]
    assert sum(isinstance(e, nborch.TaskTimeoutError) for e in run.errors.values()) == POOL  # type: ignore[attr-defined]


def test_a_failure_cancels_sync_tasks_running_and_queued_in_the_pool_and_none_hangs():
    # 8 more sync bodies than the pool has threads (32 on a small machine): those that run
    # are blocked until released, 8 wait in the pool's queue. A fail_fast sibling's failure
    # cancels them all: the running ones end CANCELLED, the queued ones at once, never started
    size = max(32, (os.cpu_count() or 1) + 4)  # the pool's size for a run with no limits
    n = size + 8
    release = threading.Event()
    started: list[int] = []
    lock = threading.Lock()

    def block(i: int) -> int:
        with lock:
            started.append(i)
        release.wait(10)
        return i

    async def fail() -> None:
        while True:
            with lock:
                if len(started) >= size:
                    break
            await asyncio.sleep(0.01)
        raise ValueError("boom")

    tasks = [Task(block, i, name=f"b{i}") for i in range(n)]
    timer = threading.Timer(0.5, release.set)
    timer.start()
    try:
        run = nborch.run(Parallel(*tasks, Task(fail, name="fail"), fail_fast=True), store=False)
    finally:
        release.set()
        timer.cancel()
    states = run.states
    assert states["fail"] is TaskState.FAILED
    assert {states[f"b{i}"] for i in range(n)} == {TaskState.CANCELLED}
    assert len(started) == size  # the queued ones never started


def test_what_a_sync_task_printed_comes_before_its_success_when_outcomes_come_in_one_batch():
    # Found by CI on 3.12, against a change that settled sync outcomes in the step that delivers
    # them (reverted): a notebook's %%task cell got its value before its display. Two sync tasks
    # end while the loop is busy, so their outcomes reach it in one delivery; the second printed
    # before it ended, and that output must reach subscribers before its SUCCEEDED
    from nborch.core.engine import current_frame
    from nborch.core.eventbus import TaskEvent, TaskOutput

    a_returned = threading.Event()
    holding = threading.Event()  # the loop is blocked (by hold_the_loop)

    def pool_holds(n: int) -> bool:  # outcomes finished and not yet taken by the loop
        pool = current_frame().engine.pool
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with pool._lock:
                if len(pool._done) >= n:
                    return True
            time.sleep(0.001)
        return False

    def a() -> str:
        assert holding.wait(10)  # its outcome must find the loop busy
        a_returned.set()
        return "a"

    def b() -> str:
        assert a_returned.wait(10) and pool_holds(1)  # a's outcome waits for the loop
        print("printed by b")
        return "b"

    async def hold_the_loop() -> bool:  # blocks the loop until both outcomes wait for it
        holding.set()
        return pool_holds(2)

    seen: list[tuple[str, str]] = []

    def on_event(e: object) -> None:
        if isinstance(e, TaskOutput) and e.task == "b":
            seen.append(("output", e.text))
        elif isinstance(e, TaskEvent) and e.task == "b" and e.state is TaskState.SUCCEEDED:
            seen.append(("succeeded", e.result))

    run = nborch.run(nborch.DAG(Task(a, name="a"), Task(b, name="b"), Task(hold_the_loop, name="hold")),
                     store=False, on_event=on_event)
    assert run.ok and run.results["hold"] is True, run.errors
    assert seen[-1] == ("succeeded", "b")
    assert "".join(text for kind, text in seen[:-1]) == "printed by b\n"


def _one_batch(pool, n: int) -> None:
    """Wait (off the loop) until ``n`` outcomes wait in the pool for the loop to take them."""
    wait_until(lambda: len(pool._done) >= n)


def _batch_whose_first_then_raises(pool, n: int, error: BaseException, called: list[int]) -> list:
    """Submit calls returning 0..n-1 whose ``then`` records its index (the first raises
    ``error``), and wait until all n outcomes wait for the loop in one batch."""
    def then(i: int):
        def cb(fut: asyncio.Future) -> None:
            called.append(i)
            if i == 0:
                raise error

        return cb

    futs = [pool.submit_job(contextvars.copy_context(), lambda i=i: i, (), {}, None, then(i)).fut
            for i in range(n)]
    _one_batch(pool, n)  # the loop is not running: all finish before it takes any
    return futs


def test_outcomes_a_then_callback_did_not_reach_are_delivered_after_an_interrupt_in_it():
    # the pool settles a sync task (its then) in the step that delivers its outcome; a
    # KeyboardInterrupt there must not lose the outcomes of the same batch that come after it
    from nborch.core.workers import WorkerPool

    loop = asyncio.new_event_loop()
    try:
        pool = WorkerPool(loop, 3)
        called: list[int] = []
        futs = _batch_whose_first_then_raises(pool, 3, KeyboardInterrupt(), called)
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(asyncio.gather(*futs))
        assert called == [0]
        assert loop.run_until_complete(asyncio.gather(*futs)) == [0, 1, 2]
        assert called == [0, 1, 2]
        pool.shutdown()
    finally:
        loop.close()


def test_a_then_callback_that_raises_is_reported_and_the_rest_of_its_batch_still_delivered():
    from nborch.core.workers import WorkerPool

    loop = asyncio.new_event_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        pool = WorkerPool(loop, 2)
        called: list[int] = []
        futs = _batch_whose_first_then_raises(pool, 2, ValueError("a bug in a callback"), called)
        assert loop.run_until_complete(asyncio.gather(*futs)) == [0, 1]
        assert called == [0, 1]
        assert [type(c["exception"]) for c in reported] == [ValueError]
        pool.shutdown()
    finally:
        loop.close()


def test_a_then_callback_is_not_called_for_a_call_cancelled_while_it_ran():
    from nborch.core.workers import WorkerPool

    loop = asyncio.new_event_loop()
    try:
        pool = WorkerPool(loop, 1)
        release = threading.Event()
        started = threading.Event()
        called: list[object] = []

        def body() -> str:
            started.set()
            assert release.wait(10)
            return "late"

        fut = pool.submit_job(contextvars.copy_context(), body, (), {}, None, called.append).fut
        assert started.wait(10)
        fut.cancel()
        release.set()
        _one_batch(pool, 1)
        loop.run_until_complete(asyncio.sleep(0))  # the batch is taken
        loop.run_until_complete(asyncio.sleep(0))
        assert fut.cancelled() and called == [] and pool._done == []
        pool.shutdown()
    finally:
        loop.close()

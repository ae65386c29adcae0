"""The cyclic GC is paused while a run builds what lives as long as it, and always given back:
whatever fails while a run is set up, and however runs in several threads overlap, the process
is left with the GC as it was before (``nborch.core.gc_pause``). Found at a stop: a run whose
engine failed to be set up (a bad ``clock=``) left the GC off for the rest of the process."""

from __future__ import annotations

import gc
import threading

import pytest

import nborch
from nborch import Task, task
from nborch.core.gc_pause import GcPause


@pytest.fixture(autouse=True)
def gc_on():
    gc.enable()
    yield
    gc.enable()


def one():
    return 1


def test_a_run_that_fails_while_it_is_set_up_leaves_the_gc_on():
    with pytest.raises(AttributeError):
        nborch.run(Task(one), store=False, clock=5)  # not a clock: the engine cannot be made

    assert gc.isenabled()
    assert nborch.run(Task(one), store=False).value == 1 and gc.isenabled()


def test_a_run_in_a_pool_it_does_not_have_leaves_the_gc_on():
    with pytest.raises(nborch.DefinitionError, match="pool"):
        nborch.run(Task(one, pool="gpu"), max_concurrency={"default": 2}, store=False)

    assert gc.isenabled()


def test_a_gc_the_user_turned_off_stays_off():
    gc.disable()

    assert nborch.run(Task(one), store=False).value == 1
    assert not gc.isenabled()


def test_pauses_end_in_any_order_and_each_once():
    first, second = GcPause(), GcPause()
    assert not gc.isenabled()

    first.end()
    first.end()  # again: nothing (else it would end the second's pause too)
    assert not gc.isenabled()

    second.end()
    assert gc.isenabled()


def test_runs_with_maps_in_many_threads_leave_the_gc_on():
    @task
    async def double(x):
        return 2 * x

    errors: list[BaseException] = []

    def runs():
        try:
            for n in range(15):
                run = nborch.run(double.map(range(n * 20)), store=False)
                assert run.value == [2 * i for i in range(n * 20)]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=runs) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)

    assert not errors
    assert gc.isenabled()


@task
async def passthrough(x=0):
    return x


@task
async def count_them(xs):
    return len(xs)


@pytest.mark.parametrize("shape", ["dag", "map", "parallel limit", "children", "stored"])
def test_a_dropped_run_is_freed_at_once_without_the_cyclic_gc(shape, tmp_path):
    # a finished run's bookkeeping (a Spec and an Inv per task, their lists and dicts) is freed
    # by reference counting when its record is dropped, not left in cycles (engine <-> its
    # helpers, a spec <-> its downstream) for a full collection to find some time later
    @task
    async def fanout(n):
        return sum([await passthrough(i) for i in range(n)])

    first = [Task(passthrough, name="t0")]
    for i in range(1, 500):
        first.append(Task(passthrough, first[(i - 1) // 2], name=f"t{i}"))
    node = {
        "dag": nborch.DAG(*first),
        "map": count_them(passthrough.map(passthrough.map(range(500)))),
        "parallel limit": nborch.Parallel(*[passthrough(i) for i in range(500)], limit=3),
        "children": fanout(300),
        "stored": nborch.DAG(*first),
    }[shape]
    store = tmp_path if shape == "stored" else False
    nborch.run(Task(one), store=store)  # a first run: what is made once per process is made
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        record = nborch.run(node, store=store)
        assert record.ok
        del record
        nborch.run(Task(one), store=store)  # nborch.last_run() no longer holds it
        gc.collect()
        kinds: dict[str, int] = {}
        for obj in gc.garbage:
            kinds[type(obj).__name__] = kinds.get(type(obj).__name__, 0) + 1
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert kinds.get("Inv", 0) == 0 and kinds.get("Spec", 0) == 0, kinds
    assert sum(kinds.values()) < 300, kinds  # what a run leaves for the GC does not grow with it


def test_a_kept_record_holds_few_objects_for_the_gc_per_task():
    # what a finished run keeps while its record lives is what every later full collection
    # rescans: per task its Inv, its Spec and the Spec's upstreams. Not the call's arguments
    # (a tuple each), nor the asyncio Task, nor an empty downstream list
    async def add(a=0, b=0):
        return a + b

    tasks = [Task(add, name="t0")]
    for i in range(1, 2000):
        tasks.append(Task(add, tasks[(i - 1) // 2], tasks[i // 3], name=f"t{i}"))
    dag = nborch.DAG(*tasks)
    nborch.run(Task(one), store=False)
    gc.collect()
    before = len(gc.get_objects())
    record = nborch.run(dag, store=False)
    gc.collect()
    kept = len(gc.get_objects()) - before
    assert record.ok and record.results["t1999"] == 0
    assert kept / 2000 < 4, kept  # 3 now (5 before); the margin is for other threads' objects


class Cycle:
    """Cyclic garbage: only the cyclic GC frees it (``ref`` tells when it did)."""

    def __init__(self) -> None:
        self.me = self


def test_garbage_made_before_and_during_a_frozen_run_is_still_collected():
    """A run of FREEZE_AT tasks or more freezes what objects there are out of the GC's sight
    while it runs (``Freezer``). Cyclic garbage its tasks make meanwhile is collected as
    usual, and what was garbage before the run is collected once the run has ended."""
    import weakref

    from nborch import DAG
    from nborch.core.gc_pause import FREEZE_AT

    before = weakref.ref(Cycle())  # garbage already, made before the run
    during: list[weakref.ref[Cycle]] = []
    seen: dict[str, object] = {}

    def make(i: int) -> int:
        during.append(weakref.ref(Cycle()))
        return i

    def check(*values: int) -> int:
        seen["frozen"] = gc.get_freeze_count()
        gc.collect()
        seen["alive"] = sum(r() is not None for r in during)
        return len(values)

    tasks = [Task(make, i, name=f"m{i}") for i in range(FREEZE_AT)]
    start = gc.get_freeze_count()
    run = nborch.run(DAG(*tasks, Task(check, *tasks, name="check")), store=False)
    assert run.ok and run.results["check"] == FREEZE_AT
    assert seen["frozen"] > start  # the run was frozen while the check ran
    assert seen["alive"] == 0  # what the tasks left was collected during the run
    assert gc.get_freeze_count() <= start and gc.isenabled()  # and everything given back after it
    gc.collect()
    assert before() is None

"""DaskExecutor on a real LocalCluster (two worker processes on localhost): same semantics as a
local run, values left on the cluster, nothing left behind on the scheduler."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
import traceback

import pytest

pytest.importorskip("distributed")

import nborch  # noqa: E402
from nborch import (  # noqa: E402
    DAG,
    CircuitBreaker,
    CircuitOpenError,
    DaskExecutor,
    NborchError,
    Remote,
    TaskState,
    TaskTimeoutError,
    task,
)

pytestmark = pytest.mark.timeout(120)


def notebook_function(source: str, name: str):
    """A function defined as a notebook cell defines it: in ``__main__``, picklable by value only."""
    namespace = {"__name__": "__main__"}
    exec(source, namespace)
    return namespace[name]


@pytest.fixture(scope="module")
def dask():
    executor = DaskExecutor(n_workers=2, threads_per_worker=1)
    executor.client  # start the cluster once for the module
    yield executor
    executor.close()


def scheduler_tasks(executor: DaskExecutor) -> dict[str, str]:
    return executor.client.run_on_scheduler(
        lambda dask_scheduler: {str(k): ts.state for k, ts in dask_scheduler.tasks.items()}
    )


def wait_for_empty_scheduler(executor: DaskExecutor, seconds: float = 10.0) -> dict[str, str]:
    """The scheduler's tasks once it has forgotten them all (or whatever is left after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while True:
        gc.collect()  # futures held by garbage cycles would keep their keys alive
        left = scheduler_tasks(executor)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def test_notebook_defined_functions_run_on_dask_workers(dask, recorder):
    square = task(notebook_function("import os\ndef square(x):\n    return x * x, os.getpid()\n", "square"))

    @task
    def total(a, b):
        return a[0] + b[0]

    run = nborch.run(total(square(3), square(4)), executor=dask, store=False, on_event=recorder)

    assert run.ok and run.value == 25
    assert {run.results["square"][1], run.results["square[2]"][1]}.isdisjoint({os.getpid()})
    assert recorder.states("square") == [TaskState.RUNNING, TaskState.SUCCEEDED]
    assert wait_for_empty_scheduler(dask) == {}


def test_dask_keys_group_by_function_like_dask_delayed(dask):
    """The scheduler keeps duration estimates and dashboard groups per key prefix: calls of one
    function share its name as their prefix, whatever the tasks are called."""

    @task
    def grouped_by_function(i):
        return i

    @task
    def gather_all(*xs):
        return sum(xs)

    leaves = [grouped_by_function.with_options(name=f"fanned_leaf{i}")(i) for i in range(5)]
    run = nborch.run(gather_all(*leaves), executor=dask, store=False)

    assert run.value == 10
    prefixes = dask.client.run_on_scheduler(lambda dask_scheduler: set(dask_scheduler.task_prefixes))
    assert {"grouped_by_function", "gather_all"} <= prefixes
    assert not any(p.startswith("fanned_leaf") for p in prefixes)


def test_output_printed_on_a_dask_worker_is_filed_under_its_task(dask, capsys, recorder):
    shout = task(notebook_function(
        "import sys\ndef shout(x):\n    print('hello', x)\n    print('careful', file=sys.stderr)\n"
        "    return x\n", "shout",
    ))

    @task
    def quiet(a, b):  # downstream on Dask too (submitted ahead), printing nothing
        return a + b

    run = nborch.run(quiet(shout(1), shout(2)), executor=dask, store=False, on_event=recorder)

    assert run.value == 3
    assert run.logs == {"shout": "hello 1\ncareful\n", "shout[2]": "hello 2\ncareful\n"}
    out = capsys.readouterr()
    assert "hello 1" in out.out and "careful" in out.err  # passed through, as for threads
    outputs = [e for e in recorder.events if isinstance(e, nborch.TaskOutput)]
    assert {(e.task, e.stream) for e in outputs} >= {("shout", "stdout"), ("shout[2]", "stderr")}
    assert dask._routes == {}  # nothing kept once the tasks are done


def test_in_process_dask_workers_leave_this_processs_streams_alone():
    """A LocalCluster(processes=False) runs its workers as threads here: the notebook's own
    sys.stdout must not be replaced by the worker-side capture."""
    stdout, stderr = sys.stdout, sys.stderr

    @task
    def chatty():
        print("from a worker thread")
        return 1

    with DaskExecutor(processes=False, n_workers=1, threads_per_worker=1) as local:
        run = nborch.run(chatty(), executor=local, store=False)

    assert run.value == 1
    assert sys.stdout is stdout and sys.stderr is stderr


def test_each_retry_is_a_new_submission(dask, tmp_path, recorder):
    marker = tmp_path / "attempts"

    @task(retries=2, retry_delay=0.01)
    def flaky(path):
        with open(path, "a") as f:
            f.write("x")
        if len(open(path).read()) < 3:
            raise ConnectionError("not yet")
        return "ok"

    run = nborch.run(flaky(str(marker)), executor=dask, store=False, on_event=recorder)

    assert run.value == "ok" and run.attempts["flaky"] == 3
    assert marker.read_text() == "xxx"  # the function ran three times: no memoized failure
    assert recorder.states("flaky") == [
        TaskState.RUNNING, TaskState.RETRYING, TaskState.RUNNING, TaskState.RETRYING,
        TaskState.RUNNING, TaskState.SUCCEEDED,
    ]


def test_a_timeout_on_dask_fails_the_task_and_cancels_its_future(dask):
    @task(timeout=0.3)
    def slow():
        time.sleep(1.0)
        return "late"

    run = nborch.run(slow(), executor=dask, store=False)

    assert run.states["slow"] is TaskState.FAILED
    assert isinstance(run.errors["slow"], TaskTimeoutError)
    assert wait_for_empty_scheduler(dask) == {}


def test_a_cancelled_run_leaves_no_futures_on_the_scheduler(dask, recorder):
    @task
    def slow(x):
        time.sleep(1.0)
        return x

    @task
    def after(a, b, c):
        return a + b + c

    async def main():
        job = asyncio.ensure_future(
            nborch.run_async(after(slow(1), slow(2), slow(3)), executor=dask, store=False, on_event=recorder)
        )
        await asyncio.sleep(0.5)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    asyncio.run(main())

    run = nborch.last_run()
    assert set(run.states.values()) == {TaskState.CANCELLED}
    assert len(dask.client.futures) == 0
    assert wait_for_empty_scheduler(dask) == {}


def test_a_failing_remote_task_raises_its_own_type_with_the_remote_traceback(dask):
    boom = task(notebook_function("def boom(x):\n    return {}[x]\n", "boom"))

    with pytest.raises(KeyError) as info:
        boom("missing").run(executor=dask, store=False)

    text = "".join(traceback.format_exception(info.value))
    assert 'File "<string>", line 2, in boom' in text  # the frame that raised, on the worker
    assert "nborch: raised in task 'boom', attempt 1 of 1" in text


class Counted:
    """A value that counts how often it is unpickled in this process."""

    loads = 0

    def __init__(self, data: list[int]) -> None:
        self.data = data

    def __reduce__(self):
        return (_rebuild, (self.data,))


def _rebuild(data: list[int]) -> Counted:
    Counted.loads += 1
    return Counted(data)


def test_an_upstream_value_stays_on_the_cluster_between_dask_tasks(dask):
    keep = DaskExecutor(client=dask.client, gather=False)
    fetched: list[list[Remote]] = []
    original = keep.fetch

    async def spy(remotes):
        fetched.append(list(remotes))
        return await original(remotes)

    keep.fetch = spy

    @task
    def make():
        return Counted(list(range(1000)))

    @task
    def size(make):
        return len(make.data)

    Counted.loads = 0
    run = nborch.run(DAG(make, size), executor=keep, store=False)

    assert run.ok
    assert fetched == []  # `size` got the future itself: Dask moved the value worker to worker
    assert Counted.loads == 0
    assert isinstance(run.results["make"], Remote) and run.results["make"].result().data[-1] == 999
    assert repr(run.results["make"]).startswith("<Remote of make on dask, key make-")
    del run, fetched


def test_values_come_back_once_when_a_local_task_needs_them(dask, recorder):
    @task
    def make():
        return Counted([1, 2, 3])

    @task(executor="thread")
    def local(make):
        return sum(make.data)

    Counted.loads = 0
    run = nborch.run(DAG(make, local), executor=dask, store=False, on_event=recorder)

    assert run.results["local"] == 6
    assert Counted.loads == 1  # fetched for `local`; the record reuses it
    assert run.results["make"].data == [1, 2, 3]
    succeeded = [e for e in recorder.task_events("make") if e.state is TaskState.SUCCEEDED]
    assert isinstance(succeeded[0].result, Remote)  # events do not pull values back


def test_a_local_task_given_a_dask_task_as_its_argument_gets_its_value(dask):
    @task
    def make():
        return Counted([1, 2, 3])

    @task(executor="thread")
    def local(values):  # the upstream passed as an argument, not found by its name
        return sum(values.data)

    made = make()
    keep = DaskExecutor(client=dask.client, gather=False)  # make's value stays on the cluster
    run = nborch.run(DAG(made, local(made)), executor=keep, store=False)

    assert run.ok and run.results["local"] == 6  # fetched from the cluster, not handed a Remote
    assert isinstance(run.results["make"], Remote)


def test_a_cached_dask_task_is_pulled_back_once_to_be_stored(dask, tmp_path):
    calls = tmp_path / "calls"

    @task(cache=True)
    def heavy(x, path):
        with open(path, "a") as f:
            f.write("x")
        return x * 2

    @task(cache=True)
    def plus_one(heavy):
        return heavy + 1

    first = nborch.run(DAG(heavy(20, str(calls)), plus_one), executor=dask, store=tmp_path / "s")
    second = nborch.run(DAG(heavy(20, str(calls)), plus_one), executor=dask, store=tmp_path / "s")

    assert first.value == second.value == {"heavy": 40, "plus_one": 41}
    assert second.cached == {"heavy", "plus_one"}
    assert calls.read_text() == "x"


def test_breakers_and_trigger_rules_work_on_dask(dask):
    breaker = CircuitBreaker(fail_max=1, reset_timeout=60, name="api")

    @task(breaker=breaker)
    def call_api():
        raise ConnectionError("down")

    @task(trigger_rule="one_failed")
    def alert():
        return "paged"

    first = call_api()
    alert_node = alert()
    first >> alert_node

    run = nborch.run(DAG(first, alert_node), executor=dask, store=False)
    again = nborch.run(call_api(), executor=dask, store=False)

    assert run.states == {"call_api": TaskState.FAILED, "alert": TaskState.SUCCEEDED}
    assert run.results["alert"] == "paged"
    assert isinstance(again.errors["call_api"], CircuitOpenError)


def test_a_task_limit_holds_on_dask(dask):
    @task(limit=1)
    def window(i):
        start = time.time()
        time.sleep(0.2)
        return start, time.time()

    run = nborch.run(DAG(*(window(i) for i in range(3))), executor=dask, store=False)

    spans = sorted(run.results.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_a_child_task_called_on_a_dask_worker_raises_a_clear_error(dask):
    @task
    def leaf():
        return 1

    @task(executor=dask)
    def parent():
        return leaf().result

    with pytest.raises(NborchError, match=r"^task 'parent' runs on a Dask worker, .*cannot start child task"):
        parent().run(store=False)


def test_a_thread_parent_may_send_children_to_dask(dask):
    @task(executor=dask)
    def double(x):
        return 2 * x

    @task
    def parent():
        return double(1).result + double(2).result

    assert parent().run(store=False) == 6


def test_an_async_task_stays_on_the_loop_unless_sent_to_dask(dask):
    @task
    async def here():
        return os.getpid()

    @task(executor=dask)
    async def there():
        await asyncio.sleep(0)
        return os.getpid()

    run = nborch.run(DAG(here(), there()), executor=dask, store=False)

    assert run.results["here"] == os.getpid()
    assert run.results["there"] != os.getpid()


def test_the_executor_shows_its_dashboard_link(dask):
    assert dask.dashboard_link.startswith("http://")
    assert dask.dashboard_link in dask._repr_html_()


def test_a_plain_downstream_task_is_submitted_before_its_upstream_ends(dask, recorder):
    submitted: list[tuple[str, list[str]]] = []
    original = dask.submit_remote

    def spy(loop, fn, args, kwargs, task, output=None):
        running = [e.task for e in recorder.task_events() if e.state is TaskState.SUCCEEDED]
        submitted.append((task, running))
        return original(loop, fn, args, kwargs, task, output)

    dask.submit_remote = spy

    @task
    def first():
        time.sleep(0.2)
        return 1

    @task
    def second(first):
        return first + 1

    try:
        run = nborch.run(DAG(first, second), executor=dask, store=False, on_event=recorder)
    finally:
        del dask.submit_remote

    assert run.results == {"first": 1, "second": 2}
    assert submitted == [("first", []), ("second", [])]  # both went to Dask before `first` ended
    assert recorder.states("second") == [TaskState.RUNNING, TaskState.SUCCEEDED]
    first_done = recorder.events.index(next(e for e in recorder.task_events("first") if e.state.is_final))
    second_running = recorder.events.index(recorder.task_events("second")[0])
    assert first_done < second_running  # the states still follow the engine's order


def test_an_early_submission_is_cancelled_when_its_upstream_fails(dask, caplog):
    @task
    def first():
        time.sleep(0.1)
        raise ValueError("bad input")

    @task
    def second(first):
        return "never"

    @task
    def third(second):
        return "never"

    run = nborch.run(DAG(first, second, third), executor=dask, store=False)

    assert run.states == {
        "first": TaskState.FAILED, "second": TaskState.UPSTREAM_FAILED, "third": TaskState.UPSTREAM_FAILED,
    }
    assert wait_for_empty_scheduler(dask) == {}
    gc.collect()
    assert "exception was never retrieved" not in caplog.text


@pytest.mark.timeout(60)
def test_a_dask_task_raising_stop_iteration_fails_with_a_runtime_error_and_the_run_ends(dask):
    def stop():
        raise StopIteration("exhausted")

    run = nborch.run(nborch.task(stop)(), executor=dask, store=False)

    err = run.errors["stop"]
    assert run.states["stop"] is TaskState.FAILED
    assert isinstance(err, RuntimeError) and str(err) == "task raised StopIteration"
    assert isinstance(err.__cause__, StopIteration) and str(err.__cause__) == "exhausted"


def test_the_watchers_of_running_dask_tasks_are_kept_until_they_finish(dask):
    """asyncio holds running tasks only weakly (ruff RUF006): each coroutine that waits for a Dask
    future on the client's loop must be referenced by the executor until it ends."""
    import threading

    release = threading.Event()
    marker_seen = threading.Event()  # the looker saw the watchers

    @task
    def slow():
        time.sleep(1.0)
        return "done"

    def watchers_on_client_loop():
        async def listing():
            return [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "done_callback"]

        loop = dask.client.loop.asyncio_loop
        return asyncio.run_coroutine_threadsafe(listing(), loop).result(timeout=10)

    seen: list[tuple[int, bool]] = []

    def look():
        deadline = time.monotonic() + 10
        while not release.is_set() and time.monotonic() < deadline:
            found = watchers_on_client_loop()
            if found:
                held = getattr(dask, "_watchers", set())
                seen.append((len(found), all(t in held for t in found)))
                marker_seen.set()
                return
            time.sleep(0.02)

    looker = threading.Thread(target=look)
    looker.start()
    run = nborch.run(DAG(slow(), slow()), executor=dask, store=False)
    release.set()
    looker.join()

    assert run.ok and marker_seen.is_set()
    assert seen and seen[0][1], seen  # every watcher is held by the executor while it waits
    deadline = time.monotonic() + 5
    while dask._watchers and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not dask._watchers  # and let go once it is done


def test_dask_executor_without_dask_installed_says_what_to_install(tmp_path):
    import subprocess

    code = (
        "import sys\n"
        "sys.modules['distributed'] = None\n"
        "sys.modules['dask'] = None\n"
        "import nborch\n"
        "try:\n"
        "    nborch.DaskExecutor()\n"
        "except ImportError as err:\n"
        "    print(type(err).__name__, err, sep=': ')\n"
        "else:\n"
        "    print('no error')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        'ImportError: nborch.DaskExecutor needs Dask (dask.distributed), which is not installed here: '
        'pip install "nborch[dask]"'
    )


def test_arguments_that_do_not_pickle_fail_the_dask_task_naming_it(dask):
    import threading

    @task
    def locked(lock):
        return lock

    run = nborch.run(locked(threading.Lock()), executor=dask, store=False)

    with pytest.raises(NborchError, match=(
        r"^task 'locked' cannot be sent to Dask: its function or arguments do not pickle "
        r"\(TypeError: cannot pickle '_thread.lock' object\); run it on threads \(executor='thread'\)"
    )):
        raise run.errors["locked"]


def test_a_downstream_that_cannot_be_sent_to_dask_fails_itself_not_its_upstream(dask):
    import threading

    lock = threading.Lock()

    @task
    def first():
        return 1

    @task
    def second(first):
        return lock  # a global that does not pickle: the function cannot be sent

    run = nborch.run(DAG(first, second), executor=dask, store=False)

    assert run.states == {"first": TaskState.SUCCEEDED, "second": TaskState.FAILED}
    assert run.results["first"] == 1
    assert str(run.errors["second"]).startswith("task 'second' cannot be sent to Dask")


def test_mapping_over_a_value_on_the_cluster_keeps_its_items_there(dask):
    """Only the length of the mapped list comes back to the client: each item's task takes its
    element from the cluster (no element is ever unpickled here until asked for)."""
    keep = DaskExecutor(client=dask.client, gather=False)

    @task
    def make():
        return [Counted([i]) for i in range(6)]

    @task
    def first(item):
        return Counted([item.data[0] * 10])

    @task(executor="thread")
    def total(values):  # a local reduce: it fetches the items' values, not make's list
        return sum(v.data[0] for v in values)

    Counted.loads = 0
    run = nborch.run(total(first.map(make())), executor=keep, store=False)
    assert run.ok and run.value == sum(i * 10 for i in range(6))
    assert Counted.loads == 6  # the six item values, for the reduce; never make's elements
    assert [r.state for r in run.items("first")] == [TaskState.SUCCEEDED] * 6
    assert isinstance(run.results["make"], Remote)


def test_mapping_over_a_remote_value_that_is_not_a_list_fails_the_map_clearly(dask):
    @task
    def make():
        return 42

    @task
    def first(item):
        return item

    run = nborch.run(first.map(make()), executor=dask, store=False)
    assert run.states["first"] is TaskState.FAILED
    assert str(run.errors["first"]).startswith("first.map() ('first'): iterable 1 (the value of 'make') is not iterable (got int)")

"""executor="process" and ProcessExecutor: sync bodies in a process pool, same semantics as threads."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path

import pytest

import nborch
from nborch import DAG, DefinitionError, NborchError, ProcessExecutor, TaskState, TaskTimeoutError, task
from nborch.core.executors import RemoteError, RemoteTraceback


def notebook_function(source: str, name: str):
    """A function defined the way a notebook cell defines one: in ``__main__``, by value only."""
    namespace = {"__name__": "__main__"}
    exec(source, namespace)
    fn = namespace[name]
    assert fn.__module__ == "__main__"
    return fn


@pytest.fixture(scope="module")
def pool():
    executor = ProcessExecutor(max_workers=2)
    yield executor
    executor.shutdown()


def test_notebook_defined_function_runs_in_a_worker_process(pool, recorder):
    square = task(notebook_function("import os\ndef square(x):\n    return x * x, os.getpid()\n", "square"))

    run = nborch.run(square(7), executor=pool, store=False, on_event=recorder)

    value, pid = run.value
    assert run.ok and value == 49
    assert pid != os.getpid()
    assert recorder.states("square") == [TaskState.RUNNING, TaskState.SUCCEEDED]


def test_process_string_uses_the_shared_default_pool():
    @task(executor="process")
    def pid():
        return os.getpid()

    assert pid().run(store=False) != os.getpid()


def test_output_printed_in_a_process_is_filed_under_its_task(pool, capsys):
    shout = task(notebook_function("def shout(x):\n    print('hello', x)\n    return x\n", "shout"))

    run = nborch.run(DAG(shout(1)), executor=pool, store=False)

    assert run.logs == {"shout": "hello 1\n"}
    assert "hello 1" in capsys.readouterr().out  # passed through, whole lines, as for threads


def test_a_failing_process_task_raises_its_own_exception_with_the_remote_traceback(pool):
    boom = task(notebook_function("def boom():\n    raise KeyError('missing')\n", "boom"))

    with pytest.raises(KeyError, match="missing") as info:
        boom().run(executor=pool, store=False)

    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert 'File "<string>", line 2, in boom' in cause.tb
    assert "nborch: raised in task 'boom', attempt 1 of 1" in info.value.__notes__


def test_retries_in_a_process_run_the_function_again(pool, tmp_path):
    marker = tmp_path / "attempts"

    @task(retries=2)
    def flaky(path):
        with open(path, "a") as f:
            f.write("x")
        if len(open(path).read()) < 3:
            raise ConnectionError("try again")
        return "ok"

    run = nborch.run(flaky(str(marker)), executor=pool, store=False)

    assert run.value == "ok" and run.attempts["flaky"] == 3
    assert marker.read_text() == "xxx"


def test_a_timeout_in_a_process_raises_task_timeout_error(pool):
    @task(timeout=0.3)
    def slow():
        time.sleep(1.0)

    run = nborch.run(slow(), executor=pool, store=False)

    assert run.states["slow"] is TaskState.FAILED
    assert isinstance(run.errors["slow"], TaskTimeoutError)


def test_the_run_executor_sends_sync_tasks_only_async_tasks_stay_on_the_loop(pool):
    @task
    def sync_pid():
        return os.getpid()

    @task
    async def async_pid():
        await asyncio.sleep(0)
        return os.getpid()

    run = nborch.run(DAG(sync_pid(), async_pid()), executor=pool, store=False)

    assert run.results["sync_pid"] != os.getpid()
    assert run.results["async_pid"] == os.getpid()


def test_a_task_level_executor_sends_an_async_task_to_a_process(pool):
    @task(executor=pool)
    async def async_pid():
        await asyncio.sleep(0)
        return os.getpid()

    assert async_pid().run(store=False) != os.getpid()


def test_a_child_task_called_inside_a_process_task_raises_a_clear_error(pool):
    @task
    def leaf(n):
        return n

    @task(executor=pool)
    def parent():
        return leaf(1).result

    with pytest.raises(NborchError, match=r"^task 'parent' runs on a process pool .*cannot start child task"):
        parent().run(store=False)


def test_a_thread_parent_may_send_its_children_to_a_process(pool):
    @task(executor=pool)
    def fib(n):
        return n if n < 2 else fib_local(n - 1) + fib_local(n - 2)

    def fib_local(n):
        return n if n < 2 else fib_local(n - 1) + fib_local(n - 2)

    @task
    def parent(n):
        return fib(n - 1).result + fib(n - 2).result

    run = nborch.run(parent(12), store=False, max_concurrency=1)

    assert run.value == 144
    assert run.parents == {"fib": "parent", "fib[2]": "parent"}


@pytest.mark.parametrize("where", ["task", "run"])
def test_an_unknown_executor_is_refused_before_anything_runs(where):
    message = r"executor= expects 'thread', 'process' or an executor such as nborch.DaskExecutor\(\), got 'gpu'"
    with pytest.raises(DefinitionError, match=message):
        if where == "task":
            task(executor="gpu")(lambda: 1)
        else:
            nborch.run(task(lambda: 1)(), executor="gpu", store=False)


def test_cached_values_from_a_process_are_reused(pool, tmp_path):
    calls = tmp_path / "calls"

    @task(cache=True)
    def heavy(x, path):
        with open(path, "a") as f:
            f.write("x")
        return x * 2

    first = nborch.run(heavy(21, str(calls)), executor=pool, store=tmp_path / "store")
    second = nborch.run(heavy(21, str(calls)), executor=pool, store=tmp_path / "store")

    assert first.value == second.value == 42
    assert second.cached == {"heavy"}
    assert calls.read_text() == "x"


def notebook_functions(source: str) -> dict:
    """Everything ``source`` defines, as a notebook cell defines it (``__main__``, by value)."""
    namespace = {"__name__": "__main__"}
    exec(source, namespace)
    return namespace


HTTP_ERROR = """
class HTTPError(Exception):  # as in many HTTP libraries: two required arguments
    def __init__(self, url, status):
        super().__init__(f"{url} returned {status}")
        self.url, self.status = url, status
"""


@pytest.mark.timeout(60)
def test_an_exception_that_cannot_be_unpickled_fails_the_task_naming_its_type_message_and_traceback(pool):
    ns = notebook_functions(HTTP_ERROR + "def fetch():\n    raise HTTPError('https://example.com/api', 503)")

    run = nborch.run(task(ns["fetch"])(), executor=pool, store=False)

    assert run.states["fetch"] is TaskState.FAILED
    err = run.errors["fetch"]
    assert isinstance(err, RemoteError)
    assert str(err) == "HTTPError: https://example.com/api returned 503"
    assert (err.type_name, err.message) == ("HTTPError", "https://example.com/api returned 503")
    text = "".join(traceback.format_exception(err))
    assert 'File "<string>", line 7, in fetch' in text  # the remote traceback, where it was raised
    assert "could not be unpickled here (TypeError: HTTPError.__init__() missing 1 required" in text
    again = pickle.loads(pickle.dumps(err))  # the stand-in itself travels (a cache, another process)
    assert (str(again), again.type_name, again.__notes__) == (str(err), err.type_name, err.__notes__)


@pytest.mark.timeout(60)
def test_an_exception_that_cannot_be_pickled_fails_the_task_naming_its_type_and_message(pool):
    ns = notebook_functions(
        "import threading\n"
        "class Locked(Exception):\n    pass\n"
        "def hold():\n    raise Locked('held', threading.Lock())\n"
    )

    run = nborch.run(task(ns["hold"])(), executor=pool, store=False)

    err = run.errors["hold"]
    assert isinstance(err, RemoteError) and err.type_name == "Locked"
    assert str(err).startswith("Locked: ('held', <unlocked _thread.lock object at ")
    assert "cannot pickle '_thread.lock' object" in "".join(traceback.format_exception(err))


@pytest.mark.timeout(60)
def test_a_value_that_cannot_be_unpickled_here_fails_the_task_and_the_run_ends(pool):
    ns = notebook_functions(
        "import os\n"
        "def explode(pid):\n"
        "    if os.getpid() != pid:\n"
        "        raise RuntimeError('only rebuilt where it was made')\n"
        "class Unloadable:\n"
        "    def __reduce__(self):\n"
        "        return explode, (os.getpid(),)\n"
        "def make():\n    return Unloadable()\n"
    )

    run = nborch.run(task(ns["make"])(), executor=pool, store=False)

    assert run.states["make"] is TaskState.FAILED
    with pytest.raises(NborchError, match=(
        r"^task 'make' returned a value of type Unloadable that cannot be unpickled here: "
        r"RuntimeError: only rebuilt where it was made"
    )):
        raise run.errors["make"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["thread", "process"])
def test_a_sync_task_raising_stop_iteration_fails_with_a_runtime_error(where, pool):
    def stop():
        raise StopIteration("exhausted")

    run = nborch.run(task(stop)(), executor=pool if where == "process" else "thread", store=False)

    err = run.errors["stop"]
    assert run.states["stop"] is TaskState.FAILED
    assert isinstance(err, RuntimeError) and str(err) == "task raised StopIteration"
    assert isinstance(err.__cause__, StopIteration) and str(err.__cause__) == "exhausted"


@pytest.mark.timeout(60)
def test_arguments_that_do_not_pickle_fail_the_task_naming_it(pool):
    import threading

    @task
    def locked(lock):
        return lock

    run = nborch.run(locked(threading.Lock()), executor=pool, store=False)

    with pytest.raises(NborchError, match=(
        r"^task 'locked' cannot be sent to a process pool: its function or arguments do not pickle "
        r"\(TypeError: cannot pickle '_thread.lock' object\); run it on threads \(executor='thread'\)"
    )):
        raise run.errors["locked"]


def processes_in_group(pgid: int) -> dict[int, str]:
    """The live processes of process group ``pgid`` (pid: command line), read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        state, _ppid, group = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(group) == pgid and state != "Z":  # a zombie has exited: only its parent's reaping is left
            found[int(entry.name)] = cmdline.strip()
    return found


KILLED_SCRIPT = """
import pathlib, sys, time
import nborch
from nborch import Parallel, ProcessExecutor, task

@task
def wait_long(marker):
    pathlib.Path(marker).write_text("started")
    time.sleep(600)

if __name__ == "__main__":
    method, *markers = sys.argv[1:]
    pool = ProcessExecutor(max_workers=len(markers), start_method=method)
    nborch.run(Parallel(*(wait_long(m) for m in markers)), executor=pool, store=False)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the processes through /proc")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_no_forkserver_or_pool_process_outlives_a_killed_script(method, tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_SCRIPT)
    markers = [tmp_path / "started.1", tmp_path / "started.2"]
    # a session of its own: the script's children (forkserver, pool workers, resource tracker)
    # share its process group, and keep it when they are orphaned by the kill
    proc = subprocess.Popen(
        [sys.executable, str(script), method, *map(str, markers)], cwd=tmp_path, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not all(m.exists() for m in markers):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the pool never started the tasks"
            time.sleep(0.05)
        children = {pid: cmd for pid, cmd in processes_in_group(proc.pid).items() if pid != proc.pid}
        assert len(children) >= 2, children  # two workers (and the forkserver, the resource tracker)

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        while (left := processes_in_group(proc.pid)) and time.monotonic() < killed + 15:
            time.sleep(0.05)
        print(f"{method}: {len(children)} processes gone {time.monotonic() - killed:.2f}s after the kill")

        assert left == {}, f"still alive after the script was killed: {left}"
    finally:
        for pid in processes_in_group(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.stderr.close()

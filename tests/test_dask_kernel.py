"""Interrupting an awaited run in a real Jupyter kernel (Dask, and threads and a process pool for
comparison): the run cancels within a second, the kernel stays usable, and the LocalCluster
nborch started never sees the interrupt, repeated in one kernel session.

jupyter_client interrupts a kernel by sending SIGINT to its whole process group, which the worker
processes of a LocalCluster (children of the kernel) belong to. ipykernel turns the SIGINT into a
cancel of the awaited cell with a callback that does not wake a sleeping loop; the interrupt comes
here when the loop has nothing else to do, to show that nborch wakes it."""

from __future__ import annotations

import json
import queue
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")
pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.timeout(300)


class Kernel:
    """A real IPython kernel driven through jupyter_client."""

    def __init__(self, cwd: Path) -> None:
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def execute(self, code: str, interrupt_when=None, timeout: float = 60) -> dict:
        """Run a cell: its output, its error (name, value), when the interrupt was sent and when
        the cell ended (``time.monotonic()``, the clock nborch's events use too)."""
        msg_id = self.kc.execute(textwrap.dedent(code))
        deadline = time.monotonic() + timeout
        out: list[str] = []
        error = interrupted_at = None
        while True:
            if interrupt_when is not None and interrupted_at is None and interrupt_when():
                interrupted_at = time.monotonic()
                self.km.interrupt_kernel()
            if time.monotonic() > deadline:
                raise TimeoutError(f"cell did not finish in {timeout}s: {code[:80]!r}; output {out!r}")
            try:
                msg = self.kc.get_iopub_msg(timeout=0.02)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                error = (content["ename"], content["evalue"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
        ended_at = time.monotonic()
        while self.kc.get_shell_msg(timeout=10)["parent_header"].get("msg_id") != msg_id:
            pass
        return {"out": "".join(out), "error": error, "interrupted_at": interrupted_at, "ended_at": ended_at}

    def value(self, code: str, timeout: float = 60) -> object:
        """The JSON a cell prints last (the cell must not fail)."""
        result = self.execute(code, timeout=timeout)
        assert result["error"] is None, result
        return json.loads(result["out"].strip().splitlines()[-1])

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


SETUP = """
import asyncio, json, os, pathlib, signal, time
import nborch
from nborch import DaskExecutor, Parallel, RunEvent, TaskState, task

CWD = pathlib.Path.cwd()
dx = DaskExecutor(n_workers=2, threads_per_worker=1)

@task
def slow(i, mark):
    pathlib.Path(mark).write_text("started")
    time.sleep(4)
    return i

@task
def double(x):
    return 2 * x

def workflow(mark, n=4):
    return Parallel(*(slow(i, mark) for i in range(n)))

executors = {"dask": dx, "thread": "thread", "process": nborch.ProcessExecutor(max_workers=3)}

@task
def pid():
    time.sleep(0.5)  # three at once: one on each worker
    return os.getpid()

def pool_pids():  # the process pool's three workers, started now if they are not yet
    return sorted(set(nborch.run(Parallel(pid(), pid(), pid()), executor=executors["process"], store=False).value))

def record_sigint():  # in each worker's main thread: a SIGINT that gets there leaves a file
    def handler(signum, frame):
        (CWD / f"sigint.{os.getpid()}").write_text("received")
        signal.default_int_handler(signum, frame)  # and does what it would have done
    signal.signal(signal.SIGINT, handler)
    return os.getpid()

print(json.dumps(await Parallel(double(1), double(2)).run_async(executor=dx)))
workers = dx.client.run(record_sigint)
print(json.dumps([sorted(workers.values()), pool_pids()]))
"""


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("dask-kernel")
    k = Kernel(cwd)
    try:
        result = k.execute(SETUP, timeout=120)
        assert result["error"] is None, result
        k.cwd = cwd
        k.workers, k.pool = json.loads(result["out"].strip().splitlines()[-1])
        assert len(k.pool) == 3, k.pool
        yield k
    finally:
        try:
            k.execute("dx.close(); executors['process'].shutdown()", timeout=60)
        finally:
            k.close()


def started_a_while_ago(mark: Path, quiet: float = 0.3):
    """True once ``mark`` has existed for ``quiet`` seconds: by then the kernel's loop has
    nothing left to do but wait for the tasks (no event, no timer would wake it up)."""
    seen: list[float] = []

    def check() -> bool:
        if not seen and mark.exists():
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= quiet

    return check


@pytest.mark.parametrize(
    ("attempt", "where"), [(1, "dask"), (2, "dask"), (3, "dask"), (4, "thread"), (5, "process"), (6, "dask")],
)
def test_interrupting_an_awaited_run_cancels_it_and_leaves_the_kernel_and_its_workers_usable(
    kernel, attempt, where
):
    mark = kernel.cwd / f"started.{attempt}"
    n = 1 if where == "process" else 4  # the pool's other two workers are idle when SIGINT comes
    result = kernel.execute(
        f"seen = []\nawait workflow({str(mark)!r}, {n}).run_async(executor=executors[{where!r}],"
        " store=False, on_event=seen.append)",
        interrupt_when=started_a_while_ago(mark), timeout=60,
    )

    assert result["error"] is not None, result
    assert result["error"][0] in ("CancelledError", "KeyboardInterrupt"), result
    ended = kernel.value(
        "print(json.dumps([e.time for e in seen\n"
        "                  if isinstance(e, RunEvent) and e.state is TaskState.CANCELLED]))"
    )
    assert len(ended) == 1 and ended[0] - result["interrupted_at"] < 1.0  # the run cancelled within 1 s
    assert result["ended_at"] - result["interrupted_at"] < 3.0  # and the cell ended soon after
    states = kernel.value("print(json.dumps(sorted({s.value for s in nborch.last_run().states.values()})))")
    assert states == ["cancelled"]
    # the kernel runs the next cell, and a new Dask run works on the same workers
    again = kernel.value("print(json.dumps(await Parallel(double(3), double(4)).run_async(executor=dx)))")
    assert again == [6, 8]
    assert kernel.value("print(json.dumps(sorted(dx.client.run(os.getpid).values())))") == kernel.workers
    assert sorted(p.name for p in kernel.cwd.glob("sigint.*")) == []  # no worker ever got the SIGINT
    # nor did the process pool's: the same workers still run tasks (one may still be busy with a
    # cancelled task; a worker that died would have been replaced by a new process)
    assert set(kernel.value("print(json.dumps(pool_pids()))")) <= set(kernel.pool)

"""Interrupting an awaited Dask run in a real Jupyter kernel: the run cancels within a second, the
kernel stays usable, and the LocalCluster nborch started never sees the interrupt.

jupyter_client interrupts a kernel by sending SIGINT to its whole process group, which the worker
processes of a LocalCluster (children of the kernel) belong to."""

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
    time.sleep(2)
    return i

@task
def double(x):
    return 2 * x

def workflow(mark):
    return Parallel(*(slow(i, mark) for i in range(4)))

def record_sigint():  # in each worker's main thread: a SIGINT that gets there leaves a file
    def handler(signum, frame):
        (CWD / f"sigint.{os.getpid()}").write_text("received")
        signal.default_int_handler(signum, frame)  # and does what it would have done
    signal.signal(signal.SIGINT, handler)
    return os.getpid()

print(json.dumps(await Parallel(double(1), double(2)).run_async(executor=dx)))
workers = dx.client.run(record_sigint)
print(json.dumps(sorted(workers.values())))
"""


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("dask-kernel")
    k = Kernel(cwd)
    try:
        result = k.execute(SETUP, timeout=120)
        assert result["error"] is None, result
        k.cwd = cwd
        k.workers = json.loads(result["out"].strip().splitlines()[-1])
        yield k
    finally:
        try:
            k.execute("dx.close()", timeout=60)
        finally:
            k.close()


@pytest.mark.parametrize("attempt", range(4))
def test_interrupting_an_awaited_dask_run_cancels_it_and_leaves_kernel_and_cluster_usable(kernel, attempt):
    mark = kernel.cwd / f"started.{attempt}"
    result = kernel.execute(
        f"seen = []\nawait workflow({str(mark)!r}).run_async(executor=dx, on_event=seen.append)",
        interrupt_when=mark.exists, timeout=60,
    )

    assert result["error"] is not None, result
    assert result["error"][0] in ("CancelledError", "KeyboardInterrupt"), result
    ended = kernel.value(
        "print(json.dumps([e.time for e in seen\n"
        "                  if isinstance(e, RunEvent) and e.state is TaskState.CANCELLED]))"
    )
    assert len(ended) == 1 and ended[0] - result["interrupted_at"] < 1.0  # the run cancelled within 1 s
    assert result["ended_at"] - result["interrupted_at"] < 5.0  # and the cell ended soon after
    states = kernel.value("print(json.dumps(sorted({s.value for s in nborch.last_run().states.values()})))")
    assert states == ["cancelled"]
    # the kernel runs the next cell, and a new Dask run works on the same workers
    again = kernel.value("print(json.dumps(await Parallel(double(3), double(4)).run_async(executor=dx)))")
    assert again == [6, 8]
    assert kernel.value("print(json.dumps(sorted(dx.client.run(os.getpid).values())))") == kernel.workers
    assert sorted(p.name for p in kernel.cwd.glob("sigint.*")) == []  # no worker ever got the SIGINT

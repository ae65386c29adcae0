"""Point 17: run() and run_async() work anywhere, and stopping a run stops it cleanly.

Scripts and nest_asyncio run in subprocesses (the patch must not leak into other tests);
kernel interrupts are sent to a real Jupyter kernel through jupyter_client.
"""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import nborch
from nborch import Parallel, RunEvent, Sequence, TaskEvent, TaskState, task

pytestmark = pytest.mark.timeout(60)

S = TaskState


@task
def double(x):
    return x * 2


@task
async def adouble(x):
    await asyncio.sleep(0)
    return x * 2


def run_script(code: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    script = cwd / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def last_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line in output: {stdout!r}"
    return json.loads(lines[-1])


# -- a script ------------------------------------------------------------------------------------


def test_run_works_in_a_plain_script(tmp_path):
    proc = run_script(
        """
        import asyncio, json
        import nborch
        from nborch import Sequence, Parallel, task

        @task
        def fetch(x):
            return x + 1

        @task
        async def process(value):
            await asyncio.sleep(0)
            return value * 10

        value = Sequence(fetch(1), process()).run()
        record = nborch.run(Parallel(fetch(1), fetch(2)))
        print(json.dumps({"value": value, "ok": record.ok, "parallel": record.value}))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert last_json(proc.stdout) == {"value": [2, 20], "ok": True, "parallel": [2, 3]}


def test_ctrl_c_during_run_in_a_script_cancels_the_run_and_the_next_run_works(tmp_path):
    script = tmp_path / "ctrl_c.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, json, time
            import nborch
            from nborch import Sequence, task

            cleanup, later = [], []

            @task
            async def forever():
                try:
                    print("started", flush=True)
                    await asyncio.Event().wait()
                finally:
                    cleanup.append("forever")

            @task
            def after():
                later.append(1)

            try:
                Sequence(forever(), after()).run()
                outcome = "returned"
            except KeyboardInterrupt:
                outcome = "KeyboardInterrupt"
            caught_at = time.monotonic()  # CLOCK_MONOTONIC: comparable with the test's clock
            states = {k: v.value for k, v in nborch.last_run().states.items()}
            again = nborch.run(after()).ok
            print(json.dumps({"outcome": outcome, "cleanup": cleanup, "later": len(later),
                              "states": states, "again": again, "caught_at": caught_at}), flush=True)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "started"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    result = last_json(out)
    assert result["outcome"] == "KeyboardInterrupt"
    assert result["cleanup"] == ["forever"]
    assert result["later"] == 1  # only the next run's call: the cancelled run never started it
    assert result["states"] == {"forever": "cancelled", "after": "cancelled"}
    assert result["again"] is True
    assert result["caught_at"] - sent < 1.5


def test_one_ctrl_c_stops_a_blocking_run_made_inside_asyncio_run(tmp_path):
    """asyncio.run's SIGINT handler only cancels the main task, which is stuck in nborch's
    wait; one Ctrl-C must still cancel the run and reach the script."""
    script = tmp_path / "inner.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, json, time
            import nborch
            from nborch import task

            cleanup = []

            @task
            async def forever():
                try:
                    print("started", flush=True)
                    await asyncio.Event().wait()
                finally:
                    cleanup.append("forever")

            async def main():
                return forever().run()  # blocking, inside a running loop: a worker-thread loop

            try:
                asyncio.run(main())
                outcome = "returned"
            except KeyboardInterrupt:
                outcome = "KeyboardInterrupt"
            caught_at = time.monotonic()
            print(json.dumps({"outcome": outcome, "cleanup": cleanup, "caught_at": caught_at,
                              "states": {k: v.value for k, v in nborch.last_run().states.items()}}),
                  flush=True)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "started"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)  # once
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = last_json(out)
    assert result["outcome"] == "KeyboardInterrupt", err
    assert result["cleanup"] == ["forever"]
    assert result["states"] == {"forever": "cancelled"}
    assert result["caught_at"] - sent < 1.5


# -- inside a running event loop -----------------------------------------------------------------


def test_run_inside_a_running_loop_without_nest_asyncio():
    async def cell():
        loop = asyncio.get_running_loop()
        assert not getattr(loop, "_nest_patched", False)
        value = Sequence(double(1), adouble(2)).run()
        record = nborch.run(Parallel(double(3), adouble(4)))
        return value, record.ok, record.value

    assert asyncio.run(cell()) == ([2, 4], True, [6, 8])


def test_run_inside_a_running_loop_raises_the_tasks_own_exception():
    @task
    def broken():
        raise LookupError("no such row")

    async def cell():
        with pytest.raises(LookupError, match="^no such row"):
            broken().run()
        return "survived"

    assert asyncio.run(cell()) == "survived"


def test_run_inside_a_running_loop_keeps_the_callers_contextvars():
    import contextvars

    user = contextvars.ContextVar("user", default="nobody")

    @task
    def whoami():
        return user.get()

    async def cell():
        user.set("ann")
        return whoami().run()

    assert asyncio.run(cell()) == "ann"


@pytest.mark.parametrize("module", ["nest_asyncio", "nest_asyncio2"])
def test_run_works_after_nest_asyncio_is_applied(tmp_path, module):
    pytest.importorskip(module)
    proc = run_script(
        f"""
        import asyncio, json
        import {module} as nest
        import nborch
        from nborch import Sequence, Parallel, task

        @task
        def double(x):
            return x * 2

        @task
        async def adouble(x):
            await asyncio.sleep(0)
            return x * 2

        nest.apply()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)

        async def cell():
            a = Sequence(double(1), adouble(2)).run()
            b = nborch.run(Parallel(double(3), adouble(4))).value
            c = await adouble(5).run_async()
            return [a, b, c]

        inside = loop.run_until_complete(cell())
        outside = Parallel(double(6), adouble(7)).run()
        print(json.dumps({{"inside": inside, "outside": outside}}))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert last_json(proc.stdout) == {"inside": [[2, 4], [6, 8], 10], "outside": [12, 14]}


def test_interrupting_a_blocking_run_inside_a_running_loop_cancels_it(tmp_path):
    """What a kernel interrupt does to `node.run()` in a cell, simulated with interrupt_main()."""
    proc = run_script(
        """
        import _thread, asyncio, json, threading, time
        import nborch
        from nborch import Sequence, task

        started, cleanup, later, ticks = threading.Event(), [], [], []

        @task
        async def forever():
            try:
                started.set()
                while True:
                    await asyncio.sleep(0.01)
                    ticks.append(1)
            finally:
                cleanup.append("forever")

        @task
        def after():
            later.append(1)

        def interrupter():
            started.wait(10)
            time.sleep(0.05)
            _thread.interrupt_main()

        async def cell():
            threading.Thread(target=interrupter, daemon=True).start()
            try:
                Sequence(forever(), after()).run()
                return "returned"
            except KeyboardInterrupt:
                return "KeyboardInterrupt"

        loop = asyncio.new_event_loop()  # like a kernel's loop: no SIGINT handler of asyncio's
        outcome = loop.run_until_complete(cell())
        n = len(ticks)
        time.sleep(0.3)
        states = {k: v.value for k, v in nborch.last_run().states.items()}

        async def next_cell():
            return Sequence(after(), after()).run()

        again = loop.run_until_complete(next_cell())
        print(json.dumps({"outcome": outcome, "cleanup": cleanup, "growth": len(ticks) - n,
                          "states": states, "later": len(later), "again": again}))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = last_json(proc.stdout)
    assert result["outcome"] == "KeyboardInterrupt"
    assert result["cleanup"] == ["forever"]
    assert result["growth"] == 0
    assert result["states"] == {"forever": "cancelled", "after": "cancelled"}
    assert result["later"] == 2  # both from the next run
    assert result["again"] == [None, None]


# -- run_async -----------------------------------------------------------------------------------


def test_run_async_awaited_returns_the_value():
    async def cell():
        a = await Sequence(double(1), adouble(2)).run_async()
        b = await Parallel(double(3), adouble(4))
        record = await nborch.run_async(Parallel(double(5), adouble(6)))
        return a, b, record.value, record.ok

    assert asyncio.run(cell()) == ([2, 4], [6, 8], [10, 12], True)


def test_run_async_runs_on_the_callers_loop():
    @task
    async def which_loop():
        return asyncio.get_running_loop()

    async def cell():
        return await which_loop().run_async() is asyncio.get_running_loop()

    assert asyncio.run(cell()) is True


# -- cancelling the awaiting coroutine -----------------------------------------------------------


@dataclass
class Stopped:
    elapsed: float
    record: nborch.Run
    seen: list[object]


def cancel_after_start(
    make_workflow, runner: str = "nborch.run_async", settle_loops: int = 20, on_stopped=None
) -> Stopped:
    """Start the workflow, cancel the awaiting coroutine once ``running`` is set, time it."""
    seen: list[object] = []

    async def main():
        running = asyncio.Event()
        wf = make_workflow(running)
        if runner == "nborch.run_async":
            job = asyncio.create_task(nborch.run_async(wf, on_event=seen.append))
        elif runner == "run_async":
            job = asyncio.create_task(wf.run_async(on_event=seen.append))
        else:

            async def await_node():
                return await wf

            job = asyncio.create_task(await_node())
        await asyncio.wait_for(running.wait(), 5)
        t0 = time.monotonic()
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        elapsed = time.monotonic() - t0
        if on_stopped is not None:
            on_stopped()
        for _ in range(settle_loops):  # give stray work a chance to show up
            await asyncio.sleep(0.001)
        return elapsed

    elapsed = asyncio.run(main())
    return Stopped(elapsed, nborch.last_run(), seen)


@pytest.mark.parametrize("runner", ["nborch.run_async", "run_async", "await"])
def test_cancelling_the_awaiting_coroutine_cancels_the_run_within_a_second(runner):
    cleanup: list[str] = []
    started: list[str] = []

    def make(running: asyncio.Event):
        @task
        async def slow(i):
            started.append(f"slow{i}")
            try:
                running.set()
                await asyncio.Event().wait()
            finally:
                cleanup.append(f"slow{i}")

        @task
        async def after():
            started.append("after")

        return Sequence(Parallel(slow(1), slow(2), slow(3), limit=2), after())

    stopped = cancel_after_start(make, runner)

    assert stopped.elapsed < 1.0
    assert sorted(started) == ["slow1", "slow2"]  # the third never started, nor did `after`
    assert sorted(cleanup) == ["slow1", "slow2"]  # running tasks got CancelledError, finally ran
    states = stopped.record.states
    assert {name: states[name] for name in ("slow", "slow[2]", "slow[3]")} == {
        "slow": S.CANCELLED, "slow[2]": S.CANCELLED, "slow[3]": S.CANCELLED,
    }
    assert states["after"].is_final and states["after"] is not S.SUCCEEDED
    assert stopped.record.cancelled
    assert not stopped.record.ok


def test_pending_task_downstream_of_a_pending_task_ends_cancelled():
    def make(running: asyncio.Event):
        @task
        async def slow(i):
            running.set()
            await asyncio.Event().wait()

        @task
        async def after():
            return "never"

        return Sequence(Parallel(slow(1), slow(2), limit=1), after())

    stopped = cancel_after_start(make)

    assert stopped.record.states == {"slow": S.CANCELLED, "slow[2]": S.CANCELLED, "after": S.CANCELLED}
    cancelled = {e.task for e in stopped.seen if isinstance(e, TaskEvent) and e.state is S.CANCELLED}
    assert cancelled == {"slow", "slow[2]", "after"}


def test_cancelled_run_publishes_cancelled_events_for_running_and_pending_tasks():
    def make(running: asyncio.Event):
        @task
        async def slow():
            running.set()
            await asyncio.Event().wait()

        @task
        def pending():
            return "never"

        return Sequence(slow(), pending())

    stopped = cancel_after_start(make)

    cancelled = {e.task for e in stopped.seen if isinstance(e, TaskEvent) and e.state is S.CANCELLED}
    assert cancelled == {"slow", "pending"}
    assert [e.state for e in stopped.seen if isinstance(e, RunEvent)] == [S.RUNNING, S.CANCELLED]


def test_cancelled_run_starts_no_new_work():
    started: list[int] = []

    def make(running: asyncio.Event):
        @task
        async def step(i):
            started.append(i)
            if i == 0:
                running.set()
                await asyncio.Event().wait()
            return i

        return Sequence(*(step(i) for i in range(5)))

    cancel_after_start(make, settle_loops=50)
    assert started == [0]


def test_the_next_run_works_after_a_cancelled_run():
    def make(running: asyncio.Event):
        @task
        async def slow():
            running.set()
            await asyncio.sleep(30)

        return slow()

    cancel_after_start(make)

    assert Sequence(double(1), adouble(2)).run() == [2, 4]

    async def cell():
        return await Parallel(double(3), adouble(4)).run_async()

    assert asyncio.run(cell()) == [6, 8]


def test_a_task_that_ignores_cancellation_is_recorded_cancelled_and_the_run_still_stops():
    give_up = threading.Event()

    def make(running: asyncio.Event):
        @task
        async def stubborn():
            running.set()
            until = time.monotonic() + 10
            while time.monotonic() < until and not give_up.is_set():  # swallows every CancelledError
                try:
                    await asyncio.sleep(0.01)
                except asyncio.CancelledError:
                    pass
            return "ignored the cancel"

        return stubborn()

    stopped = cancel_after_start(make, on_stopped=give_up.set)
    assert stopped.elapsed < 1.8  # about one second of grace, not the task's ten
    assert stopped.record.states["stubborn"] is S.CANCELLED
    assert "stubborn" not in stopped.record.results


def test_blocked_sync_task_is_abandoned_as_cancelled_within_a_second():
    release = threading.Event()
    finished = threading.Event()

    def make(running: asyncio.Event):
        loop = asyncio.get_running_loop()

        @task
        def blocked():
            loop.call_soon_threadsafe(running.set)
            release.wait(10)
            finished.set()
            return "late"

        return blocked()

    try:
        stopped = cancel_after_start(make)
        assert stopped.elapsed < 1.0
        assert stopped.record.states["blocked"] is S.CANCELLED
        assert "blocked" not in stopped.record.results
        assert not finished.is_set()
    finally:
        release.set()
        assert finished.wait(5)


def test_sync_task_polling_nborch_cancelled_stops_early():
    stopped_polling = threading.Event()
    polls: list[int] = []

    def make(running: asyncio.Event):
        loop = asyncio.get_running_loop()

        @task
        def careful():
            loop.call_soon_threadsafe(running.set)
            try:
                for i in range(10_000):
                    if nborch.cancelled():
                        return "stopped early"
                    polls.append(i)
                    time.sleep(0.005)
                return "ran to the end"
            finally:
                stopped_polling.set()

        return careful()

    stopped = cancel_after_start(make)

    assert stopped_polling.wait(2), "the task kept polling after the run was cancelled"
    assert len(polls) < 1000
    n = len(polls)
    time.sleep(0.05)
    assert len(polls) == n
    assert stopped.record.states["careful"] is S.CANCELLED


def test_cancelled_is_false_outside_tasks_and_in_a_task_that_was_not_cancelled():
    @task
    def sync_probe():
        return nborch.cancelled()

    @task
    async def async_probe():
        return nborch.cancelled()

    assert nborch.cancelled() is False
    assert Parallel(sync_probe(), async_probe()).run() == [False, False]


# -- a real Jupyter kernel -----------------------------------------------------------------------


@dataclass
class CellResult:
    stdout: str
    error: tuple[str, str] | None
    interrupted_at: float | None
    finished_at: float

    @property
    def stopped_after(self) -> float:
        assert self.interrupted_at is not None
        return self.finished_at - self.interrupted_at

    def json(self) -> dict:
        return last_json(self.stdout)

    def last_value(self) -> object:
        return json.loads(self.stdout.strip().splitlines()[-1])


class Kernel:
    """A real IPython kernel driven through jupyter_client."""

    def __init__(self, cwd: Path) -> None:
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def execute(self, code: str, interrupt_when=None, timeout: float = 30) -> CellResult:
        msg_id = self.kc.execute(textwrap.dedent(code))
        deadline = time.monotonic() + timeout
        out: list[str] = []
        error = None
        interrupted_at = None
        while True:
            if interrupt_when is not None and interrupted_at is None and interrupt_when():
                self.km.interrupt_kernel()
                interrupted_at = time.monotonic()
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
        finished_at = time.monotonic()
        while True:  # drain the matching execute_reply
            reply = self.kc.get_shell_msg(timeout=10)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        return CellResult("".join(out), error, interrupted_at, finished_at)

    def check(self, code: str) -> CellResult:
        result = self.execute(code)
        assert result.error is None, f"{result.error}\n{result.stdout}"
        return result

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


KERNEL_SETUP = """
import asyncio, json, pathlib, time
import nborch
from nborch import Parallel, Sequence, TaskEvent, TaskState, task

MARK = pathlib.Path({mark!r})
ticks, sync_ticks, cleanup, later_ran, seen = [], [], [], [], []

@task
async def ticker():
    try:
        MARK.write_text("started")
        while True:
            await asyncio.sleep(0.01)
            ticks.append(1)
    finally:
        cleanup.append("async finally")

@task
def sync_ticker():
    try:
        while not nborch.cancelled():
            time.sleep(0.01)
            sync_ticks.append(1)
    finally:
        cleanup.append("sync finally")

@task
def later():
    later_ran.append(1)

@task
def double(x):
    return x * 2

wf = Sequence(Parallel(ticker(), sync_ticker()), later())

def reset():
    for xs in (ticks, sync_ticks, cleanup, later_ran, seen):
        xs.clear()
    MARK.unlink(missing_ok=True)
"""

KERNEL_REPORT = """
n_async, n_sync = len(ticks), len(sync_ticks)
time.sleep(0.3)
print(json.dumps({
    "async_growth": len(ticks) - n_async,
    "sync_growth": len(sync_ticks) - n_sync,
    "cleanup": sorted(cleanup),
    "later_ran": len(later_ran),
    "states": {k: v.value for k, v in nborch.last_run().states.items()},
    "cancelled_events": sorted(
        e.task for e in seen if isinstance(e, TaskEvent) and e.state is TaskState.CANCELLED
    ),
}))
"""

STOPPED = {
    "async_growth": 0,
    "sync_growth": 0,
    "cleanup": ["async finally", "sync finally"],
    "later_ran": 0,
    "states": {"ticker": "cancelled", "sync_ticker": "cancelled", "later": "cancelled"},
    "cancelled_events": ["later", "sync_ticker", "ticker"],
}


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    pytest.importorskip("jupyter_client")
    pytest.importorskip("ipykernel")
    cwd = tmp_path_factory.mktemp("kernel")
    k = Kernel(cwd)
    try:
        k.check(KERNEL_SETUP.format(mark=str(cwd / "started.mark")))
        k.mark = cwd / "started.mark"
        yield k
    finally:
        k.close()


@pytest.mark.timeout(120)
def test_run_in_a_kernel_cell_works_without_nest_asyncio(kernel):
    result = kernel.check(
        """
        loop = asyncio.get_running_loop()  # a kernel cell runs inside the kernel's loop
        print(json.dumps({"patched": getattr(loop, "_nest_patched", False),
                          "value": Sequence(double(1), double(2)).run()}))
        """
    )
    assert result.json() == {"patched": False, "value": [2, 4]}


@pytest.mark.timeout(120)
def test_kernel_interrupt_during_blocking_run_stops_the_run(kernel):
    kernel.check("reset()")
    result = kernel.execute("wf.run(on_event=seen.append)", interrupt_when=kernel.mark.exists, timeout=30)

    assert result.error is not None and result.error[0] == "KeyboardInterrupt", result
    assert result.stopped_after < 3.0
    assert kernel.check(KERNEL_REPORT).json() == STOPPED
    again = kernel.check("print(json.dumps(Sequence(double(1), double(2)).run()))")
    assert again.last_value() == [2, 4]


@pytest.mark.timeout(240)
def test_an_interrupt_reaches_the_cell_only_after_the_run_has_settled_every_time(kernel):
    """KeyboardInterrupt must reach the cell after every task settled: last_run() is the
    interrupted run, its loop thread is gone and the sync task's cleanup ran (an interrupted
    Thread.join can mark a live thread finished: python/cpython#90882). 25 interrupts in one
    kernel session (a Python 3.12.1 kernel once crashed in the GC after a few of them)."""
    kernel.check("import threading")
    for attempt in range(25):
        kernel.check("reset(); run_ids = []")
        result = kernel.execute(
            """
            try:
                wf.run(on_event=lambda e: (seen.append(e), run_ids.append(getattr(e, "run_id", None))))
                at = "returned"
            except KeyboardInterrupt:
                last = nborch.last_run()
                at = {"loop_thread": any(t.name == "nborch-loop" for t in threading.enumerate()),
                      "last_is_this_run": last is not None and last.id == run_ids[0],
                      "settled": last is not None and all(s.is_final for s in last.states.values()),
                      "cleanup": sorted(cleanup)}
            """,
            interrupt_when=kernel.mark.exists, timeout=30,
        )
        assert result.error is None, (attempt, result)
        at = kernel.check("print(json.dumps(at))").json()
        assert at == {"loop_thread": False, "last_is_this_run": True, "settled": True,
                      "cleanup": ["async finally", "sync finally"]}, attempt
    assert kernel.check("print(json.dumps(Sequence(double(1), double(2)).run()))").last_value() == [2, 4]


@pytest.mark.timeout(120)
def test_kernel_interrupt_during_top_level_await_stops_the_run(kernel):
    kernel.check("reset()")
    result = kernel.execute(
        "await wf.run_async(on_event=seen.append)", interrupt_when=kernel.mark.exists, timeout=30
    )

    assert result.error is not None, result
    assert result.error[0] in ("KeyboardInterrupt", "CancelledError"), result
    assert result.stopped_after < 3.0
    assert kernel.check(KERNEL_REPORT).json() == STOPPED
    again = kernel.check("print(json.dumps(await Parallel(double(3), double(4)).run_async()))")
    assert again.last_value() == [6, 8]


@pytest.mark.timeout(120)
def test_kernel_interrupt_during_blocking_run_with_nest_asyncio_applied(tmp_path):
    pytest.importorskip("jupyter_client")
    pytest.importorskip("nest_asyncio")
    k = Kernel(tmp_path)
    try:
        k.check(KERNEL_SETUP.format(mark=str(tmp_path / "started.mark")))
        k.check("import nest_asyncio; nest_asyncio.apply()")
        k.check("reset()")
        result = k.execute("wf.run(on_event=seen.append)", interrupt_when=(tmp_path / "started.mark").exists)

        assert result.error is not None and result.error[0] == "KeyboardInterrupt", result
        assert result.stopped_after < 3.0
        assert k.check(KERNEL_REPORT).json() == STOPPED
        again = k.check("print(json.dumps(Sequence(double(1), double(2)).run()))")
        assert again.last_value() == [2, 4]
    finally:
        k.close()


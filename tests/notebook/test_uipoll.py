"""The live display's Cancel button during a blocking run, in a real kernel (jupyter_client).

The client does what a front end does: it learns the Cancel button's comm id from the widget
messages on IOPub (the comm whose ``_dom_classes`` has ``nborch-cancel``, the class the display
documents for styling and tests), and sends the comm_msg that ipywidgets 8 sends for a click
(``{"method": "custom", "content": {"event": "click"}}``) while the cell blocks in a run.
Execute requests sent while the cell was blocked must run once each, after it, in order.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")

SETUP = """
%load_ext nborch
import asyncio, json, pathlib, time
import nborch
from nborch import DAG, task
from nborch.runtime.runner import _wait_hooks

MARK = pathlib.Path({mark!r})
order, cleanup, after_ran = [], [], []

@task
async def slow():
    MARK.write_text("started")
    try:
        await asyncio.sleep(20)
    finally:
        cleanup.append("slow")

@task
def sync_slow():
    try:
        for _ in range(2000):  # 20 s, unless cancelled
            if nborch.cancelled():
                break
            time.sleep(0.01)
    finally:
        cleanup.append("sync_slow")

@task
def after(slow, sync_slow):
    after_ran.append(1)

@task
def double(x):
    return 2 * x

dag = DAG(slow, sync_slow, after)

def reset():
    MARK.unlink(missing_ok=True)
    for xs in (order, cleanup, after_ran):
        xs.clear()

def report():
    run = nborch.last_run()
    print(json.dumps({{"order": order, "cleanup": sorted(cleanup), "after_ran": len(after_ran),
                      "states": {{k: v.value for k, v in run.states.items()}},
                      "finished": run.finished}}))
"""

BLOCKING_CELL = """
reset()
try:
    dag.run()
except BaseException as exc:
    print("cell saw", type(exc).__name__)
    order.append("cell")
    raise
"""


class Client:
    """A jupyter_client connection that files every message by its parent, as a front end does.

    One thread only (ZMQ sockets are not thread-safe): ``wait`` reads while it waits."""

    def __init__(self, cwd: Path) -> None:
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.by_parent: dict[str, list[tuple[float, dict]]] = {}
        self.classes: dict[str, list[str]] = {}  # comm id -> _dom_classes, as a front end knows it
        self.replies: dict[str, list[dict]] = {}

    def _read(self) -> None:
        for channel, get in (("iopub", self.kc.get_iopub_msg), ("shell", self.kc.get_shell_msg)):
            while True:
                try:
                    msg = get(timeout=0.005)
                except queue.Empty:
                    break
                parent = msg["parent_header"].get("msg_id")
                if channel == "shell":
                    self.replies.setdefault(parent, []).append(msg)
                    continue
                self.by_parent.setdefault(parent, []).append((time.time(), msg))
                if msg["msg_type"] in ("comm_open", "comm_msg"):
                    state = msg["content"].get("data", {}).get("state", {})
                    if "_dom_classes" in state:
                        self.classes[msg["content"]["comm_id"]] = state["_dom_classes"]

    def send(self, code: str, stop_on_error: bool = True) -> str:
        return self.kc.execute(textwrap.dedent(code), stop_on_error=stop_on_error)

    def messages(self, msg_id: str) -> list[dict]:
        return [m for _, m in self.by_parent.get(msg_id, [])]

    def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._read()
            if condition():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(what)

    def idle_at(self, msg_id: str) -> float | None:
        for at, m in self.by_parent.get(msg_id, []):
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                return at
        return None

    def wait_idle(self, msg_id: str, timeout: float = 60) -> float:
        self.wait(lambda: self.idle_at(msg_id) is not None and msg_id in self.replies, timeout,
                  f"request {msg_id} did not finish in {timeout}s")
        return self.idle_at(msg_id)  # type: ignore[return-value]

    def run(self, code: str, timeout: float = 60) -> str:
        msg_id = self.send(code)
        self.wait_idle(msg_id, timeout)
        errors = [m["content"] for m in self.messages(msg_id) if m["msg_type"] == "error"]
        assert not errors, f"{errors[0]['ename']}: {errors[0]['evalue']}\n{self.stdout(msg_id)}"
        return self.stdout(msg_id)

    def stdout(self, msg_id: str) -> str:
        return "".join(m["content"]["text"] for m in self.messages(msg_id) if m["msg_type"] == "stream")

    def error(self, msg_id: str) -> str | None:
        names = [m["content"]["ename"] for m in self.messages(msg_id) if m["msg_type"] == "error"]
        return names[0] if names else None

    def cancel_button(self, after: int) -> str:
        """The comm id of the newest Cancel button, once more than ``after`` were seen."""
        self.wait(lambda: len(self._buttons()) > after, 30, "no Cancel button appeared")
        return self._buttons()[-1]

    def _buttons(self) -> list[str]:
        return [cid for cid, classes in self.classes.items() if "nborch-cancel" in classes]

    def click(self, comm_id: str) -> tuple[str, float]:
        """Send what ipywidgets 8 sends for a click on a Button; (msg id, wall time sent)."""
        msg = self.kc.session.msg("comm_msg", {
            "comm_id": comm_id, "data": {"method": "custom", "content": {"event": "click"}},
        })
        at = time.time()
        self.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"], at

    def click_until_idle(self, cell: str, comm_id: str, most: int, every: float) -> list[str]:
        """Click ``comm_id`` every ``every`` s while ``cell`` runs (at most ``most`` clicks), wait
        for the cell to end and for every click to be handled; the clicks' message ids."""
        clicks = []
        while self.idle_at(cell) is None and len(clicks) < most:
            clicks.append(self.click(comm_id)[0])
            deadline = time.monotonic() + every
            while time.monotonic() < deadline:
                self._read()
        self.wait_idle(cell, timeout=60)
        for click in clicks:
            self.wait(lambda c=click: "click handler" in self.stdout(c), 10, "a click was not handled")
        return clicks

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("uipoll")
    c = Client(cwd)
    try:
        c.mark = cwd / "started.mark"
        c.run(SETUP.format(mark=str(c.mark)))
        yield c
    finally:
        c.close()


def report(client: Client) -> dict:
    return json.loads(client.run("report()").strip().splitlines()[-1])


@pytest.mark.timeout(120)
def test_the_pump_is_installed_and_a_blocking_run_says_it_polls_the_ui(client):
    out = client.run(
        """
        seen_handles = []
        unregister = nborch.register_display(lambda h: seen_handles.append((h.blocking, h.polls_ui)))
        try:
            DAG(double(1)).run()
        finally:
            unregister()
        print(json.dumps([[type(h).__name__ for h in _wait_hooks], seen_handles]))
        """
    )
    assert json.loads(out.strip().splitlines()[-1]) == [["WidgetPump"], [["thread", True]]]


@pytest.mark.timeout(120)
def test_cancel_button_cancels_a_blocking_run_and_held_requests_run_once_after_it_in_order(client):
    buttons = len(client._buttons())
    cell = client.send(BLOCKING_CELL, stop_on_error=False)  # the requests queued behind it run
    button = client.cancel_button(after=buttons)
    client.wait(client.mark.exists, 30, "the slow task did not start")
    before = client.send("order.append('before click')")
    click, clicked_at = client.click(button)
    later = client.send("order.append('after click')")

    idle = client.wait_idle(cell, timeout=30)
    for msg_id in (before, later):
        client.wait_idle(msg_id, timeout=30)

    assert client.error(cell) == "CancelledError"
    assert idle - clicked_at < 3.0, "the cell went on after the click"
    rep = report(client)
    assert rep["finished"] - clicked_at < 1.0, "the run settled more than 1 s after the click"
    assert rep["states"] == {"slow": "cancelled", "sync_slow": "cancelled", "after": "cancelled"}
    assert rep["cleanup"] == ["slow", "sync_slow"] and rep["after_ran"] == 0
    # held requests: each handled once, after the cell, in the order sent
    assert rep["order"] == ["cell", "before click", "after click"]
    assert [r["content"]["status"] for r in client.replies[before]] == ["ok"]
    assert [r["content"]["status"] for r in client.replies[later]] == ["ok"]
    counts = [client.replies[m][0]["content"]["execution_count"] for m in (cell, before, later)]
    assert counts == sorted(counts) and len(set(counts)) == 3
    # parents: the cell's output stays the cell's, the button's replies answer the click
    assert "cell saw CancelledError" in client.stdout(cell)
    answered = [m["content"]["data"]["state"] for m in client.messages(click) if m["msg_type"] == "comm_msg"]
    assert {"disabled": True} in answered, answered
    assert not [m for m in client.messages(click) if m["msg_type"] in ("stream", "status")]


@pytest.mark.timeout(120)
def test_the_next_run_after_a_button_cancel_works(client):
    out = client.run("print(json.dumps(DAG(double(1), double(2)).run()))")
    assert json.loads(out.strip().splitlines()[-1]) == {"double": 2, "double[2]": 4}


@pytest.mark.timeout(120)
def test_cancel_button_cancels_orch_run_of_a_task_cell(client):
    client.run(
        """
        %%task slow_cell
        MARK.write_text("started")
        try:
            for _ in range(2000):
                if nborch.cancelled():
                    break
                time.sleep(0.01)
        finally:
            cleanup.append("slow_cell")
        1
        """
    )
    client.run("%%task after_cell\nafter_ran.append(slow_cell)")
    client.run("reset()")
    buttons = len(client._buttons())
    cell = client.send("%orch run after_cell")
    button = client.cancel_button(after=buttons)
    client.wait(client.mark.exists, 30, "the task cell did not start")
    _, clicked_at = client.click(button)
    queued = client.send("order.append('queued')")  # Run All: what follows a failed cell is aborted
    client.wait_idle(cell, timeout=30)
    client.wait_idle(queued, timeout=30)

    assert client.error(cell) == "CancelledError"
    rep = report(client)
    assert rep["finished"] - clicked_at < 1.0
    assert rep["states"] == {"slow_cell": "cancelled", "after_cell": "cancelled"}
    assert rep["cleanup"] == ["slow_cell"] and rep["after_ran"] == 0
    assert [r["content"]["status"] for r in client.replies[queued]] == ["aborted"]
    assert rep["order"] == []
    assert client.run("print(json.dumps(DAG(double(3)).run()))").strip().endswith('{"double": 6}')


@pytest.mark.timeout(120)
def test_the_pump_does_nothing_outside_the_kernels_main_thread(client):
    out = client.run(
        """
        import threading
        from nborch.notebook.uipoll import find_pump
        box = {}
        def probe():
            box["found"] = find_pump(get_ipython()) is not None
            box["pumps"] = _wait_hooks[0]()
        t = threading.Thread(target=probe); t.start(); t.join()
        print(json.dumps([box["found"], box["pumps"], _wait_hooks[0]()]))
        """
    )
    assert json.loads(out.strip().splitlines()[-1]) == [False, False, True]


def test_no_pump_in_an_in_process_kernel(tmp_path):
    """ipykernel's in-process kernel delivers messages by calls, with no socket to read: no
    pump, so a blocking run there says it does not poll the UI (the button is disabled)."""
    script = tmp_path / "inprocess.py"
    script.write_text(textwrap.dedent(
        """
        import json
        from ipykernel.inprocess.manager import InProcessKernelManager
        from nborch.notebook.uipoll import find_pump
        km = InProcessKernelManager()
        km.start_kernel()
        shell = km.kernel.shell
        shell.run_line_magic("load_ext", "nborch")
        from nborch.runtime.runner import _wait_hooks
        print(json.dumps([find_pump(shell) is None, len(_wait_hooks)]))
        km.shutdown_kernel()
        """
    ))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, 0]


def test_no_pump_in_a_terminal_ipython():
    from IPython.core.interactiveshell import InteractiveShell

    from nborch.notebook.extension import load_ipython_extension, unload_ipython_extension
    from nborch.notebook.uipoll import WidgetPump, find_pump
    from nborch.runtime.runner import _wait_hooks

    shell = InteractiveShell.instance()
    load_ipython_extension(shell)
    try:
        assert find_pump(shell) is None
        assert not [h for h in _wait_hooks if isinstance(h, WidgetPump)]
    finally:
        unload_ipython_extension(shell)


@pytest.mark.timeout(120)
def test_output_keeps_its_cell_while_widget_messages_are_handled(client):
    """Task output and a plain thread's prints stay the cell's; a click handler's print is
    the click's (ipykernel 7 gives a thread without the cell's context the global parent, which
    set_parent flips while a handler runs)."""
    client.run(
        """
        import threading, ipywidgets
        probe = ipywidgets.Button()
        probe.add_class("uipoll-probe")
        probe.on_click(lambda _b: print("click handler"))

        @task
        def chatty():
            for i in range(1500):
                print("task line", i)
                time.sleep(0.001)

        def plain():
            for i in range(1500):
                print("thread line", i)
                time.sleep(0.001)
        """
    )
    probe = next(cid for cid, classes in client.classes.items() if "uipoll-probe" in classes)
    cell = client.send(
        """
        th = threading.Thread(target=plain)
        th.start()
        DAG(chatty).run(capture=False, display=False)
        th.join()
        """
    )
    clicks = client.click_until_idle(cell, probe, most=40, every=0.03)

    in_cell = client.stdout(cell)
    assert in_cell.count("task line") == 1500 and in_cell.count("thread line") == 1500
    assert "click handler" not in in_cell
    handled = [c for c in clicks if client.stdout(c) == "click handler\n"]
    assert len(handled) == len(clicks) > 10


@pytest.mark.timeout(120)
def test_a_plain_threads_print_while_a_click_handler_runs_stays_the_cells(client):
    """ipykernel 7 files output from a thread without the cell's context under a process-wide
    parent, which set_parent changes while a click handler runs: a plain thread's print that
    lands inside the handler must still go to the cell (it went to the click: 1 line in 1,500
    in a CI run). Here the handler waits until the thread has printed, so the two overlap."""
    client.run(
        """
        import threading, ipywidgets
        gate, printed = threading.Event(), threading.Event()

        def plain():
            gate.wait(60)  # until a click handler runs
            print("thread line inside the handler", flush=True)
            printed.set()

        def on_click(_b):
            gate.set()
            printed.wait(10)  # the thread prints while this handler runs
            print("click handler")

        overlap = ipywidgets.Button()
        overlap.add_class("uipoll-overlap")
        overlap.on_click(on_click)

        @task
        def waiting():
            for _ in range(3000):
                if printed.is_set():
                    return "printed"
                time.sleep(0.01)
        """
    )
    probe = next(cid for cid, classes in client.classes.items() if "uipoll-overlap" in classes)
    cell = client.send(
        """
        th = threading.Thread(target=plain)
        th.start()
        print(DAG(waiting).run(capture=False, display=False))
        th.join()
        """
    )
    # a click sent before the run started waits for the cell's end: click on until it is over
    clicks = client.click_until_idle(cell, probe, most=200, every=0.05)

    assert "thread line inside the handler" in client.stdout(cell)
    assert "printed" in client.stdout(cell)  # the run saw it while it went on
    assert all(client.stdout(c) == "click handler\n" for c in clicks)


@pytest.mark.xfail(
    strict=False,
    reason="KNOWN BUG (open): on a starved 2-core machine (4 copies of this test at once: 1 in 4 "
    "fails), a Stop sent while clicks flood the pump is sometimes not seen within 20 s, or the "
    "kernel's next request does not finish; it passes alone and in most full runs",
)
@pytest.mark.timeout(180)
def test_stop_still_stops_a_blocking_run_while_widget_messages_flow_and_none_is_lost(client):
    """The kernel's Stop (SIGINT) lands while the pump is busy with a stream of clicks: the cell
    gets KeyboardInterrupt once the run has settled, and every click is handled exactly once
    (during the run, or after the cell)."""
    client.run(
        """
        import ipywidgets
        counted = ipywidgets.Button()
        counted.add_class("uipoll-counted")
        counted_clicks = []
        counted.on_click(lambda _b: counted_clicks.append(1))
        """
    )
    probe = next(cid for cid, classes in client.classes.items() if "uipoll-counted" in classes)
    sent = 0
    for attempt in range(5):
        cell = client.send(BLOCKING_CELL)
        client.wait(client.mark.exists, 30, "the slow task did not start")
        started = time.monotonic()
        interrupted = False
        while client.idle_at(cell) is None:
            client.click(probe)
            sent += 1
            if not interrupted and time.monotonic() - started > 0.3 + 0.05 * attempt:
                client.km.interrupt_kernel()
                interrupted = True
            client._read()
            if time.monotonic() - started > 20:
                raise TimeoutError("the interrupt did not stop the run")
        client.wait_idle(cell, timeout=30)
        assert client.error(cell) == "KeyboardInterrupt", attempt
        rep = report(client)
        assert rep["states"] == {"slow": "cancelled", "sync_slow": "cancelled", "after": "cancelled"}
        assert rep["cleanup"] == ["slow", "sync_slow"]
    out = client.run("print(len(counted_clicks))")
    assert int(out.strip()) == sent

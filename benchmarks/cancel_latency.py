"""Cancel latency of a blocking run in a real kernel: the display's Cancel button, clicked over
the wire as a front end clicks it (ipywidgets 8's comm_msg), while a cell blocks in ``dag.run()``.

    python benchmarks/cancel_latency.py               # 10 tries of each task kind
    python benchmarks/cancel_latency.py --tries 20

Each try runs ``dag.run()`` of a 20 s task (``await asyncio.sleep(20)``, or a sync loop that polls
``nborch.cancelled()``) with ``%load_ext nborch``'s live display, waits until the task has
started, sends the click, and measures (wall clock, one machine): click -> the run's record is
finished (every task settled), click -> ``dag.run()`` raised in the cell, click -> the cell's idle
status reached the client (this includes IPython formatting the CancelledError traceback).
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

SETUP = """
%load_ext nborch
import asyncio, json, pathlib, time
import nborch
from nborch import DAG, task
MARK = pathlib.Path({mark!r})

@task
async def async_slow():
    MARK.write_text("1")
    await asyncio.sleep(20)

@task
def sync_slow():
    MARK.write_text("1")
    for _ in range(2000):
        if nborch.cancelled():
            return
        time.sleep(0.01)

def attempt(node):
    MARK.unlink(missing_ok=True)
    global raised_at
    try:
        DAG(node).run()
    except BaseException:
        raised_at = time.time()
        raise
"""


class Client:
    def __init__(self, cwd: str) -> None:
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.cancel_buttons: list[str] = []
        self.msgs: dict[str, list[tuple[float, dict]]] = {}

    def read(self, timeout: float = 0.005) -> None:
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=timeout)
            except queue.Empty:
                return
            self.msgs.setdefault(msg["parent_header"].get("msg_id"), []).append((time.time(), msg))
            state = msg["content"].get("data", {}).get("state", {}) if msg["msg_type"] == "comm_msg" else {}
            if "nborch-cancel" in state.get("_dom_classes", []):
                self.cancel_buttons.append(msg["content"]["comm_id"])

    def idle_at(self, msg_id: str) -> float | None:
        for at, m in self.msgs.get(msg_id, []):
            if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                return at
        return None

    def run(self, code: str) -> str:
        msg_id = self.kc.execute(textwrap.dedent(code))
        while self.idle_at(msg_id) is None:
            self.read()
        return "".join(m["content"]["text"] for _, m in self.msgs[msg_id] if m["msg_type"] == "stream")

    def click(self, comm_id: str) -> float:
        msg = self.kc.session.msg("comm_msg", {
            "comm_id": comm_id, "data": {"method": "custom", "content": {"event": "click"}}})
        at = time.time()
        self.kc.shell_channel.send(msg)
        return at

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def one_try(c: Client, mark: Path, kind: str) -> tuple[float, float, float]:
    seen = len(c.cancel_buttons)
    cell = c.kc.execute(f"attempt({kind}())")
    deadline = time.monotonic() + 30
    while len(c.cancel_buttons) == seen or not mark.exists():
        c.read()
        if time.monotonic() > deadline:
            raise TimeoutError("the run did not start")
    time.sleep(0.3)  # well inside the task
    clicked = c.click(c.cancel_buttons[-1])
    while c.idle_at(cell) is None:
        c.read()
        if time.time() - clicked > 30:
            raise TimeoutError("the click did not cancel the run")
    idle = c.idle_at(cell)
    out = c.run("run = nborch.last_run(); print(json.dumps([run.finished, raised_at, "
                "sorted({s.value for s in run.states.values()})]))")
    finished, raised, states = json.loads(out.strip().splitlines()[-1])
    assert states == ["cancelled"], states
    return finished - clicked, raised - clicked, idle - clicked  # type: ignore[operator]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tries", type=int, default=10)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mark = Path(tmp) / "started"
        c = Client(tmp)
        try:
            c.run(SETUP.format(mark=str(mark)))
            print(c.run("import ipykernel; print('ipykernel', ipykernel.__version__)").strip())
            for kind in ("async_slow", "sync_slow"):
                rows = [one_try(c, mark, kind) for _ in range(args.tries)]
                print(f"{kind} (20 s task), {args.tries} tries: click -> ... min / median / max, ms")
                for i, what in enumerate(("run settled", "dag.run() raised", "cell idle at client")):
                    xs = [r[i] * 1e3 for r in rows]
                    print(f"  {what:22s} {min(xs):7.1f} {statistics.median(xs):7.1f} {max(xs):7.1f}")
        finally:
            c.close()


if __name__ == "__main__":
    main()

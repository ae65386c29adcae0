"""The live display in a real Jupyter kernel (jupyter_client): what a front end receives.

A blocking ``dag.run()`` in a cell shows the widget (with a starting snapshot beside it), keeps
a running task's time ticking over the comm, then replaces the output by the final snapshot
(update_display_data) and closes its comm channels; a quick run shows its final snapshot only.
nbclient stores that final snapshot, the way ``.ci/execute-notebooks`` saves the examples.
"""

from __future__ import annotations

import os
import queue
import re
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("ipykernel")
pytest.importorskip("jupyter_client")
pytest.importorskip("ipywidgets")

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


class Kernel:
    def __init__(self, cwd: Path) -> None:
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd), env={**os.environ, "NBORCH_HOME": str(cwd / ".nborch")})
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def execute(self, code: str, timeout: float = 60) -> list[tuple[float, dict]]:
        """Every iopub message the cell caused, with its arrival time (seconds after sending)."""
        msg_id = self.kc.execute(textwrap.dedent(code))
        t0 = time.monotonic()
        msgs = []
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(t0 + timeout - time.monotonic(), 0.01))
            except queue.Empty:
                raise TimeoutError(f"cell did not finish: {code[:60]!r}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            msgs.append((time.monotonic() - t0, msg))
            if msg["msg_type"] == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return msgs

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    k = Kernel(tmp_path_factory.mktemp("kernel"))
    k.execute("""
        %load_ext nborch
        import time, nborch
        from nborch import DAG, task

        @task
        def slow():
            time.sleep(2.6)
            return 1

        @task
        def after(slow):
            return slow + 1

        @task
        def quick():
            return 1
    """)
    yield k
    k.close()


def of(msgs, kind):
    return [(t, m["content"]) for t, m in msgs if m["msg_type"] == kind]


def test_a_blocking_run_shows_the_widget_ticks_then_leaves_the_final_snapshot(kernel):
    msgs = kernel.execute("DAG(slow, after).run()")

    (_, first), = of(msgs, "display_data")
    assert set(first["data"]) == {WIDGET_VIEW, "text/html", "text/plain"}
    assert first["data"]["text/html"].startswith("<!-- nborch-snapshot -->")
    display_id = first["transient"]["display_id"]
    (_, last), = of(msgs, "update_display_data")
    assert last["transient"]["display_id"] == display_id
    assert set(last["data"]) == {"text/html", "text/plain"}  # no widget left to lose
    final = last["data"]["text/html"]
    assert final.count("class='nborch-state st-succeeded'") >= 2 and "2/2 tasks settled" in final
    assert last["data"]["text/plain"].startswith("nborch run ")

    opened = {c["comm_id"] for _, c in of(msgs, "comm_open")}
    closed = {c["comm_id"] for _, c in of(msgs, "comm_close")}
    assert 0 < len(opened) <= 10 and closed == opened  # every channel freed at the end
    # while `slow` ran, its time so far reached the front end again and again
    shown = [re.search(r"data-task='slow'>.*?<td class='nborch-duration'>([^<]*)<", c["data"]["state"]["value"])
             for _, c in of(msgs, "comm_msg") if "value" in c["data"].get("state", {})]
    ticks = [m.group(1) for m in shown if m and re.fullmatch(r"\d+\.\ds", m.group(1))]
    assert len(set(ticks)) >= 2, ticks


def test_the_cancel_button_of_a_blocking_run_says_how_to_cancel_it(kernel):
    msgs = kernel.execute("""
        import nborch.runtime.runner
        hooks = bool(nborch.runtime.runner._wait_hooks)
        DAG(slow, after).run()
    """)
    buttons = [c["data"]["state"] for _, c in of(msgs, "comm_open")
               if c["data"]["state"].get("_model_name") == "ButtonModel"]
    (button,) = buttons
    hooked = kernel.execute("print(hooks)")
    polled = of(hooked, "stream")[0][1]["text"].strip() == "True"
    # no hook keeps the UI alive while the cell blocks: the button cannot be clicked and says so
    assert button["disabled"] is (not polled)
    assert button["description"] == ("Cancel" if polled else "Cancel: interrupt the kernel (■)")


def test_a_quick_run_shows_its_final_snapshot_alone(kernel):
    msgs = kernel.execute("quick().run()")

    (_, shown), = of(msgs, "display_data")
    assert set(shown["data"]) == {"text/html", "text/plain"}
    assert "1/1 tasks settled" in shown["data"]["text/html"]
    assert not of(msgs, "comm_open") and not of(msgs, "update_display_data")


def test_an_awaited_run_shows_the_same(kernel):
    msgs = kernel.execute("await DAG(slow, after).run_async()")

    (_, first), = of(msgs, "display_data")
    (_, last), = of(msgs, "update_display_data")
    assert WIDGET_VIEW in first["data"] and set(last["data"]) == {"text/html", "text/plain"}
    buttons = [c["data"]["state"] for _, c in of(msgs, "comm_open")
               if c["data"]["state"].get("_model_name") == "ButtonModel"]
    assert buttons[0]["disabled"] is False and buttons[0]["description"] == "Cancel"


def test_nbclient_stores_the_final_snapshot(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext nborch\nimport time\nfrom nborch import task"),
        nbformat.v4.new_code_cell("@task\ndef nap():\n    time.sleep(0.6)\n\nnap().run()"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    os.environ.setdefault("NBORCH_HOME", str(tmp_path / ".nborch"))
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()

    (output,) = [o for o in nb.cells[1].outputs if o.output_type == "display_data"]
    assert set(output.data) == {"text/html", "text/plain"}  # the widget view was replaced
    assert "1/1 tasks settled" in output.data["text/html"]

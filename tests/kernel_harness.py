"""A real IPython kernel driven through jupyter_client, for tests that need one.

``Kernel(cwd)`` starts a kernel of this environment; ``execute(code)`` runs one cell and collects
what a front end would show: the streams, the rich outputs' ``text/plain`` and the error.
``execute(code, cell_id="c1")`` sends the cell id in the execute_request's metadata, as
JupyterLab and Notebook 7 do (``kc.execute`` sends none); ``interrupt_when=`` interrupts the
kernel once a predicate holds, as the kernel's Stop button does.
"""

from __future__ import annotations

import json
import queue
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class CellResult:
    """What one cell showed: ``stdout`` (and stderr), rich outputs' text, the error if any."""

    stdout: str
    error: tuple[str, str] | None
    interrupted_at: float | None
    finished_at: float
    stderr: str = ""
    outputs: list[str] = field(default_factory=list)  # text/plain of execute_result / display_data

    @property
    def text(self) -> str:
        """Everything the cell showed as text: its streams, then its rich outputs."""
        rich = (o if o.endswith("\n") else o + "\n" for o in self.outputs)
        return "".join([self.stdout, self.stderr, *rich])

    @property
    def stopped_after(self) -> float:
        assert self.interrupted_at is not None
        return self.finished_at - self.interrupted_at

    def json(self) -> Any:
        """The last line of stdout, read as JSON."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"no output to read as JSON: {self.stdout!r}"
        return json.loads(lines[-1])


class Kernel:
    """A real IPython kernel driven through jupyter_client."""

    def __init__(self, cwd: Path, startup_timeout: float = 60) -> None:
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=startup_timeout)

    def send(self, code: str, cell_id: str | None = None) -> str:
        """Send an execute_request as a notebook front end does; returns its msg_id."""
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        metadata = {} if cell_id is None else {"cellId": cell_id}
        msg = self.kc.session.msg("execute_request", content, metadata=metadata)
        self.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def execute(
        self,
        code: str,
        cell_id: str | None = None,
        interrupt_when: Callable[[], bool] | None = None,
        timeout: float = 30,
    ) -> CellResult:
        msg_id = self.send(textwrap.dedent(code).strip("\n"), cell_id)
        deadline = time.monotonic() + timeout
        out: list[str] = []
        err: list[str] = []
        outputs: list[str] = []
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
                (out if content["name"] == "stdout" else err).append(content["text"])
            elif kind in ("execute_result", "display_data"):
                text = content.get("data", {}).get("text/plain")
                if text is not None:
                    outputs.append(text)
            elif kind == "error":
                error = (content["ename"], content["evalue"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
        finished_at = time.monotonic()
        while True:  # the matching execute_reply; a UsageError shows only there (and on stderr)
            reply = self.kc.get_shell_msg(timeout=10)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        if error is None and reply["content"].get("status") == "error":
            error = (reply["content"].get("ename", "?"), reply["content"].get("evalue", ""))
        return CellResult("".join(out), error, interrupted_at, finished_at, "".join(err), outputs)

    def check(self, code: str, cell_id: str | None = None, timeout: float = 30) -> CellResult:
        """Run a cell that must not fail."""
        result = self.execute(code, cell_id=cell_id, timeout=timeout)
        assert result.error is None, f"{result.error}\n{result.text}"
        return result

    def value(self, expr: str) -> Any:
        """The value of a JSON-serialisable expression evaluated in the kernel."""
        return self.check(f"import json as _json\nprint(_json.dumps({expr}))").json()

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

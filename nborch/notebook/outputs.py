"""What a headless run shows in each cell, kept as nbformat outputs: the executed notebook's record.

A ``Transcript`` holds, per code cell, the outputs a Jupyter kernel would have sent: streams
(stdout, stderr), ``display_data``, the ``execute_result`` of the last expression, and
``error``. ``attach`` wires it into the IPython shell that runs the cells (display hook,
display publisher, traceback display); ``Transcript.running`` redirects the streams while one
cell runs. Task cells get their outputs from the run's events (``TaskCollector``): what the
task printed, its value, its error. Output can also be echoed as it happens (``--log-output``).
No nbformat import: the outputs are plain dicts in nbformat 4's shape.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..core.errors import safe_str
from ..core.mapping import item_base
from ..core.workers import call_from_thread

__all__ = ["CellRun", "TaskCollector", "Transcript", "attach", "error_output"]


@dataclass
class CellRun:
    """One code cell as run: its outputs, whether it ran and failed, when (wall clock)."""

    number: int
    outputs: list[dict[str, Any]] = field(default_factory=list)
    executed: bool = False
    failed: bool = False
    started: float | None = None
    finished: float | None = None


class Transcript:
    """The outputs of every cell of one headless run (thread-safe: tasks print from threads).

    ``echo_out`` / ``echo_err``: where cell and task output is also written as it happens
    (None: nowhere)."""

    def __init__(self, echo_out: TextIO | None = None, echo_err: TextIO | None = None) -> None:
        self.cells: dict[int, CellRun] = {}
        self.current: int | None = None  # the ordinary cell running now
        self.task_cells: dict[str, int] = {}  # task name -> the number of its %%task cell
        self.echo = {"stdout": echo_out, "stderr": echo_err}
        self.lock = threading.RLock()
        self._by_display_id: dict[str, list[dict[str, Any]]] = {}

    def cell(self, number: int) -> CellRun:
        with self.lock:
            return self.cells.setdefault(number, CellRun(number))

    def reset(self, number: int) -> None:
        """Forget what a cell showed (it will run again: a cell that waited for task values)."""
        with self.lock:
            self.cells.pop(number, None)

    def target(self) -> int | None:
        """The cell that output written now belongs to: the running task's, else the running cell."""
        from ..core.engine import current_frame

        frame = current_frame()
        if frame is not None:
            name = frame.inv.name
            number = self.task_cells.get(name)
            if number is None and ":" in name:  # an item of a --map cell: name:i
                number = self.task_cells.get(name.rpartition(":")[0])
            if number is not None:
                return number
        return self.current

    # -- outputs -------------------------------------------------------------------------------

    def stream(self, number: int | None, name: str, text: str, *, echo: bool = True) -> None:
        if not text:
            return
        if echo:
            target = self.echo.get(name)
            if target is not None:
                target.write(text)
                target.flush()
        if number is None:
            return
        with self.lock:
            outputs = self.cell(number).outputs
            if outputs and outputs[-1]["output_type"] == "stream" and outputs[-1]["name"] == name:
                outputs[-1]["text"] += text  # as Jupyter shows consecutive writes: one block
            else:
                outputs.append({"output_type": "stream", "name": name, "text": text})

    def display(self, number: int | None, data: dict[str, Any], metadata: dict[str, Any] | None = None,
                transient: dict[str, Any] | None = None, update: bool = False) -> None:
        display_id = (transient or {}).get("display_id")
        with self.lock:
            if update and display_id is not None:  # update_display(): every output with that id, in place
                for output in self._by_display_id.get(display_id, []):
                    output["data"], output["metadata"] = dict(data), dict(metadata or {})
                return
            if number is None:
                return
            output = {"output_type": "display_data", "data": dict(data), "metadata": dict(metadata or {})}
            self.cell(number).outputs.append(output)
            if display_id is not None:
                self._by_display_id.setdefault(display_id, []).append(output)

    def result(self, number: int, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        with self.lock:
            self.cell(number).outputs.append({
                "output_type": "execute_result", "data": dict(data), "metadata": dict(metadata or {}),
                "execution_count": None,  # numbered when the notebook is written
            })

    def error(self, number: int | None, ename: str, evalue: str, stb: list[str]) -> None:
        if number is None:
            return
        with self.lock:
            run = self.cell(number)
            run.failed = True
            run.outputs.append({"output_type": "error", "ename": ename, "evalue": evalue, "traceback": list(stb)})

    def clear(self, number: int | None) -> None:
        if number is None:
            return
        with self.lock:
            self.cell(number).outputs.clear()

    # -- running one cell ----------------------------------------------------------------------

    @contextlib.contextmanager
    def running(self, number: int) -> Iterator[CellRun]:
        """While cell ``number`` runs: it is the current cell, and sys.stdout / sys.stderr write into it."""
        run = self.cell(number)
        run.executed = True
        run.started = run.started or time.time()
        saved = sys.stdout, sys.stderr
        self.current = number
        sys.stdout, sys.stderr = _CellStream(self, "stdout", saved[0]), _CellStream(self, "stderr", saved[1])
        try:
            yield run
        finally:
            sys.stdout, sys.stderr = saved
            self.current = None
            run.finished = time.time()


class _CellStream(io.TextIOBase):
    """sys.stdout / sys.stderr while a cell runs: text goes to the cell (or the task writing it)."""

    def __init__(self, transcript: Transcript, name: str, original: TextIO) -> None:
        self.transcript = transcript
        self.name = name
        self.original = original

    def write(self, text: str) -> int:
        self.transcript.stream(self.transcript.target(), self.name, text)
        return len(text)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", None) or "utf-8"

    def fileno(self) -> int:  # subprocesses given sys.stdout write to the real stream, as in a kernel
        return self.original.fileno()


# -- the shell's hooks ---------------------------------------------------------------------------


def attach(shell: Any, transcript: Transcript) -> None:
    """Send the shell's results, displays and error displays to ``transcript`` (nothing printed)."""
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher

    class Hook(DisplayHook):  # the cell's last expression: execute_result
        def write_output_prompt(self) -> None:
            pass

        def write_format_data(self, format_dict: dict[str, Any], md_dict: dict[str, Any] | None = None) -> None:
            number = transcript.target()
            if number is not None:
                transcript.result(number, format_dict, md_dict)

        def finish_displayhook(self) -> None:
            pass

    class Publisher(DisplayPublisher):  # display(), update_display(), clear_output()
        def publish(self, data: Any, metadata: Any = None, source: Any = None, *, transient: Any = None,
                    update: bool = False, **kwargs: Any) -> None:
            _in_order(transcript.display, transcript.target(), data, metadata, transient, update)

        def clear_output(self, wait: bool = False) -> None:
            _in_order(transcript.clear, transcript.target())

    shell.displayhook = Hook(shell=shell, cache_size=shell.cache_size)
    shell.display_trap.hook = shell.displayhook
    shell.display_pub = Publisher(shell=shell)

    def show(etype: type, evalue: BaseException, stb: list[str]) -> None:
        transcript.error(transcript.target(), etype.__name__, safe_str(evalue), stb)

    def usage(exc: BaseException) -> None:  # a magic's one-line error, on stderr as in Jupyter
        transcript.stream(transcript.target(), "stderr", f"UsageError: {safe_str(exc)}\n", echo=False)

    shell._showtraceback = show
    shell.show_usage_error = usage


def _in_order(fn: Any, *args: Any) -> None:
    """Call ``fn`` now, or, in a task's worker thread, on its run's loop: after the output the
    task printed before (which reaches the transcript as events on that loop)."""
    from ..core.engine import current_frame

    frame = current_frame()
    engine = frame.engine if frame is not None else None
    if engine is None or engine.loop is None or threading.get_ident() == engine.loop_thread:
        fn(*args)
        return
    if not call_from_thread(engine.loop, engine.pool, fn, *args):
        fn(*args)  # the loop is closed: an abandoned thread displaying after its run


def format_value(shell: Any, value: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A value's mime bundle, as the shell's display hook would show it."""
    try:
        data, metadata = shell.display_formatter.format(value)
    except Exception:  # a broken repr must not break the record
        data, metadata = {}, {}
    if "text/plain" not in data:
        try:
            data["text/plain"] = repr(value)
        except Exception:
            data["text/plain"] = f"<{type(value).__name__} object: repr() failed>"
    return data, metadata


_NBORCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STDLIB_DIR = os.path.dirname(os.path.abspath(threading.__file__))


def _user_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` without the engine's frames before the task's own (nborch's, asyncio's, threads')."""
    first = tb
    while first is not None:
        filename = os.path.abspath(first.tb_frame.f_code.co_filename)
        if not (filename.startswith(_NBORCH_DIR) or filename.startswith(_STDLIB_DIR)):
            return first
        first = first.tb_next
    return tb


def error_output(shell: Any, err: BaseException) -> tuple[str, str, list[str]]:
    """(ename, evalue, traceback lines) of a task's error, formatted as IPython shows a cell's."""
    etype = type(err)
    try:
        render = getattr(err, "_render_traceback_", None)  # an exception that formats itself (IPython's hook)
        if render is not None:
            stb = list(render())
        else:
            stb = shell.InteractiveTB.structured_traceback(etype, err, _user_frames(err.__traceback__))
    except Exception:  # the formatter failed: the standard library's text
        stb = [line.rstrip("\n") for line in traceback.format_exception(etype, err, err.__traceback__)]
    return etype.__name__, safe_str(err), stb


class TaskCollector:
    """A run subscriber that files each task's output, value and error under its cell.

    Output of a ``--map`` cell's items (``name:i``) goes to that cell."""

    def __init__(self, shell: Any, transcript: Transcript, *, echo: bool = True) -> None:
        self.shell = shell
        self.transcript = transcript
        self.echo = echo  # False: the engine echoes task output itself

    def number(self, task: str) -> int | None:
        cells = self.transcript.task_cells
        if task in cells:
            return cells[task]
        base = item_base(task)
        return cells.get(base) if base is not None else None

    def __call__(self, event: Any) -> None:
        from ..core.eventbus import TaskEvent, TaskOutput
        from ..core.state import TaskState

        if isinstance(event, TaskOutput):
            number = self.number(event.task)
            name = "stdout" if event.stream == "stdout" else "stderr"  # a log record: stderr, as logging writes it
            self.transcript.stream(number, name, event.text, echo=self.echo)
            return
        if not isinstance(event, TaskEvent):
            return
        number = self.number(event.task)
        if number is None:
            return
        run = self.transcript.cell(number)
        if event.state is TaskState.RUNNING and run.started is None:
            run.executed, run.started = True, time.time()
        if event.state is TaskState.FAILED and event.task in self.transcript.task_cells:
            run.executed, run.finished = True, time.time()
            if event.error is not None:
                self.transcript.error(number, *error_output(self.shell, event.error))
        elif event.state is TaskState.SUCCEEDED and event.task in self.transcript.task_cells:
            run.executed, run.finished = True, time.time()
            run.started = run.started or run.finished
            if event.result is not None:
                self.transcript.result(number, *format_value(self.shell, event.result))

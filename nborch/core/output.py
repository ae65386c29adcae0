"""What the tasks of a run print and log: kept per task (``Run.logs``), published as
``TaskOutput`` events for a display, and passed through to the real streams, whole lines only.
The runtime's capture (``nborch.runtime.capture``) hands each write here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .eventbus import TaskOutput

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Output"]


class Output:
    """The output of one run's tasks (``engine.output``)."""

    __slots__ = ("engine", "logs", "echo", "partial")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.logs: dict[str, list[str]] = {}  # task -> what it wrote, in order
        self.echo = True  # pass task output through to the real stream too (no display shows it)
        self.partial: dict[tuple[str, str], str] = {}  # (task, stream) -> text after its last newline

    def capture(self, name: str, stream: str, text: str) -> str:
        """File ``text`` written by task ``name``; returns what to pass through to the real
        stream: nothing when a display shows task output, else whole lines only, so that the
        output of tasks running side by side never interleaves within a line."""
        self.logs.setdefault(name, []).append(text)
        engine = self.engine
        if engine.publisher.listening:
            engine.publisher.publish_threadsafe(TaskOutput(engine.run_id, name, stream, text, engine.now()))
        if not self.echo:
            return ""
        key = (name, stream)
        pending = self.partial.get(key, "") + text
        head, sep, tail = pending.rpartition("\n")
        self.partial[key] = tail
        return head + sep

    def flush_partial(self) -> list[tuple[str, str]]:
        """(stream, text) of output a task left without a final newline (written at run end)."""
        left = [(stream, text) for (_, stream), text in self.partial.items() if text]
        self.partial.clear()
        return left

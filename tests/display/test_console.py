"""Console progress (scripts, the CLI): task names and messages are shown literally."""

from __future__ import annotations

import io

from rich.console import Console

import nborch
from nborch import DAG, Task
from nborch.display.console import ConsoleProgress
from nborch.core.graph import build_graph


def test_names_and_errors_with_markup_or_control_characters_are_shown_literally():
    def boom():
        raise ValueError("[bold]not a style[/] \x1b[31mred\x1b[0m")

    node = DAG(Task(boom, name="[red]x[/]"), Task(lambda: 1, name="ok\x1b[2J"))
    out = io.StringIO()
    progress = ConsoleProgress(build_graph(node), console=Console(file=out, width=200, color_system=None))
    run = nborch.run(node, on_event=progress, store=False)
    progress.close(run)
    text = out.getvalue()

    assert "[red]x[/]" in text
    assert "[bold]not a style[/]" in text
    assert "ok\\x1b[2J" in text
    assert "\x1b" not in text

"""Helpers of the headless-run tests (tests/test_headless_*.py): notebooks written on the fly,
``python -m nborch`` in a real subprocess with its own store, and reading what it wrote."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent


def notebook(*cells: Any, minor: int = 5) -> dict[str, Any]:
    """A notebook of code cells; a cell is a source, or (source, [tags]), or ("md", text)."""
    out = []
    for i, cell in enumerate(cells):
        tags: list[str] = []
        kind = "code"
        if isinstance(cell, tuple):
            if cell[0] == "md":
                kind, cell = "markdown", cell[1]
            else:
                cell, tags = cell
        item: dict[str, Any] = {"cell_type": kind, "metadata": {"tags": tags} if tags else {}, "source": cell}
        if minor >= 5:
            item["id"] = f"cell-{i}"
        if kind == "code":
            item.update(outputs=[], execution_count=None)
        out.append(item)
    return {
        "nbformat": 4, "nbformat_minor": minor, "cells": out,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    }


def write(path: Path, nb: dict[str, Any]) -> Path:
    path.write_text(json.dumps(nb, indent=1))
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str
    cwd: Path

    @property
    def home(self) -> Path:
        return self.cwd / ".nborch"


def env_for(cwd: Path) -> dict[str, str]:
    return {**os.environ, "NBORCH_HOME": str(cwd / ".nborch"), "PYTHONIOENCODING": "utf-8"}


def nborch(*args: object, cwd: Path, timeout: float = 120, home: bool = True) -> Result:
    """``python -m nborch ARGS`` in ``cwd``, with its own store (NBORCH_HOME=cwd/.nborch; with
    ``home=False`` NBORCH_HOME is unset: the default store, ./.nborch)."""
    env = env_for(cwd)
    if not home:
        env.pop("NBORCH_HOME")
    proc = subprocess.run(
        [sys.executable, "-m", "nborch", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr, cwd)


def read(path: Path) -> dict[str, Any]:
    """An executed notebook, checked against nbformat's schema when nbformat is installed."""
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    try:
        import nbformat
    except ImportError:
        return nb
    nbformat.validate(nbformat.reads(text, as_version=4))
    return nb


def text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else value


def outputs(cell: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, text) of each output: a stream's name and text, a result's or display's text/plain,
    an error's ename and evalue."""
    got = []
    for o in cell.get("outputs", []):
        kind = o["output_type"]
        if kind == "stream":
            got.append((o["name"], text(o["text"])))
        elif kind == "error":
            got.append(("error", f"{o['ename']}: {o['evalue']}"))
        else:
            got.append((kind, text(o["data"].get("text/plain", ""))))
    return got


def traceback_text(output: dict[str, Any]) -> str:
    """An error output's traceback without its colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(output["traceback"]))


def code_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def by_source(nb: dict[str, Any], start: str) -> dict[str, Any]:
    """The first cell whose source starts with ``start``."""
    for cell in nb["cells"]:
        if text(cell["source"]).startswith(start):
            return cell
    raise AssertionError(f"no cell starts with {start!r}")

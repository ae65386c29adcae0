"""Reading ``.ipynb`` files (nbformat 4) into plain cells. No IPython or nbformat import.

The headless CLI needs only each cell's type, source and tags, so the JSON is read with the
standard library: ``nborch run`` and ``nborch graph`` work without Jupyter installed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import NborchError

__all__ = ["Cell", "NotebookError", "read_notebook", "read_notebook_data"]


class NotebookError(NborchError, ValueError):
    """The notebook file does not exist, cannot be read, or is not an nbformat 4 notebook."""


@dataclass
class Cell:
    """One notebook cell: its 1-based position, type (code, markdown, raw), source and tags."""

    number: int
    type: str
    source: str
    tags: tuple[str, ...] = field(default_factory=tuple)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the cell's JSON

    @property
    def is_code(self) -> bool:
        return self.type == "code"


def _text(value: object) -> str:
    """A cell's source: nbformat stores it as one string or as a list of lines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)
    raise TypeError(f"a source must be a string or a list of strings, got {type(value).__name__}")


def read_notebook(path: str | os.PathLike[str]) -> list[Cell]:
    """The cells of the notebook at ``path``, in order. Raises NotebookError with a one-line reason."""
    return read_notebook_data(path)[1]


def read_notebook_data(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[Cell]]:
    """The notebook's JSON (as read) and its cells; raises NotebookError as ``read_notebook``."""
    p = Path(path)
    name = repr(str(path))
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise NotebookError(f"{name} does not exist") from None
    except IsADirectoryError:
        raise NotebookError(f"{name} is a directory, not a notebook file") from None
    except (OSError, ValueError) as err:  # permissions, a NUL in the path...
        raise NotebookError(f"cannot read {name}: {getattr(err, 'strerror', None) or err}") from None
    if not raw.strip():
        raise NotebookError(f"{name} is not a notebook: the file is empty")
    try:
        data = json.loads(raw.decode("utf-8-sig"))  # a byte order mark is harmless
    except UnicodeDecodeError:
        raise NotebookError(f"{name} is not a notebook: it is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        where = f"line {err.lineno}, column {err.colno}"
        raise NotebookError(f"{name} is not a notebook: invalid JSON at {where} ({err.msg})") from None
    except RecursionError:
        raise NotebookError(f"{name} is not a notebook: its JSON is nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        if isinstance(data, dict) and "worksheets" in data:  # nbformat 3 kept cells in worksheets
            raise NotebookError(
                f"{name} is an nbformat {data.get('nbformat', 3)} notebook; nborch reads nbformat 4 "
                "(open and save it in a current Jupyter, or run `jupyter nbconvert --to notebook`)"
            )
        raise NotebookError(f"{name} is not a notebook: JSON without a 'cells' list")
    version = data.get("nbformat")
    if isinstance(version, int) and version < 4:
        raise NotebookError(f"{name} is an nbformat {version} notebook; nborch reads nbformat 4")
    cells: list[Cell] = []
    for number, item in enumerate(data["cells"], start=1):
        if not isinstance(item, dict) or not isinstance(item.get("cell_type"), str):
            raise NotebookError(f"{name} is not a valid notebook: cell {number} has no cell_type")
        if "source" not in item:  # nbformat 4 requires it in every cell
            raise NotebookError(f"{name} is not a valid notebook: cell {number} has no 'source'")
        try:
            source = _text(item["source"])
        except TypeError as err:
            raise NotebookError(f"{name} is not a valid notebook: cell {number}: {err}") from None
        metadata = item.get("metadata")
        tags = metadata.get("tags") if isinstance(metadata, dict) else None
        tags = tags if isinstance(tags, list) else []
        cells.append(Cell(number, item["cell_type"], source, tuple(t for t in tags if isinstance(t, str)), item))
    return data, cells

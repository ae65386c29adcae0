"""Notebook parameters as papermill has them: the injected cell's source, parameter files, and
the parameters cell read for ``--help-notebook``.

The injected cell is written as papermill writes it for Python (``# Parameters`` then one
``name = value`` line each; strings in double quotes with backslash escapes, floats that are not
finite as ``float('nan')`` / ``float('inf')``), so a notebook run by nborch and by papermill
with the same values carries the same cell. Values papermill's YAML cannot hold (a tuple, a
set, bytes from ``-p x=(1, 2)``) are written as their ``repr``, which evaluates to them.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["injected_source", "python_literal"]


def _string(value: str) -> str:
    escaped = value.encode("unicode_escape").decode("utf-8").replace('"', '\\"')
    return f'"{escaped}"'


def python_literal(value: Any) -> str:
    """``value`` as Python source, in papermill's spelling for the types YAML and JSON have."""
    if value is None or isinstance(value, bool | int):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        if math.isnan(value):
            return "float('nan')"
        return "float('-inf')" if value < 0 else "float('inf')"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_string(str(k)) if isinstance(k, str) else python_literal(k)}: "
                               f"{python_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    return repr(value)


def injected_source(params: dict[str, Any]) -> str:
    """The source of the ``injected-parameters`` cell for ``params``."""
    return "# Parameters\n" + "".join(f"{name} = {python_literal(value)}\n" for name, value in params.items())

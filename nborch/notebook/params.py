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
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Parameter", "ParameterError", "collect_parameters", "injected_source", "notebook_help",
    "notebook_parameters", "parse_mapping", "python_literal", "read_parameter_file",
]


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


# -- parameter sources: -f FILE, -y YAML, -p NAME=VALUE, -r NAME VALUE ------------------------------

YAML_EXTRA = 'pip install "nborch[yaml]"'


class ParameterError(ValueError):
    """A parameter file or string that cannot be used; the message names it and says why."""


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        return None
    return yaml


def _no_dates_loader(yaml: Any) -> Any:
    """PyYAML's safe loader without timestamps: ``2024-01-01`` stays a string (papermill's loader)."""

    class Loader(yaml.SafeLoader):
        yaml_implicit_resolvers = {
            key: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
            for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }

    return Loader


def parse_mapping(text: str, where: str, *, json_only: bool = False) -> dict[str, Any]:
    """Parameters from YAML (or JSON) text: a mapping of Python identifiers to values."""
    import json

    yaml = None if json_only else _yaml()
    if yaml is None:
        try:
            value = json.loads(text) if text.strip() else None
        except ValueError as err:
            if json_only:
                raise ParameterError(f"{where}: not valid JSON ({err})") from None
            raise ParameterError(f"{where}: reading YAML needs PyYAML, which is not installed: {YAML_EXTRA} "
                                 "(JSON is read without it)") from None
    else:
        try:
            value = yaml.load(text, Loader=_no_dates_loader(yaml))
        except yaml.YAMLError as err:
            first = " ".join(str(err).split())
            raise ParameterError(f"{where}: not valid YAML ({first})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParameterError(f"{where}: expected a mapping of parameter names to values, got a "
                             f"{type(value).__name__}")
    bad = [k for k in value if not isinstance(k, str) or not k.isidentifier()]
    if bad:
        raise ParameterError(f"{where}: parameter names must be Python identifiers, got {bad[0]!r}")
    return value


def read_parameter_file(path: str) -> dict[str, Any]:
    """``-f FILE``: a YAML or JSON file of parameters (``.json`` is read without PyYAML)."""
    from pathlib import Path

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ParameterError(f"-f {path}: the file does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ParameterError(f"-f {path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    return parse_mapping(text, f"-f {path}", json_only=p.suffix.lower() == ".json")


def collect_parameters(files: list[str], yamls: list[str], pairs: list[tuple[str, Any]],
                       raws: list[tuple[str, str]]) -> dict[str, Any]:
    """All parameters, later sources winning, in papermill's order: files, YAML strings,
    ``-p`` values, ``-r`` raw strings."""
    params: dict[str, Any] = {}
    for path in files:
        params.update(read_parameter_file(path))
    for text in yamls:
        params.update(parse_mapping(text, f"-y {text!r}"))
    params.update(pairs)
    for name, value in raws:
        if not name.isidentifier():
            raise ParameterError(f"-r {name}: a parameter name must be a Python identifier")
        params[name] = value
    return params


# -- --help-notebook ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parameter:
    """A parameter of the notebook: its name, type (from an annotation or a ``# type:`` comment,
    as papermill infers it; "None" when unknown), default (the value's source) and help (the
    line's comment)."""

    name: str
    inferred_type_name: str
    default: str
    help: str


def _comment(line: str) -> str:
    """The comment of a source line (a ``#`` outside strings), without the ``#``."""
    import io
    import tokenize

    try:
        for tok in tokenize.generate_tokens(io.StringIO(line).readline):
            if tok.type == tokenize.COMMENT:
                return tok.string[1:].strip()
    except (tokenize.TokenError, SyntaxError):
        pass
    return ""


def _without_comments(text: str) -> str:
    import io
    import tokenize

    lines = text.split("\n")
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                row, col = tok.start
                lines[row - 1] = lines[row - 1][:col]
    except (tokenize.TokenError, SyntaxError):
        return text
    return "\n".join(lines)


def notebook_parameters(source: str) -> list[Parameter]:
    """The parameters a parameters cell assigns at its top level, in order."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.splitlines()
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value, annotation = node.targets[0].id, node.value, None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value, annotation = node.target.id, node.value, node.annotation
        else:
            continue
        comment = _comment(lines[(node.end_lineno or node.lineno) - 1])
        type_name = ast.get_source_segment(source, annotation) if annotation is not None else None
        if comment.startswith("type:"):
            declared, _, comment = comment[len("type:"):].strip().partition(" ")
            type_name = type_name or declared
            comment = comment.strip()
        if type_name is not None:
            type_name = type_name.strip("'\"")
        default = " ".join(_without_comments(ast.get_source_segment(source, value) or "").split())
        found.append(Parameter(target, type_name or "None", default, comment))
    return found


def notebook_help(path: str, source: str | None) -> str:
    """``nborch run --help-notebook IN.ipynb``: the parameters, laid out as papermill lists them."""
    lines = [f"Parameters inferred for notebook '{path}':"]
    if source is None:
        lines.append("\n  No cell tagged 'parameters'")
        return "\n".join(lines)
    params = notebook_parameters(source)
    if not params:
        lines.append("\n  Can't infer anything about this notebook's parameters. It may not have any parameter "
                     "defined.")
    for p in params:
        type_repr = "Unknown type" if p.inferred_type_name == "None" else p.inferred_type_name
        definition = f"  {p.name}: {type_repr} (default {p.default})"
        if len(definition) > 30:
            lines.append(f"{definition}\n{34 * ' '}{p.help}" if p.help else definition)
        else:
            lines.append(f"{definition:<34}{p.help}".rstrip())
    return "\n".join(lines)

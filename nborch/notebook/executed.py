"""The executed notebook (``nborch run IN.ipynb OUT.ipynb``): the input with every output in place.

Built from the input's JSON and a run's ``Transcript``, the way papermill writes its output so
that papermill users find what they expect: each code cell's outputs and its execution count
(numbered in document order, as Run All would), an ``injected-parameters`` cell after the
``parameters`` cell (replacing one injected earlier), papermill's error markers around the
first failure, cells that did not run left without outputs or count, and the metadata under
``metadata["nborch"]`` and papermill's ``metadata["papermill"]`` keys. Written atomically:
a temporary file in the same folder, then ``os.replace``. No nbformat import: the file has
nbformat 4's JSON layout (sorted keys, one-space indent, multi-line text as lists of lines).
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import platform
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ipynb import Cell
from .outputs import Transcript

__all__ = ["ERROR_MARKER_TAG", "INJECTED", "RunInfo", "dumps", "executed_notebook", "write_notebook"]

ERROR_MARKER_TAG = "papermill-error-cell-tag"  # papermill's tag: tools that strip its markers strip ours
_ERROR_STYLE = 'style="color:red; font-family:Helvetica Neue, Helvetica, Arial, sans-serif; font-size:2em;"'
SNAPSHOT_TAG = "nborch-run"
_SPLIT_MIMES = ("application/javascript", "image/svg+xml")


@dataclass
class RunInfo:
    """What the metadata says about the run."""

    run_id: str
    input_path: str
    output_path: str | None
    parameters: dict[str, Any]
    started: float
    finished: float | None = None
    status: str = "running"  # succeeded, failed, timed out, interrupted
    injected: str | None = None  # the injected-parameters cell's source (None: no parameters given)
    snapshot: dict[str, Any] | None = None  # the run's final graph and table, a mime bundle
    extra: dict[str, Any] = field(default_factory=dict)  # more metadata["nborch"] keys (resume, tasks)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat()


def _jsonable(value: Any) -> Any:
    """A parameter as JSON can hold it (papermill's metadata keeps YAML types only)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _new_id(taken: set[str]) -> str:
    while True:
        cell_id = uuid.uuid4().hex[:8]
        if cell_id not in taken:
            taken.add(cell_id)
            return cell_id


def _code_cell(source: str, tags: list[str], cell_id: str | None) -> dict[str, Any]:
    cell: dict[str, Any] = {"cell_type": "code", "execution_count": None, "metadata": {"tags": tags},
                            "outputs": [], "source": source}
    if cell_id is not None:
        cell["id"] = cell_id
    return cell


def _markdown_cell(source: str, cell_id: str | None) -> dict[str, Any]:
    cell: dict[str, Any] = {"cell_type": "markdown", "metadata": {"tags": [ERROR_MARKER_TAG]}, "source": source}
    if cell_id is not None:
        cell["id"] = cell_id
    return cell


INJECTED = 0  # the transcript's key of the injected-parameters cell (it runs when the values are set)


def executed_notebook(data: dict[str, Any], cells: list[Cell], transcript: Transcript, info: RunInfo,
                      *, snapshot_cell: int | None = None) -> dict[str, Any]:
    """The executed notebook as nbformat 4 JSON (a new dict; ``data`` is left as it was).

    ``snapshot_cell``: the number of the ``%orch run`` cell that shows ``info.snapshot`` (None:
    a cell is appended for it)."""
    nb = copy.deepcopy(data)
    nb["nbformat"] = 4
    minor = nb.get("nbformat_minor")
    with_ids = isinstance(minor, int) and minor >= 5  # nbformat 4.5 requires an id in every cell
    taken = {c.raw["id"] for c in cells if isinstance(c.raw.get("id"), str)}

    def new_id() -> str | None:
        return _new_id(taken) if with_ids else None

    first_failed = next((n for n, r in sorted(transcript.cells.items()) if r.failed), None)
    stop_at = first_failed if first_failed is not None else len(cells) + 1
    out_cells: list[dict[str, Any]] = []
    counted: list[dict[str, Any]] = []  # the cells that ran, in document order

    def add_code(raw: dict[str, Any], run: Any) -> None:
        if run is not None and run.executed:
            status = "failed" if run.failed else "completed"
            raw["metadata"]["papermill"] = _cell_times(run.started, run.finished, run.failed, status)
            counted.append(raw)
        else:
            raw["metadata"]["papermill"] = _cell_times(None, None, None, "pending")
        out_cells.append(raw)

    injected: dict[str, Any] | None = None
    if info.injected is not None:
        injected = _code_cell(info.injected, ["injected-parameters"], None)
        run = transcript.cells.get(INJECTED)
        if run is not None and run.executed:
            run.finished = run.finished or run.started
    param_cell = next((c.number for c in cells if c.is_code and "parameters" in c.tags), None)
    old_injected = next((c.number for c in cells if c.is_code and "injected-parameters" in c.tags), None)
    if injected is not None and old_injected is None and param_cell is None:
        injected["id"] = new_id()
        add_code(injected, transcript.cells.get(INJECTED))  # no parameters cell: at the top, as papermill does
        injected = None

    for cell in cells:
        raw = copy.deepcopy(cell.raw)
        tags = raw.setdefault("metadata", {}).setdefault("tags", [])
        if ERROR_MARKER_TAG in tags:
            continue  # the markers of an earlier failed run
        if with_ids and not isinstance(raw.get("id"), str):
            raw["id"] = new_id()
        if injected is not None and cell.number == old_injected:  # replaced in place, keeping its id
            injected["id"] = raw.get("id")
            add_code(injected, transcript.cells.get(INJECTED))
            injected = None
            continue
        if cell.number == first_failed:
            out_cells.append(_markdown_cell(
                f'<span id="papermill-error-cell" {_ERROR_STYLE}>'
                "Execution using nborch encountered an exception here and stopped:</span>", new_id()))
        if cell.is_code:
            run = transcript.cells.get(cell.number)
            raw["execution_count"] = None
            raw["outputs"] = copy.deepcopy(run.outputs) if run is not None and run.executed else []
            if cell.number == snapshot_cell and info.snapshot is not None:
                raw["outputs"].append({"output_type": "display_data", "data": info.snapshot, "metadata": {}})
                if run is None or not run.executed:
                    run = transcript.cell(cell.number)
                    run.executed, run.started, run.finished = True, info.finished, info.finished
            add_code(raw, run)
        else:
            status = "completed" if cell.number < stop_at else "pending"
            raw["metadata"]["papermill"] = _cell_times(None, None, False if status == "completed" else None,
                                                       status)
            out_cells.append(raw)
        if injected is not None and cell.number == param_cell:
            injected["id"] = new_id()
            add_code(injected, transcript.cells.get(INJECTED))
            injected = None
    if snapshot_cell is None and info.snapshot is not None:
        shown = _code_cell(f"%orch show {info.run_id}", [SNAPSHOT_TAG], new_id())
        shown["outputs"] = [{"output_type": "display_data", "data": info.snapshot, "metadata": {}}]
        shown["metadata"]["papermill"] = _cell_times(info.finished, info.finished, False, "completed")
        out_cells.append(shown)
        counted.append(shown)
    for count, ran in enumerate(counted, start=1):
        ran["execution_count"] = count
        for output in ran["outputs"]:
            if output.get("output_type") == "execute_result":
                output["execution_count"] = count
    if first_failed is not None:
        failed = next((c for c in out_cells if c.get("cell_type") == "code" and any(
            o.get("output_type") == "error" for o in c["outputs"])), None)
        where = failed["execution_count"] if failed is not None else None
        out_cells.insert(0, _markdown_cell(
            f"<span {_ERROR_STYLE}>An Exception was encountered at "
            f"'<a href=\"#papermill-error-cell\">In [{where}]</a>'.</span>", new_id()))
    for item in out_cells:
        if item.get("id") is None:
            item.pop("id", None)
    nb["cells"] = out_cells
    _metadata(nb.setdefault("metadata", {}), info, failed=first_failed is not None)
    return nb


def _cell_times(started: float | None, finished: float | None, exception: bool | None,
                status: str) -> dict[str, Any]:
    duration = finished - started if started is not None and finished is not None else None
    return {"duration": duration, "end_time": _iso(finished), "exception": exception,
            "start_time": _iso(started), "status": status}


def _metadata(meta: dict[str, Any], info: RunInfo, *, failed: bool) -> None:
    duration = info.finished - info.started if info.finished is not None else None
    params = _jsonable(info.parameters)
    meta["nborch"] = {
        "run_id": info.run_id, "status": info.status, "parameters": params,
        "start_time": _iso(info.started), "end_time": _iso(info.finished), "duration": duration,
        "input_path": info.input_path, "output_path": info.output_path, **info.extra,
    }
    earlier = meta.get("papermill")
    papermill: dict[str, Any] = earlier if isinstance(earlier, dict) else {}
    papermill.setdefault("default_parameters", {})
    papermill.setdefault("environment_variables", {})
    papermill.update({
        "parameters": params, "input_path": info.input_path, "output_path": info.output_path,
        "start_time": _iso(info.started), "end_time": _iso(info.finished), "duration": duration,
        "exception": failed or info.status not in ("succeeded", "running"),
    })
    meta["papermill"] = papermill
    meta.setdefault("language_info", {
        "codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
        "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
        "pygments_lexer": "ipython3", "version": platform.python_version(),
    })


def _split(text: Any) -> Any:
    return text.splitlines(True) if isinstance(text, str) else text


def dumps(nb: dict[str, Any]) -> str:
    """The notebook as nbformat writes it: sorted keys, indent 1, multi-line text as lists of lines."""
    nb = copy.deepcopy(nb)
    for cell in nb.get("cells", []):
        cell["source"] = _split(cell.get("source", ""))
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if output.get("output_type") == "stream":
                output["text"] = _split(output.get("text", ""))
            for key, value in list(output.get("data", {}).items()):
                if key.startswith("text/") or key in _SPLIT_MIMES:
                    output["data"][key] = _split(value)
    return json.dumps(nb, sort_keys=True, indent=1, separators=(",", ": "), ensure_ascii=False) + "\n"


def write_notebook(nb: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``nb`` to ``path`` atomically (``-``: stdout): a temporary file in the same folder,
    synced, then renamed over ``path``, so a kill at any moment leaves the old file or the new one."""
    text = dumps(nb)
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(path)
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise

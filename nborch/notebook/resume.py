"""``nborch run --resume`` / ``--from TASK``: what a later run needs of an earlier headless run.

The store records each run's tasks and states, but keeps values only of ``cache=True`` tasks,
and no outputs. A headless run therefore also leaves, beside the store, under
``<store>/headless/``: ``RUN_ID.json`` (the notebook's path, its parameters' names, flow and
targets, and each task cell's outputs) and ``RUN_ID.pkl`` (the parameters and the value of each
task that succeeded, pickled one by one with cloudpickle: a value that does not pickle is left
out, and its task runs again when a re-run task needs it). A resumed run then re-runs only what
did not succeed (or ``--from TASK`` and its downstream), feeds the others' values to it, and
writes a complete executed notebook with the earlier outputs of the tasks that stand.

Deleting ``<store>/headless/`` is safe: ``--resume`` then re-runs the tasks whose values it
needs and lacks. The newest ``KEEP`` (5) runs of each notebook file are kept.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Earlier", "FOLDER", "last_run_of", "load_earlier", "save_run"]

FOLDER = "headless"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_run(home: Path, run_id: str, *, notebook: str, params: dict[str, Any], flow: str | None,
             targets: list[str], values: dict[str, Any], outputs: dict[str, list[dict[str, Any]]]) -> None:
    """Keep what ``--resume`` of ``run_id`` needs (see the module docstring)."""
    import cloudpickle

    pickled: dict[str, bytes] = {}
    for name, value in values.items():
        try:
            pickled[name] = cloudpickle.dumps(value)
        except Exception:  # noqa: S112 - a value that does not pickle: its task runs again if needed
            continue
    try:
        params_blob = cloudpickle.dumps(params)
    except Exception:
        params_blob = cloudpickle.dumps({})
    folder = home / FOLDER
    _write(folder / f"{run_id}.pkl", cloudpickle.dumps({"params": params_blob, "values": pickled}))
    meta = {"run_id": run_id, "notebook": str(Path(notebook).resolve()), "flow": flow, "targets": targets,
            "saved": time.time(), "outputs": outputs}
    _write(folder / f"{run_id}.json", json.dumps(meta).encode())
    prune(folder, str(Path(notebook).resolve()))


KEEP = 5  # headless runs kept per notebook file for --resume / --from; older ones are removed


def prune(folder: Path, notebook: str, keep: int = KEEP) -> None:
    """Keep the newest ``keep`` runs of ``notebook`` only: a notebook run on a schedule must not
    fill the disk with the values of every run it ever made."""
    runs: list[tuple[float, Path]] = []
    for path in folder.glob("*.json"):
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("notebook") == notebook:
            runs.append((float(meta.get("saved") or 0.0), path))
    runs.sort(reverse=True)
    for _, path in runs[keep:]:
        for old in (path, path.with_suffix(".pkl")):
            try:
                old.unlink()
            except OSError:
                pass


def last_run_of(home: Path, notebook: str) -> str | None:
    """The id of the newest headless run of this notebook file recorded under ``home``."""
    wanted = str(Path(notebook).resolve())
    best: tuple[float, str] | None = None
    for path in (home / FOLDER).glob("*.json"):
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("notebook") == wanted:
            saved = float(meta.get("saved") or 0.0)
            if best is None or saved > best[0]:
                best = (saved, str(meta.get("run_id")))
    return best[1] if best else None


@dataclass
class Earlier:
    """An earlier headless run, as ``--resume`` reads it back."""

    run_id: str
    params: dict[str, Any] | None = None  # None: not kept
    flow: str | None = None
    targets: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def load_earlier(home: Path, run_id: str) -> Earlier:
    """What was kept of ``run_id`` (nothing for a run made in a notebook, or after a clean-up)."""
    import pickle

    earlier = Earlier(run_id)
    folder = home / FOLDER
    try:
        meta = json.loads((folder / f"{run_id}.json").read_text())
    except (OSError, ValueError):
        return earlier
    earlier.flow = meta.get("flow")
    earlier.targets = list(meta.get("targets") or [])
    earlier.outputs = dict(meta.get("outputs") or {})
    try:
        blob = pickle.loads((folder / f"{run_id}.pkl").read_bytes())  # noqa: S301 - our own file
    except Exception:  # missing or unreadable: the values are not there
        return earlier
    try:
        earlier.params = pickle.loads(blob["params"])  # noqa: S301
    except Exception:
        earlier.params = None
    for name, data in blob.get("values", {}).items():
        try:
            earlier.values[name] = pickle.loads(data)  # noqa: S301
        except Exception:  # noqa: S112 - a class that is gone: its task runs again if needed
            continue
    return earlier


def prepare(home: Path, notebook: str, resume: str | None, rerun_from: str | None,
            task_names: list[str]) -> tuple[Any, Earlier]:
    """The earlier run to resume (its ``Run`` record, with the kept values in ``results``) and
    what was kept of it. ``resume``: a run id, or "last" / None for the newest run of this
    notebook. Raises NotebookFailed (exit status 2) when there is nothing to resume."""
    from ..core.errors import NborchError, did_you_mean
    from ..store import get_store, load_run
    from .shell import NotebookFailed

    if rerun_from is not None and rerun_from not in task_names:
        known = ", ".join(task_names) or "(none)"
        raise NotebookFailed(f"--from {rerun_from}: no task cell is named {rerun_from!r}."
                             f"{did_you_mean(rerun_from, task_names)} Tasks: {known}.", 2)
    run_id = resume if resume not in (None, "last") else last_run_of(home, notebook)
    if run_id is None:
        raise NotebookFailed(f"nothing to resume: no run of {notebook!r} is recorded in {str(home)!r}; "
                             "run it once without --resume (or give a run id: see nborch history)", 2)
    try:
        previous = load_run(run_id, get_store(home))
    except NborchError as err:
        raise NotebookFailed(f"--resume {run_id}: {err}", 2) from None
    earlier = load_earlier(home, run_id)
    previous.results.update({n: v for n, v in earlier.values.items() if n in previous.states})
    return previous, earlier


def rerun_from(previous: Any, names: list[str]) -> None:
    """Make ``names`` (``--from TASK`` and everything downstream of it) run again on resume."""
    from ..core.state import TaskState

    for name in names:
        if name in previous.states:
            previous.states[name] = TaskState.PENDING
            previous.results.pop(name, None)

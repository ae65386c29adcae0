"""The values a failed or cancelled run keeps for ``resume=``: one file per run, the newest kept.

A run that did not succeed keeps the values of its succeeded tasks that no cache stored, so
that ``resume=`` need not run them again to feed what it re-runs; ``load_run`` reads them back
(``resume_key``). A succeeded run writes nothing, and only the newest ``RESUME_KEPT`` such files
are kept (``prune_resume_files``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from ..core.state import TaskState

if TYPE_CHECKING:
    from .sqlite import SqliteStore

__all__ = ["RESUME_KEPT", "keep_for_resume", "prune_resume_files", "resume_key"]

log = logging.getLogger("nborch.store.sqlite")  # the logger these messages always went to
_SUCCEEDED = TaskState.SUCCEEDED


def resume_key(run_id: str) -> str:
    """The values file of a run that did not succeed (``keep_for_resume``)."""
    return f"resume-{run_id}"


def keep_for_resume(store: SqliteStore, run_id: str, run: Any, outcome: str | None = None) -> None:
    """A run that failed or was cancelled keeps the values of its succeeded tasks that no cache
    stored, in one file, so that ``resume=`` need not run them again to feed what it re-runs
    (items of a mapped node above all: one failed item of 10,000 re-runs alone). A succeeded run
    writes nothing. Values that cannot be pickled are left out (those tasks run again). One
    pickle and one write for the whole run: the cost falls on the failed run's end only. The
    newest ``RESUME_KEPT`` such files are kept (``prune_resume_files``)."""
    try:
        if (outcome or run.status) == "succeeded" or not run.results:  # outcome: the run's, as published
            return
        import cloudpickle

        stored = run.cache_keys
        kept: dict[str, bytes] = {}
        for name, value in run.results.items():
            if name in stored or run.states.get(name) is not _SUCCEEDED:
                continue
            try:
                kept[name] = cloudpickle.dumps(value, protocol=5)
            except Exception:  # this task runs again on resume, as without a store
                continue
        if kept:
            from .cache import Cache

            Cache(store, run_id).save(resume_key(run_id), "(resume)", kept)
            prune_resume_files(store)
    except Exception:  # recording must never break a run's end
        log.debug("values of run %s not kept for resume", run_id, exc_info=True)


RESUME_KEPT = 10  # failed runs whose values are kept for resume; older ones' files are removed


def prune_resume_files(store: SqliteStore, keep: int = RESUME_KEPT) -> None:
    """Keep the values of the newest ``keep`` failed runs only: a notebook that fails again and
    again must not fill the disk (a run whose file is gone resumes as without one)."""
    with contextlib.suppress(OSError):
        found = [e for e in os.scandir(store.values) if e.name.startswith("resume-") and e.name.endswith(".pkl")]
        found.sort(key=lambda e: e.stat().st_mtime, reverse=True)
        for old in found[keep:]:
            with contextlib.suppress(OSError):
                os.unlink(old.path)

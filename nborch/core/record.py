"""``Run``: the record of one run, everything a user may want after it (never raises)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

from . import hooks
from .errors import error_line
from .item_rows import ItemRow, ItemRows, item_params, item_rows
from .mapping import item_base
from .state import TaskState

__all__ = ["ErrorRecord", "ItemRow", "ItemRows", "Run", "error_line", "set_html_renderer"]

log = logging.getLogger("nborch")

# How a Run draws itself in a notebook (graph, table, errors): set by the display layer when it
# is imported (nborch.display.snapshot); the core never imports a front end. None: a plain table.
_html_renderer: Callable[[Run], str] | None = None


def set_html_renderer(renderer: Callable[[Run], str] | None) -> None:
    """Make ``Run._repr_html_`` return ``renderer(run)`` (None: back to the plain table). A
    renderer that raises is logged, and the plain table is shown."""
    global _html_renderer
    _html_renderer = renderer


class ErrorRecord(Exception):
    """A task's error as recorded in the store: its type name, message and traceback text."""

    def __init__(self, type_name: str, message: str, traceback: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ErrorRecord({self.type_name}: {self.message})"


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f}µs"
    if s < 1:
        return f"{s * 1e3:.1f}ms"
    return f"{s:.2f}s"


def _fmt_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"stored {size:.0f} {unit}" if unit == "B" else f"stored {size:.1f} {unit}"
        size /= 1024
    return ""  # pragma: no cover


def _label(name: str, run: Run) -> str:
    if name in run.cached:
        return " (cached)"
    return " (reused)" if name in run.reused else ""


class Run:
    """What happened in one run: per task state, value, error, attempts and duration.

    ``ok`` is False when any task FAILED (even one whose failure a ``one_failed`` task
    handled) or was CANCELLED. ``value`` is the run node's value (a Task's return value, a
    list for Sequence/Parallel, a dict for DAG), with None for tasks that did not succeed.
    ``results`` holds the values of the tasks that succeeded, ``errors`` the exceptions of
    the tasks that failed, both by task name.
    """

    def __init__(
        self,
        id: str,
        *,
        states: dict[str, TaskState] | None = None,
        results: dict[str, Any] | None = None,
        errors: dict[str, BaseException] | None = None,
        attempts: dict[str, int] | None = None,
        durations: dict[str, float] | None = None,
        parents: dict[str, str] | None = None,
        upstreams: dict[str, list[str]] | None = None,
        value: Any = None,
        logs: dict[str, str] | None = None,
        started: float = 0.0,
        finished: float = 0.0,
        duration: float = 0.0,
        first_failure: str | None = None,
        invs: dict[str, Any] | None = None,
    ) -> None:
        self.id = id
        self.results = results if results is not None else {}
        self.value = value
        self.logs = logs if logs is not None else {}
        self.started = started
        self.finished = finished
        self.duration = duration
        self.first_failure = first_failure
        self.name: str | None = None
        self.recorded_state: str | None = None
        self.attempt_records: list[dict[str, Any]] = []
        self.reasons: dict[str, str] = {}  # an incremental run: why each task ran or was reused
        self.stopped: bool | None = None  # the run itself was cancelled (None: not known)
        self.recorded_params: dict[str, dict[str, Any]] = {}  # a loaded run: each item's parameters
        # The per-task tables are built on first use from the engine's records (``invs``),
        # so a 100,000-task run does not pay for tables nobody reads.
        self._invs = invs or {}
        self.item_names: list[str] | None = None  # a run's items, when its engine listed them
        for name, table in (("states", states), ("errors", errors), ("attempts", attempts),
                            ("durations", durations), ("parents", parents), ("upstreams", upstreams)):
            if table is not None:
                self.__dict__[name] = table

    @cached_property
    def states(self) -> dict[str, TaskState]:
        """Task name -> final state, in the order tasks were added to the run."""
        return {name: inv.state for name, inv in self._invs.items()}

    @cached_property
    def errors(self) -> dict[str, BaseException]:
        """Task name -> the exception of each FAILED task."""
        return {
            name: inv.error
            for name, inv in self._invs.items()
            if inv.state is TaskState.FAILED and inv.error is not None
        }

    @cached_property
    def attempts(self) -> dict[str, int]:
        """Task name -> attempts made (0 for a task that never started)."""
        return {name: inv.attempts for name, inv in self._invs.items()}

    @cached_property
    def durations(self) -> dict[str, float]:
        """Task name -> seconds from its first attempt's start to its end (started tasks only)."""
        return {
            name: max(inv.finished - inv.started, 0.0) for name, inv in self._invs.items() if inv.attempts
        }

    @cached_property
    def cached(self) -> set[str]:
        """Tasks whose value came from the cache (or from the run being resumed)."""
        return {name for name, inv in self._invs.items() if inv.cached}

    @cached_property
    def cache_misses(self) -> dict[str, str]:
        """A ``cache=True`` task that ran -> why the disk cache missed."""
        return {name: inv.cache_miss for name, inv in self._invs.items() if getattr(inv, "cache_miss", None)}

    @cached_property
    def upstreams(self) -> dict[str, list[str]]:
        """Task name -> the names of its upstream tasks (the run's edges, child tasks included;
        kept by the store, so a past run can be drawn)."""
        return {name: list(names) for name, names in self._edges().items()}

    def _edges(self) -> dict[str, Sequence[str]]:
        """``upstreams`` without its copies: the same lists, or tuples the run's specs keep (what
        the store records; not to be changed)."""
        if "upstreams" in self.__dict__:
            return self.upstreams  # type: ignore[return-value]
        out: dict[str, Sequence[str]] = {}
        for name, inv in self._invs.items():
            spec = inv.spec
            names = spec.upnames  # stale only if ``up`` grew since (its number differs): what else
            out[name] = (  # changes ``up`` drops it (plain_dag's after= edges, expansion.rewire)
                names if names is not None and len(names) == len(spec.up) else [u.name for u in spec.up]
            )
        return out

    @cached_property
    def reused(self) -> set[str]:
        """Tasks that did not run because an earlier run's outcome stands (``resume=``); those
        whose value was not stored have none in ``results``."""
        return {name for name, inv in self._invs.items() if getattr(inv, "reused", False)}

    @cached_property
    def sizes(self) -> dict[str, int]:
        """Task name -> bytes of its stored value."""
        return {name: inv.size for name, inv in self._invs.items() if inv.size is not None}

    @cached_property
    def cache_keys(self) -> dict[str, str]:
        """Task name -> its cache key."""
        return {name: inv.cache_key for name, inv in self._invs.items() if inv.cache_key is not None}

    @cached_property
    def parents(self) -> dict[str, str]:
        """Child task name -> the name of the task that called it."""
        return {name: inv.parent.name for name, inv in self._invs.items() if inv.parent is not None}

    @property
    def ok(self) -> bool:
        """True when no task FAILED and none was CANCELLED."""
        states = self.states.values()
        return TaskState.FAILED not in states and TaskState.CANCELLED not in states

    @property
    def cancelled(self) -> bool:
        """True when the run was stopped (cancelled, interrupted); not for a run that failed,
        whose fail_fast siblings of the failure ended CANCELLED."""
        if self.stopped is not None:
            return self.stopped
        if self.recorded_state is not None:
            return self.recorded_state == "cancelled"
        return any(s is TaskState.CANCELLED for s in self.states.values()) and not self.errors

    @property
    def error(self) -> BaseException | None:
        """The first task failure, the one ``node.run()`` raises; None if nothing failed."""
        return self.errors.get(self.first_failure) if self.first_failure else None

    def raise_for_failure(self) -> Run:
        """Raise the first task failure (the task's own exception), if any; else return self."""
        if self.error is not None:
            raise self.error
        return self

    @classmethod
    def load(cls, run_id: str, store: Any = None) -> Run:
        """Reopen a recorded run from the store (states, durations, attempts, cached values,
        errors as ``ErrorRecord`` with the exception's type, message and traceback text)."""
        return hooks.load_run(run_id, store)

    def items(self, name: str) -> ItemRows:
        """The items of the mapped node ``name``, in input order: one row per item with its
        ``index``, ``params`` (the mapped parameters' values), ``state``, ``value``,
        ``duration``, ``attempts`` and ``error``. ``.to_pandas()`` makes a DataFrame of them."""
        return item_rows(self, name)

    def item_params(self) -> dict[str, dict[str, Any]]:
        """Each item's mapped parameters, as its body got them (what the store keeps)."""
        return item_params(self)

    def counts(self) -> dict[TaskState, int]:
        """How many tasks ended in each state."""
        out: dict[TaskState, int] = {}
        for s in self.states.values():
            out[s] = out.get(s, 0) + 1
        return out

    @property
    def status(self) -> str:
        """"succeeded", "failed", "cancelled"; for a run loaded from the store also "skipped" (a
        schedule tick that did not run), "running" (still going) or "crashed" (its process died)."""
        if self.recorded_state in ("skipped", "running", "crashed"):
            return self.recorded_state
        if self.cancelled:
            return "cancelled"
        return "succeeded" if self.ok else "failed"

    def summary(self) -> str:
        """One line: status, duration and counts by state."""
        counts = ", ".join(f"{n} {s.value}" for s, n in self.counts().items())
        return f"run {self.id} {self.status} in {_fmt_seconds(self.duration)}: {counts or 'no tasks'}"

    def report(self) -> str:
        """A readable, fixed-width table of every task."""
        rows = [("task", "state", "attempts", "duration", "error")]
        states = self.states
        maps: dict[str, list[int]] = {}  # a mapped node -> [items, items that did not succeed]
        for name, state in states.items():
            base = item_base(name)
            if base is not None and base in states:
                count = maps.setdefault(base, [0, 0])
                count[0] += 1
                count[1] += state is not TaskState.SUCCEEDED
        for name, state in states.items():
            note = error_line(self.errors.get(name)) or _fmt_size(self.sizes.get(name))
            if name in maps and maps[name][1]:
                note = f"{maps[name][1]} of {maps[name][0]} items did not succeed"
            rows.append(
                (
                    name,
                    state.value + _label(name, self),
                    str(self.attempts.get(name, 0)),
                    _fmt_seconds(self.durations.get(name)),
                    note,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [self.summary(), ""]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
        return "\n".join(line.rstrip() for line in lines)

    def __str__(self) -> str:
        return self.report()

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.status}: {len(self.states)} tasks>"

    def _repr_html_(self) -> str:
        renderer = _html_renderer
        if renderer is not None:
            try:
                return renderer(self)
            except Exception:  # a front end must never hide the record
                log.exception("drawing run %s failed; showing its table", self.id)
        return self._table_html()

    def _table_html(self) -> str:
        """The run as a plain HTML table (no graph): what a notebook shows without nborch.display."""
        import html  # only for a notebook without nborch.display: html.entities costs 2 ms at import

        esc = html.escape
        colors = {
            TaskState.SUCCEEDED: "#2e7d32", TaskState.FAILED: "#c62828",
            TaskState.UPSTREAM_FAILED: "#ef6c00", TaskState.SKIPPED: "#757575",
            TaskState.CANCELLED: "#6a1b9a", TaskState.RUNNING: "#1565c0",
        }
        body = []
        for name, state in self.states.items():
            color = colors.get(state, "#000")
            body.append(
                "<tr>"
                f"<td style='text-align:left'><code>{esc(name)}</code></td>"
                f"<td style='text-align:left;color:{color}'>{esc(state.value)}"
                f"{esc(_label(name, self))}</td>"
                f"<td>{self.attempts.get(name, 0)}</td>"
                f"<td>{esc(_fmt_seconds(self.durations.get(name)))}</td>"
                f"<td style='text-align:left'>{esc(error_line(self.errors.get(name), 200))}</td>"
                "</tr>"
            )
        return (
            "<div class='nborch-run'>"
            f"<p><b>{esc(self.summary())}</b></p>"
            "<table><thead><tr><th>task</th><th>state</th><th>attempts</th><th>duration</th>"
            "<th>error</th></tr></thead><tbody>" + "".join(body) + "</tbody></table></div>"
        )

"""``RunView``: a run's events folded into per-task status, the state every renderer shares.

Pure Python (no IPython, widgets or graphviz): the widget, the DOT text and the HTML table only
read a ``RunView``. It is itself a subscriber (``run(node, on_event=view)``), folds a batch of
events at once (``apply_all``, what the live display does at each repaint), and
``finish(run)`` reconciles it with the final ``Run`` record, which has the last word;
``RunView.from_run(run)`` is the view of a finished (or reloaded) run. The details it keeps of
one task are a ``TaskStatus`` (``task_status.py``); mapped nodes are counted as
``mapped_nodes.py`` says. The names of those two modules are importable from here as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.eventbus import CircuitEvent, RunEvent, TaskEvent, TaskOutput, TaskProgress
from ..core.graph import Graph
from ..core.mapping import MapTask
from ..core.record import Run
from ..core.state import TaskState
from .mapped_nodes import MAP_DRAWN, map_counts, map_note, maps_from_names, text_bar
from .task_status import KnownTask, TaskStatus, fmt_elapsed

__all__ = [
    "MAP_DRAWN", "KnownTask", "RunView", "TaskStatus", "fmt_elapsed", "map_counts", "map_note",
    "maps_from_names", "text_bar",
]

PENDING, RUNNING, RETRYING = TaskState.PENDING, TaskState.RUNNING, TaskState.RETRYING
SUCCEEDED = TaskState.SUCCEEDED


class RunView:
    """Per-task status of one run, built from its events (call it with each event).

    ``states`` holds every task's state (in the order tasks were added), and per-state counts
    are kept up to date as events arrive: reading them is O(1). The details of a task (a
    ``TaskStatus``) are made when something asks for them (``status(name)``): a task that
    simply succeeded keeps only its last event until then, so a run of 100,000 tasks whose
    table shows 60 of them makes about 60. ``tasks`` makes them all (small runs, tests).

    ``version`` grows on every change and ``shape`` whenever tasks are added (child tasks
    appeared), so a renderer can tell "repaint" from "lay out again" cheaply.
    """

    def __init__(self, graph: Graph | None = None, *, output_limit: int = 20_000) -> None:
        self.states: dict[str, TaskState] = {}
        self.parents: dict[str, str] = {}  # child task -> the task that called it
        self.run_id: str | None = None
        self.run_state: TaskState | None = None  # None until the run started
        self.started: float | None = None
        self.finished: float | None = None
        self.duration: float | None = None  # the run's, once known from its record
        self.breakers: dict[str, str] = {}
        self.progressing: dict[str, None] = {}  # tasks that reported progress, in first-report order
        self.version = 0
        self.shape = 0
        self.output_limit = output_limit
        self.not_run = 0  # tasks that succeeded without running (cached or reused)
        self._details: dict[str, TaskStatus] = {}
        self._last: dict[str, TaskEvent] = {}  # the final event of a task with no details yet
        self._record: Run | None = None  # the finished run: details of tasks no event told of
        self._counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        # mapped nodes: placeholder -> its items' names, once it expanded (a live run's
        # ``Graph.items``, which the engine fills as maps expand), and every placeholder's name
        self.maps: Mapping[str, list[str]] = graph.items if graph is not None else {}
        self.mapped: set[str] = set()
        self._items_key: tuple[int, int] = (0, 0)
        self._items: frozenset[str] = frozenset()
        self._map_counts: tuple[tuple[int, int], dict[str, dict[TaskState, int]]] = ((-1, -1), {})
        if graph is not None:
            self.sync(graph)

    @classmethod
    def from_run(cls, run: Run) -> RunView:
        """The view of a finished run, from its record alone (a run reloaded from the store)."""
        view = cls()
        view.run_id = run.id
        view.maps = maps_from_names(run.states)
        view.mapped = set(view.maps)
        view.finish(run)
        return view

    # -- mapped nodes ------------------------------------------------------------------------------

    def item_names(self) -> frozenset[str]:
        """The names of every mapped node's items (made again only when maps expanded)."""
        maps = self.maps
        key = (len(maps), sum(len(v) for v in maps.values()))
        if key != self._items_key:
            self._items = frozenset(n for items in list(maps.values()) for n in items)
            self._items_key = key
        return self._items

    def map_counts(self, name: str) -> dict[TaskState, int]:
        """Mapped node ``name``'s items per state (empty before it expanded); counted once per
        change of the view (a repaint's graph and table share the count of 10,000 items)."""
        key = (self.version, len(self.states))
        if self._map_counts[0] != key:
            self._map_counts = (key, {})
        memo = self._map_counts[1]
        counts = memo.get(name)
        if counts is None:
            counts = memo[name] = map_counts(self.maps.get(name, ()), self.states)
        return counts

    # -- reading -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.states)

    @property
    def total(self) -> int:
        """How many tasks the run has (so far: child tasks and a map's items add to it; a
        mapped node's placeholder is not one, its items are)."""
        return len(self.states) - len(self.mapped)

    @property
    def settled(self) -> int:
        """How many tasks reached a final state (placeholders of mapped nodes left out)."""
        c = self.counts()
        return self.total - c[PENDING] - c[RUNNING] - c[RETRYING]

    @property
    def active(self) -> int:
        """How many tasks are running or waiting to retry: their times are ticking."""
        return self._counts[RUNNING] + self._counts[RETRYING]

    def counts(self) -> dict[TaskState, int]:
        """Tasks per state (states with no task included, as 0); a mapped node's placeholder
        is not counted (its items are)."""
        counts = dict(self._counts)
        states = self.states
        for name in self.mapped:
            state = states.get(name)
            if state is not None:
                counts[state] -= 1
        return counts

    @property
    def status(self) -> str:
        """The run's state in a word: "starting", "running", or its final state."""
        if self.run_state is None:
            return "starting"
        return self.run_state.value

    @property
    def tasks(self) -> dict[str, TaskStatus]:
        """Every task's details, in order (each made now if it was not yet: ``task`` for one)."""
        return {name: self.task(name) for name in list(self.states)}

    def task(self, name: str) -> TaskStatus:
        """The details of task ``name`` (a pending one if the view does not know it)."""
        st = self._details.get(name)
        if st is not None:
            return st
        st = self._details[name] = TaskStatus(name, self.parents.get(name))
        st.state = self.states.get(name, PENDING)
        e = self._last.pop(name, None)
        if e is not None:  # its last event, kept: it succeeded, or it runs since then
            st.fold_event(e, e[4] if e[2] is RUNNING else None)  # not_run counts it already
        elif self._record is not None and name in self._record.states:
            st.fold_record(self._record)
        return st

    def mark(self, name: str) -> str:
        """"cached" or "reused" for a task that succeeded without running, else ""."""
        if self.states.get(name) is not SUCCEEDED:
            return ""
        e = self._last.get(name)
        if e is not None:
            return "cached" if e[9] else "reused" if e[12] else ""
        return self.task(name).mark

    # -- folding events ----------------------------------------------------------------------------

    def add(self, name: str, parent: str | None = None) -> TaskStatus:
        """Add a task (PENDING) if it is new; return its details."""
        self._add(name, parent)
        return self.task(name)

    def _add(self, name: str, parent: str | None) -> None:
        if name not in self.states:
            self.states[name] = PENDING
            if parent is not None:
                self.parents[name] = parent
            self._counts[PENDING] += 1
            self.shape += 1
            self.version += 1

    def sync(self, graph: Graph) -> bool:
        """Add the graph's tasks this view does not know yet; True if any were added."""
        states, specs = self.states, graph.specs
        if len(specs) == len(states):
            return False
        items = list(specs.items())  # a copy: child tasks may be added meanwhile
        new = [name for name, _ in items if name not in states] if states else [name for name, _ in items]
        if not new:
            return False
        states.update(dict.fromkeys(new, PENDING))
        self.parents.update({name: spec.parent for name, spec in items if spec.parent is not None})
        found = [name for name, spec in items if type(spec.task) is MapTask]  # placeholders of mapped nodes
        if found:
            self.mapped.update(found if len(new) == len(items) else set(found) & set(new))
        self._counts[PENDING] += len(new)
        self.shape += 1
        self.version += 1
        return True

    def __call__(self, event: Any) -> bool:
        """A RunView is a subscriber: ``run(node, on_event=view)``."""
        return self.apply(event)

    def apply(self, event: Any) -> bool:
        """Fold one event in; True if anything a renderer shows changed."""
        return self.apply_all([event])

    def apply_all(self, events: list[Any]) -> bool:
        """Fold a batch of events in, in order; True if anything a renderer shows changed.

        Only each task's last event is folded (it carries the state, attempt, error, cache
        marks and, once final, when the first attempt started), plus the time a task was
        first seen running: the same result as folding each, at a fraction of the cost.
        """
        if not events:
            return False
        last: dict[str, TaskEvent] = {}
        began: dict[str, float] = {}
        other = []
        for e in events:
            if type(e) is TaskEvent:
                last[e[1]] = e
                if e[2] is RUNNING and e[1] not in began:
                    began[e[1]] = e[4]
            else:
                other.append(e)
        states, counts, details, keep = self.states, self._counts, self._details, self._last
        for name, e in last.items():
            old = states.get(name)
            # the common case: a task with no details yet that succeeded at its first attempt
            # (one of the graph, or one that appeared meanwhile: a child task, a map's item): its
            # state changes, its event is kept for whoever asks for its details
            if (old is not None and old is not SUCCEEDED and e[2] is SUCCEEDED and e[3] == 1
                    and e[11] is not None and name not in details and (e[8] is None or name in self.parents)):
                states[name] = SUCCEEDED
                counts[old] -= 1
                counts[SUCCEEDED] += 1
                keep[name] = e
                if e[9] or e[12]:
                    self.not_run += 1
            elif (old is None and e[2] is SUCCEEDED and e[3] == 1 and e[11] is not None
                  and name not in details):  # appeared meanwhile, and done
                self._add(name, e[8])
                states[name] = SUCCEEDED
                counts[PENDING] -= 1
                counts[SUCCEEDED] += 1
                keep[name] = e
                if e[9] or e[12]:
                    self.not_run += 1
            elif e[2] is PENDING and old is None and e[3] == 0 and name not in details:  # an item, a child
                self._add(name, e[8])
            elif (e[2] is RUNNING and old is PENDING and e[3] == 1 and name not in details
                  and name not in keep and (e[8] is None or name in self.parents)):
                # started, with no details yet: counted running; its details (and the time
                # it started, for its ticking time) are made when something shows it
                states[name] = RUNNING
                counts[PENDING] -= 1
                counts[RUNNING] += 1
                keep[name] = e
            else:
                self._task_event(e, began.get(name))
        changed = bool(last)
        for e in other:
            changed = self._other_event(e) or changed
        if changed:
            self.version += 1
        return changed

    def running(self, started: dict[str, float]) -> None:
        """Mark these tasks running since these times (the engine's clock), unless an event
        said more of them already (what a display that did not get RUNNING events is told)."""
        for name, at in started.items():
            state = self.states.get(name)
            if state is None or state is PENDING:
                st = self.add(name)
                self._set_state(st, RUNNING)
                if st.started is None:
                    st.started = at
                self.version += 1

    def _other_event(self, event: Any) -> bool:
        if isinstance(event, TaskProgress):
            st = self.add(event.task)
            if event.task not in self.progressing:
                self.progressing[event.task] = None
            st.done, st.total = event.done, event.total
        elif isinstance(event, TaskOutput):
            self.add(event.task).append_output(event.text, self.output_limit)
        elif isinstance(event, RunEvent):
            self.run_id = event.run_id
            self.run_state = event.state
            if event.state is RUNNING:
                self.started = event.time
            else:
                self.finished = event.time
        elif isinstance(event, CircuitEvent):
            self.breakers[event.breaker] = event.new_state
        else:
            return False
        return True

    def _set_state(self, st: TaskStatus, state: TaskState) -> None:
        old = self.states.get(st.name)
        if old is not state:
            if old is SUCCEEDED and (st.cached or st.reused):
                self.not_run -= 1
            if old is not None:
                self._counts[old] -= 1
            self._counts[state] += 1
            self.states[st.name] = state
        st.state = state

    def _task_event(self, e: TaskEvent, began: float | None) -> None:
        """Fold ``e`` (the task's latest event); ``began``: when it was first seen running."""
        st = self.add(e.task, e.parent)
        if e.parent is not None and st.parent is None:
            st.parent = self.parents[e.task] = e.parent
        self._set_state(st, e.state)
        self.not_run += st.fold_event(e, began)

    # -- the end -----------------------------------------------------------------------------------

    def finish(self, run: Run) -> None:
        """Take the final states, attempts, durations, errors, cache marks and output from
        the ``Run``, which has the last word.

        Only tasks the events left behind are corrected, so the per-task tables of a big run
        are not built when the events already told everything; details asked for later come
        from the record for those.
        """
        states = self.states
        rs = run.states
        stale = [name for name, state in rs.items() if states.get(name) is not state]
        stale += [name for name, st in self._details.items()
                  if st.duration is None and st.started is not None and name in rs and st.state is rs[name]]
        if stale:
            parents, counts = run.parents, self._counts
            for name in stale:
                self._last.pop(name, None)
                self._add(name, parents.get(name))
                state = rs[name]
                counts[states[name]] -= 1
                counts[state] += 1
                states[name] = state
                st = self._details.get(name)
                if st is not None:  # keep what the events told (output, progress), correct the rest
                    st.state = state
                    st.fold_record(run)
            succeeded = (n for n in run.cached | run.reused if rs.get(n) is SUCCEEDED)
            self.not_run = sum(1 for _ in succeeded)
        self._record = run
        for name, log in run.logs.items():  # output a thread wrote just before the end
            if not log:
                continue
            self.add(name).replace_output(log, self.output_limit)
        self.run_id = run.id
        self.duration = run.duration
        c = self._counts
        recorded = getattr(run, "recorded_state", None)
        self.run_state = (
            TaskState.CANCELLED if c[TaskState.CANCELLED] else TaskState.FAILED if c[TaskState.FAILED]
            else TaskState.RUNNING if recorded == "running" and self.settled < self.total
            else TaskState.SUCCEEDED
        )
        self.version += 1

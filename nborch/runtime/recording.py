"""What a run records and reads back: the store and the recorder it opens as it starts, the
plan of a resumed run (read from a recorded one), the ``Run`` record built at its end, and
the row of a schedule's skipped tick.

The store itself is a front end (``nborch.store``), reached through ``nborch.hooks``.
"""

from __future__ import annotations

import os
from typing import Any

from ..core import hooks
from ..core.clock import wall_time
from ..core.engine import Engine
from ..core.graph import Graph
from ..core.node import Node
from ..core.record import Run
from ..core.state import TaskState

__all__ = ["Preset", "make_record", "open_recorder", "open_store", "record_skipped_tick", "resume_plan"]

Preset = tuple[Any, "str | None", bool, bool]  # value, cache key, has a value, from the cache
_SKIP_ROW = "INSERT OR REPLACE INTO runs (id, name, state, started, finished) VALUES (?, ?, ?, ?, ?)"


def open_store(option: Any) -> Any:
    """``store=True`` (default): the store at $NBORCH_HOME or ./.nborch; False/None: no
    recording and no cache; a path or a SqliteStore: that one. A store that cannot be used
    (damaged, read-only) gives one warning, and None: the run goes on unrecorded."""
    if option is False or option is None:
        return None
    return hooks.open_store(option)


def open_recorder(run_id: str, graph: Graph, node: Node, options: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(recorder, cache, resume presets) of a run about to start, or Nones without a store.
    Raises before anything runs for a ``run_id`` recorded already or an unknown ``resume=``."""
    store = open_store(options.get("store", True))
    if store is None:
        return None, None, {}
    cache = hooks.open_cache(store, run_id)
    preset = resume_plan(store, graph, options["resume"], cache) if options.get("resume") else {}
    recorder = hooks.start_recording(store, run_id, name=options.get("name") or getattr(node, "name", None),
                                     durable=bool(options.get("durable")), given_id=bool(options.get("run_id")))
    return recorder, cache, preset


def resume_plan(store: Any, graph: Graph, run_id: str | Run, cache: Any) -> dict[str, Preset]:
    """Tasks of ``run_id`` that need not run again: name -> (value, cache key, stored, stored).
    ``run_id`` may be the ``Run`` record itself (a front end that keeps more values than the
    store, or wants a task to run again, hands it in with its ``results`` and ``states``).

    Everything that did not succeed runs again, with everything downstream of it (a task that
    succeeded under ``all_done`` despite a failed upstream runs again once that upstream has),
    and so does any succeeded task whose value a re-run task needs but which was not stored
    (values are stored by ``cache=True``, and a run that did not succeed keeps the rest it can
    pickle, see ``store.resume.keep_for_resume``). A succeeded task that nothing re-run needs
    stands as it was, without a value when none was stored (``stored`` False): it is reported
    as reused, and no value is made up for it.

    The items of a mapped node (``name:i``) are planned one by one: a re-run map expands again,
    and its items that succeeded stand (their presets are taken when the item is made), so one
    failed item of thousands runs alone. An item also depends on its map's concrete sources:
    if one of those runs again, so do all the items.
    """
    from ..core.mapping import MapTask, item_base

    previous = run_id if isinstance(run_id, Run) else hooks.load_run(run_id, store)
    maps = {n for n, spec in graph.specs.items() if type(spec.task) is MapTask}

    def known(name: str) -> bool:
        return name in graph.specs or item_base(name) in maps

    ups: dict[str, list[str]] = {n: [u.name for u in spec.up] for n, spec in graph.specs.items()}
    for name in previous.states:
        if name not in graph.specs and known(name):
            base = item_base(name)
            assert base is not None  # known(name) and not a spec: an item
            sources = [u.name for u in graph.specs[base].up]  # the map's concrete sources
            ups[name] = [u for u in previous.upstreams.get(name, ()) if known(u)] + sources
            ups[base].append(name)  # the map's value is its items' values
    succeeded = {n for n, s in previous.states.items() if s is TaskState.SUCCEEDED and known(n)}
    stored = {n: (previous.results[n], previous.cache_keys.get(n)) for n in succeeded if n in previous.results}
    rerun = {n for n in ups if n not in succeeded}
    down: dict[str, list[str]] = {}
    for name, its_ups in ups.items():
        for up in its_ups:
            down.setdefault(up, []).append(name)
    frontier = list(rerun)
    while frontier:  # what depends on a re-run task runs again
        for d in down.get(frontier.pop(), ()):
            if d not in rerun:
                rerun.add(d)
                frontier.append(d)
    frontier = list(rerun)
    while frontier:  # what a re-run task needs and cannot be read back runs again
        for up in ups.get(frontier.pop(), ()):
            if up in succeeded and up not in stored and up not in rerun:
                rerun.add(up)
                frontier.append(up)
    return {
        n: (*stored[n], True, stored[n][1] is not None) if n in stored else (None, None, False, False)
        for n in succeeded if n not in rerun
    }


def make_record(engine: Engine, node: Node, started: float) -> Run:
    """The ``Run`` record of ``engine``'s finished run of ``node`` (begun at wall time ``started``)."""
    try:
        value = engine.graph.value(node, engine.results)
    except KeyError:  # pragma: no cover - every node of the graph has a spec
        value = None
    record = Run(
        engine.run_id,
        results=engine.results,
        value=value,
        started=started,
        finished=wall_time(),
        duration=max(engine.finished - engine.started, 0.0),
        first_failure=engine.first_failure.name if engine.first_failure is not None else None,
        invs=engine.invs,
        logs={name: "".join(parts) for name, parts in engine.output.logs.items()},
    )
    record.stopped = engine.cancelling
    record.name = getattr(node, "name", None)
    record.item_names = [name for names in engine.graph.items.values() for name in names]
    return record


def record_skipped_tick(store: Any, name: str | None, tick: float) -> None:
    """Queue the ``runs`` row (state ``skipped``) of a schedule's tick due at ``tick`` that did
    not run because the previous run was still going."""
    # finished stays NULL: the tick never ran (the history shows no duration for it)
    store.enqueue(_SKIP_ROW, (os.urandom(6).hex(), name, "skipped", tick, None))

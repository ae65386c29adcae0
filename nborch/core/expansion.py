"""Mapped nodes in a running engine: a placeholder expands into item tasks once its inputs are
known, and settles when every item has (see ``nborch.mapping``). Each ``Engine`` has one.

Expanding adds the items to the running graph as child tasks are added (names, specs, invs),
moves the placeholder's downstream edges onto the items (so a reduce counts every item as an
upstream), and expands at once the maps that zip this one item by item, so items stream.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .arguments import resolve, value_of
from .gc_pause import GcPause
from .graph import Spec, find_nodes
from .introspection import fn_name
from .invocation import (
    AS_BOUND,
    CANCELLED,
    DECIDED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    UPSTREAM_FAILED,
    count_settled,
)
from .mapping import MapError, Mapped, _label, as_items, item_base, item_tasks
from .node import Node
from .remote import Remote, has_remote, materialize
from .run_tasks import add_specs
from .state import RUN, decide

if TYPE_CHECKING:
    from .engine import Engine
    from .invocation import Inv

__all__ = ["Expansions", "MapWait"]


class MapWait:
    """What a mapped placeholder waits for before it expands."""

    __slots__ = ("maps", "ready", "split")

    def __init__(self) -> None:
        self.maps = 0  # the maps it zips item by item that have not expanded yet
        self.ready = False  # its other inputs (dynamic sources, fixed nodes) have succeeded
        self.split: dict[str, list[Any]] | None = None  # remote sources' items, made on their cluster


class Expansions:
    """The engine's mapped placeholders: their readiness, expansion and settling."""

    __slots__ = ("engine", "consumers")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.consumers: dict[str, list[Inv]] = {}  # placeholder -> the placeholders zipping it

    def added(self, inv: Inv) -> None:
        """A placeholder joined the run: it waits for the maps it zips item by item."""
        wait = inv.mapping = MapWait()
        items = self.engine.graph.items
        for src in inv.spec.elementwise or ():
            if src.name not in items:  # not expanded yet
                wait.maps += 1
                self.consumers.setdefault(src.name, []).append(inv)

    def start(self, inv: Inv) -> None:
        """Its inputs (the dynamic sources, the nodes among its fixed values) succeeded."""
        inv.call = DECIDED
        wait = inv.mapping
        assert wait is not None
        remote = self.remote_sources(inv)
        if remote:  # a source left on a cluster: split it there first (only its length comes here)
            inv.job = self.engine.loop.create_task(self.split(inv, remote))  # type: ignore[union-attr]
            return
        wait.ready = True
        if wait.maps == 0:
            self.expand(inv)

    def remote_sources(self, inv: Inv) -> dict[str, Remote]:
        """The dynamic sources whose value is still on a cluster (a ``Remote``), by parameter."""
        mapped: Mapped = inv.spec.task.mapped  # type: ignore[attr-defined]
        out = {}
        for name, src in mapped.sources:
            if isinstance(src, Node) and not (mapped.mode == "zip" and isinstance(src, Mapped)):
                value = value_of(self.engine, src)
                if has_remote(value):
                    out[name] = value
        return out

    async def split(self, inv: Inv, remote: dict[str, Any]) -> None:
        """Turn each remote source into its items: on an executor that can (Dask), one remote
        handle per element made on the cluster, so the items' tasks take their element worker
        to worker; elsewhere the value is fetched. Then expand as usual."""
        engine = self.engine
        wait = inv.mapping
        assert wait is not None
        try:
            split: dict[str, list[Any]] = {}
            mapped: Mapped = inv.spec.task.mapped  # type: ignore[attr-defined]
            who = f"{fn_name(mapped.fn)}.{'map' if mapped.mode == 'zip' else 'product'}() ({inv.name!r})"
            for name, value in remote.items():
                what = f"{_label(name)} (the value of {value.task!r})" if isinstance(value, Remote) else _label(name)
                parts = await value.executor.split(value, who, what) if isinstance(value, Remote) else None
                split[name] = parts if parts is not None else await materialize(value)
        except asyncio.CancelledError:
            inv.job = None
            if not inv.state.is_final:
                engine.settle(inv, CANCELLED)
            return
        except Exception as exc:  # the cluster could not say: the placeholder fails with it
            inv.job = None
            if not inv.state.is_final:
                engine.fail(inv, exc)
                self.abandon_consumers(inv)
            return
        inv.job = None
        if inv.state is not PENDING:
            return
        wait.split = split
        wait.ready = True
        if wait.maps == 0:
            self.expand(inv)

    def expand(self, inv: Inv) -> None:
        engine = self.engine
        if inv.state is not PENDING:  # cancelled meanwhile
            return
        mapped: Mapped = inv.spec.task.mapped  # type: ignore[attr-defined]
        who = f"{fn_name(mapped.fn)}.{'map' if mapped.mode == 'zip' else 'product'}() ({inv.name!r})"
        inv.state = RUNNING
        inv.started = engine.now()
        if engine.publisher.listening:
            engine.publisher.emit(inv, RUNNING)
        # Building the items allocates only long-lived objects, nothing for the cyclic GC to find:
        # it is paused meanwhile, as for the graph at the run's start (measured: 100,000 items
        # built with it on spent 13-15 µs an item in collections, a plain task 1-1.5 µs)
        with GcPause():
            try:
                resolved = self.inputs(inv, mapped, who)
                fixed = {k: resolve(engine, v) for k, v in mapped.fixed.items()}
                pairs = item_tasks(mapped, resolved, fixed)
                specs = self.item_specs(inv, mapped, pairs)
            except Exception as exc:
                inv.state = PENDING  # settle from here: a failed expansion is the placeholder's failure
                engine.fail(inv, exc)
                self.abandon_consumers(inv)
                return
            self.rewire(inv, specs)
            new = add_specs(engine, specs, inv.parent)
            engine.freezer.grew(len(new))
        inv.map_left = len(new)
        for item in new:
            item.map_of = inv
        if engine.publisher.wants_pending:
            for item in new:
                engine.publisher.emit(item, PENDING)
        for item in new:
            self.ready(item)
        for consumer in self.consumers.pop(inv.name, ()):
            wait = consumer.mapping
            assert wait is not None
            wait.maps -= 1
            if wait.maps == 0 and wait.ready:
                self.expand(consumer)
        if not new:
            self.finish(inv)

    def inputs(self, inv: Inv, mapped: Mapped, who: str) -> list[tuple[str, list[Any]]]:
        """Each source's items: a list as given, a map zipped item by item as its item tasks, any
        other node as its value (read now: it succeeded)."""
        engine = self.engine
        graph = engine.graph
        out = []
        split = inv.mapping.split if inv.mapping is not None else None
        for name, src in mapped.sources:
            if split and name in split:  # a remote source, split on its cluster
                out.append((name, as_items(split[name], who, repr(name))))
            elif isinstance(src, list):
                out.append((name, src))
            elif mapped.mode == "zip" and isinstance(src, Mapped):
                names = graph.items[graph.by_task[id(src)].name]
                out.append((name, [graph.specs[n].task for n in names]))
            else:
                out.append((name, as_items(value_of(engine, src), who, f"{_label(name)} (the value of {src!r})")))
        return out

    def item_specs(self, inv: Inv, mapped: Mapped, pairs: list[tuple[Any, dict[str, Any]]]) -> list[Spec]:
        """Specs for the item tasks, named ``<placeholder>:<index>``, in the placeholder's groups
        (limits, fail_fast, breakers hold across its items), wired to the items they zip."""
        engine = self.engine
        graph = engine.graph
        placeholder = inv.spec
        info = mapped.info
        bound = set(mapped.fixed) | {n for n, _ in mapped.sources}
        wants_context = "context" in info.params and "context" not in bound
        wants_state = "state" in info.params and "state" not in bound
        taken = graph.names.taken
        by_task = graph.by_task
        elementwise = mapped.mode == "zip" and any(isinstance(s, Mapped) for _, s in mapped.sources)
        specs = []
        names = [f"{placeholder.name}:{i}" for i in range(len(pairs))]
        clash = next((n for n in names if n in taken), None)
        if clash is not None:  # checked before any name is taken: nothing to give back
            raise MapError(f"item {clash!r} of {placeholder.name!r} would clash with a task of that name "
                           "(items are named NAME:i); rename that task")
        taken.update(names)
        for i, (task, params) in enumerate(pairs):
            spec = Spec(task, None, placeholder.parent)
            name = spec.name = spec.base = names[i]
            spec.item = (placeholder.name, i, params)
            spec.wants_context, spec.wants_state = wants_context, wants_state
            if placeholder.groups:
                spec.groups = placeholder.groups
            if elementwise:
                positional: list[tuple[int, str]] = []
                keywords: list[tuple[str, str]] = []
                plain = True  # no other node among the arguments: one lookup per upstream (Spec.plan_arguments)
                for where, value in (*enumerate(task.args), *task.kwargs.items()):
                    up = by_task.get(id(value))
                    if up is not None:
                        spec.refs = True
                        spec.up[up] = None
                        up.down.append(spec)
                        if isinstance(where, int):
                            positional.append((where, up.name))
                        else:
                            keywords.append((where, up.name))
                    elif plain and next(find_nodes(value), None) is not None:
                        plain = False
                if spec.refs and plain:
                    spec.plan_arguments(positional, keywords)
            graph.specs[name] = spec
            by_task[id(task)] = spec
            graph.nodes[id(task)] = task
            specs.append(spec)
        graph.items[placeholder.name] = [s.name for s in specs]
        for grp in placeholder.groups:
            grp.specs.extend(specs)
            call = engine.circuits.get(grp)
            if call is not None:
                call.remaining += len(specs)
        return specs

    def rewire(self, inv: Inv, items: list[Spec]) -> None:
        """The placeholder's downstream now waits for every item instead (a reduce counts each
        item as an upstream); with no items, it is decided on its other upstreams at once."""
        engine = self.engine
        placeholder = inv.spec
        downstream, placeholder.down = placeholder.down, []
        for d_spec in downstream:
            d_spec.up.pop(placeholder, None)
            d_spec.upnames = None  # (its edges change, not only in number)
            for item in items:
                d_spec.up[item] = None
                item.down.append(d_spec)
            d = engine.invs.get(d_spec.name)
            if d is None or d.state is not PENDING or d.call is not None:
                continue
            d.n_up += len(items) - 1
            if not items:
                self.decide(d)

    def decide(self, d: Inv) -> None:
        engine = self.engine
        if d.n_up == 0:
            engine.start(d)
            return
        decision = decide(d.rule, d.n_up, d.n_ok, d.n_failed, d.n_upfailed, d.n_skipped)
        if decision == RUN:
            engine.start(d)
        elif decision is not None:
            engine.settle(d, decision)  # type: ignore[arg-type]

    def ready(self, item: Inv) -> None:
        """Start an item whose upstream items have settled (or that has none); an item preset by
        a resumed run stands as it was."""
        engine = self.engine
        preset = engine.preset.get(item.name) if engine.preset else None
        if preset is None and engine.plan is not None:
            preset = self.reusable(item)
        if preset is not None:
            value, key, has_value, cached = preset
            item.call, item.reused = AS_BOUND, True
            if has_value:
                item.value, item.cache_key, item.cached = value, key, cached
                engine.results[item.name] = value
            engine.settle(item, SUCCEEDED)
            return
        if item.n_up == 0:
            engine.start(item)
            return
        for up in item.spec.up:
            u = engine.invs.get(up.name)
            if u is not None and u.state.is_final:
                count_settled(item, u.state)
        if item.n_ok + item.n_failed + item.n_upfailed + item.n_skipped:
            self.decide(item)

    def reusable(self, item: Inv) -> tuple[Any, None, bool, bool] | None:
        """An incremental run: the item's preset if its key is unchanged since its last success
        and none of its upstream items runs (adding an element re-runs only the new item)."""
        from .reuse import key_of

        engine = self.engine
        plan, memory = engine.plan, engine.memory
        spec = item.spec
        try:
            key = key_of(engine.graph, spec, plan.keys, None)
        except Exception:  # never break a run over a key: the item just runs
            key = None
        plan.keys[item.name] = key
        last = None
        if memory.reuses and key is not None:
            last = memory.succeeded.get(item.name)
            if last is None or last.key.digest != key.digest:  # moved: an element added before it
                last = memory.items.get(item_base(item.name) or "", {}).get(key.digest)
        if (key is None or last is None or last.key.digest != key.digest or not spec.task.options.reuse
                or spec.wants_state or any(u.name not in plan.reused for u in spec.up)):
            return None
        plan.reused[item.name] = last
        return (last.value, None, True, False)

    def settled(self, item: Inv) -> None:
        """An item reached a final state: its placeholder settles after its last item (its
        value, the list of the succeeded items' values, is there before the downstream starts)."""
        inv = item.map_of
        if inv is None:
            return
        inv.map_left -= 1
        state = item.state
        if state is not SUCCEEDED and state is not CANCELLED and inv.map_state is SUCCEEDED:
            if state is FAILED or state is UPSTREAM_FAILED:
                inv.map_state = UPSTREAM_FAILED
                if inv.error is None:
                    inv.error = item.error if state is FAILED else None
        elif state is CANCELLED and inv.map_state is SUCCEEDED:
            inv.map_state = CANCELLED
        if inv.map_left == 0:
            self.finish(inv)

    def finish(self, inv: Inv) -> None:
        engine = self.engine
        mapped = inv.spec.task.mapped  # type: ignore[attr-defined]
        value = engine.graph.value(mapped, engine.results)
        inv.value = value
        if inv.map_state is SUCCEEDED:  # a failed map has no value (a reduce reads its items')
            engine.results[inv.name] = value
        engine.settle(inv, inv.map_state)

    def abandon_consumers(self, inv: Inv) -> None:
        """The placeholder could not expand: the maps zipping it item by item cannot either."""
        for consumer in self.consumers.pop(inv.name, ()):
            if consumer.state is PENDING:
                consumer.call = DECIDED
                self.engine.settle(consumer, UPSTREAM_FAILED)
                self.abandon_consumers(consumer)

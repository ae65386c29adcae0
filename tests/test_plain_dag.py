"""The one-pass compile of a DAG of plain tasks (``nborch.core.plain_dag``) against the general
three-pass build it stands in for (upstreams as arguments, ``after=`` and ``>>``): on random
DAGs of every kind of member it either declines (and the general build runs) or makes the same
graph, and a run of it gives the same outcome."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nborch
import nborch.core.graph as graph_module
from nborch import DAG, DefinitionError, Parallel, Task, task
from nborch.core.graph import build_graph
from nborch.core.plain_dag import compile_plain_dag
from nborch.core.specs import Graph, Names

pytestmark = pytest.mark.timeout(120)

SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def measure(*xs: Any) -> int:
    return 1 + sum(x if isinstance(x, int) else len(x) for x in xs)


async def anoop(*xs: Any) -> int:
    return measure(*xs)


def snoop(*xs: Any) -> int:
    return measure(*xs)


def spoon(*xs: Any, scale: int = 1) -> int:  # unbound, ``scale`` takes a task named so in a DAG
    return measure(*xs) * scale


def pair(a: Any, b: Any = 0) -> int:
    return measure(a, b)


def with_context(*xs: Any, context: Any = None) -> int:
    return measure(*xs)


def needs(t0: Any) -> int:  # a parameter named like a task: an edge by name, in a DAG
    return measure(t0)


@task(name="shared")
def shared(*xs: Any) -> int:
    return measure(*xs)


@task
def decorated(*xs: Any) -> int:
    return measure(*xs)


def shape(graph: Graph) -> dict[str, Any]:
    """Everything of a graph the engine, the display and the store read, by name."""
    specs = {}
    for name, s in graph.specs.items():
        specs[name] = (
            s.name, s.base, s.explicit, [u.name for u in s.up], [d.name for d in s.down], s.argnames,
            s.argplan, s.refs, s.scope is graph.root, s.wants_context, s.wants_state, s.pipe, s.named,
            list(s.groups), s.parent, s.order, s.task is not None, s.elementwise, s.item, s.pipe_names,
            s.argslots, list(s.ups),
        )
    return {
        "order": list(graph.specs),
        "specs": specs,
        "by_task": sorted((k, s.name) for k, s in graph.by_task.items()),
        "members": {k: [s.name for s in v] for k, v in graph.members.items()},
        "nodes": sorted(graph.nodes),
        "groups": len(graph.groups),
        "items": graph.items,
        "taken": sorted(graph.names.taken),
        "next_index": graph.names.next_index,
        "owners": graph.names.owners,
    }


@contextmanager
def general_build() -> Iterator[None]:
    """Inside: build_graph takes the general three passes for every graph (the reference)."""
    saved = graph_module.compile_plain_dag
    graph_module.compile_plain_dag = lambda root, names: None  # type: ignore[assignment]
    try:
        yield
    finally:
        graph_module.compile_plain_dag = saved


def general(root: DAG) -> Graph:
    with general_build():
        return build_graph(root)


PLAIN_KINDS = ["plain"] * 4 + ["const", "mixed", "kw", "decorated", "shared", "again", "after"]
OTHER_KINDS = ["default", "context", "byname", "inlist", "outside", "afterlater", "aftername", "dupname",
               "parallel", "dedupe", "kwnode"]


@st.composite
def dags(draw: Any) -> tuple[DAG, bool]:
    """A DAG of up to 12 members, most of them plain, some of every other kind; True when every
    member is plain (the one-pass compile must take it)."""
    n = draw(st.integers(0, 12))
    only_plain = draw(st.booleans())  # half the DAGs: the one pass must take them
    tasks: list[Any] = []
    members: list[Any] = []
    plain = True
    used: list[str] = []
    for i in range(n):
        kind = draw(st.sampled_from(PLAIN_KINDS if only_plain else PLAIN_KINDS + OTHER_KINDS))
        ups = draw(st.lists(st.integers(0, max(0, len(tasks) - 1)), max_size=3)) if tasks else []
        args = [tasks[j] for j in ups]
        name = draw(st.sampled_from([None, f"t{i}"]))
        kw: dict[str, Any] = {} if name is None else {"name": name}
        if kind == "plain":
            t = Task(draw(st.sampled_from([anoop, snoop])), *args, **kw)
        elif kind == "default":
            t = Task(spoon, *args, **kw)
            plain = False
        elif kind == "const":
            t = Task(snoop, *args, 5, "ab", [1, 2], **kw)
        elif kind == "mixed":
            t = Task(snoop, 3, *args, **kw)
        elif kind == "kw":
            t = Task(spoon, *args, scale=2, **kw)
        elif kind == "decorated":
            t = decorated(*args)
        elif kind == "shared":
            t = shared(*args)
        elif kind == "context":
            t = Task(with_context, *args, **kw)
            plain = False
        elif kind == "byname":
            t = Task(needs, **kw)
            plain = False
        elif kind == "inlist":
            t = Task(snoop, list(args), **kw)
            plain = plain and not args
        elif kind == "kwnode":
            t = Task(pair, 1, b=args[0], **kw) if args else Task(pair, 1, b=2, **kw)
            plain = plain and not args
        elif kind == "outside":  # an upstream that is not a member: pulled in
            t = Task(snoop, Task(snoop, *args), **kw)
            plain = False
        elif kind == "after":  # dag.add(t, after=[...]) and >> on earlier members: plain
            t = Task(snoop, *args[:1], **kw)
            for j in draw(st.lists(st.integers(0, max(0, len(tasks) - 1)), max_size=3)) if tasks else []:
                t._add_after(tasks[j])
        elif kind == "afterlater":  # an earlier member after this one (a cycle, if one feeds it)
            t = Task(snoop, *args, **kw)
            if tasks:
                tasks[draw(st.integers(0, len(tasks) - 1))]._add_after(t)
                plain = False
        elif kind == "aftername":
            t = Task(snoop, **kw)
            t._add_after("t0")
            plain = False
        elif kind == "again" and members:
            members.append(members[-1])  # a member added twice is one task
            continue
        elif kind == "dupname" and used:
            t = Task(snoop, *args, name=used[-1])  # a GraphError, from either build
        elif kind == "parallel":
            t = Parallel(Task(snoop), Task(snoop))
            plain = False
        elif kind == "dedupe":
            t = Task(snoop, 1, dedupe=True)
            plain = False
        else:
            t = Task(snoop, *args, **kw)
        if name is not None and isinstance(t, Task) and t.node_name == name:
            used.append(name)
        if isinstance(t, Task):
            tasks.append(t)
        members.append(t)
    return DAG(*members), plain


@SETTINGS
@given(dags())
def test_the_one_pass_compile_makes_the_general_builds_graph(case: tuple[DAG, bool]) -> None:
    root, plain = case
    try:
        reference = shape(general(root))
    except DefinitionError as exc:
        with pytest.raises(type(exc)) as raised:
            build_graph(root)
        assert str(raised.value) == str(exc)
        return
    compiled = compile_plain_dag(root, Names())
    if plain:
        assert compiled is not None, "a DAG of plain tasks must take the one pass"
    if compiled is not None:
        assert shape(compiled) == reference
    assert shape(build_graph(root)) == reference


@settings(SETTINGS, max_examples=40)
@given(dags())
def test_a_run_of_the_one_pass_graph_is_the_general_builds_run(case: tuple[DAG, bool]) -> None:
    root, _ = case
    try:
        general(root)
    except DefinitionError:
        return
    with general_build():
        reference = nborch.run(root, store=False)
    run = nborch.run(root, store=False)
    assert run.states == reference.states
    assert run.results == reference.results
    assert run.value == reference.value
    assert run.upstreams == reference.upstreams


def test_a_big_dag_of_plain_tasks_runs_each_task_once_after_its_upstreams() -> None:
    order: list[int] = []

    async def step(i: int, *ups: int) -> int:
        assert all(u < i for u in ups)
        order.append(i)
        return i

    tasks: list[Task[int]] = []
    for i in range(2_000):
        tasks.append(Task(step, i, *tasks[max(0, i - 3): i], name=f"s{i}"))
    assert compile_plain_dag(DAG(*tasks), Names()) is not None
    run = nborch.run(DAG(*tasks), store=False)
    assert run.ok and sorted(order) == list(range(2_000))
    assert run.results["s1999"] == 1999 and run.upstreams["s1999"] == ["s1996", "s1997", "s1998"]


def test_a_name_given_twice_is_the_same_error_from_the_one_pass() -> None:
    a = Task(snoop, name="x")
    b = Task(snoop, a, name="x")
    with pytest.raises(DefinitionError, match="two different tasks are named 'x'"):
        build_graph(DAG(a, b))
    names = Names()
    with pytest.raises(DefinitionError):
        compile_plain_dag(DAG(a, b), names)
    assert not names.taken  # nothing of the failed build is kept


def test_dag_add_after_takes_the_one_pass_and_orders_the_run() -> None:
    order: list[str] = []

    def step(name: str) -> str:
        order.append(name)
        return name

    dag = DAG()
    first = dag.add(Task(step, "a", name="a"))
    second = dag.add(Task(step, "b", name="b"), after=[first])
    dag.add(Task(step, "c", name="c"), after=[second, first])
    assert compile_plain_dag(dag, Names()) is not None
    run = nborch.run(dag, store=False)
    assert run.ok and order == ["a", "b", "c"]
    assert run.upstreams["c"] == ["b", "a"]


def test_a_member_after_an_earlier_one_and_a_name_or_a_later_one_takes_the_general_build() -> None:
    for late in ("name", "later"):
        a, b, c = Task(snoop, name="a"), Task(snoop, name="b"), Task(snoop, name="c")
        b._add_after(a)
        b._add_after("c" if late == "name" else c)
        dag = DAG(a, b, c)
        assert compile_plain_dag(dag, Names()) is None
        assert shape(build_graph(dag)) == shape(general(dag))
        assert [u.name for u in build_graph(dag).specs["b"].up] == ["a", "c"]


def test_members_in_any_order_and_an_upstream_given_twice_build_the_same_graph() -> None:
    a = Task(snoop, 1, name="a")
    b = Task(snoop, a, a, name="b")  # one edge, the value twice
    c = Task(snoop, b, a, name="c")
    for dag in (DAG(a, b, c), DAG(c, b, a), DAG(b, a, c)):  # an upstream after its downstream: general
        assert shape(build_graph(dag)) == shape(general(dag))
        run = nborch.run(dag, store=False)
        assert run.results == {"a": 2, "b": 5, "c": 8}
    graph = compile_plain_dag(DAG(a, b, c), Names())
    assert graph is not None
    assert graph.specs["b"].argnames == ("a", "a") and [u.name for u in graph.specs["b"].up] == ["a"]
    assert compile_plain_dag(DAG(c, b, a), Names()) is None

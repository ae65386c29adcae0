"""What graph building words and wires, pinned across its modules: the cycle check
(``nborch.core.cycles``), name lookup inside DAG scopes (``nborch.core.scopes``) and the edges
(``nborch.core.wiring``), as a user meets them through ``build_graph`` and ``run``."""

from __future__ import annotations

import pytest

import nborch
from nborch import DAG, CycleError, GraphError, Task, task
from nborch.core.graph import Graph, Group, Names, Spec, build_graph, find_nodes, open_params_of, single_spec


def step():
    return 1


@task
def fetch(n=0):
    return n


@task
def use(fetch):
    return fetch


@task
def load():
    return "loaded"


def test_a_three_cycle_made_with_rshift_is_named_in_edge_order():
    x, y, z = Task(step, name="x"), Task(step, name="y"), Task(step, name="z")
    x >> y >> z >> x

    message = r"^tasks form a cycle: 'x' -> 'y' -> 'z' -> 'x'\. Remove one of these dependencies\.$"
    with pytest.raises(CycleError, match=message) as info:
        build_graph(DAG(x, y, z))

    assert info.value.cycle == ["x", "y", "z", "x"]


def test_a_cycle_is_named_upstream_to_downstream_whatever_the_dag_order():
    x, y, z = Task(step, name="x"), Task(step, name="y"), Task(step, name="z")
    x >> y >> z >> x

    with pytest.raises(CycleError) as info:
        build_graph(DAG(z, y, x))

    cycle = info.value.cycle
    assert set(zip(cycle, cycle[1:])) == {("x", "y"), ("y", "z"), ("z", "x")}


def test_a_cycle_below_an_argument_chain_names_only_the_cycle():
    a = Task(step, name="a")
    b = Task(lambda v: v, a, name="b")  # an argument edge: a -> b
    c, d = Task(step, name="c"), Task(step, name="d")
    b >> c >> d >> c

    with pytest.raises(CycleError) as info:
        build_graph(DAG(a, b, c, d))

    assert info.value.cycle == ["c", "d", "c"]


def test_a_graph_of_argument_edges_builds_and_runs_in_order():
    ran = []

    def first():
        ran.append("first")
        return 1

    def second(v):
        ran.append("second")
        return v + 1

    a = Task(first, name="a")
    b = Task(second, a, name="b")
    graph = build_graph(DAG(a, b))

    assert graph.edges == [("a", "b")]
    assert DAG(a, b).run() == {"a": 1, "b": 2}
    assert ran == ["first", "second"]


def test_a_dag_parameter_matching_two_calls_names_both_and_the_fix():
    with pytest.raises(
        GraphError,
        match=r"^task 'use': parameter 'fetch' matches several tasks \('fetch', 'fetch\[2\]'\)\. "
        r"Rename the tasks with name= or pass the upstream explicitly\.$",
    ):
        build_graph(DAG(fetch(1), fetch(2), use))


def test_after_a_name_of_two_calls_asks_for_the_full_name():
    dag = DAG(fetch(1), fetch(2))
    dag.add(load, after=["fetch"])

    with pytest.raises(
        GraphError,
        match=r"^task 'load' runs after 'fetch', which matches several tasks: 'fetch', 'fetch\[2\]'\. "
        r"Use the full name\.$",
    ):
        build_graph(dag)


def test_after_a_full_name_wires_that_call_only():
    dag = DAG(fetch(1), fetch(2))
    dag.add(load, after=["fetch[2]"])

    assert build_graph(dag).edges == [("fetch[2]", "load")]


def test_every_naming_problem_is_reported_at_once_in_wiring_order():
    dag = DAG(fetch(1), fetch(2), use)
    dag.add(load, after=["fech"])

    with pytest.raises(GraphError) as info:
        build_graph(dag)

    lines = str(info.value).split("\n")
    assert lines[0].startswith("task 'use': parameter 'fetch' matches several tasks")
    assert lines[1] == "task 'load' runs after 'fech', but no task has that name. Did you mean 'fetch'?"


def test_a_parameter_is_looked_up_in_its_own_dag_not_the_enclosing_one():
    inner = DAG(use)

    with pytest.raises(
        GraphError,
        match=r"^task 'use' needs 'fetch', but no argument was given and no task in the DAG has that name\.$",
    ):
        nborch.run(DAG(fetch(1), inner))


def test_a_parameter_in_a_nested_dag_takes_the_task_of_that_dag():
    inner = DAG(fetch(5), use)  # built first: its fetch is the run's 'fetch'
    outer = DAG(fetch(1), inner)

    assert build_graph(outer).edges == [("fetch", "use")]
    assert outer.run()["use"] == 5


def test_the_graph_module_keeps_its_public_names():
    import nborch.core.graph as graph

    assert graph.__all__ == [
        "Graph", "Group", "Names", "Spec", "build_graph", "find_nodes", "open_params_of", "single_spec",
    ]
    assert all(callable(name) for name in (Graph, Group, Names, Spec, build_graph, find_nodes,
                                           open_params_of, single_spec))


# -- tasks wired as they are collected -----------------------------------------------------------
# A task whose upstreams are all plain tasks among its arguments, and which leaves no parameter
# open, is wired in full by the collecting pass (``_Collector.wired_as_collected``); the wiring
# pass skips it. The graphs below are built both ways and must come out the same.


def pair(a, b):
    return (a, b)


def triple(a, b, c=0):
    return (a, b, c)


def named_in_dag(fetch):  # left open: found by its name inside the DAG
    return fetch


def _workflows() -> list[tuple[str, object]]:
    def layered():
        t0, t1 = Task(step, name="t0"), Task(step, name="t1")
        t2 = Task(pair, t0, t1, name="t2")
        t3 = Task(triple, t2, 5, c=t1, name="t3")  # an upstream among constants and by keyword
        return DAG(t0, t1, t2, t3)

    def pulled():  # the upstream is not in the DAG: the call pulls it in
        inner = Task(step, name="inner")
        return DAG(Task(pair, inner, inner, name="outer"))

    def pulled_after_down():  # the downstream is listed before its upstream
        a = Task(step, name="a")
        b = Task(pair, a, a, name="b")
        return DAG(b, a)

    def by_name():
        return DAG(fetch(2), Task(named_in_dag, name="user"), Task(pair, 1, 2, name="consts"))

    def sequence():
        a = Task(step, name="a")
        return nborch.Sequence(a, Task(pair, a, a, name="b"), Task(step, name="c"))

    def ordered():
        a, b = Task(step, name="a"), Task(step, name="b")
        c = Task(pair, a, b, name="c")
        late = Task(step, name="late")
        return DAG(DAG(a, b, c) >> late, late)

    def after_a_composite():
        a, b = Task(step, name="a"), Task(step, name="b")
        par = nborch.Parallel(a, b, limit=1)
        dag = DAG(par)
        dag.add(Task(pair, a, b, name="both"), after=[par])
        return dag

    return [(f.__name__, f) for f in (layered, pulled, pulled_after_down, by_name, sequence, ordered, after_a_composite)]


def _shape(graph: Graph) -> dict[str, tuple]:
    return {
        name: (sorted(u.name for u in s.up), sorted(d.name for d in s.down), s.argnames, s.argplan,
               s.named and sorted(s.named), s.pipe is not None, s.argslots, tuple(s.ups))
        for name, s in graph.specs.items()
    }


@pytest.mark.parametrize("name,make", _workflows(), ids=[n for n, _ in _workflows()])
def test_a_task_wired_as_collected_gets_the_graph_of_the_full_wiring_pass(name, make, monkeypatch):
    fast = build_graph(make())
    monkeypatch.setattr("nborch.core.graph._Collector.wired_as_collected", lambda self, node, spec: None)
    full = build_graph(make())

    assert _shape(fast) == _shape(full)
    assert all(s.argslots is None and s.ups == () for s in fast.specs.values())  # nothing kept


def test_tasks_wired_as_collected_run_with_their_upstream_values():
    t0, t1 = Task(step, name="t0"), Task(lambda: 10, name="t1")
    t2 = Task(pair, t0, t1, name="t2")
    t3 = Task(triple, t2, 5, c=t1, name="t3")
    outer = Task(pair, Task(lambda: "in", name="inner"), t3, name="outer")

    run = nborch.run(DAG(outer, t0, t1, t2, t3), store=False)

    assert run.ok
    assert run.results["t3"] == ((1, 10), 5, 10)
    assert run.results["outer"] == ("in", ((1, 10), 5, 10))
    assert set(run.upstreams["outer"]) == {"inner", "t3"}
    assert set(run.upstreams["t3"]) == {"t1", "t2"}

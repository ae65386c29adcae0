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

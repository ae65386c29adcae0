"""A run's edges as the store keeps them (the ``graph`` column of ``runs``): a reloaded run
has the edges the live run had, whatever the shape of its DAG, and a row written by an older
nborch, or damaged, or crafted to run code when read, loads without harm."""

from __future__ import annotations

import json
import pickle
import sqlite3
from pathlib import Path

import pytest

import nborch
from nborch import DAG, Task, task
from nborch.store import SqliteStore, load_run


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path)


def one(*values: int) -> int:
    return sum(values) + 1


def shapes() -> dict[str, DAG]:
    """DAGs of plain tasks whose edges are easy to get wrong when taken from the call's arguments."""
    a, b = Task(one, name="a"), Task(one, name="b")
    out = {}
    out["twice"] = DAG(a, b, Task(one, a, a, b, name="c"))  # an upstream given twice is one edge
    a, b = Task(one, name="a"), Task(one, name="b")
    dag = DAG(a, b)
    dag.add(Task(one, a, name="c"), after=[b])
    out["after"] = dag
    a, b = Task(one, name="a"), Task(one, name="b")
    dag = DAG(a, b)
    dag.add(Task(one, a, a, name="c"), after=[b])  # twice, and one more edge: as many names as edges
    out["twice and after"] = dag
    a, b = Task(one, name="a"), Task(one, name="b")
    c = Task(one, a, name="c")
    _ = b >> c
    out[">>"] = DAG(a, b, c)
    a, b = Task(one, name="a"), Task(one, name="b")
    dag = DAG(a, b)
    dag.add(Task(one, a, name="c"), after=[a])  # after an upstream it already has: no new edge
    out["after its own upstream"] = dag
    return out


@pytest.mark.parametrize("shape", list(shapes()))
def test_a_reloaded_run_has_the_live_runs_edges(store: SqliteStore, shape: str) -> None:
    run = nborch.run(shapes()[shape], store=store)
    assert run.ok
    expected = {"a": [], "b": [], "c": ["a", "b"]}
    if shape == "after its own upstream":
        expected = {"a": [], "b": [], "c": ["a"]}
    assert {k: sorted(v) for k, v in run.upstreams.items()} == expected
    assert all(type(v) is list for v in run.upstreams.values())
    loaded = load_run(run.id, store)
    assert loaded.upstreams == run.upstreams
    assert all(type(v) is list for v in loaded.upstreams.values())


def test_a_reloaded_big_dag_has_every_edge(store: SqliteStore) -> None:
    tasks: list[Task[int]] = []
    for i in range(500):
        tasks.append(Task(one, *tasks[max(0, i - 3): i], name=f"s{i}"))
    run = nborch.run(DAG(*tasks), store=store)
    loaded = load_run(run.id, store)
    assert loaded.upstreams == {f"s{i}": [f"s{j}" for j in range(max(0, i - 3), i)] for i in range(500)}


def _set_graph(store: SqliteStore, run_id: str, value: object) -> None:
    db = sqlite3.connect(store.path)
    with db:
        db.execute("UPDATE runs SET graph = ? WHERE id = ?", (value, run_id))
    db.close()


def test_a_run_recorded_with_edges_as_json_still_loads_them(store: SqliteStore) -> None:
    """Runs recorded before the edges were pickled kept them as JSON text."""

    @task
    def fetch(x):
        return x

    run = nborch.run(fetch.map([1, 2]), store=store)
    store.flush()
    old = {"fetch": ["fetch:0", "fetch:1"], "fetch:0": [], "fetch:1": [], "\x00items": {"fetch:0": {"x": 1},
                                                                                         "fetch:1": {"x": 2}}}
    _set_graph(store, run.id, json.dumps(old))
    loaded = load_run(run.id, store)
    assert loaded.upstreams == {"fetch": ["fetch:0", "fetch:1"], "fetch:0": [], "fetch:1": []}
    assert [r.params for r in loaded.items("fetch")] == [{"x": 1}, {"x": 2}]


RAN: list[str] = []


def _ran(what: str) -> None:
    RAN.append(what)


class Boom:
    """Calls ``_ran`` when unpickled, if the store's reader lets a pickle name a function."""

    def __reduce__(self):
        return (_ran, ("unpickled",))


CRAFTED = [b"not a pickle", pickle.dumps({"a": Boom()}), pickle.dumps([1, 2]), "{not json"]


@pytest.mark.parametrize("value", CRAFTED, ids=["garbage", "code", "a list", "bad json"])
def test_a_damaged_or_crafted_graph_loads_the_run_without_edges_and_runs_nothing(store, value) -> None:
    a = Task(one, name="a")
    run = nborch.run(DAG(a, Task(one, a, name="b")), store=store)
    store.flush()
    _set_graph(store, run.id, value)
    loaded = load_run(run.id, store)
    assert loaded.states == run.states  # the run itself loads
    assert loaded.upstreams == {}
    assert RAN == []


def test_item_parameters_json_cannot_hold_are_kept_as_their_repr(store: SqliteStore) -> None:
    @task
    def fetch(path):
        return str(path)

    run = nborch.run(fetch.map([Path("/a"), Path("/b")]), store=store)
    loaded = load_run(run.id, store)
    assert [r.params for r in loaded.items("fetch")] == [{"path": repr(Path(p))} for p in ("/a", "/b")]
    assert loaded.upstreams == run.upstreams


def test_a_reloaded_element_wise_items_parameters_are_their_upstream_items_values(store: SqliteStore) -> None:
    @task
    def fetch(i):
        return i * 10

    @task
    def clean(x, scale=1):
        return x * scale

    @task
    def pair(a, b):
        return a + b

    run = nborch.run(pair.map(clean.map(fetch.map([1, 2]), scale=3), fetch.map([5, 6])), store=store)
    assert run.ok
    loaded = load_run(run.id, store)
    assert [r.params for r in loaded.items("fetch")] == [{"i": 1}, {"i": 2}]
    assert [r.params for r in loaded.items("clean")] == [{"x": 10}, {"x": 20}]
    assert [r.params for r in loaded.items("pair")] == [{"a": 30, "b": 50}, {"a": 60, "b": 60}]
    assert [r.params for r in loaded.items("pair")] == [r.params for r in run.items("pair")]


def test_changing_the_item_parameters_a_run_hands_out_changes_nothing_it_keeps() -> None:
    @task
    def fetch(i):
        return i

    run = nborch.run(fetch.map([1, 2]), store=False)
    given = run.item_params()
    given["fetch:0"]["i"] = "changed"
    assert run.item_params()["fetch:0"] == {"i": 1}
    assert [r.params for r in run.items("fetch")] == [{"i": 1}, {"i": 2}]

"""Node HTML in notebooks, the no-Graphviz fallback, and escaping of everything that reaches HTML."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

import nborch
from nborch import DAG, Task, TaskState, task
from nborch.display.html import GRAPHVIZ_HINT, header_html, node_html, task_list_html
from nborch.display.state import RunView
from nborch.display.task_table import task_table_html
from nborch.core.graph import build_graph

from .images import graph_svgs, nodes

EVIL = "<script>alert(1)</script>"
EVIL_MESSAGE = "<img src=x onerror=alert(1)>"


def pipeline() -> DAG:
    @task
    def load():
        return 1

    @task
    def clean(load):
        return load

    return DAG(load, clean)


def failing_run():
    @task
    def ok():
        print(f"printed {EVIL}")
        return 1

    def explode(x):
        raise ValueError(EVIL_MESSAGE)

    node = DAG(ok, Task(explode, ok, name=EVIL))
    graph = build_graph(node)
    view = RunView(graph)
    run = nborch.run(node, on_event=view)
    return graph, view, run


def assert_no_raw_markup(html: str) -> None:
    assert "<script" not in html
    assert "<img" not in re.sub(r"<img class='nborch-graph-img'[^<>]*/>", "", html)  # but our graph's
    for svg in graph_svgs(html):
        assert "<script" not in svg


def test_node_repr_html_is_the_graph_as_an_image_that_sanitizers_keep():
    """A shared notebook is untrusted: JupyterLab's sanitizer strips inline <svg> but keeps an
    <img> with a data URI, so the graph is an image holding the SVG."""
    html = pipeline()._repr_html_()

    assert html.startswith("<div class='nborch-graph'><img class='nborch-graph-img' alt='graph of 2 tasks: load, clean'")
    assert "<svg" not in html
    (svg,) = graph_svgs(html)
    assert svg.startswith("<svg width=") and "<?xml" not in svg and "<!DOCTYPE" not in svg
    assert set(nodes(ET.fromstring(svg))) == {"task-load", "task-clean"}


def test_node_html_escapes_task_names():
    html = node_html(Task(lambda: 1, name=EVIL))

    assert_no_raw_markup(html)
    assert "&lt;script&gt;" in html


def test_without_dot_a_node_shows_a_task_list_and_a_hint(no_dot):
    html = pipeline()._repr_html_()

    assert "<svg" not in html
    assert "<code>load</code>" in html and "<code>clean</code>" in html
    assert html.count("st-pending") == 2
    assert GRAPHVIZ_HINT in html and "apt install graphviz" in html


def test_fallback_list_escapes_names(no_dot):
    html = node_html(Task(lambda: 1, name=EVIL))

    assert_no_raw_markup(html)
    assert "<code>&lt;script&gt;alert(1)&lt;/script&gt;</code>" in html


def test_a_broken_workflow_shows_its_error_escaped():
    a = Task(lambda: 1, name=EVIL)
    b = Task(lambda: 2, name="b")
    a >> b
    b >> a

    html = node_html(DAG(a, b))

    assert html.startswith("<pre class='nborch-error'>CycleError: ")
    assert_no_raw_markup(html)


def test_task_list_shows_states_notes_and_groups_big_graphs(no_dot):
    graph, view, _ = failing_run()

    html = task_list_html(graph, view)

    assert "st-succeeded" in html and "st-failed" in html
    assert_no_raw_markup(html)

    @task
    def step(i):
        return i

    big = build_graph(DAG(*[step(i) for i in range(250)]))
    grouped = task_list_html(big)
    assert grouped.count("<li") == 1 and "250 tasks" in grouped


def test_task_table_escapes_names_errors_and_output():
    _, view, _ = failing_run()

    html = task_table_html(view)

    assert_no_raw_markup(html)
    assert "ValueError: &lt;img src=x onerror=alert(1)&gt;" in html
    assert "printed &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<tr class='st-failed' data-task='&lt;script&gt;alert(1)&lt;/script&gt;'>" in html
    assert "<tr class='st-succeeded' data-task='ok'>" in html


def test_task_table_puts_failures_first_when_it_is_cut():
    view = RunView()
    for i in range(100):
        view.add(f"t{i}")
    view(nborch.TaskEvent("r", "t99", TaskState.FAILED, 1, error=RuntimeError("late")))

    html = task_table_html(view, limit=10)

    assert html.index("data-task='t99'") < html.index("data-task='t0'")
    assert "… 90 more tasks (all: 99 pending, 1 failed)" in html


def test_header_shows_status_and_counts():
    _, view, run = failing_run()

    html = header_html(view)

    assert "st-failed" in html
    assert "2/2 tasks settled" in html and "(1 failed)" in html
    assert f"<code>{run.id}</code>" in html


def test_header_before_the_run_starts():
    assert ">starting<" in header_html(RunView(build_graph(pipeline())))


class Unprintable(Exception):
    def __str__(self):
        raise KeyError("no str")


def test_an_exception_whose_str_raises_is_shown_as_traceback_shows_it():
    def retried():
        raise Unprintable()

    @task(retries=1, retry_delay=0)
    def flaky():
        retried()

    node = DAG(flaky)
    graph = build_graph(node)
    view = RunView(graph)
    retrying = []
    run = nborch.run(node, on_event=[view, lambda e: retrying.append(view.tasks["flaky"].error)])
    assert run.states["flaky"] is TaskState.FAILED
    assert "Unprintable: <exception str() failed>" in retrying  # while it was retrying
    assert view.tasks["flaky"].error == "Unprintable: <exception str() failed>"
    view.finish(run)  # the record has the last word: the same text
    assert view.tasks["flaky"].error == "Unprintable: <exception str() failed>"
    assert "Unprintable: &lt;exception str() failed&gt;" in task_table_html(view)
    assert "1 failed" in header_html(view)


def test_a_broken_workflow_whose_error_str_raises_still_shows(monkeypatch):
    import nborch.display.html as html_module

    class BadGraph(nborch.NborchError):
        def __str__(self):
            raise KeyError("no str")

    def broken(node):
        raise BadGraph()

    monkeypatch.setattr(html_module, "build_graph", broken)
    assert node_html(pipeline()) == "<pre class='nborch-error'>BadGraph: &lt;exception str() failed&gt;</pre>"


def test_the_names_html_exported_before_its_split_are_still_importable_from_it():
    from nborch.display import escaping, html, looks, task_table

    assert (html.esc, html.state_badge) == (escaping.esc, looks.state_badge)
    assert (html.task_table_html, html.map_duration) == (task_table.task_table_html, task_table.map_duration)
    assert [name for name in html.__all__ if not hasattr(html, name)] == []

"""Mermaid text: flowchart TD, safe ids, labels that show names literally."""

from __future__ import annotations

import nborch
from nborch import DAG, Task, TaskState, task
from nborch.display.mermaid import graph_mermaid, node_mermaid
from nborch.display.state import RunView
from nborch.core.graph import build_graph


def pipeline() -> DAG:
    @task
    def load():
        return 1

    @task
    def clean(load):
        return load

    @task
    def report(clean):
        return clean

    return DAG(load, clean, report)


def test_mermaid_flowchart_of_a_pipeline():
    assert node_mermaid(pipeline()) == (
        "flowchart TD\n"
        '    load["load"]\n'
        '    clean["clean"]\n'
        '    report["report"]\n'
        "    load --> clean\n"
        "    clean --> report\n"
    )


def test_to_mermaid_is_the_same_text():
    node = pipeline()
    assert node.to_mermaid() == node_mermaid(node)


def test_unsafe_names_get_safe_unique_ids():
    node = DAG(
        Task(lambda: 1, name="fetch[2]"), Task(lambda: 2, name="fetch_2_"), Task(lambda: 3, name="end"),
        Task(lambda: 4, name="2nd step"),
    )

    text = node_mermaid(node)

    assert '    fetch_2_["fetch#91;2#93;"]' in text
    assert '    fetch_2__2["fetch_2_"]' in text
    assert '    t_end["end"]' in text
    assert '    t_2nd_step["2nd step"]' in text


def test_labels_escape_markup_and_mermaid_syntax():
    node = Task(lambda: 1, name='<script>alert("x")</script>')

    text = node_mermaid(node)

    assert "<" not in text and ">" not in text.replace("-->", "")
    assert '["#60;script#62;alert#40;#34;x#34;#41;#60;/script#62;"]' in text


def test_child_tasks_get_dotted_edges_from_their_parent():
    @task
    async def fib(n):
        if n < 2:
            return n
        return await fib(n - 1) + await fib(n - 2)

    graphs = []

    def keep(handle):
        graphs.append(handle.graph)

    unregister = nborch.register_display(keep)
    try:
        fib(2).run()
    finally:
        unregister()

    text = graph_mermaid(graphs[0])
    assert "    fib -.-> fib_2_\n" in text and "    fib -.-> fib_3_\n" in text


def test_a_view_adds_state_classes():
    @task
    def ok():
        return 1

    @task
    def bad(ok):
        raise ValueError("no")

    node = DAG(ok, bad)
    graph = build_graph(node)
    view = RunView(graph)
    nborch.run(node, on_event=view)

    text = graph_mermaid(graph, view)

    assert "    classDef st_failed fill:#e53935,color:#ffffff\n    class bad st_failed\n" in text
    assert "    class ok st_succeeded\n" in text
    assert view.tasks["bad"].state is TaskState.FAILED

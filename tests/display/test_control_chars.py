"""Task names with control characters or NUL: every node and edge drawn, every output well-formed.

A name such as ``"a\\x00b"``, ``"x\\ny"`` or ``"\\x1b[31m"`` is shown with the character written as
a Python escape (``a\\x00b``), never raw: XML forbids most control characters, Graphviz cuts a
string at NUL, and ``"x\\ny"`` must not become the same node as a task named ``"x y"``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

import nborch
from nborch import Sequence, Task, TaskState
from nborch.display.dot import graph_dot
from nborch.display.escaping import printable
from nborch.display.graph_model import graph_model
from nborch.display.html import header_html, task_list_html
from nborch.display.looks import node_looks
from nborch.display.mermaid import graph_mermaid
from nborch.display.node_ids import node_id
from nborch.display.state import RunView
from nborch.display.svg import render_svg
from nborch.display.svg_template import SvgTemplate
from nborch.display.task_table import task_table_html
from nborch.core.graph import build_graph

SVG = "{http://www.w3.org/2000/svg}"
NAMES = ["a\x00b", "x\ny", "x y", "\x1b[31m", "tab\there", "a\\x00b", "bell\x07\x7f\x85", "sep\u2028\ud800"]
SHOWN = ["a\\x00b", "x\\ny", "x y", "\\x1b[31m", "tab\\there", "a\\x00b", "bell\\x07\\x7f\\x85",
         "sep\\u2028\\ud800"]


def chain():
    """One task per name, each after the previous one (len(NAMES) - 1 edges)."""
    return Sequence(*(Task(lambda: 1, name=n) for n in NAMES))


def svg_parts(svg: str) -> tuple[list[ET.Element], list[ET.Element]]:
    root = ET.fromstring(svg)  # raises on a control character or a broken tag
    groups = list(root.iter(f"{SVG}g"))
    return ([g for g in groups if "node" in (g.get("class") or "").split()],
            [g for g in groups if "edge" in (g.get("class") or "").split()])


def test_printable_writes_control_characters_as_python_escapes():
    assert [printable(n) for n in NAMES] == SHOWN
    assert printable("plain name, ünïcode ✓ [2]") == "plain name, ünïcode ✓ [2]"


def test_the_rendered_svg_is_valid_xml_with_every_node_and_edge():
    graph = build_graph(chain())
    svg = render_svg(graph_dot(graph))
    if svg is None:
        pytest.skip("Graphviz's dot is not installed")
    nodes, edges = svg_parts(svg)
    assert sorted(g.get("id") for g in nodes) == sorted(node_id(n) for n in NAMES)
    assert len(edges) == len(NAMES) - 1
    labels = [t.text for g in nodes for t in g.iter(f"{SVG}text")]
    assert sorted(labels) == sorted(SHOWN)  # "a\x00b" and a literal "a\\x00b" look alike, two nodes


def test_the_digraph_keeps_every_node_apart():
    digraph = chain().graph()
    text = digraph.source
    assert "\x00" not in text and "\x1b" not in text
    assert len([line for line in text.splitlines() if "[id=" in line]) == len(NAMES)


def test_the_live_widgets_svg_template_stays_valid():
    node = chain()
    graph = build_graph(node)
    view = RunView(graph)
    nborch.run(node, on_event=view)
    svg = render_svg(graph_dot(graph))
    if svg is None:
        pytest.skip("Graphviz's dot is not installed")
    model = graph_model(graph)
    states, notes, marks = node_looks(model, view)
    filled = SvgTemplate(svg).fill(states, notes, marks)
    nodes, edges = svg_parts(filled)
    assert {g.get("class") for g in nodes} == {"node st-succeeded"} and len(nodes) == len(NAMES)
    assert len(edges) == len(NAMES) - 1


def test_the_live_widget_shows_a_valid_graph_table_and_header():
    pytest.importorskip("ipywidgets")
    from nborch.display.live_display import LiveDisplay

    shown = []

    def factory(handle):
        shown.append(LiveDisplay(handle))
        return shown[-1]

    unregister = nborch.register_display(factory)
    try:
        run = nborch.run(chain())
    finally:
        unregister()
    assert run.ok
    live = shown[0]
    snapshot = live.snapshot
    root = ET.fromstring(snapshot[snapshot.index("<div"):snapshot.rindex("</div>") + len("</div>")])
    svgs = list(root.iter("{http://www.w3.org/2000/svg}svg"))
    if svgs:
        nodes, edges = svg_parts(ET.tostring(svgs[0], encoding="unicode"))
        assert len(nodes) == len(NAMES) and len(edges) == len(NAMES) - 1


def test_the_html_fallback_table_and_header_are_valid():
    node = chain()
    graph = build_graph(node)
    view = RunView(graph)
    nborch.run(node, on_event=view)
    for html in (task_list_html(graph, view), task_table_html(view), header_html(view)):
        root = ET.fromstring(html)
        text = "".join(root.itertext())
        assert "\x00" not in text and "\x1b" not in text
    items = ET.fromstring(task_list_html(graph, view)).iter("li")
    assert sorted(li.find("code").text for li in items) == sorted(SHOWN)


def test_errors_and_output_with_control_characters_stay_valid_in_the_table():
    def noisy():
        print("\x1b[31mred\x1b[0m and a NUL \x00 here")
        raise ValueError("bad\x00value\x1b[0m")

    node = Task(noisy, name="noisy")
    view = RunView(build_graph(node))
    run = nborch.run(node, on_event=view)
    assert run.states["noisy"] is TaskState.FAILED
    root = ET.fromstring(task_table_html(view))
    text = "".join(root.itertext())
    assert "ValueError: bad\\x00value\\x1b[0m" in text
    assert "red and a NUL \\x00 here" in text  # colour codes dropped, the NUL shown


def test_mermaid_shows_every_name_escaped_with_distinct_ids():
    text = graph_mermaid(build_graph(chain()))
    assert all(c.isprintable() for line in text.splitlines() for c in line), repr(text)
    nodes = [line for line in text.splitlines() if line.strip().endswith('"]')]
    assert len(nodes) == len(NAMES) and len({line.split("[")[0] for line in nodes}) == len(NAMES)
    assert len([line for line in text.splitlines() if "-->" in line]) == len(NAMES) - 1
    assert '["a#92;x00b"]' in text  # \x00 written out; a backslash is an entity code in a label

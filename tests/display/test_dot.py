"""DOT text, real Graphviz rendering, the collapsed graph, and the recolourable SVG template."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import graphviz
import pytest

import nborch
from nborch import DAG, DefinitionError, NborchError, Task, TaskState, task
from nborch.display.dot import graph_dot, layout_dot, node_digraph
from nborch.display.graph_model import graph_model
from nborch.display.looks import node_notes, node_states
from nborch.display.node_ids import group_id, node_id
from nborch.display.svg import render_svg
from nborch.display.svg_template import SvgTemplate, state_css
from nborch.display.state import RunView
from nborch.core.graph import build_graph

S = TaskState
SVG = "{http://www.w3.org/2000/svg}"
EVIL = "<script>alert(1)</script>"


def svg_nodes(svg: str) -> dict[str, str]:
    """id -> class of every node group in an SVG (the XML parser decodes &#45; back to '-')."""
    root = ET.fromstring(svg)
    return {g.get("id"): g.get("class") for g in root.iter(f"{SVG}g") if "node" in (g.get("class") or "")}


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


def test_node_ids_are_unique_and_css_safe():
    assert node_id("load") == "task-load"
    assert node_id("fetch[2]") == "task-fetch-5b-2-5d-"
    assert node_id("fetch[2]") != node_id("fetch_2_") != node_id("fetch-5b-2-5d-")
    assert group_id("fetch") == "group-fetch"


def test_graph_dot_has_ids_classes_and_edges():
    text = graph_dot(build_graph(pipeline()))

    assert text.startswith("digraph nborch {")
    assert '"load" [id="task-load", class="st-pending", label="load"' in text
    assert '"load" -> "clean"' in text and '"clean" -> "report"' in text


def test_rendered_svg_carries_ids_and_state_classes():
    node = pipeline()
    graph = build_graph(node)
    view = RunView(graph)
    nborch.run(node, on_event=view)

    svg = render_svg(graph_dot(graph, view))

    assert svg is not None and svg.startswith("<svg")
    assert svg_nodes(svg) == {
        "task-load": "node st-succeeded", "task-clean": "node st-succeeded", "task-report": "node st-succeeded",
    }


def test_label_has_a_second_line_for_attempts_and_duration():
    calls = []

    @task(retries=1, retry_delay=0)
    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("once")
        return "ok"

    node = flaky()
    graph = build_graph(node)
    view = RunView(graph)
    nborch.run(node, on_event=view)

    text = graph_dot(graph, view)

    assert 'label="flaky\\n2 attempts · ' in text


def test_a_task_name_never_reaches_the_svg_as_markup():
    node = Task(lambda: 1, name=EVIL)

    svg = render_svg(graph_dot(build_graph(node)))

    assert svg is not None
    assert "<script" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    ET.fromstring(svg)  # still well-formed


def test_quotes_and_backslashes_in_names_stay_literal():
    node = DAG(Task(lambda: 1, name='say "hi"\\N'))

    svg = render_svg(graph_dot(build_graph(node)))

    assert svg is not None
    texts = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]
    assert 'say "hi"\\N' in texts


def test_child_tasks_hang_from_their_parent_with_dashed_edges():
    @task
    async def fib(n):
        if n < 2:
            return n
        return await fib(n - 1) + await fib(n - 2)

    run_graph = {}

    def keep(handle):
        run_graph["g"] = handle.graph

    unregister = nborch.register_display(keep)
    try:
        assert fib(3).run() == 2
    finally:
        unregister()

    text = graph_dot(run_graph["g"])
    assert '"fib" -> "fib[2]" [style=dashed]' in text
    assert text.count("[style=dashed]") == len(run_graph["g"].specs) - 1


def test_collapsed_graph_above_the_threshold_groups_by_function_with_counts():
    @task
    def fetch(i):
        return i

    @task
    def combine(*parts):
        return sum(parts)

    parts = [fetch(i) for i in range(250)]
    node = DAG(*parts, combine(*parts))
    graph = build_graph(node)
    view = RunView(graph)
    nborch.run(node, on_event=view)

    text = graph_dot(graph, view)

    assert text.count("[id=") == 2
    assert '"fetch" [id="group-fetch", class="st-succeeded", label="fetch\\n✓250"' in text
    assert '"fetch" -> "combine"' in text
    svg = render_svg(text)
    assert svg is not None and set(svg_nodes(svg)) == {"group-fetch", "group-combine"}


def test_collapsed_graph_of_named_tasks_groups_by_their_function():
    async def nap():
        return None

    node = DAG(*[Task(nap, name=f"nap{i}") for i in range(300)])

    model = graph_model(build_graph(node))

    assert model.collapsed
    assert [n.key for n in model.nodes.values()] == ["nap"]


def test_collapsed_group_shows_its_most_telling_state():
    @task
    def work(i):
        if i == 7:
            raise ValueError("seven")
        return i

    node = DAG(*[work(i) for i in range(201)])
    graph = build_graph(node)
    view = RunView(graph)
    nborch.run(node, on_event=view)

    model = graph_model(graph)
    assert node_states(model, view) == {"group-work": S.FAILED}
    assert node_notes(model, view) == {"group-work": "✓200 ✗1"}


def test_small_graphs_are_not_collapsed():
    assert not graph_model(build_graph(pipeline()), collapse_over=3).collapsed
    assert graph_model(build_graph(pipeline()), collapse_over=2).collapsed


def test_node_digraph_is_a_graphviz_digraph():
    digraph = node_digraph(pipeline())

    assert isinstance(digraph, graphviz.Digraph)
    assert 'id="task-clean"' in digraph.source
    assert 'id="task-clean"' in digraph.pipe(format="svg", encoding="utf-8").replace("&#45;", "-")


def test_node_graph_method_returns_the_digraph():
    assert isinstance(pipeline().graph(), graphviz.Digraph)


def test_render_svg_is_none_without_the_dot_binary(no_dot):
    assert render_svg("digraph { a -> b }") is None


def test_svg_template_rewrites_classes_and_notes_without_layout():
    node = pipeline()
    graph = build_graph(node)
    model = graph_model(graph)
    svg = render_svg(layout_dot(model))
    assert svg is not None
    template = SvgTemplate(svg)
    assert template.ids == {"task-load", "task-clean", "task-report"}

    states = {"task-load": S.SUCCEEDED, "task-clean": S.FAILED, "task-report": S.UPSTREAM_FAILED}
    filled = template.fill(states, {"task-load": "1.00s", "task-clean": "<b>x</b>"})

    assert svg_nodes(filled) == {
        "task-load": "node st-succeeded", "task-clean": "node st-failed", "task-report": "node st-upstream_failed",
    }
    texts = [t.text for t in ET.fromstring(filled).iter(f"{SVG}text")]
    assert "1.00s" in texts and "<b>x</b>" in texts  # as text: escaped in the markup
    assert "<b>" not in filled


def test_layout_dot_depends_only_on_the_shape():
    node = pipeline()
    graph = build_graph(node)
    before = layout_dot(graph_model(graph))
    nborch.run(node)

    assert layout_dot(graph_model(graph)) == before


def test_state_css_colours_nodes_by_id_within_a_scope():
    css = state_css("nb-1", {"task-a": S.FAILED, "task-b": S.RUNNING, "task-c": S.RUNNING})

    assert ".nb-1 :is(#task-a)>:is(path,polygon,ellipse){fill:#e53935}" in css
    assert ".nb-1 :is(#task-b,#task-c)>:is(path,polygon,ellipse){fill:#1e88e5}" in css


def test_graph_dot_needs_no_graphviz(no_dot):
    assert "digraph nborch" in graph_dot(build_graph(pipeline()))


def test_async_child_graph_lays_out():
    async def main():
        @task
        async def parent():
            return await child()

        @task
        async def child():
            return 1

        seen = {}

        def keep(handle):
            seen["g"] = handle.graph  # returns None: no subscriber, just a look at the run's graph

        unregister = nborch.register_display(keep)
        try:
            await nborch.run_async(parent())
        finally:
            unregister()
        return seen["g"]

    graph = asyncio.run(main())
    svg = render_svg(graph_dot(graph))
    assert svg is not None and set(svg_nodes(svg)) == {"task-parent", "task-child"}


# -- visualize(): files by suffix ----------------------------------------------------------------


def test_visualize_writes_svg(tmp_path):
    path = tmp_path / "flow.svg"

    assert pipeline().visualize(str(path)) == str(path)
    assert set(svg_nodes(path.read_text())) == {"task-load", "task-clean", "task-report"}


def test_visualize_writes_png(tmp_path):
    path = tmp_path / "flow.PNG"

    assert pipeline().visualize(path) == str(path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_visualize_writes_mermaid(tmp_path):
    node = pipeline()
    path = tmp_path / "flow.mmd"

    assert node.visualize(str(path)) == str(path)
    assert path.read_text() == node.to_mermaid()


def test_visualize_without_a_path_returns_mermaid_text():
    node = pipeline()
    assert node.visualize() == node.to_mermaid()


@pytest.mark.parametrize("name", ["flow.pdf", "flow"], ids=["other suffix", "no suffix"])
def test_visualize_rejects_other_suffixes(tmp_path, name):
    with pytest.raises(DefinitionError, match=r"visualize\(\) writes \.svg, \.png or \.mmd files, but .* has "):
        pipeline().visualize(str(tmp_path / name))
    assert not (tmp_path / name).exists()


def test_visualize_svg_without_dot_says_how_to_install_it(tmp_path, no_dot):
    with pytest.raises(NborchError, match=r"needs Graphviz's dot program on PATH: apt install graphviz"):
        pipeline().visualize(str(tmp_path / "flow.svg"))
    assert pipeline().visualize(str(tmp_path / "flow.mmd")).endswith("flow.mmd")


# -- %orch graph: what is known of each task between runs ------------------------------------------


def known_pipeline():
    from nborch.display.state import KnownTask

    return {
        "load": KnownTask(S.SUCCEEDED, 1.5, "r1", reused=True),
        "clean": KnownTask(S.SUCCEEDED, 0.25, "r1", stale="global threshold changed"),
        # "report" never ran
    }


def test_status_digraph_colours_by_last_state_and_marks_stale_tasks():
    from nborch.display.dot import status_digraph
    from nborch.display.looks import MARK_COLORS, STALE_BORDER

    digraph = status_digraph(pipeline(), known_pipeline())

    assert isinstance(digraph, graphviz.Digraph)
    lines = {line.split(" [")[0].strip(): line for line in digraph.source.splitlines() if "[id=" in line}
    assert 'class="st-succeeded nb-reused"' in lines['"load"'] and MARK_COLORS["reused"][0] in lines['"load"']
    assert 'label="load\\nreused"' in lines['"load"']
    stale = lines['"clean"']
    assert 'label="clean\\nstale: global threshold changed"' in stale
    assert 'style="rounded,filled,dashed"' in stale and f'color="{STALE_BORDER}"' in stale
    assert 'tooltip="stale: global threshold changed; last: succeeded · 250.0ms (run r1)"' in stale
    assert 'class="st-pending"' in lines['"report"'] and 'label="report\\nnever run"' in lines['"report"']


def test_status_digraph_renders_with_tooltips_and_dashes():
    from nborch.display.dot import status_digraph

    svg = status_digraph(pipeline(), known_pipeline()).pipe(format="svg", encoding="utf-8")

    assert "stale: global threshold changed" in svg
    assert 'stroke-dasharray="5,2"' in svg  # the stale node's border
    assert 'xlink:title="stale: global threshold changed; last: succeeded · 250.0ms (run r1)"' in svg


def test_status_digraph_accepts_any_object_with_the_attributes_and_escapes_reasons():
    from types import SimpleNamespace

    from nborch.display.dot import status_digraph

    known = {"load": SimpleNamespace(state=S.FAILED, duration=None, run_id=None, stale="helper `f`\x00 changed",
                                     reused=False, cached=False)}
    source = status_digraph(pipeline(), known).source

    assert "\x00" not in source and "helper `f`\\\\x00 changed" in source
    assert 'class="st-failed"' in source


def test_status_digraph_of_a_big_workflow_counts_stale_tasks_per_function():
    from nborch.display.state import KnownTask
    from nborch.display.dot import status_digraph

    @task
    def step(i):
        return i

    known = {f"step[{i}]" if i > 1 else "step": KnownTask(S.SUCCEEDED, 0.1, "r1", stale="its cell changed" if i < 4 else None)
             for i in range(1, 251)}
    source = status_digraph(DAG(*[step(i) for i in range(250)]), known).source

    (line,) = [line for line in source.splitlines() if "[id=" in line]
    assert "✓250 ◌3 stale" in line and "dashed" in line


# -- a run's record drawn (a past run) -------------------------------------------------------------


def test_run_model_draws_the_recorded_edges_and_calls():
    from nborch.display.graph_model import run_model

    run = nborch.Run("r1", states={"load": S.SUCCEEDED, "clean": S.FAILED, "fib[2]": S.SUCCEEDED},
                     upstreams={"load": [], "clean": ["load"], "fib[2]": []}, parents={"fib[2]": "clean"})

    model = run_model(run)

    assert list(model.nodes) == ["task-load", "task-clean", "task-fib-5b-2-5d-"]
    assert list(model.edges) == [("task-load", "task-clean", False), ("task-clean", "task-fib-5b-2-5d-", True)]
    big = nborch.Run("r2", states={f"t{i}": S.SUCCEEDED for i in range(300)},
                     upstreams={f"t{i}": [f"t{i - 1}"] if i else [] for i in range(300)})
    collapsed = run_model(big)
    assert collapsed.collapsed and list(collapsed.nodes) == ["group-t"]


def test_the_svg_template_writes_colours_into_the_svg():
    graph = build_graph(pipeline())
    svg = render_svg(layout_dot(graph_model(graph)))
    filled = SvgTemplate(svg).fill({"task-load": S.FAILED, "task-clean": S.SUCCEEDED}, {}, {"task-clean": "cached"})

    shapes = {g.get("id"): g.find(f"{SVG}path") for g in ET.fromstring(filled).iter(f"{SVG}g")
              if "node" in (g.get("class") or "")}
    assert shapes["task-load"].get("fill") == "#e53935" and shapes["task-load"].get("stroke-width") == "2"
    assert shapes["task-clean"].get("fill") == "#c8e6c9"
    assert shapes["task-report"].get("fill") == "#e0e0e0"
    assert filled.startswith('<svg style="max-width:100%;max-height:70vh;height:auto"')


def pt_size(svg: str) -> tuple[float, float]:
    root = ET.fromstring(svg)
    return float(root.get("width").removesuffix("pt")), float(root.get("height").removesuffix("pt"))


def test_many_unconnected_tasks_are_packed_in_rows_not_one_tall_column():
    loose = DAG(*[Task(lambda: 1, name=f"t{i}") for i in range(30)])
    chained = DAG(*[Task(lambda: 1, name=f"c{i}") for i in range(3)])  # 3 parts: laid out as before

    width, height = pt_size(render_svg(graph_dot(build_graph(loose))))

    assert 'pack="true"' in graph_dot(build_graph(loose)) and "pack=" not in graph_dot(build_graph(chained))
    assert width > height  # a grid, wider than tall (one column would be ~190 x 1,700 pt)
    assert "packmode=array_u6" in node_digraph(loose).source


def node_positions(svg: str) -> dict[str, tuple[float, float]]:
    """Each node's (x, y) on the page: its first text line's anchor (y grows downwards)."""
    return {g.find(f"{SVG}title").text: (float(g.find(f"{SVG}text").get("x")), float(g.find(f"{SVG}text").get("y")))
            for g in ET.fromstring(svg).iter(f"{SVG}g") if "node" in (g.get("class") or "")}


def test_unconnected_tasks_read_top_down_in_their_order():
    """Graphviz stacks unconnected parts bottom up (Parallel(first, second) showed second on
    top); they are declared so that the first part is at the top, packed or not."""
    few = node_positions(render_svg(graph_dot(build_graph(DAG(*[Task(lambda: 1, name=f"t{i}") for i in range(3)])))))
    a = Task(lambda: 1, name="a")
    mixed = DAG(a, Task(lambda x: x, a, name="b"), *[Task(lambda: 1, name=f"s{i}") for i in range(6)])
    packed = node_positions(render_svg(graph_dot(build_graph(mixed))))

    assert few["t0"][1] < few["t1"][1] < few["t2"][1]
    # 7 parts, 3 per column: a -> b, s0, s1 down the first column, then s2, s3, s4, then s5
    assert packed["a"][1] < packed["s0"][1] < packed["s1"][1]
    assert packed["a"][0] < packed["b"][0] and packed["a"][1] == packed["b"][1]
    assert packed["s2"][1] < packed["s3"][1] < packed["s4"][1] and packed["s0"][0] < packed["s3"][0]
    assert packed["s5"][0] > packed["s2"][0]


def test_a_tall_graph_is_not_shrunk_below_a_legible_size_by_its_height():
    """A fan of 30 tasks, laid out left to right, is tall: fitting it to 70% of the window would
    shrink its labels to a third; its height limit lets it keep 60% of its size."""
    a = Task(lambda: 1, name="source")
    fan = [Task(lambda x: x, a, name=f"leaf{i}") for i in range(30)]
    svg = render_svg(graph_dot(build_graph(DAG(a, *fan))))
    height_px = pt_size(svg)[1] * 4 / 3

    style = ET.fromstring(svg).get("style")

    assert style == f"max-width:100%;max-height:max(70vh,{height_px * 0.6:.0f}px);height:auto"


def test_layouts_of_a_shape_seen_before_need_no_graphviz(monkeypatch):
    from nborch.display import svg

    svg.forget_layouts()
    src = layout_dot(graph_model(build_graph(pipeline())))
    first = svg.layout_svg(src)
    monkeypatch.setattr(svg, "render_svg", lambda text: pytest.fail("laid out again"))

    assert svg.layout_svg(src) == first and svg.cached_layout(src) == first
    svg.forget_layouts()
    assert svg.cached_layout(src) is None


def test_a_digraph_shows_itself_as_an_image_too_for_untrusted_notebooks():
    """JupyterLab shows no image/svg+xml output of an untrusted notebook; the same SVG as an
    <img> in text/html (preferred by front ends) survives its sanitizer."""
    import base64
    import re

    digraph = pipeline().graph()

    bundle = digraph._repr_mimebundle_()

    assert isinstance(digraph, graphviz.Digraph)
    assert set(bundle) == {"image/svg+xml", "text/html"}
    (data,) = re.findall(r"src='data:image/svg\+xml;base64,([^']+)'", bundle["text/html"])
    assert svg_nodes(base64.b64decode(data).decode()) == svg_nodes(bundle["image/svg+xml"])



def test_the_names_dot_exported_before_its_split_are_still_importable_from_it():
    from nborch.display import dot, escaping, graph_model, looks, node_ids, svg, svg_template

    homes = {name: module for module in (escaping, graph_model, looks, node_ids, svg, svg_template)
             for name in module.__all__}
    moved = [name for name in dot.__all__ if name in homes]
    assert [name for name in moved if getattr(dot, name) is not getattr(homes[name], name)] == []
    assert {"COLORS", "SvgTemplate", "layout_svg", "node_id", "printable", "run_model"} <= set(moved)
    assert {"NOTEBOOK_EXTRA", "graph_dot", "node_digraph", "status_digraph"} <= set(dot.__all__) - set(moved)

"""Mapped nodes (``fn.map(...)``) as a user sees them: one node with its items' counts and a
progress bar (the live widget, the final snapshot, a past run, ``%orch graph``), its items drawn
beside it when there are few (``MAP_DRAWN``), one table row with its items in a fold, Mermaid
text and console lines. Items appear only when the map expands, mid-run."""

from __future__ import annotations

import asyncio
import io
import re
import xml.etree.ElementTree as ET

import pytest

import nborch
from nborch import DAG, TaskState, task
from nborch.display.console import ConsoleProgress
from nborch.display.dot import status_digraph
from nborch.display.looks import COLORS
from nborch.display.mermaid import graph_mermaid
from nborch.display.node_ids import map_id, node_id
from nborch.display.state import MAP_DRAWN, KnownTask, RunView

from .images import SVG, graph_svg, node_texts, nodes

S = TaskState
GREEN, RED = COLORS[S.SUCCEEDED][0], COLORS[S.FAILED][0]


@task
def fetch(x):
    if x % 7 == 3:
        raise ValueError(f"bad row {x}")
    return x


@task
def total(fetch):
    return sum(fetch)


def mapped_run(n: int, **options):
    m = fetch.map(range(n))
    return nborch.run(DAG(m, total(m)), store=False, **options)


def bar_segments(g: ET.Element) -> list[tuple[str, float]]:
    """A mapped node's progress bar, as drawn: (colour, width) of each segment, the track first."""
    return [(r.get("fill"), float(r.get("width"))) for r in g.iter(f"{SVG}rect")]


def table_rows(html: str) -> list[str]:
    """The task names of the table's rows, in order (items of a fold included)."""
    return re.findall(r"<tr class='[^']*' data-task='([^']*)'", html)


def test_a_map_of_100_items_is_one_node_with_its_counts_and_bar_and_one_table_row():
    run = mapped_run(100)  # 14 of them fail (3, 10, ..., 94)

    html = run._repr_html_()  # a past run draws itself from its record (its items' names)

    svg = graph_svg(html)
    assert set(nodes(svg)) == {map_id("fetch"), node_id("total")}  # no node per item
    assert node_texts(svg)[map_id("fetch")] == ["fetch", "86 ✓ 14 ✗"]
    g = nodes(svg)[map_id("fetch")]
    assert g.get("class") == "node st-failed"  # a failed item keeps it red
    (track, track_w), *segments = bar_segments(g)
    assert track == "#ffffff"
    assert [c for c, _ in segments] == [GREEN, RED]
    assert segments[0][1] / track_w == pytest.approx(0.86, abs=0.01)
    assert segments[1][1] / track_w == pytest.approx(0.14, abs=0.01)
    edges = [e.find(f"{SVG}title").text for e in svg.iter(f"{SVG}g") if e.get("class") == "edge"]
    assert edges == ["fetch->total"]
    # the table: one row for the map (its counts, its first failure), its items in a fold,
    # the failed ones first, at most MAP_DRAWN of them, then how many more
    assert "<code>fetch</code> <small>map · 100 items</small>" in html
    assert "86 ✓ 14 ✗" in html and "<code>fetch:3</code>: ValueError: bad row 3 (and 13 more)" in html
    rows = table_rows(html)
    failed = [f"fetch:{i}" for i in range(3, 100, 7)]
    folded = failed + ["fetch:0", "fetch:1", "fetch:2", "fetch:4", "fetch:5", "fetch:6"]
    assert rows == ["fetch", *folded, "total"] and len(folded) == MAP_DRAWN
    assert "… 80 more items (<code>run.items(&#x27;fetch&#x27;)</code> lists them all)" in html
    assert "<details><summary>100 items: 86 ✓ 14 ✗</summary>" in html


def test_a_map_of_few_items_draws_them_beside_it():
    run = mapped_run(5)

    svg = graph_svg(run._repr_html_())

    drawn = nodes(svg)
    assert set(drawn) == {map_id("fetch"), node_id("total"), *(node_id(f"fetch:{i}") for i in range(5))}
    assert node_texts(svg)[map_id("fetch")] == ["fetch", "4 ✓ 1 ✗"]
    assert drawn[node_id("fetch:3")].get("class") == "node st-failed"
    edges = {(e.find(f"{SVG}title").text, "stroke-dasharray" in ET.tostring(e, encoding="unicode"))
             for e in svg.iter(f"{SVG}g") if e.get("class") == "edge"}
    assert edges == {(f"fetch->fetch:{i}", True) for i in range(5)} | {(f"fetch:{i}->total", False) for i in range(5)}


def test_the_live_display_handles_a_map_whose_items_appear_mid_run():
    """A map over a task's value expands only when that task succeeded: the live widget shows
    the mapped node waiting, then its counts as items settle, then the final snapshot."""
    pytest.importorskip("ipywidgets")
    from nborch.display.live_display import LiveDisplay

    gate_src, gate_items = asyncio.Event(), asyncio.Event()

    @task
    async def source():
        await gate_src.wait()
        return list(range(30))

    @task
    async def slow(x):
        if x >= 10:  # 10 settle at once, 20 wait
            await gate_items.wait()
        return x

    shown: list[LiveDisplay] = []

    def factory(handle):
        shown.append(LiveDisplay(handle, publish=lambda *a: None, show_after=0, interval=0.01, tick=0.05,
                                 svg_interval=0.01))
        return shown[-1]

    async def until(check, what):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not check():
            assert loop.time() < deadline, what
            await asyncio.sleep(0.02)

    def map_node():
        html = shown[0].graph_html.value
        if "<svg" not in html:
            return None
        svg = ET.fromstring(html[html.index("<svg") : html.rindex("</svg>") + 6])
        return nodes(svg).get(map_id("slow")), node_texts(svg).get(map_id("slow"))

    async def main():
        src = source()
        m = slow.map(src)
        unregister = nborch.register_display(factory)
        try:
            job = asyncio.ensure_future(nborch.run_async(DAG(src, m), store=False))
            await until(lambda: shown and map_node() is not None, "the graph is drawn")
            _, texts = map_node()
            assert texts == ["slow", "items at run time"]  # not expanded yet: its items are unknown
            gate_src.set()
            await until(lambda: map_node()[1] == ["slow", "10 ✓ 20 …"], "10 of 30 items settled")
            g, _ = map_node()
            assert g.get("class") == "node st-running"
            (_, track_w), (color, w) = bar_segments(g)[:2]
            assert color == GREEN and w / track_w == pytest.approx(1 / 3, abs=0.01)
            assert "<code>slow</code> <small>map · 30 items</small>" in shown[0].table.value
            assert "slow:0" not in shown[0].table.value  # the live table lists no item that simply succeeded
            gate_items.set()
            return await job
        finally:
            unregister()

    run = asyncio.run(main())

    live = shown[0]
    assert run.states["slow"] is S.SUCCEEDED and len(run.items("slow")) == 30
    final = graph_svg(live.snapshot)
    assert node_texts(final)[map_id("slow")] == ["slow", "30 ✓"]
    assert set(nodes(final)) == {node_id("source"), map_id("slow")}  # 30 > MAP_DRAWN: no item nodes
    # its time: from its expansion to its last item's end (its placeholder makes no attempt)
    assert re.search(r"data-task='slow'>.*?<td class='nborch-duration'>\d[^<]*s</td>", live.snapshot)


def test_mermaid_shows_a_map_as_one_node_with_its_counts_and_a_text_bar():
    m = fetch.map(range(50))
    node = DAG(m, total(m))
    graphs = []
    unregister = nborch.register_display(lambda handle: graphs.append(handle.graph))
    try:
        run = nborch.run(node, store=False)
    finally:
        unregister()
    view = RunView(graphs[0])
    view.finish(run)

    text = graph_mermaid(graphs[0], view)

    assert node.to_mermaid() == 'flowchart TD\n    fetch["fetch<br/>map · 50 items"]\n    total["total"]\n    fetch --> total\n'
    assert '    fetch["fetch<br/>43 ✓ 7 ✗<br/>▰▰▰▰▰▰▰▰▰▰▰▰"]' in text
    assert "fetch_0" not in text and "    fetch --> total" in text
    assert "    class fetch st_failed" in text


def test_console_progress_has_a_bar_per_map_and_folds_its_items_in_the_table():
    out = io.StringIO()
    console = None

    def factory(handle):
        nonlocal console
        from rich.console import Console

        console = ConsoleProgress(handle.graph, console=Console(file=out, width=120, color_system=None))
        return console

    unregister = nborch.register_display(factory)
    try:
        mapped_run(100)
    finally:
        unregister()
    lines = out.getvalue().splitlines()

    # the map's own bar: its items settled of 100, and its counts
    (bar,) = [line for line in lines if line.startswith("fetch ")]
    assert "100/100" in bar and bar.rstrip().endswith("86 ✓ 14 ✗")
    # the first failures as they happen, then one line for the rest
    failures = [line for line in lines if line.startswith("✗")]
    assert failures == ["✗ fetch:3 ValueError: bad row 3", "✗ fetch:10 ValueError: bad row 10",
                        "✗ fetch:17 ValueError: bad row 17",
                        "✗ more items of fetch failed: the table at the end lists them"]
    # the table: the map in one row with its counts, its failed items after, no succeeded item
    row = next(line for line in lines if "fetch (map, 100 items)" in line)
    assert "86 ✓ 14 ✗" in row
    assert sum("fetch:" in line and "failed" in line for line in lines) == 14
    assert not [line for line in lines if re.search(r"fetch:\d+ .*succeeded", line)]


def test_orch_graph_counts_a_map_s_items_from_its_last_run():
    m = fetch.map(range(30))
    node = DAG(m, total(m))
    known = {"fetch": KnownTask(state=S.UPSTREAM_FAILED, run_id="r1"), "total": KnownTask(state=S.UPSTREAM_FAILED)}
    known.update({f"fetch:{i}": KnownTask(state=S.FAILED if i % 7 == 3 else S.SUCCEEDED, run_id="r1")
                  for i in range(30)})

    svg = ET.fromstring(status_digraph(node, known).pipe(format="svg", encoding="utf-8"))
    never = ET.fromstring(status_digraph(node, {}).pipe(format="svg", encoding="utf-8"))

    g = nodes(svg)[map_id("fetch")]
    assert [t.text for t in g.iter(f"{SVG}text")] == ["fetch", "26 ✓ 4 ✗"]
    fills = [p.get("fill") for p in g.iter(f"{SVG}polygon")]
    assert GREEN in fills and RED in fills  # its bar: a cell per state
    assert [t.text for t in nodes(never)[map_id("fetch")].iter(f"{SVG}text")] == ["fetch", "map · 30 items · never run"]


def test_orch_graph_in_a_shell_counts_the_items_of_a_map_cell(capsys):
    """``%%task NAME --map ITEM in SOURCE``, ``%orch run``, then ``%orch graph``: the cell is one
    node with its items' last states counted on it."""
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext nborch")
    magics = shell.magics_manager.registry["OrchMagics"]
    magics.workflow.remove(None)
    try:
        shell.run_cell("rows = list(range(30))")
        shell.run_cell("%%task mfetch --map r in rows\nif r % 7 == 3:\n    raise ValueError(r)\nr * 2\n")
        shell.run_cell("%%task mtotal\nsum(mfetch)\n")
        shell.run_cell("%orch run")
        graph = shell.run_line_magic("orch", "graph")
    finally:
        magics.workflow.remove(None)
    capsys.readouterr()

    svg = ET.fromstring(graph.pipe(format="svg", encoding="utf-8"))
    g = nodes(svg)[map_id("mfetch")]
    assert [t.text for t in g.iter(f"{SVG}text")] == ["mfetch", "26 ✓ 4 ✗"]
    assert g.get("class") == "node st-failed"
    assert set(nodes(svg)) == {map_id("mfetch"), node_id("mtotal")}


def test_the_status_line_counts_items_not_the_map_s_placeholder():
    run = mapped_run(100)

    html = run._repr_html_()
    view = RunView.from_run(run)

    # 100 items and total: 101 tasks; the placeholder (upstream_failed) is not one of them
    assert "101/101 tasks settled" in html and "(14 failed, 1 upstream_failed)" in html
    assert view.total == 101 and view.counts()[S.UPSTREAM_FAILED] == 1


def test_a_node_s_graph_shows_a_map_and_how_many_items_it_will_have():
    rows = fetch.map(range(30))
    dynamic = fetch.map(total(rows))  # known only when total has run

    html = DAG(rows, dynamic)._repr_html_()
    digraph = DAG(rows, dynamic).graph()

    texts = node_texts(graph_svg(html))
    assert texts[map_id("fetch")] == ["fetch", "map · 30 items"]
    assert texts[map_id("fetch[2]")] == ["fetch[2]", "map"]
    drawn = ET.fromstring(digraph.pipe(format="svg", encoding="utf-8"))
    assert [t.text for t in nodes(drawn)[map_id("fetch")].iter(f"{SVG}text")] == ["fetch", "map · 30 items"]


def test_the_text_form_of_a_snapshot_folds_a_map_s_items():
    """``text/plain`` (front ends without HTML, nbval): the map in one row with its counts, then
    only its items that did not succeed."""
    from nborch.display.snapshot import snapshot_text

    text = snapshot_text(RunView.from_run(mapped_run(100)))

    lines = text.splitlines()
    assert lines[0].startswith("nborch run ") and "14 failed" in lines[0]
    (row,) = [line for line in lines if line.startswith("fetch (map, 100 items)")]
    assert "86 ✓ 14 ✗" in row
    items = [line.split()[0] for line in lines if line.startswith("  fetch:")]
    assert items == [f"fetch:{i}" for i in range(3, 100, 7)]
    assert all("failed" in line and "ValueError: bad row" in line for line in lines if line.startswith("  fetch:"))

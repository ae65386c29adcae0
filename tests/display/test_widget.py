"""LiveDisplay: the widget's final model state after real runs, coalescing, cancel, fallback."""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("ipywidgets")

import nborch  # noqa: E402
from nborch import DAG, Skip, Task, TaskProgress, TaskState, task  # noqa: E402
from nborch.display.dot import COLORS, node_id  # noqa: E402
from nborch.display.widget import LiveDisplay, widget_factory  # noqa: E402
from nborch.graph import build_graph  # noqa: E402
from nborch.runner import RunHandle  # noqa: E402

S = TaskState
SVG = "{http://www.w3.org/2000/svg}"
EVIL = "<script>alert(1)</script>"


@pytest.fixture
def no_dot(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))


def run_shown(node, **options) -> tuple[nborch.Run, LiveDisplay]:
    """Run ``node`` with a LiveDisplay registered the way the notebook extension does it."""
    shown: list[LiveDisplay] = []

    def factory(handle):
        shown.append(LiveDisplay(handle))
        return shown[-1]

    unregister = nborch.register_display(factory)
    try:
        run = nborch.run(node, **options)
    finally:
        unregister()
    assert len(shown) == 1
    return run, shown[0]


def css_fills(style: str) -> dict[str, str]:
    """Node id -> fill colour, from the display's style block."""
    fills = {}
    for sel, fill in re.findall(r":is\(([^)]*)\)>:is\(path,polygon,ellipse\)\{fill:(#[0-9a-f]+)\}", style):
        for nid in sel.split(","):
            fills[nid.lstrip("#")] = fill
    return fills


def shown_svg(live: LiveDisplay) -> str:
    html = live.graph_html.value
    return html[html.index("<svg") : html.rindex("</svg>") + len("</svg>")]


def svg_classes(live: LiveDisplay) -> dict[str, str]:
    root = ET.fromstring(shown_svg(live))
    return {g.get("id"): g.get("class") for g in root.iter(f"{SVG}g") if "node" in (g.get("class") or "")}


def table_states(live: LiveDisplay) -> dict[str, str]:
    return {
        name.replace("&lt;", "<").replace("&gt;", ">"): state
        for state, name in re.findall(r"<tr class='st-(\w+)' data-task='([^']*)'>", live.table.value)
    }


def mixed_workflow() -> DAG:
    calls = []

    @task
    def load():
        print("loading <rows>")
        return [1, 2, 3]

    @task(retries=1, retry_delay=0)
    def flaky(load):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("first try")
        return load

    @task
    def crunch(load):
        return sum(x for x in nborch.progress(load))

    def explode(flaky):
        raise ValueError(EVIL)

    @task
    def report(boom):
        return boom

    @task
    def optional():
        raise Skip("not today")

    boom = Task(explode, name="boom")
    return DAG(load, flaky, crunch, boom, report, optional)


def test_final_widget_state_after_a_real_run(capsys):
    run, live = run_shown(mixed_workflow())

    expected = {
        "load": S.SUCCEEDED, "flaky": S.SUCCEEDED, "crunch": S.SUCCEEDED, "boom": S.FAILED,
        "report": S.UPSTREAM_FAILED, "optional": S.SKIPPED,
    }
    assert run.states == expected
    fills = css_fills(live.style.value)
    assert {name: fills[node_id(name)] for name in expected} == {n: COLORS[s][0] for n, s in expected.items()}
    assert svg_classes(live) == {node_id(n): f"node st-{s.value}" for n, s in expected.items()}
    assert table_states(live) == {n: s.value for n, s in expected.items()}
    assert live.progress.value == live.progress.max == 6
    assert live.progress.bar_style == "danger"
    assert "st-failed" in live.header.value and "6/6 tasks settled" in live.header.value
    assert live.cancel_button.disabled
    assert live.widget.children[3:5] == (live.progress, live.task_bars)
    # node second lines: attempts and durations
    texts = [t.text for t in ET.fromstring(shown_svg(live)).iter(f"{SVG}text")]
    assert any(t and t.startswith("2 attempts · ") for t in texts)
    # per-task progress bar of the task that used nborch.progress
    (row,) = live.task_bars.children
    label, bar, text = row.children
    assert "crunch" in label.value and bar.value == bar.max == 3 and text.value == "3/3"
    # the captured output is in the table, and (shows_output) not echoed into the cell
    assert "loading &lt;rows&gt;" in live.table.value
    assert "loading" not in capsys.readouterr().out
    assert run.logs["load"] == "loading <rows>\n"


def test_nothing_from_a_run_reaches_the_widget_as_markup():
    def explode():
        raise ValueError(EVIL)

    _, live = run_shown(DAG(Task(explode, name=EVIL)))

    for widget in (live.header, live.graph_html, live.table, live.style):
        assert "<script" not in widget.value
    assert "ValueError: &lt;script&gt;alert(1)&lt;/script&gt;" in live.table.value
    assert svg_classes(live) == {node_id(EVIL): "node st-failed"}


def test_child_tasks_are_laid_out_by_the_end():
    @task
    async def fib(n):
        if n < 2:
            return n
        return await fib(n - 1) + await fib(n - 2)

    run, live = run_shown(fib(6))

    assert len(run.states) == 25
    assert svg_classes(live) == {node_id(n): "node st-succeeded" for n in run.states}
    assert live.graph_html.value.count('stroke-dasharray="5,2"') == 24  # parent -> child edges
    assert live.progress.value == live.progress.max == 25


def test_layouts_are_throttled_while_the_shape_changes():
    @task
    async def fib(n):
        await asyncio.sleep(0)
        if n < 2:
            return n
        return await fib(n - 1) + await fib(n - 2)

    shown = []

    def factory(handle):
        shown.append(LiveDisplay(handle, layout_interval=3600.0))
        return shown[-1]

    unregister = nborch.register_display(factory)
    try:
        run = nborch.run(fib(7))
    finally:
        unregister()

    live = shown[0]
    assert live.layouts <= 2  # the first shape, then the final one; none in between
    assert len(svg_classes(live)) == len(run.states) == 41


def test_big_runs_are_drawn_collapsed():
    @task
    def step(i):
        return i

    run, live = run_shown(DAG(*[step(i) for i in range(250)]))

    assert svg_classes(live) == {"group-step": "node st-succeeded"}
    assert css_fills(live.style.value) == {"group-step": COLORS[S.SUCCEEDED][0]}
    assert live.progress.value == live.progress.max == 250
    assert "… 190 more tasks" in live.table.value


def test_2000_progress_events_cause_a_handful_of_repaints():
    async def main() -> LiveDisplay:
        node = Task(lambda: 1, name="busy")
        live = LiveDisplay(RunHandle("r1", build_graph(node), {}), interval=0.0)
        before = live.repaints
        for burst in range(4):
            for i in range(500):
                live(TaskProgress("r1", "busy", burst * 500 + i + 1, 2000))
            assert live.repaints == before + burst  # events only mark the display dirty
            await asyncio.sleep(0)  # the loop turns: the one armed repaint runs
            await asyncio.sleep(0)
        live.close(nborch.Run("r1", states={"busy": S.SUCCEEDED}))
        return live

    live = asyncio.run(main())

    assert live.repaints <= 4 + 2  # 4 bursts, the final paint, at most one after the first layout
    (row,) = live.task_bars.children
    assert row.children[1].value == row.children[1].max == 2000


def test_events_without_a_running_loop_wait_for_close():
    node = Task(lambda: 1, name="solo")
    live = LiveDisplay(RunHandle("r1", build_graph(node), {}))
    painted = live.repaints

    for i in range(2000):
        live(TaskProgress("r1", "solo", i, 2000))
    assert live.repaints == painted
    live.close(nborch.Run("r1", states={"solo": S.SUCCEEDED}))

    assert live.repaints == painted + 1
    assert table_states(live) == {"solo": "succeeded"}


def test_cancel_button_cancels_an_awaited_run():
    started = asyncio.Event()

    @task
    async def slow():
        started.set()
        await asyncio.sleep(3600)

    @task
    async def after(slow):
        return slow

    shown: list[LiveDisplay] = []

    def factory(handle):
        shown.append(LiveDisplay(handle))
        return shown[-1]

    async def main() -> str:
        async def press_cancel():
            await started.wait()
            shown[0].cancel_button.click()

        presser = asyncio.ensure_future(press_cancel())
        try:
            await nborch.run_async(DAG(slow, after))
        except asyncio.CancelledError:
            return "cancelled"
        finally:
            presser.cancel()
        return "finished"

    unregister = nborch.register_display(factory)
    try:
        outcome = asyncio.run(main())
    finally:
        unregister()

    live = shown[0]
    assert outcome == "cancelled"
    assert table_states(live)["slow"] == "cancelled"
    assert css_fills(live.style.value)[node_id("slow")] == COLORS[S.CANCELLED][0]
    assert live.progress.value == live.progress.max == 2
    assert live.progress.bar_style == "warning"


def test_without_dot_the_widget_lists_tasks_with_a_hint(no_dot):
    run, live = run_shown(mixed_workflow())

    html = live.graph_html.value
    assert "<svg" not in html and "apt install graphviz" in html
    assert "st-failed" in html and "<code>boom</code>" in html
    assert live.progress.value == live.progress.max == len(run.states)


def test_repr_and_mimebundle():
    node = DAG(Task(lambda: 1, name="a"), Task(lambda: 2, name="b"))
    live = LiveDisplay(RunHandle("r1", build_graph(node), {}))

    assert repr(live) == "<nborch live display: 0/2 tasks settled, starting>"
    bundle = live._repr_mimebundle_()
    assert bundle["text/plain"] == repr(live)
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == live.widget.model_id
    assert live.shows_output is True


def test_widget_factory_outside_a_kernel_gives_none():
    handle = RunHandle("r1", build_graph(Task(lambda: 1, name="a")), {})
    assert widget_factory(handle) is None


def test_widget_factory_inside_a_kernel_displays_the_widget(monkeypatch):
    import IPython
    import IPython.display

    class FakeKernelShell:
        kernel = object()

    displayed = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: FakeKernelShell())
    monkeypatch.setattr(IPython.display, "display", lambda obj: displayed.append(obj))
    handle = RunHandle("r1", build_graph(Task(lambda: 1, name="a")), {})

    live = widget_factory(handle)

    assert isinstance(live, LiveDisplay) and displayed == [live]

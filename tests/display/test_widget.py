"""LiveDisplay: what a notebook shows of real runs (the live widget, then the final snapshot),
coalescing, ticking, the Cancel button, and the fallbacks."""

from __future__ import annotations

import asyncio
import re
import threading
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("ipywidgets")

import nborch  # noqa: E402
from nborch import DAG, Skip, Task, TaskProgress, TaskState, task  # noqa: E402
from nborch.display.live_display import STOP_TEXT, LiveDisplay  # noqa: E402
from nborch.display.looks import COLORS, MARK_COLORS  # noqa: E402
from nborch.display.node_ids import node_id  # noqa: E402
from nborch.display.snapshot import SNAPSHOT_CLOSE, SNAPSHOT_OPEN  # noqa: E402
from nborch.display.widget import WIDGET_VIEW, widget_factory  # noqa: E402
from nborch.core.eventbus import TaskEvent  # noqa: E402
from nborch.core.graph import build_graph  # noqa: E402
from nborch.runtime.runner import RunHandle  # noqa: E402

from .images import graph_svg, graph_svgs  # noqa: E402

S = TaskState
SVG = "{http://www.w3.org/2000/svg}"
EVIL = "<script>alert(1)</script>"


class Published(list):
    """A publisher that keeps what a display showed: (display id, update?, bundle)."""

    def __call__(self, bundle, display_id, update):
        self.append((display_id, update, bundle))


def run_shown(node, *, live_options=None, **options) -> tuple[nborch.Run, LiveDisplay]:
    """Run ``node`` with a LiveDisplay registered the way the notebook extension does it."""
    shown: list[LiveDisplay] = []

    def factory(handle):
        shown.append(LiveDisplay(handle, publish=Published(), **(live_options or {})))
        return shown[-1]

    unregister = nborch.register_display(factory)
    try:
        run = nborch.run(node, **options)
    finally:
        unregister()
    assert len(shown) == 1
    return run, shown[0]


def snapshot_root(html: str) -> ET.Element:
    """The snapshot's HTML as XML (it is well-formed), without its nbval markers."""
    assert html.startswith(SNAPSHOT_OPEN) and html.endswith(SNAPSHOT_CLOSE)
    return ET.fromstring(html[len(SNAPSHOT_OPEN) : -len(SNAPSHOT_CLOSE)])


def svg_of(html: str) -> ET.Element:
    """The snapshot's graph: the SVG its image holds (the snapshot parsed whole first)."""
    root = snapshot_root(html)
    assert not list(root.iter(f"{SVG}svg")), "a snapshot holds its graph as an image, not inline SVG"
    return graph_svg(html)


def svg_nodes(html: str) -> dict[str, ET.Element]:
    return {g.get("id"): g for g in svg_of(html).iter(f"{SVG}g") if "node" in (g.get("class") or "").split()}


def svg_classes(html: str) -> dict[str, str]:
    return {nid: g.get("class") for nid, g in svg_nodes(html).items()}


def svg_fills(html: str) -> dict[str, str]:
    """Node id -> the fill written into its shape (what shows where <style> is stripped)."""
    return {nid: g.find(f"{SVG}path").get("fill") for nid, g in svg_nodes(html).items()}


def css_fills(style: str) -> dict[str, str]:
    """Node id -> fill colour, from the live display's style block."""
    fills = {}
    for sel, fill in re.findall(r":is\(([^)]*)\)>:is\(path,polygon,ellipse\)\{fill:(#[0-9a-f]+)\}", style):
        for nid in sel.split(","):
            fills[nid.lstrip("#")] = fill
    return fills


def table_states(html: str) -> dict[str, str]:
    return {
        name.replace("&lt;", "<").replace("&gt;", ">"): state
        for state, name in re.findall(r"<tr class='st-(\w+)[^']*' data-task='([^']*)'>", html)
    }


def table_durations(html: str) -> dict[str, str]:
    return dict(re.findall(r"data-task='([^']*)'>.*?<td class='nborch-duration'>([^<]*)</td>", html))


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


EXPECTED = {
    "load": S.SUCCEEDED, "flaky": S.SUCCEEDED, "crunch": S.SUCCEEDED, "boom": S.FAILED,
    "report": S.UPSTREAM_FAILED, "optional": S.SKIPPED,
}


def test_a_quick_run_shows_only_its_final_snapshot(capsys):
    run, live = run_shown(mixed_workflow())

    assert run.states == EXPECTED
    # over before show_after: no widget was made, one output with the final state
    assert live.widget is None
    ((display_id, update, bundle),) = live.publish
    assert update is False and set(bundle) == {"text/html", "text/plain"}
    html = bundle["text/html"]
    assert html == live.snapshot
    # the graph: classes and the colours written into the SVG itself
    assert svg_classes(html) == {node_id(n): f"node st-{s.value}" for n, s in EXPECTED.items()}
    assert svg_fills(html) == {node_id(n): COLORS[s][0] for n, s in EXPECTED.items()}
    assert table_states(html) == {n: s.value for n, s in EXPECTED.items()}
    root = snapshot_root(html)
    bar = next(e for e in root.iter("div") if e.get("class") == "nborch-bar")
    assert "width:100%" in bar.get("style") and COLORS[S.FAILED][0] in bar.get("style")
    assert "6/6 tasks settled" in html and "st-failed" in html
    texts = [t.text for t in svg_of(html).iter(f"{SVG}text")]
    assert any(t and t.startswith("2 attempts · ") for t in texts)
    # the per-task progress bar of the task that used nborch.progress
    (row,) = [e for e in root.iter("div") if e.get("class") == "nborch-task-progress"]
    assert row.get("data-task") == "crunch" and "3/3" in "".join(row.itertext())
    # the error with its traceback folded, the captured output in the table, not in the cell
    assert "ValueError: &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Traceback (most recent call last)" in html and "in explode" in html
    assert "loading &lt;rows&gt;" in html
    assert "loading" not in capsys.readouterr().out
    # the text form, for front ends without HTML
    assert bundle["text/plain"].startswith(f"nborch run {run.id} failed in ")
    assert re.search(r"^boom +failed +1 +\S+ +ValueError: <script>", bundle["text/plain"], re.M)


def test_a_long_run_shows_the_widget_then_replaces_it_by_the_snapshot():
    release = threading.Event()

    @task
    def slow():
        assert release.wait(30)
        return 1

    @task
    def after(slow):
        return slow

    def watch(live):
        # the widget is displayed once the run lasted show_after: then let it end
        def release_when_shown():
            for _ in range(600):
                if live.shown:
                    release.set()
                    return
                threading.Event().wait(0.05)
        threading.Thread(target=release_when_shown, daemon=True).start()

    shown = []

    def factory(handle):
        shown.append(LiveDisplay(handle, publish=Published(), show_after=0.05))
        watch(shown[-1])
        return shown[-1]

    unregister = nborch.register_display(factory)
    try:
        run = nborch.run(DAG(slow, after))
    finally:
        unregister()
    live = shown[0]
    assert run.ok
    (first_id, first_update, first), (last_id, last_update, last) = live.publish
    # first: the widget, with a starting snapshot beside it for front ends without widgets
    assert first_update is False and set(first) == {WIDGET_VIEW, "text/html", "text/plain"}
    assert first[WIDGET_VIEW]["model_id"] == live.model_id
    assert first["text/html"].startswith(SNAPSHOT_OPEN) and "running" in first["text/html"]
    assert first["text/plain"].startswith(f"nborch run {run.id} ")
    # then the same output (display id) holds the final snapshot alone: no widget to lose
    assert last_update is True and last_id == first_id
    assert set(last) == {"text/html", "text/plain"} and last["text/html"] == live.snapshot
    assert table_states(live.snapshot) == {"slow": "succeeded", "after": "succeeded"}
    # and the widgets are closed (their comm channels freed)
    assert live.widget.comm is None and live.table.comm is None and live.cancel_button.comm is None


def test_nothing_from_a_run_reaches_the_output_as_markup():
    def explode():
        raise ValueError(EVIL)

    _, live = run_shown(DAG(Task(explode, name=EVIL)), live_options={"show_after": 0})

    for value in (live.header.value, live.graph_html.value, live.table.value, live.snapshot):
        assert "<script" not in value
    assert "ValueError: &lt;script&gt;alert(1)&lt;/script&gt;" in live.snapshot
    assert svg_classes(live.snapshot) == {node_id(EVIL): "node st-failed"}


def test_child_tasks_are_laid_out_by_the_end():
    @task
    async def fib(n):
        if n < 2:
            return n
        return await fib(n - 1) + await fib(n - 2)

    run, live = run_shown(fib(6))

    assert len(run.states) == 25
    assert svg_classes(live.snapshot) == {node_id(n): "node st-succeeded" for n in run.states}
    assert graph_svgs(live.snapshot)[0].count('stroke-dasharray="5,2"') == 24  # parent -> child edges
    assert "25/25 tasks settled" in live.snapshot


def test_layouts_are_throttled_while_the_shape_changes():
    @task
    async def fib(n):
        await asyncio.sleep(0)
        if n < 2:
            return n
        return await fib(n - 1) + await fib(n - 2)

    run, live = run_shown(fib(7), live_options={"layout_interval": 3600.0, "show_after": 0})

    assert live.layouts <= 2  # the first shape, then the final one; none in between
    assert len(svg_classes(live.snapshot)) == len(run.states) == 41



def test_a_shape_that_grows_while_nothing_else_happens_is_laid_out_and_drawn():
    """A child task's layout waits out ``layout_interval``, is made in a worker thread and is
    drawn as soon as it is made: no event, tick or ``svg_interval`` is waited for."""
    from nborch.display.svg import forget_layouts

    grow, end = asyncio.Event(), asyncio.Event()

    @task
    async def sprout():
        return 1

    @task
    async def grower():
        await grow.wait()
        await sprout()
        await end.wait()  # the run stays open, with nothing more to say

    shown: list[LiveDisplay] = []

    def factory(handle):
        shown.append(LiveDisplay(handle, show_after=0, tick=3600, svg_interval=3600, layout_interval=1.0,
                                 publish=Published()))
        return shown[-1]

    async def until(what, seconds=20):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not what() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return what()

    def drawn(name):
        return lambda: bool(shown) and "<svg" in shown[0].graph_html.value and node_id(name) in {
            g.get("id") for g in svg_of_widget(shown[0]).iter(f"{SVG}g")}

    async def main() -> tuple[bool, bool, int]:
        running = asyncio.ensure_future(nborch.run_async(grower()))
        try:
            first = await until(drawn("grower"))
            grow.set()
            grown = await until(drawn("sprout"))
            return first, grown, shown[0].layouts
        finally:
            end.set()
            await running

    forget_layouts()
    unregister = nborch.register_display(factory)
    try:
        first, grown, layouts = asyncio.run(main())
    finally:
        unregister()

    assert (first, grown, layouts) == (True, True, 2)

def test_big_runs_are_drawn_collapsed():
    @task
    def step(i):
        return i

    run, live = run_shown(DAG(*[step(i) for i in range(250)]))

    assert svg_classes(live.snapshot) == {"group-step": "node st-succeeded"}
    assert svg_fills(live.snapshot) == {"group-step": COLORS[S.SUCCEEDED][0]}
    assert "250/250 tasks settled" in live.snapshot
    assert "… 210 more tasks" in live.snapshot  # 40 rows in a snapshot


def test_2000_progress_events_cause_a_handful_of_repaints():
    async def main() -> LiveDisplay:
        node = Task(lambda: 1, name="busy")
        live = LiveDisplay(RunHandle("r1", build_graph(node), {}), interval=0.0, show_after=0, budget=float("inf"),
                           publish=Published())
        before = live.repaints
        for burst in range(4):
            for i in range(500):
                live(TaskProgress("r1", "busy", burst * 500 + i + 1, 2000))
            assert live.repaints == before + burst  # events only wait for the next repaint
            await asyncio.sleep(0)  # the loop turns: the one armed repaint runs
            await asyncio.sleep(0)
        assert "2000/2000" in live.table.value
        live.close(nborch.Run("r1", states={"busy": S.SUCCEEDED}))
        return live

    live = asyncio.run(main())

    assert live.repaints <= 4 + 2  # 4 bursts, the final snapshot, at most one after the first layout
    assert "2000/2000" in live.snapshot


def test_events_without_a_running_loop_wait_for_close():
    node = Task(lambda: 1, name="solo")
    live = LiveDisplay(RunHandle("r1", build_graph(node), {}), publish=Published())

    for i in range(2000):
        live(TaskProgress("r1", "solo", i, 2000))
    assert live.repaints == 0 and live.publish == []
    live.close(nborch.Run("r1", states={"solo": S.SUCCEEDED}))

    assert live.repaints == 1 and len(live.publish) == 1
    assert table_states(live.snapshot) == {"solo": "succeeded"}


def test_a_running_task_s_time_ticks_and_nothing_repaints_while_nothing_runs():
    node = Task(lambda: 1, name="slow")

    async def main():
        live = LiveDisplay(RunHandle("r1", build_graph(node), {}), show_after=0, tick=0.05, interval=0.01,
                           publish=Published())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while "<svg" not in live.graph_html.value and loop.time() < deadline:  # the layout came
            await asyncio.sleep(0.02)
        # nothing runs: no repaint, however long we wait
        painted = live.repaints
        await asyncio.sleep(0.5)  # ten ticks
        assert live.repaints == painted
        # one task runs, and no further event comes: its time so far keeps being repainted
        live(TaskEvent("r1", "slow", S.RUNNING, 1, live.clock.now()))
        seen = []
        deadline = loop.time() + 20
        while len(set(seen)) < 3 and loop.time() < deadline:
            shown = table_durations(live.table.value).get("slow")
            if shown != "-":  # the repaint that says it runs has come
                seen.append(shown)
            await asyncio.sleep(0.02)
        assert len(set(seen)) >= 3, seen  # e.g. 0.0s, 0.1s, 0.2s...
        assert all(re.fullmatch(r"\d+\.\ds", s) for s in seen), seen
        note = [t.text for t in svg_of_widget(live).iter(f"{SVG}text")][-1]
        assert re.fullmatch(r"\d+\.\ds", note), note  # on its node too
        # it ends: one more repaint, then none
        live(TaskEvent("r1", "slow", S.SUCCEEDED, 1, live.clock.now()))
        deadline = loop.time() + 20
        while loop.time() < deadline and not (  # the table, then the node's text (at most 2/s)
            table_states(live.table.value).get("slow") == "succeeded" and 'class="node st-succeeded"' in live.graph_html.value
        ):
            await asyncio.sleep(0.02)
        painted = live.repaints
        await asyncio.sleep(0.5)
        assert live.repaints == painted
        live.close(nborch.Run("r1", states={"slow": S.SUCCEEDED}))

    asyncio.run(main())


def svg_of_widget(live: LiveDisplay) -> ET.Element:
    html = live.graph_html.value
    return ET.fromstring(html[html.index("<svg") : html.rindex("</svg>") + len("</svg>")])


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
        shown.append(LiveDisplay(handle, show_after=0, publish=Published()))
        return shown[-1]

    async def main() -> str:
        async def press_cancel():
            await started.wait()
            assert not shown[0].cancel_button.disabled
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
    assert table_states(live.snapshot) == {"slow": "cancelled", "after": "cancelled"}
    assert svg_fills(live.snapshot)[node_id("slow")] == COLORS[S.CANCELLED][0]
    assert COLORS[S.CANCELLED][0] in next(
        e for e in snapshot_root(live.snapshot).iter("div") if e.get("class") == "nborch-bar"
    ).get("style")


def blocking_run_button(wait_hook: bool) -> tuple[bool, str, str]:
    """(disabled, description, tooltip) of the Cancel button of a blocking ``node.run()`` in a
    running loop (what a plain Jupyter cell does), with or without a UI wait hook."""
    shown: list[LiveDisplay] = []

    def factory(handle):
        shown.append(LiveDisplay(handle, show_after=0, publish=Published()))
        return shown[-1]

    async def cell():  # a running loop that node.run() cannot re-enter: it blocks this thread
        return Task(lambda: 1, name="a").run()

    unregisters = [nborch.register_display(factory)]
    if wait_hook:
        unregisters.append(nborch.register_wait_hook(lambda: None))
    try:
        assert asyncio.run(cell()) == 1
    finally:
        for unregister in unregisters:
            unregister()
    button = shown[0].cancel_button
    assert shown[0].handle.blocking == "thread"
    return button.disabled, button.description, button.tooltip


def test_cancel_button_of_a_blocking_run_says_to_interrupt_the_kernel():
    disabled, description, tooltip = blocking_run_button(wait_hook=False)

    assert disabled
    assert description == STOP_TEXT == "Cancel: interrupt the kernel (■)"
    assert "interrupt the kernel to cancel it" in tooltip


def test_cancel_button_of_a_blocking_run_works_when_the_ui_is_polled():
    disabled, description, _ = blocking_run_button(wait_hook=True)

    assert not disabled and description == "Cancel"


def test_without_dot_the_output_lists_tasks_with_a_hint(no_dot):
    run, live = run_shown(mixed_workflow(), live_options={"show_after": 0})

    assert "<svg" not in live.graph_html.value  # live: "drawing the graph…", then the list
    html = live.snapshot
    assert "<svg" not in html and "apt install graphviz" in html
    assert "<li data-task='boom'><span class='nborch-state st-failed'" in html
    assert f"{len(run.states)}/{len(run.states)} tasks settled" in live.snapshot


def test_cached_and_reused_tasks_are_marked_on_the_graph_and_in_the_table(tmp_path):
    @task(cache=True)
    def expensive():
        return 42

    @task
    def cheap(expensive):
        return expensive + 1

    store = tmp_path / "store"
    first = nborch.run(DAG(expensive, cheap), store=store)
    run, live = run_shown(DAG(expensive, cheap), store=store)

    assert first.ok and run.cached == {"expensive"}
    html = live.snapshot
    assert svg_classes(html) == {node_id("expensive"): "node st-succeeded nb-cached",
                                 node_id("cheap"): "node st-succeeded"}
    assert svg_fills(html)[node_id("expensive")] == MARK_COLORS["cached"][0]
    texts = [t.text for t in svg_nodes(html)[node_id("expensive")].iter(f"{SVG}text")]
    assert texts == ["expensive", "cached"]
    row = re.search(r"<tr class='st-succeeded nb-cached' data-task='expensive'>(.*?)</tr>", html).group(1)
    assert ">succeeded (cached)</span>" in row and "<td>-</td>" in row  # not "0 attempts"
    assert "1 not run (cached or reused)" in html

    resumed, live = run_shown(DAG(expensive, cheap), store=store, resume=run.id)
    assert resumed.reused == {"expensive", "cheap"}
    classes = svg_classes(live.snapshot)
    assert classes[node_id("cheap")] == "node st-succeeded nb-reused"
    assert ">succeeded (reused)</span>" in live.snapshot


def test_the_svg_fits_the_output_and_a_click_zooms_it():
    run, live = run_shown(DAG(*[Task(lambda: 1, name=f"wide{i}") for i in range(30)]),
                          live_options={"show_after": 0})

    root = snapshot_root(live.snapshot)
    (img,) = [e for e in root.iter("img") if e.get("class") == "nborch-graph-img"]
    assert "max-width:100%" in img.get("style") and "height:auto" in img.get("style")
    svg = svg_of(live.snapshot)  # 30 unconnected tasks packed in rows and columns, not one tall column
    width, height = (float(svg.get(k).removesuffix("pt")) for k in ("width", "height"))
    assert width > height, (width, height)
    (label,) = [e for e in root.iter("label") if e.get("class") == "nborch-svg"]
    (box,) = [e for e in root.iter("input") if e.get("class") == "nborch-zoom"]
    assert label.get("for") == box.get("id") == f"{live.scope}-zoom"
    assert f"#{live.scope}-zoom:checked + .nborch-graph .nborch-svg img" in live.snapshot
    # live: the checkbox sits in a widget that is never rewritten, the CSS reaches it with :has()
    assert live.toggle in live.zoom.value
    assert f".{live.scope}:has(#{live.scope}-zoom:checked) .nborch-svg" in live.header.value


def test_repr_and_mimebundle():
    node = DAG(Task(lambda: 1, name="a"), Task(lambda: 2, name="b"))
    live = LiveDisplay(RunHandle("r1", build_graph(node), {}), publish=Published())

    assert repr(live) == "<nborch live display: 0/2 tasks settled, starting>"
    bundle = live._repr_mimebundle_()
    assert bundle["text/plain"] == repr(live)
    assert bundle[WIDGET_VIEW]["model_id"] == live.widget.model_id
    assert bundle["text/html"].startswith(SNAPSHOT_OPEN)
    assert live.shows_output is True
    live.close(nborch.Run("r1", states={"a": S.SUCCEEDED, "b": S.SUCCEEDED}))
    assert live._repr_mimebundle_() == {"text/html": live.snapshot, "text/plain": live.publish[-1][2]["text/plain"]}


def test_widget_factory_outside_a_kernel_gives_none():
    handle = RunHandle("r1", build_graph(Task(lambda: 1, name="a")), {})
    assert widget_factory(handle) is None


def test_widget_factory_inside_a_kernel_makes_a_display_that_shows_itself(monkeypatch):
    import IPython
    import IPython.display

    from nborch.display import widget
    from nborch.display.widget import kernel_publisher

    class FakeKernelShell:
        kernel = object()

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: FakeKernelShell())
    monkeypatch.setattr(IPython.display, "display", lambda *a, **kw: shown.append(("display", a, kw)))
    monkeypatch.setattr(IPython.display, "update_display", lambda *a, **kw: shown.append(("update", a, kw)))
    handle = RunHandle("r1", build_graph(Task(lambda: 1, name="a")), {})

    live = widget_factory(handle)

    assert isinstance(live, LiveDisplay) and live.publish is kernel_publisher and shown == []
    assert (widget.LiveDisplay, widget.STOP_TEXT) == (LiveDisplay, STOP_TEXT)  # still importable from there
    live.close(nborch.Run("r1", states={"a": S.SUCCEEDED}))
    ((kind, args, kwargs),) = shown
    assert kind == "display" and kwargs == {"raw": True, "display_id": live.display_id}
    assert args[0]["text/html"] == live.snapshot


class LateRunningHandle(RunHandle):
    """A handle of a runner that can say what runs and switch RUNNING events on later."""

    def __init__(self, *args, running=None):
        super().__init__(*args)
        self.now_running = running or {}
        self.listening = []

    def running(self):
        return dict(self.now_running)

    def listen_running(self):
        self.listening.append(True)


def test_without_a_widget_on_screen_running_events_are_not_asked_for():
    node = DAG(Task(lambda: 1, name="slow"), Task(lambda: 2, name="quick"))

    async def main():
        handle = LateRunningHandle("r1", build_graph(node), {}, running={"slow": 5.0})
        live = LiveDisplay(handle, show_after=0.05, publish=Published())
        assert live.wants_running is False  # what the run's bus reads when it subscribes it
        live(TaskEvent("r1", "quick", S.SUCCEEDED, 1, 6.0, started=5.5))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not live.shown and loop.time() < deadline:
            await asyncio.sleep(0.01)
        # shown: from now on it gets every start, and it was told what already runs
        assert handle.listening == [True]
        assert live.view.states == {"slow": S.RUNNING, "quick": S.SUCCEEDED}
        assert live.view.task("slow").started == 5.0
        assert table_states(live.table.value) == {"slow": "running", "quick": "succeeded"}
        live.close(nborch.Run("r1", states={"slow": S.SUCCEEDED, "quick": S.SUCCEEDED}))

    asyncio.run(main())


def test_with_todays_runner_the_display_wants_running_events_from_the_start():
    live = LiveDisplay(RunHandle("r1", build_graph(Task(lambda: 1, name="a")), {}), publish=Published())
    assert live.wants_running is True

"""End to end in a real browser: JupyterLab and Notebook 7 on 127.0.0.1, Debian's Chromium
driven by Playwright.

* ``notebooks/02_cell_magics.ipynb`` (outputs cleared), run with Run All: the widget renders (no
  "Loading widget" / "Error displaying widget"), shows tasks running (a node painted the running
  colour while the bar is below 100%), and the output ends on the static snapshot with every
  node in the succeeded colour and the bar full.
* A notebook written here: two 6-second tasks, whose times keep counting (two screenshots 2 s
  apart); a 30-task-wide fan and a 30-task chain whose SVGs lie inside their output areas, the
  chain shown at full size in a scrolling frame when clicked; saved, then reopened by a server
  that has no kernel to start: the final graphs, no "model not found".
* Notebook 7: the live widget, then the snapshot.

Screenshots go to ``tmp_path`` and are copied to ``browser_*.png`` at the repository root
(ignored by git) for a human to look at. Skipped when Chromium, Graphviz's ``dot``, JupyterLab or
Playwright is missing. Never run ``playwright install``: the test drives the system's Chromium
(``NBORCH_CHROMIUM`` overrides the path).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "02_cell_magics.ipynb"
TOKEN = "nborch-browser-test"

CHROME_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# The live display's node colors (nborch.display.dot.COLORS) as the browser computes them.
RUNNING = "rgb(30, 136, 229)"  # #1e88e5
SUCCEEDED = "rgb(67, 160, 71)"  # #43a047
FAILED = "rgb(229, 57, 53)"  # #e53935

# JupyterLab user settings: no news / update toasts in screenshots, start the kernel without
# asking, and render every cell (no windowing), so the widget exists in the DOM wherever it is.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False,
    },
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autoStartDefaultKernel": True},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

def _require_tools() -> str:
    chromium = os.environ.get("NBORCH_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); "
                    "NBORCH_CHROMIUM may point to another build")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (apt-get install graphviz): the live graph needs it")
    for module, package in (("jupyterlab", "jupyterlab"), ("playwright.sync_api", "playwright"),
                            ("ipywidgets", "ipywidgets"), ("nbformat", "nbformat")):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{package} is not installed (pip install {package}; never `playwright install`)")
    return chromium


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_cleared(src: Path, dest: Path) -> None:
    import nbformat

    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, dest)


def _start_lab(work: Path, root: Path, port: int, app: str = "lab", extra: tuple[str, ...] = ()
               ) -> tuple[subprocess.Popen, Any]:
    dirs = {name: work / sub for name, sub in (
        ("JUPYTER_CONFIG_DIR", "jupyter-config"), ("JUPYTER_DATA_DIR", "jupyter-data"),
        ("JUPYTER_RUNTIME_DIR", "jupyter-runtime"), ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
    )}
    for rel, data in LAB_SETTINGS.items():
        path = dirs["JUPYTERLAB_SETTINGS_DIR"] / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    env = {**os.environ, **{k: str(v) for k, v in dirs.items()}}
    log = open(work / "jupyter-lab.log", "w")  # noqa: SIM115 - closed by the caller
    cmd = [
        sys.executable, "-m", "jupyter", app, "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}", *extra,
    ]
    if app == "lab":
        cmd += ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # as root (CI containers) the server refuses to start without it
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    return server, log


def _wait_for_server(server: subprocess.Popen, port: int, work: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail("jupyter lab exited:\n" + (work / "jupyter-lab.log").read_text()[-3000:])
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("jupyter lab did not answer within 60 s")


def _accept_dialog(page) -> None:
    button = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    if button.count():
        button.first.click()




# -- the display's DOM, sampled in the page ----------------------------------------------------------

# The nodes of a graph as drawn: the live widget's inline SVG (the fill the browser computes), or
# a snapshot's image, whose SVG is read back from its data URI (the fill written into it).
NODES_JS = """(root) => {
  const rgb = hex => hex && hex[0] === '#' ? 'rgb(' + [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16)).join(', ') + ')' : hex;
  const read = (svg, computed) => [...svg.querySelectorAll('g.node')].map(g => {
    const shape = g.querySelector('path, polygon, ellipse');
    const texts = [...g.querySelectorAll('text')].map(t => t.textContent);
    const fill = shape ? (computed ? getComputedStyle(shape).fill : rgb(shape.getAttribute('fill'))) : null;
    return {id: g.id, cls: g.getAttribute('class'), fill, texts};
  });
  const svg = root.querySelector('svg');
  if (svg) return read(svg, true);
  const img = root.querySelector('img.nborch-graph-img');
  if (!img) return [];
  const bytes = Uint8Array.from(atob(img.getAttribute('src').split(',')[1]), c => c.charCodeAt(0));
  const doc = new DOMParser().parseFromString(new TextDecoder().decode(bytes), 'image/svg+xml');
  return read(doc, false);
}"""

# One sample of the live display (the widget) or, once the run ended, of its snapshot: the
# progress bar's width, each node's id / class / fill / lines of text, the status line, the
# table's durations.
SAMPLE_JS = """(index) => {
  const nodesOf = """ + NODES_JS + """;
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
  const cell = index === null ? document : cells[index];
  if (!cell) return null;
  const live = cell.querySelector('.nborch-live');
  // the last snapshot that draws a graph (a Run shown in the cell its live display drew is one line)
  const snaps = [...cell.querySelectorAll('.nborch-snapshot')];
  const root = live || snaps.filter(s => s.querySelector('.nborch-graph')).pop() || snaps.pop();
  if (!root) return null;
  const bar = root.querySelector('.nborch-progress .nborch-bar');
  const graph = root.querySelector('.nborch-graph');
  const header = root.querySelector('.nborch-header');
  const durations = {};
  for (const tr of root.querySelectorAll('tr[data-task]')) {
    const td = tr.querySelector('.nborch-duration');
    if (td) durations[tr.dataset.task] = td.textContent;
  }
  return {live: !!live, bar: bar ? bar.style.width : null, nodes: graph ? nodesOf(graph) : [], durations,
          image: !!root.querySelector('img.nborch-graph-img'), header: header ? header.innerText : ''};
}"""

# Where each graph of a cell is drawn (its image or inline SVG), against the output area that
# holds it (CSS pixels); ``natural``: its full size.
BOXES_JS = """(index) => {
  const cell = [...document.querySelectorAll('.jp-Notebook .jp-Cell')][index];
  return [...cell.querySelectorAll('.nborch-svg')].map(frame => {
    const pic = frame.querySelector('img.nborch-graph-img, svg');
    const area = frame.closest('.jp-OutputArea-output');
    const box = r => ({left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height});
    const natural = pic.tagName === 'IMG' ? [+pic.getAttribute('width'), +pic.getAttribute('height')]
                                          : [pic.viewBox.baseVal.width * 4 / 3, pic.viewBox.baseVal.height * 4 / 3];
    return {svg: box(pic.getBoundingClientRect()), frame: box(frame.getBoundingClientRect()),
            area: box(area.getBoundingClientRect()), natural: natural[0], natural_height: natural[1],
            scroll: frame.scrollWidth, client: frame.clientWidth};
  });
}"""


def _inside(inner: dict, outer: dict, slack: float = 1.0) -> bool:
    return (inner["left"] >= outer["left"] - slack and inner["right"] <= outer["right"] + slack
            and inner["top"] >= outer["top"] - slack and inner["bottom"] <= outer["bottom"] + slack)


class Server:
    """A Jupyter server of ours (JupyterLab or Notebook 7) on 127.0.0.1, isolated in ``work``."""

    def __init__(self, app: str, work: Path, root: Path, *extra: str) -> None:
        self.port = _free_port()
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.proc, self.log = _start_lab(work, root, self.port, app=app, extra=extra)
        _wait_for_server(self.proc, self.port, work)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={TOKEN}"

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/{path}?token={TOKEN}", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()  # our own server, by its handle; it shuts its kernels down
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def chromium_context(tmp_path_factory):
    chromium = _require_tools()
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROME_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            yield ctx
        finally:
            ctx.close()


def _new_page(ctx):
    page = ctx.new_page()
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
    return page


def _open(page, server: Server, path: str) -> None:
    page.goto(server.url(path))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)


def _wait_for_kernel(page, server: Server, timeout: float = 90) -> None:
    """Until the page's kernel is idle: the server's session says so and the page shows it
    (JupyterLab's status bar "| Idle"; Notebook 7's kernel indicator)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _accept_dialog(page)
        sessions = server.api("sessions")
        states = [s["kernel"]["execution_state"] for s in sessions if s.get("kernel")]
        # JupyterLab's status bar says "Python 3 (ipykernel) | Idle" once the session is attached
        # (its execution indicator turns idle before); Notebook 7 has no status bar, its
        # indicator's tooltip says "Kernel status: Idle"
        lab = page.locator(".jp-StatusBar-Widget")
        indicator = page.locator(".jp-Notebook-ExecutionIndicator")
        ind = indicator.first.get_attribute("data-status") if indicator.count() else None
        text = " ".join(" ".join((lab if lab.count() else indicator).all_text_contents()).split())
        if states == ["idle"] and ind == "idle" and ("| Idle" in text if lab.count() else "Idle" in text):
            return
        time.sleep(0.2)
    pytest.fail(f"the kernel did not become idle: {server.api('sessions')}")


def _run_all(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def _wait_for_output(page, text: str, timeout: float = 90) -> None:
    """Until a cell's output (not its source) shows ``text`` and the kernel is idle again."""
    deadline = time.monotonic() + timeout
    outputs = page.locator(".jp-Notebook .jp-OutputArea-output")
    while time.monotonic() < deadline:
        _accept_dialog(page)
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='busy']").count() == 0
        if idle and any(text in t for t in outputs.all_inner_texts()):
            return
        page.wait_for_timeout(100)
    pytest.fail(f"{text!r} never appeared; the notebook shows:\n{page.locator('.jp-Notebook').inner_text()[-3000:]}")


def _widget_problems(page) -> list[str]:
    text = page.locator(".jp-Notebook").inner_text()
    return [p for p in ("Loading widget", "Error displaying widget", "model not found") if p.lower() in text.lower()]


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path))
    try:
        shutil.copyfile(path, ROOT / name)  # for a human to look at (ignored by git)
    except OSError:  # a read-only checkout: the copy in tmp_path is enough
        pass
    return path


def _scroll_to_cell(page, index: int) -> None:
    page.evaluate("(i) => [...document.querySelectorAll('.jp-Notebook .jp-Cell')][i]"
                  "?.scrollIntoView({block: 'start'})", index)
    page.wait_for_timeout(200)


@pytest.mark.timeout(180)
def test_cell_magics_notebook_runs_live_in_jupyterlab(chromium_context, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    _copy_cleared(NOTEBOOK, root / NOTEBOOK.name)
    server = Server("lab", tmp_path / "server", root)
    page = _new_page(chromium_context)
    try:
        _open(page, server, f"lab/tree/{NOTEBOOK.name}")
        _wait_for_kernel(page, server)
        _run_all(page)

        # Watch the live display from its first paint until the notebook is done.
        samples: list[dict] = []
        deadline = time.monotonic() + 90
        finished = False
        while time.monotonic() < deadline:
            _accept_dialog(page)
            sample = page.evaluate(SAMPLE_JS, None)
            if sample is not None and sample["live"]:
                samples.append(sample)
                if len(samples) == 6:  # mid-run, for a human looking
                    page.locator(".nborch-live").first.scroll_into_view_if_needed()
                    _shot(page, tmp_path, "browser_midrun.png")
            last_output = page.locator(".jp-Cell").last.inner_text()
            idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() > 0
            if "flowchart TD" in last_output and idle:
                finished = True
                break
            page.wait_for_timeout(50)
        page.wait_for_timeout(300)
        final = page.evaluate(SAMPLE_JS, None)
        page.evaluate("() => document.querySelector('.nborch-snapshot')?.closest('.jp-Cell')"
                      "?.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(200)
        _shot(page, tmp_path, "browser_screenshot.png")
        text = page.locator(".jp-Notebook").inner_text()
        stderr = "[data-mime-type='application/vnd.jupyter.stderr']"
        error_texts = page.locator(f".jp-OutputArea-output{stderr}").all_inner_texts()
        problems = _widget_problems(page)
        console_errors = page.console_errors
    finally:
        page.close()
        server.stop()

    trace = "\n".join(f"  bar={s['bar']} fills={[n['fill'] for n in s['nodes']]} {s['header']!r}"
                      for s in samples[:: max(1, len(samples) // 25)])
    assert finished, f"Run All did not finish within 90 s; samples:\n{trace}\nnotebook text:\n{text[-2000:]}"
    assert not problems, problems
    assert not error_texts, f"cells wrote errors or stderr: {error_texts}"
    assert samples, "the live display never appeared"

    # It was live: while the bar was below 100%, some node was painted the running color.
    running = [
        s for s in samples if s["bar"] not in (None, "100%") and any(n["fill"] == RUNNING for n in s["nodes"])
    ]
    assert running, f"no running state seen while the run was in progress; samples:\n{trace}"
    widths = [float(s["bar"].rstrip("%")) for s in samples if s["bar"]]
    assert any(0 < w < 100 for w in widths), f"the progress bar never showed partial progress: {widths}"

    # It ended on the static snapshot (no widget left): every node succeeded, the bar full.
    assert final is not None and final["live"] is False
    names = sorted(n["id"] for n in final["nodes"])
    assert names == sorted(f"task-{t}" for t in ("extract", "clean", "features", "stats", "report"))
    assert all(n["fill"] == SUCCEEDED for n in final["nodes"]), final["nodes"]
    assert all("st-succeeded" in n["cls"] for n in final["nodes"]), final["nodes"]
    assert final["bar"] == "100%"
    assert "succeeded" in final["header"]
    assert not [e for e in console_errors if "widget" in e.lower()], console_errors


DISPLAY_CELLS = [
    "%load_ext nborch\nimport time\nfrom nborch import DAG, Parallel, Sequence, Task",
    # 1: two 6-second tasks side by side: their times must keep counting
    "def nap():\n    time.sleep(6)\n\nParallel(Task(nap, name='first'), Task(nap, name='second')).run()",
    # 2: a graph 30 tasks wide (a fan: tall when laid out left to right) and one 30 long (wide)
    "src = Task(lambda: 1, name='src')\nDAG(src, *[Task(lambda x: x, src, name=f'wide{i}') for i in range(30)]).run()\n"
    "Sequence(*[Task(lambda: 1, name=f'step{i}') for i in range(30)]).run();",
    # 3: a past run, reloaded from the store and displayed: its graph in the recorded states
    "import nborch\n\ndef boom(x):\n    raise ValueError('no rows')\n\nok = Task(lambda: 1, name='ok')\n"
    "_r = nborch.run(DAG(ok, Task(boom, ok, name='boom')), display=False)\n"
    "nborch.Run.load(_r.id)",
    "print('ALL-DONE')",
]


def _display_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in DISPLAY_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.timeout(240)
def test_jupyterlab_shows_time_ticking_graphs_that_fit_and_a_saved_run_without_kernel(chromium_context, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    name = "display_checks.ipynb"
    _display_notebook(root / name)
    server = Server("lab", tmp_path / "server", root)
    page = _new_page(chromium_context)
    try:
        _open(page, server, f"lab/tree/{name}")
        _wait_for_kernel(page, server)
        _run_all(page)

        # -- ticking: two screenshots 2 s apart while both tasks run ---------------------------------
        deadline = time.monotonic() + 60
        first = None
        while time.monotonic() < deadline:
            first = page.evaluate(SAMPLE_JS, 1)
            if first and first["live"] and first["durations"].get("first", "-") not in ("-", "0.0s"):
                break
            page.wait_for_timeout(100)
        assert first and first["live"], f"the live display of the 6 s run never appeared: {first}"
        _scroll_to_cell(page, 1)
        _shot(page, tmp_path, "browser_ticking_1.png")
        page.wait_for_timeout(2000)
        second = page.evaluate(SAMPLE_JS, 1)
        _shot(page, tmp_path, "browser_ticking_2.png")
        assert second["live"], "the run ended within 2 s of the first screenshot"

        _wait_for_output(page, "ALL-DONE")
        page.wait_for_timeout(300)
        # -- graphs fit the output: each SVG's box is inside its output area ------------------------------
        _scroll_to_cell(page, 2)
        boxes = page.evaluate(BOXES_JS, 2)
        _shot(page, tmp_path, "browser_wide_graphs.png")
        # -- a click shows the wide one at full size, in a frame that scrolls inside the output ---------------
        page.locator(".jp-Notebook .jp-Cell").nth(2).locator(".nborch-svg").nth(1).click()
        page.wait_for_timeout(300)
        zoomed = page.evaluate(BOXES_JS, 2)[1]
        _shot(page, tmp_path, "browser_zoomed.png")
        # -- a past run displayed (nborch.Run.load): its graph in the recorded states, its error ---------
        _scroll_to_cell(page, 3)
        past = page.evaluate(SAMPLE_JS, 3)
        past_text = page.locator(".jp-Notebook .jp-Cell").nth(3).locator(".jp-OutputArea").inner_text()
        _shot(page, tmp_path, "browser_past_run.png")

        # -- save, then reopen with no kernel -----------------------------------------------------------
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 30
        saved = None
        while time.monotonic() < deadline:
            saved = server.api(f"contents/{name}")["content"]
            if any("ALL-DONE" in o.get("text", "") for o in saved["cells"][-1].get("outputs", [])):
                break
            page.wait_for_timeout(200)
        problems_live = _widget_problems(page)
        console_errors = page.console_errors
    finally:
        page.close()
        server.stop()

    # ticking: the running tasks' times changed between the two screenshots, 2 s apart
    assert first["durations"]["first"] != second["durations"]["first"], (first, second)
    t1, t2 = (float(s["durations"]["first"].rstrip("s")) for s in (first, second))
    assert 1.5 <= t2 - t1 <= 3.5, (first["durations"], second["durations"])
    notes = {n["id"]: n["texts"][-1] for n in second["nodes"]}
    assert re.fullmatch(r"\d+\.\ds", notes["task-first"]), notes  # on the node too
    assert any(n["fill"] == RUNNING for n in second["nodes"]), second["nodes"]

    # fitting: both graphs, the 30-wide fan and the 30-long chain, lie inside their output areas
    assert len(boxes) == 2, boxes
    for box in boxes:
        assert _inside(box["svg"], box["area"]), box
    fan, chain = boxes
    assert chain["natural"] > chain["area"]["width"], chain  # it had to shrink to fit
    assert fan["svg"]["height"] >= 0.55 * fan["natural_height"], fan  # not shrunk past legible by its height
    assert zoomed["svg"]["width"] >= zoomed["natural"] - 2, zoomed  # full size when clicked
    assert zoomed["scroll"] > zoomed["client"], zoomed  # in a frame that scrolls
    assert _inside(zoomed["frame"], zoomed["area"]), zoomed

    # the past run: drawn from the store, each node in its recorded state, the error in the table
    assert past and not past["live"], past
    assert {n["id"]: n["fill"] for n in past["nodes"]} == {"task-ok": SUCCEEDED, "task-boom": FAILED}, past
    assert "ValueError: no rows" in past_text and "failed" in past["header"], past_text

    assert not problems_live, problems_live
    assert not [e for e in console_errors if "widget" in e.lower()], console_errors

    # the saved file holds the final snapshots, no widget view
    assert saved is not None
    views = [o for c in saved["cells"] for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert not views, views
    (cell1,) = [o for o in saved["cells"][1]["outputs"] if o["output_type"] == "display_data"]
    assert "2/2 tasks settled" in cell1["data"]["text/html"]

    # -- reopened by a server that has no kernel to start ----------------------------------------------
    again = Server("lab", tmp_path / "server2", root, "--KernelSpecManager.allowed_kernelspecs=nborch-none")
    page = _new_page(chromium_context)
    try:
        _open(page, again, f"lab/tree/{name}")
        _choose_no_kernel(page)
        kernels = again.api("kernels")
        reopened = [page.evaluate(SAMPLE_JS, i) for i in (1, 2, 3)]
        boxes_again = page.evaluate(BOXES_JS, 2)
        _scroll_to_cell(page, 1)
        _shot(page, tmp_path, "browser_reopened.png")
        problems = _widget_problems(page)
    finally:
        page.close()
        again.stop()

    assert kernels == [], kernels
    assert not problems, problems
    ran, graphs, past_again = reopened
    assert ran and not ran["live"] and ran["bar"] == "100%", ran
    assert {n["id"]: n["fill"] for n in ran["nodes"]} == {"task-first": SUCCEEDED, "task-second": SUCCEEDED}
    assert graphs and len(graphs["nodes"]) == 30, graphs  # the last graph of the cell: the chain
    assert all(r["image"] for r in reopened), reopened  # graphs as images: the sanitizer keeps them
    assert len(boxes_again) == 2 and all(_inside(b["svg"], b["area"]) for b in boxes_again), boxes_again
    assert past_again and {n["id"]: n["fill"] for n in past_again["nodes"]} == {
        "task-ok": SUCCEEDED, "task-boom": FAILED}, past_again


def _choose_no_kernel(page, timeout: float = 15) -> None:
    """Answer JupyterLab's kernel dialog (it comes when the page finds no kernel to start): no
    kernel; return once no dialog is left."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        button = page.locator(".jp-Dialog .jp-Dialog-button", has_text="No Kernel")
        if button.count():
            button.first.click()
            quiet_since = None
        elif page.locator(".jp-Dialog").count() == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 2:  # no dialog for 2 s: it is not coming (again)
                return
        page.wait_for_timeout(100)
    pytest.fail("JupyterLab's kernel dialog did not go away")


@pytest.mark.timeout(180)
def test_notebook_7_shows_the_live_display_then_its_snapshot(chromium_context, tmp_path):
    _require_tools()
    try:
        __import__("notebook")
    except ImportError:
        pytest.skip("Notebook 7 is not installed (pip install notebook)")
    root = tmp_path / "root"
    root.mkdir()
    name = "nb7.ipynb"
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "%load_ext nborch\nimport time\nfrom nborch import DAG, Task",
        "def nap():\n    time.sleep(2.5)\n\nDAG(Task(nap, name='slow'), Task(lambda: 1, name='quick')).run()",
        "print('ALL-DONE')",
    )]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, root / name)
    server = Server("notebook", tmp_path / "server", root)
    page = _new_page(chromium_context)
    try:
        _open(page, server, f"notebooks/{name}")
        _wait_for_kernel(page, server)
        _run_all(page)
        live = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            live = page.evaluate(SAMPLE_JS, 1)
            if live and live["live"] and any(n["fill"] == RUNNING for n in live["nodes"]):
                break
            page.wait_for_timeout(100)
        _shot(page, tmp_path, "browser_nb7_live.png")
        _wait_for_output(page, "ALL-DONE")
        page.wait_for_timeout(300)
        final = page.evaluate(SAMPLE_JS, 1)
        _shot(page, tmp_path, "browser_nb7_final.png")
        problems = _widget_problems(page)
    finally:
        page.close()
        server.stop()

    assert live and live["live"] and any(n["fill"] == RUNNING for n in live["nodes"]), live
    assert final and not final["live"] and final["bar"] == "100%", final
    assert {n["id"]: n["fill"] for n in final["nodes"]} == {"task-slow": SUCCEEDED, "task-quick": SUCCEEDED}
    assert not problems, problems


MAP_CELLS = [
    "%load_ext nborch\nimport asyncio\nimport nborch",
    # 1: a map of 40 items over a task's value: they appear when it succeeds, then settle in turn
    "@nborch.task\ndef rows():\n    return list(range(40))\n\n"
    "@nborch.task\nasync def fetch(x):\n    await asyncio.sleep(0.1 * (x % 10) + 0.3)\n"
    "    if x % 9 == 4:\n        raise ValueError(f'bad row {x}')\n    return x\n\n"
    "@nborch.task(trigger_rule='all_done')\ndef total(fetch):\n    return sum(fetch)\n\n"
    "src = rows()\nm = fetch.map(src)\nnborch.run(nborch.DAG(src, m, total(m)))",
    # 2: a map of 4 items: drawn beside it
    "few = fetch.map([1, 2, 3, 4])\nnborch.run(nborch.DAG(few, total(few)))",
    "print('ALL-DONE')",
]


@pytest.mark.timeout(180)
def test_jupyterlab_shows_a_mapped_node_with_its_counts_and_bar(chromium_context, tmp_path):
    import nbformat

    root = tmp_path / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in MAP_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, root / "maps.ipynb")
    server = Server("lab", tmp_path / "server", root)
    page = _new_page(chromium_context)
    live = None
    try:
        _open(page, server, "lab/tree/maps.ipynb")
        _wait_for_kernel(page, server)
        _run_all(page)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # mid-run: some items settled, others still to come
            live = page.evaluate(SAMPLE_JS, 1)
            note = next((n["texts"][-1] for n in (live or {}).get("nodes", []) if n["id"] == "map-fetch"), "")
            if live and live["live"] and "✓" in note and "…" in note:
                break
            page.wait_for_timeout(50)
        _scroll_to_cell(page, 1)
        _shot(page, tmp_path, "browser_map_live.png")
        _wait_for_output(page, "ALL-DONE")
        page.wait_for_timeout(300)
        final, few = page.evaluate(SAMPLE_JS, 1), page.evaluate(SAMPLE_JS, 2)
        cell_text = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea").inner_text()
        _scroll_to_cell(page, 1)
        _shot(page, tmp_path, "browser_map_final.png")
        _scroll_to_cell(page, 2)
        _shot(page, tmp_path, "browser_map_few.png")
        problems = _widget_problems(page)
    finally:
        page.close()
        server.stop()

    assert not problems, problems
    nodes = {n["id"]: n for n in live["nodes"]}
    assert set(nodes) == {"task-rows", "map-fetch", "task-total"}, nodes  # 40 items: one node
    assert re.fullmatch(r"(\d+ ✓ )?(\d+ ✗ )?\d+ …", nodes["map-fetch"]["texts"][-1]), nodes["map-fetch"]
    # the returned Run, the cell's last line, does not draw the run a second time
    assert cell_text.count("tasks settled") == 2 and "its graph and table are in the live display above" in cell_text
    final_nodes = {n["id"]: n for n in final["nodes"]}
    assert final_nodes["map-fetch"]["texts"] == ["fetch", "36 ✓ 4 ✗"], final_nodes
    assert final_nodes["map-fetch"]["fill"] == FAILED and final_nodes["task-total"]["fill"] == SUCCEEDED
    assert {n["id"] for n in few["nodes"]} == {"map-fetch", "task-total", *(f"task-fetch-3a-{i}" for i in range(4))}


MAPPING = ROOT / "notebooks" / "06_mapping.ipynb"


@pytest.mark.timeout(180)
def test_mapping_notebook_runs_in_jupyterlab_and_shows_its_map_as_one_node(chromium_context, tmp_path):
    """notebooks/06_mapping (outputs cleared) with Run All: every cell runs, the `%orch run`
    cell ends on its snapshot with the `--map` cell's map as one node with its counts."""
    root = tmp_path / "root"
    root.mkdir()
    _copy_cleared(MAPPING, root / MAPPING.name)
    server = Server("lab", tmp_path / "server", root)
    page = _new_page(chromium_context)
    try:
        _open(page, server, f"lab/tree/{MAPPING.name}")
        _wait_for_kernel(page, server)
        _run_all(page)
        _wait_for_output(page, "['temperature:0', 'temperature:1', 'temperature:2']", timeout=120)
        page.wait_for_timeout(300)
        cells = page.locator(".jp-Notebook .jp-Cell")
        texts = [cells.nth(i).inner_text() for i in range(cells.count())]
        errors = [t for t in texts if "Traceback" in t or "Error" in t.split("\n")[-1]]
        run_cell = next(i for i, t in enumerate(texts) if "%orch run warmest\n" in t + "\n" and "--no-display" not in t)
        run_text = texts[run_cell]
        _scroll_to_cell(page, run_cell)
        _shot(page, tmp_path, "browser_mapping_notebook.png")
        images = cells.nth(run_cell).locator(".jp-OutputArea img").count()
        problems = _widget_problems(page)
    finally:
        page.close()
        server.stop()

    assert not problems, problems
    assert not errors, errors
    assert "succeeded" in run_text and "temperature" in run_text, run_text
    assert images >= 1  # the snapshot's graph, as an image

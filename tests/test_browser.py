"""End to end in a real browser: JupyterLab on 127.0.0.1, Debian's Chromium driven by Playwright.

A copy of ``notebooks/02_cell_magics.ipynb`` (outputs cleared) is opened and run with Run All. While
``%orch run`` works, the test polls the live display's DOM: the widget must render (no "Loading
widget" / "Error displaying widget"), show tasks running (a node painted the running color while
the progress bar is below 100%), and end with every node in the succeeded color and the bar full.
A screenshot goes to ``tmp_path`` and is copied to ``browser_screenshot.png`` at the repository root
(ignored by git) for a human to look at.

Skipped when Chromium, Graphviz's ``dot``, JupyterLab or Playwright is missing. Never run
``playwright install``: the test drives the system's Chromium (``NBORCH_CHROMIUM`` overrides the path).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "02_cell_magics.ipynb"
SCREENSHOT_COPY = ROOT / "browser_screenshot.png"
TOKEN = "nborch-browser-test"

CHROME_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# The live display's node colors (nborch.display.dot.COLORS) as the browser computes them.
RUNNING = "rgb(30, 136, 229)"  # #1e88e5
SUCCEEDED = "rgb(67, 160, 71)"  # #43a047

# JupyterLab user settings: no news / update toasts in screenshots, start the kernel without
# asking, and render every cell (no windowing), so the widget exists in the DOM wherever it is.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False,
    },
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autoStartDefaultKernel": True},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

# One DOM snapshot of the live display, taken in the page.
SAMPLE_JS = """() => {
  const live = document.querySelector('.nborch-live');
  if (!live) return null;
  const bar = live.querySelector('.nborch-progress .progress-bar');
  const nodes = [...live.querySelectorAll('.nborch-graph svg g.node')].map(g => {
    const shape = g.querySelector('path, polygon, ellipse');
    return {id: g.id, cls: g.getAttribute('class'), fill: shape ? getComputedStyle(shape).fill : null};
  });
  const header = live.querySelector('.nborch-header');
  return {bar: bar ? bar.style.width : null, nodes: nodes, header: header ? header.innerText : ''};
}"""


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


def _start_lab(work: Path, root: Path, port: int) -> tuple[subprocess.Popen, object]:
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
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
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


def _wait_for_kernel_idle(page, timeout: float = 90) -> None:
    # The toolbar indicator turns idle before the session is attached; the status bar's
    # "Python 3 (ipykernel) | Idle" is the reliable sign (Run All earlier pops "Select Kernel").
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        indicator = page.locator(".jp-Notebook-ExecutionIndicator")
        status = page.locator(".jp-StatusBar-Widget")
        ind = indicator.first.get_attribute("data-status") if indicator.count() else None
        text = " ".join(status.first.inner_text().split()) if status.count() else ""
        if ind == "idle" and "| Idle" in text:
            return
        time.sleep(0.1)
    pytest.fail("the kernel did not become idle")


def _accept_dialog(page) -> None:
    button = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    if button.count():
        button.first.click()


@pytest.mark.timeout(180)
def test_cell_magics_notebook_runs_live_in_jupyterlab(tmp_path):
    chromium = _require_tools()
    from playwright.sync_api import sync_playwright

    root = tmp_path / "lab"
    root.mkdir()
    _copy_cleared(NOTEBOOK, root / NOTEBOOK.name)
    port = _free_port()
    server, log = _start_lab(tmp_path, root, port)
    try:
        _wait_for_server(server, port, tmp_path)
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True,
                args=CHROME_ARGS, viewport={"width": 1280, "height": 1000},
            )
            try:
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                console_errors: list[str] = []
                page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
                page.goto(f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}?token={TOKEN}")
                page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
                _wait_for_kernel_idle(page)
                page.wait_for_timeout(1000)
                _accept_dialog(page)

                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

                # Watch the live display from its first paint until the notebook is done.
                samples: list[dict] = []
                deadline = time.monotonic() + 90
                finished = False
                while time.monotonic() < deadline:
                    _accept_dialog(page)
                    sample = page.evaluate(SAMPLE_JS)
                    if sample is not None:
                        samples.append(sample)
                        if len(samples) == 1:
                            page.locator(".nborch-live").first.scroll_into_view_if_needed()
                        if len(samples) == 12:  # mid-run, for a human looking at tmp_path
                            page.screenshot(path=str(tmp_path / "browser_midrun.png"))
                    last_output = page.locator(".jp-Cell").last.inner_text()
                    idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() > 0
                    if "flowchart TD" in last_output and idle:
                        finished = True
                        break
                    page.wait_for_timeout(50)
                page.wait_for_timeout(500)  # the final repaint's last comm messages
                final = page.evaluate(SAMPLE_JS)
                page.evaluate("() => document.querySelector('.nborch-live')?.closest('.jp-Cell')"
                              "?.scrollIntoView({block: 'start'})")
                page.wait_for_timeout(200)
                shot = tmp_path / "browser_screenshot.png"
                page.screenshot(path=str(shot))
                try:
                    shutil.copyfile(shot, SCREENSHOT_COPY)
                except OSError:  # a read-only checkout: the copy in tmp_path is enough
                    pass
                text = page.locator(".jp-Notebook").inner_text()
                stderr = "[data-mime-type='application/vnd.jupyter.stderr']"
                error_texts = page.locator(f".jp-OutputArea-output{stderr}").all_inner_texts()
            finally:
                ctx.close()
    finally:
        server.terminate()  # our own server, by its handle; it shuts its kernel down
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()

    (tmp_path / "samples.json").write_text(json.dumps({"samples": samples, "final": final}, indent=1))
    trace = "\n".join(f"  bar={s['bar']} fills={[n['fill'] for n in s['nodes']]} {s['header']!r}"
                      for s in samples[:: max(1, len(samples) // 25)])
    assert finished, f"Run All did not finish within 90 s; samples:\n{trace}\nnotebook text:\n{text[-2000:]}"
    assert "Loading widget" not in text
    assert "Error displaying widget" not in text
    assert "model not found" not in text.lower()
    assert not error_texts, f"cells wrote errors or stderr: {error_texts}"
    assert samples, "the live display never appeared"

    # It was live: while the bar was below 100%, some node was painted the running color.
    running = [
        s for s in samples if s["bar"] not in (None, "100%") and any(n["fill"] == RUNNING for n in s["nodes"])
    ]
    assert running, f"no running state seen while the run was in progress; samples:\n{trace}"
    widths = [float(s["bar"].rstrip("%")) for s in samples if s["bar"]]
    assert any(0 < w < 100 for w in widths), f"the progress bar never showed partial progress: {widths}"

    # It ended in the final state: every node succeeded (color and class), the bar full.
    assert final is not None
    names = sorted(n["id"] for n in final["nodes"])
    assert names == sorted(f"task-{t}" for t in ("extract", "clean", "features", "stats", "report"))
    assert all(n["fill"] == SUCCEEDED for n in final["nodes"]), final["nodes"]
    assert all("st-succeeded" in n["cls"] for n in final["nodes"]), final["nodes"]
    assert final["bar"] == "100%"
    assert "succeeded" in final["header"]
    assert not [e for e in console_errors if "widget" in e.lower()], console_errors

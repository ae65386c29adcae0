"""``run(..., timeout=S)`` and ``nborch run --timeout S``: one deadline for a whole run, which
cancels it as an interrupt does; the exit codes of ``nborch run`` (0, 1, 2, 3, 130)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time

import pytest

import nborch
from nborch import DAG, task

from headless_support import by_source, env_for, nborch as run_cli, notebook, outputs, read, write


# -- in Python -------------------------------------------------------------------------------------


def test_run_timeout_cancels_the_whole_run_and_raises_with_the_record():
    ran: list[str] = []

    @task
    async def slow():
        await asyncio.sleep(30)
        ran.append("slow")

    @task
    def quick():
        return 1

    @task
    def after(slow):
        ran.append("after")

    started = time.monotonic()
    with pytest.raises(nborch.RunTimeoutError, match=r"^run \w+ timed out after 0\.3s and was cancelled "
                                                     r"\(2 tasks cancelled\)$") as info:
        nborch.run(DAG(slow, quick, after), timeout=0.3, store=False)
    assert time.monotonic() - started < 10
    record = info.value.run
    assert isinstance(info.value, TimeoutError) and info.value.timeout == 0.3
    assert record.status == "cancelled" and nborch.last_run() is record
    assert {n: s.value for n, s in record.states.items()} == {
        "slow": "cancelled", "quick": "succeeded", "after": "cancelled"}
    assert ran == []  # nothing ran on behind the caller's back


def test_node_run_timeout_raises_and_a_sync_task_polling_cancelled_stops():
    stopped = threading.Event()

    @task
    def spin():
        while not nborch.cancelled():
            time.sleep(0.01)
        stopped.set()

    with pytest.raises(TimeoutError):
        spin().run(timeout=0.2, store=False)
    assert stopped.is_set()  # the run settled it before raising


def test_a_run_within_its_timeout_returns_as_usual():
    @task
    def quick():
        return 42

    record = nborch.run(quick, timeout=30, store=False)
    assert record.status == "succeeded" and record.value == 42


@pytest.mark.parametrize("bad", [0, -1, True, "5", float("nan")])
def test_a_bad_timeout_is_a_definition_error(bad):
    @task
    def quick():
        return 1

    with pytest.raises(nborch.DefinitionError, match=r"^timeout= expects a number of seconds > 0 or None, got "):
        nborch.run(quick, timeout=bad, store=False)


def test_run_async_timeout():
    @task
    async def slow():
        await asyncio.sleep(30)

    async def main():
        with pytest.raises(nborch.RunTimeoutError):
            await nborch.run_async(slow, timeout=0.2, store=False)
        assert not asyncio.current_task().cancelling()  # the deadline's cancel was taken back

    asyncio.run(main())


# -- nborch run --timeout, and the exit codes -------------------------------------------------------


def test_timeout_stops_a_running_cell_exits_3_and_writes_the_notebook(tmp_path):
    nb = write(tmp_path / "sleepy.ipynb", notebook(
        "print('before')", "import time\nprint('sleeping', flush=True)\ntime.sleep(60)", "print('never')",
    ))
    started = time.monotonic()
    r = run_cli("run", nb, "out.ipynb", "--timeout", "1.5", cwd=tmp_path)
    assert r.code == 3, r.err
    assert time.monotonic() - started < 30
    assert r.err.startswith("nborch: timed out after 1.5s (--timeout): cell 2 was running\n"), r.err
    assert "Traceback" not in r.err
    out = read(tmp_path / "out.ipynb")
    assert out["metadata"]["nborch"]["status"] == "timed out"
    cell = by_source(out, "import time")
    assert outputs(cell)[0] == ("stdout", "sleeping\n")
    assert outputs(cell)[-1][1].startswith("TimeoutError: the run's deadline of 1.5s passed while this cell ran")
    never = by_source(out, "print('never')")
    assert never["execution_count"] is None and never["outputs"] == []


def test_timeout_cancels_the_task_graph_exits_3(tmp_path):
    nb = write(tmp_path / "graph.ipynb", notebook(
        "%load_ext nborch",
        "%%task quick\n1",
        "%%task slow\nimport time\nfor _ in range(600):\n    time.sleep(0.1)\n    if nborch_cancelled(): break",
        "%%task after\nslow + 1",
        "%orch run",
        "print('after the run', after)",
    ))
    # the task polls nborch.cancelled() through a helper the notebook defines
    nbj = read(nb)
    nbj["cells"].insert(1, {"cell_type": "code", "id": "helper", "metadata": {}, "outputs": [],
                            "execution_count": None, "source": "from nborch import cancelled as nborch_cancelled"})
    write(nb, nbj)
    started = time.monotonic()
    r = run_cli("run", nb, "-o", "out.ipynb", "--timeout", "2", cwd=tmp_path)
    assert r.code == 3, r.err
    assert time.monotonic() - started < 40
    assert "nborch: timed out after 2s (--timeout): the task run " in r.err and "was cancelled" in r.err
    out = read(tmp_path / "out.ipynb")
    assert out["metadata"]["nborch"]["tasks"] == {"quick": "succeeded", "slow": "cancelled", "after": "cancelled"}
    assert outputs(by_source(out, "%%task quick")) == [("execute_result", "1")]
    assert outputs(by_source(out, "%%task slow"))[-1][0] == "error"
    assert by_source(out, "print('after")["execution_count"] is None


def test_interrupt_exits_130_and_still_writes_the_notebook(tmp_path):
    nb = write(tmp_path / "wait.ipynb", notebook("import time\nprint('WAITING', flush=True)\ntime.sleep(60)"))
    proc = subprocess.Popen([sys.executable, "-m", "nborch", "run", str(nb), "out.ipynb", "--log-output"],
                            cwd=tmp_path, env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # --log-output: the cell's output, as it happens
            if "WAITING" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "nborch: interrupted" in err
    out = read(tmp_path / "out.ipynb")
    assert out["metadata"]["nborch"]["status"] == "interrupted"
    assert outputs(out["cells"][-1])[-1][0] == "error"


def test_help_lists_the_exit_codes(tmp_path):
    r = run_cli("run", "--help", cwd=tmp_path)
    assert r.code == 0
    lines = [line.split(None, 1) for line in r.out.split("exit status:")[1].strip().splitlines()]
    assert [int(code) for code, _ in lines] == [0, 1, 2, 3, 130]
    assert "timed out" in dict(lines)["3"] and "interrupted" in dict(lines)["130"]


@pytest.mark.parametrize("bad", ["0", "-2", "soon", "inf"])
def test_a_bad_timeout_option_exits_2(tmp_path, bad):
    nb = write(tmp_path / "a.ipynb", notebook("print('x')"))
    r = run_cli("run", nb, "--timeout", bad, cwd=tmp_path)
    assert r.code == 2 and "--timeout: expected a number of seconds > 0" in r.err

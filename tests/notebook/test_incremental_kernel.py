"""Issue 10, §1 and §2: incremental `%orch run` in a real Jupyter kernel, `%orch why`,
`%orch list` across runs, stale marks, and task cells known by their cell id.

Every "what ran" is read from the tasks' own side effects: each task cell starts with
``mark('NAME')``, which appends NAME to a log file this test reads, never from nborch's report.
The log's path is a global that ``mark`` reads, and it is new in every test: every task's key
depends on it, so no test can reuse another test's values. (A list the tasks append to would not
do: a key hashes the globals a task reads by value, so the list would change every task's key.)

Cells are sent with a cell id in the execute_request's metadata (``cellId``), as JupyterLab and
Notebook 7 do, unless a test says otherwise; "editing a cell" is sending new code with its id.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

from kernel_harness import CellResult, Kernel

pytestmark = pytest.mark.timeout(120)

RUN = "%orch run --no-display"

SETUP = """
%load_ext nborch
import asyncio
import nborch

LOG = None

def mark(name):
    with open(LOG, "a") as f:
        f.write(name + "\\n")

_seen = []  # every event of every run; cleared between tests
nborch.events.subscribe(_seen.append)

def _final_events():
    run = globals().get("_orch_run")
    if run is None:
        return None
    return {e.task: [e.state.value, bool(e.reused), bool(e.cached)]
            for e in _seen if isinstance(e, nborch.TaskEvent) and e.run_id == run.id and e.state.is_final}
"""

DURATION = re.compile(r"\d+(\.\d+)?\s?(µs|us|ms|s)\b")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("incremental-kernel")
    k = Kernel(cwd)
    try:
        k.check(SETUP)
        k.cwd = cwd
        yield k
    finally:
        k.close()


class Notebook:
    """One test's notebook in the shared kernel: task cells, ordinary cells, `%orch` lines."""

    def __init__(self, kernel: Kernel, log: Path) -> None:
        self.k = kernel
        self.log = log

    # -- cells ------------------------------------------------------------------------------------

    def task(self, header: str, body: str, cell: str | None = "auto") -> CellResult:
        """A `%%task HEADER` cell whose body starts with mark(NAME); its cell id is 'cell-NAME'
        unless given (None: no cell id, as a front end that sends none)."""
        name = header.split()[0]
        if cell == "auto":
            cell = f"cell-{name}"
        return self.k.check(f"%%task {header}\nmark({name!r})\n{body}", cell_id=cell)

    def code(self, source: str, cell: str | None = None) -> CellResult:
        """An ordinary cell (it has a cell id of its own, as in JupyterLab)."""
        return self.k.check(source, cell_id=cell or f"code-{uuid.uuid4().hex[:8]}")

    def run(self, args: str = "", display: bool = False) -> CellResult:
        """`%orch run ARGS`; returns the cell's result, which may be a failure."""
        line = f"%orch run {args}".rstrip() + ("" if display else " --no-display")
        return self.k.execute(line, cell_id=f"code-{uuid.uuid4().hex[:8]}", timeout=60)

    def orch(self, line: str) -> str:
        """What `%orch LINE` showed, as text; the cell must not fail."""
        return self.k.check(f"%orch {line}").text

    # -- what happened ---------------------------------------------------------------------------

    def ran(self) -> list[str]:
        """The tasks whose bodies ran since the last call, sorted (parallel tasks race)."""
        names = self.log.read_text().split() if self.log.exists() else []
        self.log.write_text("")
        return sorted(names)

    def events(self) -> dict[str, list]:
        """_orch_run's final TaskEvents: {task: [state, reused, cached]}."""
        return self.k.value("_final_events()")

    def value(self, expr: str):
        return self.k.value(expr)

    def report(self) -> dict[str, str]:
        return rows(self.k.check("print(_orch_run.report())").stdout)

    def run_id(self) -> str:
        return self.k.value("_orch_run.id")

    def listing(self) -> tuple[dict[str, str], str]:
        text = self.orch("list")
        return rows(text), text

    def why(self, name: str) -> str:
        text = self.orch(f"why {name}").strip()
        lines = [line for line in text.splitlines() if line.strip()]
        assert 1 <= len(lines) <= 2, f"%orch why {name} should say it in one or two lines, got:\n{text}"
        return text.lower()


def rows(table: str) -> dict[str, str]:
    """A text table's rows by their first word (the task's name)."""
    out = {}
    for line in table.splitlines():
        words = line.split()
        if words and words[0] not in out:
            out[words[0]] = line
    return out


KEEP = ("LOG", "mark", "asyncio", "nborch", "In", "Out", "exit", "quit", "get_ipython")


@pytest.fixture
def nb(kernel, request):
    """A fresh notebook: no task cells, none of the last test's globals, a new log."""
    log = kernel.cwd / f"log-{request.node.name}.txt"
    log.write_text("")
    kernel.check(
        f"""
        %orch clear
        for _name in [n for n in globals() if not n.startswith("_") and n not in {list(KEEP)!r}]:
            del globals()[_name]
        globals().pop("_orch_run", None)
        LOG = {str(log)!r}
        _seen.clear()
        """
    )
    return Notebook(kernel, log)


def pipeline(nb: Notebook) -> None:
    """extract -> clean -> report, and `other` beside them."""
    nb.task("extract", "[1, 2, 3]")
    nb.task("clean", "[x * 10 for x in extract]")
    nb.task("report", "sum(clean)")
    nb.task("other", "'other'")


def assert_ok(result: CellResult) -> None:
    assert result.error is None, f"{result.error}\n{result.text}"


# -- the harness itself (passes today) ----------------------------------------------------------


def test_harness_a_kernel_runs_task_cells_sent_with_cell_ids_and_logs_their_side_effects(nb):
    pipeline(nb)
    assert nb.ran() == []  # defining runs nothing
    assert_ok(nb.run())
    assert nb.ran() == ["clean", "extract", "other", "report"]
    assert nb.value("[extract, clean, report, other]") == [[1, 2, 3], [10, 20, 30], 60, "other"]
    events = nb.events()
    assert {name: e[0] for name, e in events.items()} == dict.fromkeys(
        ["extract", "clean", "report", "other"], "succeeded"
    )
    assert set(nb.report()) >= {"extract", "clean", "report", "other"}
    assert nb.ran() == []  # ran() takes what was logged


def test_harness_the_kernel_receives_the_cell_id_a_front_end_sends(kernel):
    kernel.check(
        """
        _cell_ids = []
        def _record_cell_id(info):
            _cell_ids.append(info.cell_id)
        get_ipython().events.register("pre_run_cell", _record_cell_id)
        """
    )
    kernel.check("1", cell_id="cell-xyz")
    kernel.check("2")
    kernel.check('get_ipython().events.unregister("pre_run_cell", _record_cell_id)')
    assert kernel.value("_cell_ids") == ["cell-xyz", None, None]  # the last: the unregistering cell


# -- §1: only what changed runs ------------------------------------------------------------------


def test_editing_one_cell_reruns_that_task_and_its_downstream_only(nb):
    pipeline(nb)
    assert_ok(nb.run(display=True))
    assert nb.ran() == ["clean", "extract", "other", "report"]

    nb.code("extract = 'overwritten in the namespace'")  # the workflow keeps extract's value itself
    nb.task("clean", "[x * 100 for x in extract]")  # the edit
    assert_ok(nb.run(display=True))

    assert nb.ran() == ["clean", "report"]
    assert nb.value("[clean, report]") == [[100, 200, 300], 600]
    assert nb.events() == {
        "extract": ["succeeded", True, False],
        "other": ["succeeded", True, False],
        "clean": ["succeeded", False, False],
        "report": ["succeeded", False, False],
    }
    report = nb.report()
    assert "(reused)" in report["extract"] and "(reused)" in report["other"]
    assert "(reused)" not in report["clean"] and "(reused)" not in report["report"]


def test_running_again_with_nothing_changed_runs_nothing(nb):
    pipeline(nb)
    assert_ok(nb.run())
    nb.ran()
    nb.task("clean", "[x * 10 for x in extract]")  # re-executed unchanged: still up to date
    assert_ok(nb.run())
    assert nb.ran() == []
    assert nb.events() == {
        name: ["succeeded", True, False] for name in ("extract", "clean", "report", "other")
    }
    assert nb.value("report") == 60


def test_a_targeted_run_reuses_the_up_to_date_upstream(nb):
    pipeline(nb)
    assert_ok(nb.run())
    nb.ran()
    nb.task("report", "sum(clean) + 1")
    assert_ok(nb.run("report"))
    assert nb.ran() == ["report"]
    assert nb.value("report") == 61


def test_changing_a_plain_global_reruns_the_tasks_that_read_it_and_their_downstream(nb):
    nb.code("threshold = 3\nunrelated = 1")
    nb.task("extract", "list(range(1, 7))")
    nb.task("keep", "[x for x in extract if x > threshold]")
    nb.task("report", "len(keep)")
    nb.task("other", "'other'")
    assert_ok(nb.run())
    assert nb.ran() == ["extract", "keep", "other", "report"]
    assert nb.value("report") == 3

    nb.code("unrelated = 2")  # no task reads it
    assert_ok(nb.run())
    assert nb.ran() == []

    nb.code("threshold = 5")
    assert_ok(nb.run())
    assert nb.ran() == ["keep", "report"]
    assert nb.value("[keep, report]") == [[6], 1]
    events = nb.events()
    assert events["extract"][1] is True and events["other"][1] is True
    assert events["keep"][1] is False and events["report"][1] is False

    nb.code("threshold = 5")  # the same value again: globals count by value
    assert_ok(nb.run())
    assert nb.ran() == []


def test_changing_a_helper_function_reruns_the_tasks_that_call_it(nb):
    nb.code("def f(x):\n    return x * 2")
    nb.task("extract", "[1, 2, 3]")
    nb.task("scaled", "[f(x) for x in extract]")
    nb.task("report", "sum(scaled)")
    nb.task("other", "len(extract)")
    assert_ok(nb.run())
    nb.ran()

    nb.code("def f(x):\n    return x * 3")
    assert_ok(nb.run())
    assert nb.ran() == ["report", "scaled"]
    assert nb.value("report") == 18


def test_after_a_failed_run_fixing_the_failed_cell_reruns_only_what_failed_or_did_not_run(nb):
    nb.task("extract", "[1, 2, 3]")
    nb.task("clean", "raise ValueError('bug in clean')")
    nb.task("report", "sum(clean)")
    nb.task("other", "'other'")
    failed = nb.run()
    assert failed.error is not None and failed.error[0] == "CellTaskFailed", failed
    assert nb.ran() == ["clean", "extract", "other"]

    nb.task("clean", "[x * 10 for x in extract]")  # the fix
    assert_ok(nb.run())
    assert nb.ran() == ["clean", "report"]
    assert nb.value("report") == 60
    events = nb.events()
    assert events["extract"] == ["succeeded", True, False] and events["other"] == ["succeeded", True, False]


def test_a_task_that_failed_runs_again_even_when_nothing_changed(nb):
    # flaky fails on its first call only; it counts its calls in a file, not in a global
    nb.code("CALLS = LOG + '.flaky'")
    nb.task(
        "flaky",
        "open(CALLS, 'a').write('x')\nif len(open(CALLS).read()) < 2:\n    raise ValueError('1st')\n'ok'",
    )
    nb.task("after", "flaky + '!'")
    assert nb.run().error is not None
    assert nb.ran() == ["flaky"]
    assert_ok(nb.run())
    assert nb.ran() == ["after", "flaky"]
    assert nb.value("after") == "ok!"


def test_orch_run_all_runs_everything_and_force_also_ignores_the_disk_cache(nb):
    nb.task("plain", "1")
    nb.task("stored --cache", "2")
    nb.task("total", "plain + stored")
    assert_ok(nb.run())
    assert nb.ran() == ["plain", "stored", "total"]

    assert_ok(nb.run("--all"))
    assert nb.ran() == ["plain", "total"]  # --all runs everything, the disk cache still serves `stored`
    events = nb.events()
    assert events["stored"][0] == "succeeded" and events["stored"][2] is True
    assert events["plain"][1] is False and events["total"][1] is False

    assert_ok(nb.run("--force"))
    assert nb.ran() == ["plain", "stored", "total"]
    assert nb.value("total") == 3

    assert_ok(nb.run())  # a run with --all or --force counts as their last success
    assert nb.ran() == []


def test_a_cache_task_that_is_not_up_to_date_is_still_read_from_the_disk_cache(nb):
    nb.code("rate = 1")
    nb.task("priced --cache", "100 * rate")
    assert_ok(nb.run())
    nb.code("rate = 2")
    assert_ok(nb.run())
    assert nb.ran() == ["priced", "priced"]
    nb.code("rate = 1")  # back to a key the disk cache holds
    assert_ok(nb.run())
    assert nb.ran() == []
    assert nb.value("priced") == 100


def test_an_always_task_runs_every_time_and_so_does_its_downstream(nb):
    nb.task("prices --always", "[3, 4]")
    nb.task("report", "sum(prices)")
    nb.task("other", "'other'")
    assert_ok(nb.run())
    assert nb.ran() == ["other", "prices", "report"]
    assert_ok(nb.run())
    assert nb.ran() == ["prices", "report"]
    assert nb.value("report") == 7


# -- §1: %orch why --------------------------------------------------------------------------------


def test_why_says_a_task_that_never_ran_will_run(nb):
    nb.task("brand_new", "1")  # a name no other test uses
    assert "never run" in nb.why("brand_new")


def test_why_says_the_last_state_failed(nb):
    nb.task("extract", "raise ValueError('down')")
    nb.run()
    assert "failed" in nb.why("extract")


def test_why_says_the_cell_changed(nb):
    pipeline(nb)
    assert_ok(nb.run())
    nb.task("clean", "[x * 100 for x in extract]")
    why = nb.why("clean")
    assert "changed" in why and ("cell" in why or "code" in why), why


def test_why_names_the_helper_that_changed(nb):
    nb.code("def f(x):\n    return x * 2")
    nb.task("scaled", "f(21)")
    assert_ok(nb.run())
    nb.code("def f(x):\n    return x * 3")
    why = nb.why("scaled")
    assert "helper" in why and re.search(r"\bf\b", why) and "changed" in why, why


def test_why_names_the_global_that_changed(nb):
    nb.code("threshold = 3")
    nb.task("keep", "[x for x in range(9) if x > threshold]")
    assert_ok(nb.run())
    nb.code("threshold = 5")
    why = nb.why("keep")
    assert "global" in why and "threshold" in why and "changed" in why, why


def test_why_names_the_upstream_that_will_run(nb):
    pipeline(nb)
    assert_ok(nb.run())
    nb.task("clean", "[x * 100 for x in extract]")
    why = nb.why("report")
    assert "upstream" in why and "clean" in why, why


def test_why_says_an_up_to_date_task_will_be_reused(nb):
    pipeline(nb)
    assert_ok(nb.run())
    for name in ("extract", "report"):
        why = nb.why(name)
        assert "reuse" in why or "up to date" in why, why


def test_why_says_why_the_disk_cache_missed_for_a_cache_task(nb):
    nb.code("rate = 1")
    nb.task("priced --cache", "100 * rate")
    assert_ok(nb.run())
    nb.code("rate = 2")
    why = nb.why("priced")
    assert "cache" in why and "rate" in why, why


def test_why_for_an_unknown_task_is_a_usage_error_naming_it(nb):
    nb.task("extract", "1")
    result = nb.k.execute("%orch why extrac")
    assert result.error is not None and result.error[0] == "UsageError", result
    assert "Did you mean 'extract'?" in result.error[1], result


# -- §2: %orch list -------------------------------------------------------------------------------


def test_orch_list_keeps_every_tasks_state_duration_and_run_id_after_a_targeted_run(nb):
    pipeline(nb)
    assert_ok(nb.run())
    first = nb.run_id()
    nb.task("clean", "[x * 100 for x in extract]")
    assert_ok(nb.run("clean"))
    second = nb.run_id()

    table, text = nb.listing()
    for name in ("report", "other"):  # not in the targeted run: their state from the first run
        row = table[name]
        assert "succeeded" in row and DURATION.search(row) and first[:8] in row, text
    row = table["clean"]  # ran in the targeted run
    assert "succeeded" in row and DURATION.search(row) and second[:8] in row, text
    row = table["extract"]  # reused by the second run
    assert "succeeded" in row and DURATION.search(row) and (first[:8] in row or second[:8] in row), text


def test_orch_list_keeps_the_states_of_a_flow_after_another_flow_ran(nb):
    nb.task("extract", "1")
    nb.task("nightly --flow nightly", "2")
    assert_ok(nb.run())
    first = nb.run_id()
    assert_ok(nb.run("--flow nightly"))
    table, text = nb.listing()
    row = table["extract"]
    assert "succeeded" in row and DURATION.search(row) and first[:8] in row, text


def test_an_interrupted_run_is_orch_run_and_orch_list_shows_its_states(nb):
    nb.task("fast", "'fast'")
    nb.task("slow --after fast", "await asyncio.Event().wait()")  # async; waits until cancelled
    nb.task("after", "slow")
    result = nb.k.execute(RUN, interrupt_when=lambda: "slow" in nb.log.read_text().split(), timeout=30)
    assert result.error is not None and result.error[0] == "KeyboardInterrupt", result
    assert nb.ran() == ["fast", "slow"]

    run_ids = nb.value(
        "sorted({e.run_id for e in _seen if isinstance(e, (nborch.TaskEvent, nborch.RunEvent))})"
    )
    assert len(run_ids) == 1
    assert nb.value("_orch_run.id") == run_ids[0]  # _orch_run is the cancelled run's record
    assert nb.value("{k: v.value for k, v in _orch_run.states.items()}") == {
        "fast": "succeeded",
        "slow": "cancelled",
        "after": "cancelled",
    }

    table, text = nb.listing()
    assert "succeeded" in table["fast"] and run_ids[0][:8] in table["fast"], text
    assert "cancelled" in table["slow"] and run_ids[0][:8] in table["slow"], text
    assert "cancelled" in table["after"], text

    nb.task("slow --after fast", "'slow'")  # fixed; fast is up to date and is not run again
    assert_ok(nb.run())
    assert nb.ran() == ["after", "slow"]
    assert nb.value("after") == "slow"


def test_orch_list_shows_a_task_whose_global_changed_as_stale_with_the_reason(nb):
    nb.code("threshold = 3")
    nb.task("extract", "list(range(1, 7))")
    nb.task("keep", "[x for x in extract if x > threshold]")
    nb.task("report", "len(keep)")
    nb.task("other", "'other'")
    assert_ok(nb.run())
    table, text = nb.listing()
    assert not any("stale" in row for row in table.values()), text

    nb.code("threshold = 5")
    table, text = nb.listing()
    assert "stale" in table["keep"] and "stale" in table["report"], text
    assert "stale" not in table["extract"] and "stale" not in table["other"], text
    assert "threshold" in text, text  # the reason, as %orch why gives it
    assert "succeeded" in table["keep"], text  # its last known state stays
    nb.ran()
    assert_ok(nb.run())
    assert nb.ran() == ["keep", "report"]
    table, text = nb.listing()
    assert not any("stale" in row for row in table.values()), text


def test_orch_list_shows_an_edited_task_and_its_downstream_as_stale(nb):
    pipeline(nb)
    assert_ok(nb.run())
    nb.task("clean", "[x * 100 for x in extract]")
    table, text = nb.listing()
    assert "stale" in table["clean"] and "stale" in table["report"], text
    assert "stale" not in table["extract"] and "stale" not in table["other"], text
    assert "changed" in text.lower(), text


# -- §2: cells known by their id ------------------------------------------------------------------


def test_renaming_a_task_cell_replaces_the_task_that_cell_defined(nb):
    nb.task("extract", "[1, 2, 3]")
    nb.task("clean", "[x * 10 for x in extract]", cell="cell-A")
    nb.task("report", "sum(clean)", cell="cell-B")
    assert_ok(nb.run())
    assert nb.ran() == ["clean", "extract", "report"]

    nb.task("tidy", "[x * 10 for x in extract]", cell="cell-A")  # the same cell, renamed
    nb.task("report", "sum(tidy)", cell="cell-B")
    table, text = nb.listing()
    assert "clean" not in table and "tidy" in table, text

    assert_ok(nb.run())
    assert nb.ran() == ["report", "tidy"]  # no ghost `clean` running beside them
    assert "clean" not in nb.value("list(_orch_run.states)")
    assert nb.value("report") == 60


def test_renaming_a_task_cell_without_a_cell_id_does_not_crash_and_clear_removes_the_old_task(nb):
    nb.task("extract", "[1, 2, 3]", cell=None)
    nb.task("clean", "[x * 10 for x in extract]", cell=None)
    assert_ok(nb.run())
    nb.task("tidy", "[x * 10 for x in extract]", cell=None)  # what happens to `clean` is up to nborch
    assert_ok(nb.run())
    nb.orch("clear clean")
    nb.ran()
    assert_ok(nb.run())
    assert "clean" not in nb.ran()
    assert "clean" not in nb.value("list(_orch_run.states)")
    assert nb.value("tidy") == [10, 20, 30]
    table, text = nb.listing()
    assert "clean" not in table, text


def test_orch_clear_removes_a_task_whose_cell_was_deleted(nb):
    pipeline(nb)
    nb.task("scratch", "'try something'")
    assert_ok(nb.run())
    nb.ran()
    nb.orch("clear scratch")  # the cell was deleted in the front end: the kernel is not told
    assert_ok(nb.run())
    ran = nb.ran()
    assert "scratch" not in ran
    assert "scratch" not in nb.value("list(_orch_run.states)")
    table, text = nb.listing()
    assert "scratch" not in table, text
    assert ran == []  # and nothing else had a reason to run again

"""%%task and %orch through a real IPython InteractiveShell."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("IPython")

from IPython.core.error import UsageError  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

import nborch  # noqa: E402
from nborch.notebook.magics import CellTaskFailed  # noqa: E402


@pytest.fixture
def ip(capsys):
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext nborch")
    magics = shell.magics_manager.registry["OrchMagics"]
    magics.workflow.remove(None)
    magics.workflow.last_run = None
    for name in ("extract", "transform", "load", "bad", "slow", "alert", "_orch_run"):
        shell.user_ns.pop(name, None)
    capsys.readouterr()
    yield shell


def cell(ip, text):
    result = ip.run_cell(text)
    return result


def test_task_cell_defines_a_task_and_prints_one_line(ip, capsys):
    cell(ip, "%%task extract\n[1, 2, 3]")
    cell(ip, "%%task transform --retries 2\n[x * 2 for x in extract]")
    out = capsys.readouterr().out.splitlines()
    assert out == ["task extract", "task transform <- extract (retries=2)"]
    assert "extract" not in ip.user_ns  # defining runs nothing


def test_orch_run_pushes_values_into_the_namespace(ip):
    cell(ip, "%%task extract\n[1, 2, 3]")
    cell(ip, "%%task transform\ndata = [x * 2 for x in extract]\ndata")
    cell(ip, "%%task load\nsum(transform)")
    result = cell(ip, "%orch run --no-display")
    assert result.error_in_exec is None
    assert ip.user_ns["extract"] == [1, 2, 3]
    assert ip.user_ns["transform"] == [2, 4, 6]
    assert ip.user_ns["load"] == 12
    assert "data" not in ip.user_ns  # assignments stay local to the task


def test_cells_may_be_defined_in_any_order(ip):
    cell(ip, "%%task load\nsum(extract)")
    cell(ip, "%%task extract\n[4, 5]")
    assert cell(ip, "%orch run --no-display").error_in_exec is None
    assert ip.user_ns["load"] == 9


def test_imports_and_helpers_from_ordinary_cells_are_visible(ip):
    cell(ip, "import math\ndef double(v):\n    return 2 * v")
    cell(ip, "%%task extract\ndouble(math.floor(2.7))")
    cell(ip, "%orch run --no-display")
    assert ip.user_ns["extract"] == 4


def test_run_flag_runs_the_task_and_its_upstream_at_once(ip):
    cell(ip, "%%task extract\n10")
    cell(ip, "%%task transform --run\nextract + 1")
    assert ip.user_ns["transform"] == 11 and ip.user_ns["extract"] == 10


def test_targets_run_only_their_upstream(ip):
    cell(ip, "%%task extract\n1")
    cell(ip, "%%task transform\nextract + 1")
    cell(ip, "%%task load\n'not run'")
    cell(ip, "%orch run transform --no-display")
    assert ip.user_ns["transform"] == 2 and "load" not in ip.user_ns


def test_rerunning_a_cell_replaces_the_task(ip):
    cell(ip, "%%task extract\n1")
    cell(ip, "%%task extract\n2")
    magics = ip.magics_manager.registry["OrchMagics"]
    assert list(magics.workflow.cells) == ["extract"]
    cell(ip, "%orch run --no-display")
    assert ip.user_ns["extract"] == 2


def test_top_level_await_makes_an_async_task(ip):
    cell(ip, "%%task extract\nimport asyncio\nawait asyncio.sleep(0)\n'awaited'")
    cell(ip, "%orch run --no-display")
    assert ip.user_ns["extract"] == "awaited"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%%task t --retries three", "argument --retries: invalid int value: 'three'"),
        ("%%task t --trigger one_faild", "unknown trigger rule 'one_faild'. Did you mean 'one_failed'?"),
        ("%%task t --timeout -1", "timeout= expects seconds > 0, got -1.0"),
        ("%%task 1abc", "the task name must be a Python identifier, got '1abc'"),
        ("%%task", "the following arguments are required: name"),
    ],
    ids=["not-an-int", "unknown-trigger", "bad-timeout", "bad-name", "no-name"],
)
def test_bad_options_give_a_usage_error_and_define_nothing(ip, line, message):
    result = cell(ip, f"{line}\nx = 1")
    assert isinstance(result.error_in_exec, UsageError)
    assert message in str(result.error_in_exec)
    assert ip.magics_manager.registry["OrchMagics"].workflow.cells == {}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("for", (r"^%%task: 'for' is a Python keyword, so it cannot name a task \(its value becomes a variable "
                 r"of that name\)\. Choose another name, such as 'for_'\.$")),
        ("None", r"^%%task: 'None' is a Python keyword"),
        ("len", (r"^%%task: 'len' is a built-in name: a task named 'len' would shadow the built-in in the "
                 r"notebook's namespace once it runs, and every cell that uses len would depend on this task\. "
                 r"Choose another name, such as 'len_'\.$")),
        ("print", r"^%%task: 'print' is a built-in name"),
        ("display", r"^%%task: 'display' is a built-in name"),
        ("_", r"^%%task: '_' cannot name a task: IPython reassigns it after every cell"),
        ("_2", r"^%%task: '_2' cannot name a task: IPython reassigns it after every cell"),
        ("Out", r"^%%task: 'Out' cannot name a task: it is IPython's output history"),
        ("_orch_run", r"^%%task: '_orch_run' cannot name a task: %orch run puts its run record there"),
    ],
    ids=["keyword", "None", "builtin", "print", "ipython-display", "underscore", "output-cache", "Out",
         "orch-run"],
)
def test_keywords_builtins_and_ipython_names_are_refused(ip, name, message):
    cell(ip, "%%task extract\n[1, 2]")
    result = cell(ip, f"%%task {name}\n[3]")
    assert isinstance(result.error_in_exec, UsageError)
    assert re.search(message, str(result.error_in_exec)), str(result.error_in_exec)
    workflow = ip.magics_manager.registry["OrchMagics"].workflow
    assert list(workflow.cells) == ["extract"]  # nothing defined
    cell(ip, "%%task total\nlen(extract)")
    assert workflow.dependencies("total") == ["extract"]
    assert cell(ip, "%orch run --no-display").error_in_exec is None
    assert ip.user_ns["total"] == 2 and ip.user_ns.get(name) != [3]  # the refused cell never ran


def test_the_magic_and_the_command_line_share_one_option_list():
    from nborch.notebook.header import TASK_ARGUMENTS, parse_task_line
    from nborch.notebook.magics import OrchMagics

    magic = {a.dest for a in OrchMagics.task.parser._actions}
    assert magic == {flags[0].lstrip("-").replace("-", "_") for flags, _ in TASK_ARGUMENTS}
    for flags, _ in TASK_ARGUMENTS[1:]:
        assert flags[0] in OrchMagics.task.__doc__  # %%task? lists it
    spec = parse_task_line("load --after a b --retries 2 --retry-delay 0.5 --timeout 3 --trigger all_done "
                           "--limit 2 --cache --flow nightly --run")
    assert spec.options == {"retries": 2, "retry_delay": 0.5, "timeout": 3.0, "trigger_rule": "all_done",
                            "limit": 2, "cache": True}
    assert (spec.name, spec.after, spec.flow, spec.run) == ("load", ("a", "b"), "nightly", True)


def test_syntax_error_keeps_the_previous_definition(ip):
    cell(ip, "%%task extract\n1")
    result = cell(ip, "%%task extract\nx = 1\ny = (")
    assert isinstance(result.error_in_exec, SyntaxError)
    assert result.error_in_exec.lineno == 2  # counted within the cell body
    cell(ip, "%orch run --no-display")
    assert ip.user_ns["extract"] == 1


def test_a_failed_run_fails_the_cell_with_a_short_block_after_pushing_successes(ip, capsys):
    cell(ip, "%%task extract\n[1, 2]")
    cell(ip, "%%task bad\nfirst = extract[0]\nboom = extract[10]\nboom")
    cell(ip, "%%task load\nbad + 1")
    capsys.readouterr()
    result = cell(ip, "%orch run --no-display")
    assert isinstance(result.error_in_exec, CellTaskFailed)
    assert isinstance(result.error_in_exec.error, IndexError)  # the task's own exception
    assert ip.user_ns["extract"] == [1, 2]  # pushed before the cell failed
    out = capsys.readouterr().out
    assert "task 'bad' failed: IndexError: list index out of range" in out
    assert "cell 'bad', line 2: boom = extract[10]" in out
    assert "not run (upstream failed): load" in out
    assert "nborch/core/engine.py" not in out  # no engine frames


def test_a_task_calling_sys_exit_fails_the_run_like_any_task_error(ip, capsys):
    cell(ip, "%%task extract\n[1, 2]")
    cell(ip, "%%task quits\nimport sys\nsys.exit(3)")
    cell(ip, "%%task load\nquits")
    capsys.readouterr()
    result = cell(ip, "%orch run --no-display")
    assert isinstance(result.error_in_exec, CellTaskFailed)
    assert isinstance(result.error_in_exec.error, SystemExit)
    assert ip.user_ns["extract"] == [1, 2]  # the successes were pushed
    assert ip.user_ns["_orch_run"].states["quits"].value == "failed"
    out = capsys.readouterr().out
    assert "task 'quits' failed: SystemExit: 3" in out and "cell 'quits', line 2: sys.exit(3)" in out


def test_an_exception_whose_str_raises_still_gives_the_short_block(ip, capsys):
    cell(ip, "class Unprintable(Exception):\n    def __str__(self):\n        raise KeyError('no str')")
    cell(ip, "%%task extract\n[1, 2]")
    cell(ip, "%%task bad\nraise Unprintable()")
    capsys.readouterr()
    result = cell(ip, "%orch run --no-display")
    assert isinstance(result.error_in_exec, CellTaskFailed)
    assert str(result.error_in_exec).startswith(
        "task 'bad' failed: Unprintable: <exception str() failed>\n  cell 'bad', line 1: raise Unprintable()"
    )
    assert ip.user_ns["extract"] == [1, 2]
    assert "task 'bad' failed: Unprintable: <exception str() failed>" in capsys.readouterr().out


def test_one_failed_alert_cell(ip):
    cell(ip, "%%task extract\nraise ValueError('source down')")
    cell(ip, "%%task alert --after extract --trigger one_failed\n'alerted'")
    result = cell(ip, "%orch run --no-display")
    assert isinstance(result.error_in_exec, CellTaskFailed)
    assert ip.user_ns["alert"] == "alerted"


def test_orch_list_show_clear(ip, capsys):
    cell(ip, "%%task extract\n[1]")
    cell(ip, "%%task transform --trigger all_done\nlen(extract)")
    cell(ip, "%orch run --no-display")
    listing = repr(cell(ip, "%orch list").result)
    assert "transform  extract" in listing and "all_done" in listing and "succeeded" in listing
    capsys.readouterr()
    cell(ip, "%orch show transform")
    assert capsys.readouterr().out == "len(extract)\n"
    cell(ip, "%orch clear transform")
    assert list(ip.magics_manager.registry["OrchMagics"].workflow.cells) == ["extract"]
    cell(ip, "%orch clear")
    assert ip.magics_manager.registry["OrchMagics"].workflow.cells == {}


def test_orch_unknown_command_and_unknown_target_are_usage_errors(ip):
    cell(ip, "%%task extract\n1")
    assert isinstance(cell(ip, "%orch frobnicate").error_in_exec, UsageError)
    result = cell(ip, "%orch run extrac --no-display")
    assert isinstance(result.error_in_exec, UsageError)
    assert "Did you mean 'extract'?" in str(result.error_in_exec)


def test_child_tasks_are_not_pushed(ip):
    cell(ip, "import nborch\n@nborch.task\ndef child(n):\n    return n * 2")
    cell(ip, "%%task extract\nchild(3).result")
    cell(ip, "%orch run --no-display")
    assert ip.user_ns["extract"] == 6
    run = ip.user_ns["_orch_run"]
    assert "child" in run.states and "child" not in ip.user_ns or callable(ip.user_ns["child"])


class Log(list):
    """Records calls. A cache key hashes what a cell reads by value, this list included; its
    ``__reduce__`` leaves the entries out, so that recording a call is not a change of input."""

    def __reduce__(self):
        return (Log, ())


def test_cache_flag_reuses_values_and_an_upstream_code_change_invalidates(ip):
    ip.user_ns["calls"] = Log()
    cell(ip, "%%task extract --cache\ncalls.append('extract')\n[1, 2, 3]")
    cell(ip, "%%task transform --cache\ncalls.append('transform')\n[x * 10 for x in extract]")
    cell(ip, "%orch run --no-display")
    cell(ip, "%orch run --no-display")
    assert ip.user_ns["calls"] == ["extract", "transform"]  # the second run reused both (in memory)
    assert ip.user_ns["_orch_run"].reused == {"extract", "transform"}
    cell(ip, "%orch run --no-display --all")
    assert ip.user_ns["calls"] == ["extract", "transform"]  # --all runs both: disk-cache hits
    assert ip.user_ns["_orch_run"].cached == {"extract", "transform"}

    cell(ip, "%%task extract --cache\ncalls.append('extract')\n[1, 2, 3, 4]")  # the upstream changed
    cell(ip, "%orch run --no-display")
    assert ip.user_ns["calls"][2:] == ["extract", "transform"]  # and so is everything downstream
    assert ip.user_ns["transform"] == [10, 20, 30, 40]

    cell(ip, "%orch run --no-display --force")
    assert ip.user_ns["calls"][4:] == ["extract", "transform"]


def test_resume_reruns_only_what_failed(ip):
    ip.user_ns["calls"] = []
    ip.user_ns["broken"] = True
    cell(ip, "%%task extract --cache\ncalls.append('extract')\n5")
    cell(ip, "%%task transform\ncalls.append('transform')\nif broken:\n    raise ValueError('bug')\nextract * 2")
    assert isinstance(cell(ip, "%orch run --no-display").error_in_exec, CellTaskFailed)
    ip.user_ns["broken"] = False
    assert cell(ip, "%orch run --no-display --resume").error_in_exec is None
    assert ip.user_ns["calls"] == ["extract", "transform", "transform"]
    assert ip.user_ns["transform"] == 10


def test_flows_are_separate_workflows(ip):
    cell(ip, "%%task extract\n1")
    cell(ip, "%%task load --flow nightly\n'nightly only'")
    cell(ip, "%orch run --flow nightly --no-display")
    assert ip.user_ns["load"] == "nightly only" and "extract" not in ip.user_ns
    result = cell(ip, "%orch run --flow nighty --no-display")
    assert isinstance(result.error_in_exec, UsageError)
    assert "Did you mean 'nightly'?" in str(result.error_in_exec)


def test_orch_history_shows_recorded_runs(ip):
    cell(ip, "%%task extract\n1")
    cell(ip, "%orch run --no-display")
    run_id = ip.user_ns["_orch_run"].id
    table = cell(ip, "%orch history --limit 3").result
    assert run_id in repr(table) and run_id in table._repr_html_()


def test_register_and_workflows():
    @nborch.task
    def a():
        return 1

    dag = nborch.register("etl", nborch.DAG(a))
    assert nborch.workflows()["etl"] is dag
    with pytest.raises(nborch.DefinitionError, match=r"^register\('x', \.\.\.\) expects a task or composite"):
        nborch.register("x", 42)


def test_orch_schedule_runs_in_the_background_and_cancels(ip):
    import asyncio

    ip.user_ns["ticks"] = []
    cell(ip, "%%task beat\nticks.append(1)\nlen(ticks)")

    async def scenario():
        # a kernel cell runs with the kernel's loop running: the schedule lives on that loop
        result = ip.run_cell("%orch schedule --every 0.05 --times 3")
        assert result.error_in_exec is None
        handle = ip.user_ns["_orch_schedule"]
        runs = await asyncio.wait_for(handle.wait_async(), 10)
        return handle, runs

    handle, _ = asyncio.run(scenario())
    assert len(handle.runs) == 3 and all(r.ok for r in handle.runs)
    assert ip.user_ns["ticks"] == [1, 1, 1]
    assert isinstance(cell(ip, "%orch schedule").error_in_exec, UsageError)
    assert cell(ip, "%orch schedule --cancel").error_in_exec is None


def test_resume_leaves_the_namespace_value_of_an_uncached_task_alone(ip):
    ip.user_ns["broken"] = True
    cell(ip, "%%task side\n'good value'")
    cell(ip, "%%task flaky\nif broken:\n    raise ValueError('bug')\n'fixed'")
    assert isinstance(cell(ip, "%orch run --no-display").error_in_exec, CellTaskFailed)
    assert ip.user_ns["side"] == "good value"
    ip.user_ns["broken"] = False
    assert cell(ip, "%orch run --no-display --resume").error_in_exec is None
    assert ip.user_ns["side"] == "good value"  # not overwritten with None
    assert ip.user_ns["flaky"] == "fixed"

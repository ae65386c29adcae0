"""Point 9: trigger rules with Apache Airflow's semantics, as its code decides them.

The table gives the final state of a downstream task ``d`` for every rule and for upstream
outcomes settling in the order written: ``S`` succeeded, ``F`` failed, ``K`` skipped (the
task raised ``nborch.Skip``), ``U`` upstream_failed (an ``all_success`` task after a failed
one). ``SF`` means one parent succeeded first, then the other failed. In the table, ``run``
means ``d`` ran and SUCCEEDED, ``UF`` that it ended UPSTREAM_FAILED and ``SK`` SKIPPED.
"""

from __future__ import annotations

import asyncio

import pytest

import nborch
from nborch import DAG, TRIGGER_RULES, Skip, Task, TaskState

COMBOS = ["S", "F", "K", "U", "SS", "SF", "FS", "SK", "KS", "FK", "KF", "FF", "KK", "SU", "FU", "KU"]

# fmt: off
TABLE = {
    #                               S   F   K   U   SS  SF  FS  SK  KS  FK  KF  FF  KK  SU  FU  KU
    "all_success":                 "run UF  SK  UF  run UF  UF  SK  SK  UF  SK  UF  SK  UF  UF  SK",
    "all_failed":                  "SK  run SK  run SK  SK  SK  SK  SK  SK  SK  run SK  SK  run SK",
    "all_done":                    "run run run run run run run run run run run run run run run run",
    "all_done_min_one_success":    "run UF  SK  UF  run run run SK  SK  SK  SK  UF  SK  run UF  SK",
    "all_skipped":                 "SK  SK  run SK  SK  SK  SK  SK  SK  SK  SK  SK  run SK  SK  SK",
    "one_success":                 "run UF  SK  UF  run run run run run UF  UF  UF  SK  run UF  UF",
    "one_failed":                  "SK  run SK  run SK  run run SK  SK  run run run SK  run run run",
    "one_done":                    "run run SK  SK  run run run run run run run run SK  run run SK",
    "none_failed":                 "run UF  run UF  run UF  UF  run run UF  UF  UF  run UF  UF  UF",
    "none_failed_min_one_success": "run UF  SK  UF  run UF  UF  run run UF  UF  UF  SK  UF  UF  UF",
    "none_skipped":                "run run SK  run run run run SK  SK  SK  SK  run SK  run run SK",
    "always":                      "run run run run run run run run run run run run run run run run",
}
# fmt: on

FINAL = {"run": TaskState.SUCCEEDED, "UF": TaskState.UPSTREAM_FAILED, "SK": TaskState.SKIPPED}
CASES = [
    pytest.param(rule, combo, FINAL[code], id=f"{rule}-after-{combo}")
    for rule, row in TABLE.items()
    for combo, code in zip(COMBOS, row.split(), strict=True)
]


def test_the_table_covers_all_twelve_rules():
    assert sorted(TABLE) == sorted(
        [
            "all_success", "all_failed", "all_done", "all_done_min_one_success", "all_skipped",
            "one_success", "one_failed", "one_done", "none_failed", "none_failed_min_one_success",
            "none_skipped", "always",
        ]
    )
    assert sorted(TRIGGER_RULES) == sorted(TABLE)


def build(rule: str, combo: str, ran: list[str]) -> DAG:
    """A DAG whose parents of ``d`` settle one after another with the outcomes of ``combo``."""
    turns = [asyncio.Event() for _ in range(len(combo) + 1)]
    turns[0].set()

    async def parent(i: int, outcome: str):
        await asyncio.wait_for(turns[i].wait(), 5)
        for _ in range(3):  # let the previous parent settle before this one does
            await asyncio.sleep(0)
        turns[i + 1].set()
        if outcome == "S":
            return i
        if outcome == "K":
            raise Skip("nothing to do")
        raise ValueError(f"parent {i} failed")

    def never_runs():
        raise AssertionError("an upstream_failed parent must not run")

    def downstream():
        ran.append("d")
        return "d ran"

    d = Task(downstream, name="d", trigger_rule=rule)
    nodes = [d]
    for i, outcome in enumerate(combo):
        if outcome == "U":
            bad = Task(parent, i, "F", name=f"bad{i}")
            p = Task(never_runs, name=f"p{i}")
            bad >> p
            nodes += [bad, p]
        else:
            p = Task(parent, i, outcome, name=f"p{i}")
            nodes.append(p)
        p >> d
    return DAG(*nodes)


@pytest.mark.parametrize("rule, combo, expected", CASES)
def test_trigger_rule_final_state(rule, combo, expected):
    ran: list[str] = []

    result = nborch.run(build(rule, combo, ran))

    assert result.states["d"] is expected
    assert ran == (["d"] if expected is TaskState.SUCCEEDED else [])


@pytest.mark.parametrize("combo", ["S", "F", "K", "U"], ids=lambda c: f"parent-{c}")
def test_parents_reach_the_outcome_the_table_assumes(combo):
    result = nborch.run(build("all_done", combo, []))

    expected = {
        "S": TaskState.SUCCEEDED,
        "F": TaskState.FAILED,
        "K": TaskState.SKIPPED,
        "U": TaskState.UPSTREAM_FAILED,
    }[combo]
    assert result.states["p0"] is expected


def test_trigger_rule_defaults_to_all_success():
    def parent():
        raise Skip("no data today")

    def child():
        return 1

    p, c = Task(parent), Task(child)
    p >> c

    assert nborch.run(DAG(p, c)).states["child"] is TaskState.SKIPPED


# -- upstream_failed and skipped cascade through all_success ------------------------------------


def test_upstream_failed_cascades_down_an_all_success_chain():
    def fail():
        raise ValueError("broken")

    def step():
        return 1

    a, b, c = Task(fail, name="a"), Task(step, name="b"), Task(step, name="c")
    a >> b >> c

    result = nborch.run(DAG(a, b, c))

    assert result.states == {
        "a": TaskState.FAILED,
        "b": TaskState.UPSTREAM_FAILED,
        "c": TaskState.UPSTREAM_FAILED,
    }


def test_skipped_cascades_down_an_all_success_chain():
    def skip():
        raise Skip("not needed")

    def step():
        return 1

    a, b, c = Task(skip, name="a"), Task(step, name="b"), Task(step, name="c")
    a >> b >> c

    result = nborch.run(DAG(a, b, c))

    assert result.states == {"a": TaskState.SKIPPED, "b": TaskState.SKIPPED, "c": TaskState.SKIPPED}


def test_all_done_cleanup_runs_after_an_upstream_failed_chain():
    def fail():
        raise ValueError("broken")

    def step():
        return 1

    a, b = Task(fail, name="a"), Task(step, name="b")
    cleanup = Task(step, name="cleanup", trigger_rule="all_done")
    a >> b >> cleanup

    assert nborch.run(DAG(a, b, cleanup)).states["cleanup"] is TaskState.SUCCEEDED


# -- one_failed / one_success / one_done fire without waiting --------------------------------------


@pytest.mark.parametrize(
    "rule, first_outcome",
    [
        ("one_failed", "F"),
        ("one_failed", "U"),
        ("one_success", "S"),
        ("one_done", "S"),
        ("one_done", "F"),
    ],
    ids=["one_failed-after-failed", "one_failed-after-upstream_failed", "one_success-after-success",
         "one_done-after-success", "one_done-after-failed"],
)
def test_one_rules_fire_without_waiting_for_the_other_upstreams(rule, first_outcome):
    released = asyncio.Event()
    order = []

    def quick():
        if first_outcome == "S":
            return "quick"
        raise ValueError("quick failed")

    async def held():
        # finishes only after the downstream ran: a rule that waited for it would time out here
        await asyncio.wait_for(released.wait(), 5)
        order.append("held")
        return "held"

    async def fire():
        order.append("fire")
        released.set()
        return "fired"

    nodes = []
    first = Task(quick, name="quick")
    nodes.append(first)
    if first_outcome == "U":
        parent = Task(lambda: "never", name="parent_of_nothing")
        first >> parent
        nodes.append(parent)
        first = parent
    slow = Task(held, name="held")
    d = Task(fire, name="d", trigger_rule=rule)
    first >> d
    slow >> d
    result = nborch.run(DAG(d, slow, *nodes))

    assert result.states["d"] is TaskState.SUCCEEDED
    assert result.states["held"] is TaskState.SUCCEEDED
    assert order == ["fire", "held"]


# -- rules and tasks without upstreams; independent branches ---------------------------------------


@pytest.mark.parametrize("rule", TRIGGER_RULES, ids=str)
def test_a_task_without_upstream_runs_under_any_rule(rule):
    ran = []

    def alone():
        ran.append(rule)
        return rule

    result = nborch.run(Task(alone, trigger_rule=rule))

    assert result.states == {"alone": TaskState.SUCCEEDED}
    assert ran == [rule]


@pytest.mark.parametrize("rule", TRIGGER_RULES, ids=str)
def test_a_dag_task_without_upstream_runs_under_any_rule_beside_a_failure(rule):
    def fail():
        raise ValueError("unrelated")

    def alone():
        return "ran"

    result = nborch.run(DAG(Task(fail), Task(alone, trigger_rule=rule)))

    assert result.states["alone"] is TaskState.SUCCEEDED


def test_independent_branches_keep_running_when_one_fails():
    failed = asyncio.Event()

    async def fail_a():
        failed.set()
        raise ValueError("branch a broke")

    def after_a():
        return "never"

    async def start_b():
        await asyncio.wait_for(failed.wait(), 5)  # starts its work only once branch a has failed
        for _ in range(3):
            await asyncio.sleep(0)
        return "b"

    def after_b(start_b):
        return start_b + " then more"

    a1, a2 = Task(fail_a), Task(after_a)
    a1 >> a2
    result = nborch.run(DAG(a1, a2, Task(start_b), Task(after_b)))

    assert result.states == {
        "fail_a": TaskState.FAILED,
        "after_a": TaskState.UPSTREAM_FAILED,
        "start_b": TaskState.SUCCEEDED,
        "after_b": TaskState.SUCCEEDED,
    }
    assert result.results["after_b"] == "b then more"


def test_one_failed_alert_runs_while_the_run_stays_not_ok():
    def load():
        raise ConnectionError("warehouse down")

    alerts = []

    def alert():
        alerts.append("paged")

    a, b = Task(load), Task(alert, trigger_rule="one_failed")
    a >> b

    result = nborch.run(DAG(a, b))

    assert alerts == ["paged"]
    assert result.states == {"load": TaskState.FAILED, "alert": TaskState.SUCCEEDED}
    assert result.ok is False


def test_one_failed_alert_is_skipped_when_nothing_failed():
    def load():
        return "rows"

    def alert():
        return "paged"

    a, b = Task(load), Task(alert, trigger_rule="one_failed")
    a >> b

    result = nborch.run(DAG(a, b))

    assert result.states["alert"] is TaskState.SKIPPED
    assert result.ok is True


def test_a_task_skipped_at_once_inside_a_settle_does_not_decide_on_a_partial_count():
    """`load` waits on `extract` and `audit`; `audit` (all_done, skip_if) is skipped the moment
    `extract` fails. `load` must still see `extract`'s failure: UPSTREAM_FAILED, so the
    one_failed handler runs and the none_failed task does not (Airflow, at every moment)."""
    ran: list[str] = []

    def extract():
        raise ValueError("boom")

    def handler(load):
        ran.append("handler")

    def guarded(load):
        ran.append("guarded")

    audit = Task(lambda extract: ran.append("audit"), name="audit", trigger_rule="all_done",
                 skip_if=lambda: True)
    dag = DAG(
        extract,
        audit,
        Task(lambda extract, audit: ran.append("load"), name="load"),
        Task(handler, trigger_rule="one_failed"),
        Task(guarded, trigger_rule="none_failed"),
    )
    run = nborch.run(dag, store=False)
    assert run.states == {
        "extract": TaskState.FAILED, "audit": TaskState.SKIPPED, "load": TaskState.UPSTREAM_FAILED,
        "handler": TaskState.SUCCEEDED, "guarded": TaskState.UPSTREAM_FAILED,
    }
    assert ran == ["handler"]

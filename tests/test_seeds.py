"""The seed examples nborch grew from, run as tests.

Pynenc's recursive fibonacci, async_orch's example pipeline, AgenticFlow's diamond DAG with a
retry policy, pyorchestration's ordered steps sharing a state object, and DremioFrame's ETL
with an alert on failure.
"""

from __future__ import annotations

import asyncio
import logging

import nborch
from nborch import (
    DAG,
    CircuitEvent,
    CircuitGroup,
    CircuitOpenError,
    Parallel,
    RetryPolicy,
    RunEvent,
    Sequence,
    Skip,
    Task,
    TaskEvent,
    TaskState,
    task,
)


def fib_calls(n: int) -> int:
    """How many calls the naive recursion makes for fib(n)."""
    return 1 if n < 2 else 1 + fib_calls(n - 1) + fib_calls(n - 2)


# -- Pynenc: recursive fibonacci with child tasks ------------------------------------------------


@task
def fibonacci(n: int) -> int:
    fibonacci.logger.info("fibonacci(%d)", n)
    if n < 2:
        return n
    return fibonacci(n - 1).result + fibonacci(n - 2).result


@task
async def async_fibonacci(n: int) -> int:
    if n < 2:
        return n
    return await async_fibonacci(n - 1) + await async_fibonacci(n - 2)


def test_sync_fibonacci_with_result_finishes_under_max_concurrency_2():
    result = nborch.run(fibonacci(10), max_concurrency=2)

    assert result.ok
    assert result.value == 55
    assert len(result.states) == fib_calls(10)
    assert set(result.states.values()) == {TaskState.SUCCEEDED}


def test_sync_fibonacci_node_run_returns_the_value():
    assert fibonacci(12).run(max_concurrency=2) == 144


def test_sync_fibonacci_child_tasks_are_named_in_call_order():
    result = nborch.run(fibonacci(3), max_concurrency=2)

    # fib(3) calls fib(2), which calls fib(1) and fib(0); then fib(3) calls fib(1)
    assert result.results == {
        "fibonacci": 2,
        "fibonacci[2]": 1,
        "fibonacci[3]": 1,
        "fibonacci[4]": 0,
        "fibonacci[5]": 1,
    }


def test_sync_fibonacci_logs_through_its_task_logger(caplog):
    with caplog.at_level(logging.INFO, logger="nborch.task.fibonacci"):
        fibonacci(3).run(max_concurrency=2)

    messages = sorted(r.getMessage() for r in caplog.records if r.name == "nborch.task.fibonacci")
    assert messages == ["fibonacci(0)", "fibonacci(1)", "fibonacci(1)", "fibonacci(2)", "fibonacci(3)"]


def test_async_fibonacci_with_await_finishes_under_max_concurrency_2():
    result = nborch.run(async_fibonacci(12), max_concurrency=2)

    assert result.ok
    assert result.value == 144
    assert len(result.states) == fib_calls(12)


def test_async_fibonacci_awaited_from_a_coroutine():
    async def main():
        return await async_fibonacci(10).run_async(max_concurrency=2)

    assert asyncio.run(main()) == 55


def test_async_fibonacci_with_max_concurrency_1_still_finishes():
    assert async_fibonacci(8).run(max_concurrency=1) == 21


# -- async_orch: the example pipeline --------------------------------------------------------------


async def fetch_data(source_id: int) -> str:
    await asyncio.sleep(0)
    return f"data_{source_id}"


def process_data(data: str) -> str:
    return data.upper()


async def save_data(data: str) -> str:
    await asyncio.sleep(0)
    return f"saved:{data}"


def test_async_orch_named_fetch_tasks():
    result = nborch.run(Parallel(Task(fetch_data, 1, name="Fetch1"), Task(fetch_data, 2, name="Fetch2")))

    assert result.results == {"Fetch1": "data_1", "Fetch2": "data_2"}


def test_async_orch_sequence_pipes_fetch_process_save():
    pipeline = Sequence(Task(fetch_data, 1), Task(process_data), Task(save_data), name="pipeline")

    assert pipeline.run() == ["data_1", "DATA_1", "saved:DATA_1"]


def test_async_orch_parallel_pipelines_under_a_limit():
    running = {"now": 0, "peak": 0}

    async def fetch_counted(source_id: int) -> str:
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        for _ in range(3):
            await asyncio.sleep(0)
        running["now"] -= 1
        return f"data_{source_id}"

    pipelines = [Sequence(Task(fetch_counted, i), Task(process_data), Task(save_data)) for i in range(1, 5)]

    fetches = [Task(fetch_counted, i, name=f"Fetch{i}") for i in range(5, 8)]

    value = Parallel(*fetches, *pipelines, limit=2).run()

    assert value[:3] == ["data_5", "data_6", "data_7"]
    assert value[3:] == [[f"data_{i}", f"DATA_{i}", f"saved:DATA_{i}"] for i in range(1, 5)]
    assert running["peak"] <= 2


def test_async_orch_full_example_with_circuit_group_and_event_logger():
    logged: list[object] = []

    async def log_event(event):  # an async subscriber, as in async_orch's example
        logged.append(event)

    calls = []

    async def unreliable_service(attempt: int) -> str:
        calls.append(attempt)
        raise ConnectionError("service unavailable")

    guarded = CircuitGroup(
        *(Task(unreliable_service, i, name=f"Service{i}") for i in range(1, 4)),
        fail_max=2,
        reset_timeout=60,
        name="unreliable",
    )
    workflow = Sequence(
        Parallel(Task(fetch_data, 1, name="Fetch1"), Task(fetch_data, 2, name="Fetch2"), limit=2),
        Sequence(Task(fetch_data, 3, name="Fetch3"), Task(process_data), Task(save_data)),
    )

    unsubscribe = nborch.events.subscribe(log_event)
    try:
        first = nborch.run(workflow)
        failing = [nborch.run(guarded) for _ in range(2)]  # one group run is one breaker call
        calls_before = len(calls)
        again = nborch.run(guarded)
    finally:
        unsubscribe()

    assert first.ok
    assert first.value == [["data_1", "data_2"], ["data_3", "DATA_3", "saved:DATA_3"]]

    for broken in failing:
        assert not broken.ok
        assert set(broken.states.values()) == {TaskState.FAILED}
        assert all(isinstance(e, ConnectionError) for e in broken.errors.values())
    assert guarded.breaker.state == "open"
    assert calls_before == 6

    # the breaker outlives the run: the next run fails fast without calling the service
    assert len(calls) == calls_before
    assert all(isinstance(e, CircuitOpenError) for e in again.errors.values())
    assert len(again.errors) == 3

    task_events = [e for e in logged if isinstance(e, TaskEvent)]
    assert ("Fetch1", TaskState.SUCCEEDED) in {(e.task, e.state) for e in task_events}
    assert ("save_data", TaskState.SUCCEEDED) in {(e.task, e.state) for e in task_events}
    opened = [e for e in logged if isinstance(e, CircuitEvent)]
    assert [(e.breaker, e.old_state, e.new_state) for e in opened] == [("unreliable", "closed", "open")]
    run_events = [e for e in logged if isinstance(e, RunEvent)]
    assert [e.state for e in run_events if e.run_id == first.id] == [TaskState.RUNNING, TaskState.SUCCEEDED]


def test_event_logger_stops_receiving_after_unsubscribe():
    logged = []
    unsubscribe = nborch.events.subscribe(logged.append)
    try:
        nborch.run(Task(fetch_data, 1, name="Fetch1"))
    finally:
        unsubscribe()
    count = len(logged)

    nborch.run(Task(fetch_data, 2, name="Fetch2"))

    assert count > 0
    assert len(logged) == count


# -- AgenticFlow: a diamond DAG with a retry policy --------------------------------------------------


def test_agenticflow_diamond_with_retry_policy_and_report(fake_clock):
    attempts = {"research": 0}

    @task
    async def plan(topic: str) -> list[str]:
        return [f"{topic}: history", f"{topic}: outlook"]

    @task(retry=RetryPolicy(max_attempts=3, delay=0.5, backoff=2.0))
    async def research(plan: list[str]) -> str:
        attempts["research"] += 1
        if attempts["research"] < 3:
            raise ConnectionError("LLM rate limited")
        return f"notes on {plan[0]}"

    @task
    def critique(plan: list[str]) -> str:
        return f"risks of {plan[1]}"

    @task
    def write(research: str, critique: str) -> str:
        return f"report: {research}; {critique}"

    flow = DAG(plan("agents"), research, critique, write, name="agentic")

    result = nborch.run(flow, max_concurrency=2, clock=fake_clock)

    assert result.ok
    assert result.value == {
        "plan": ["agents: history", "agents: outlook"],
        "research": "notes on agents: history",
        "critique": "risks of agents: outlook",
        "write": "report: notes on agents: history; risks of agents: outlook",
    }
    assert result.attempts == {"plan": 1, "research": 3, "critique": 1, "write": 1}
    assert fake_clock.slept == [0.5, 1.0]

    report = result.report()
    rows = {line.split()[0]: line.split()[1:3] for line in report.splitlines()[2:] if line.strip()}
    assert rows["research"] == ["succeeded", "3"]
    assert rows["write"] == ["succeeded", "1"]
    assert report.splitlines()[0].startswith(f"run {result.id} succeeded")


def test_agenticflow_diamond_join_waits_for_both_branches(recorder):
    @task
    def start() -> int:
        return 1

    @task
    async def left(start: int) -> int:
        for _ in range(5):
            await asyncio.sleep(0)
        return start + 1

    @task
    def right(start: int) -> int:
        return start + 2

    @task
    def join(left: int, right: int) -> int:
        return left * right

    result = nborch.run(DAG(start, left, right, join), max_concurrency=2, on_event=recorder)

    assert result.value["join"] == 6
    order = [e.task for e in recorder.task_events() if e.state is TaskState.SUCCEEDED]
    assert order[0] == "start"
    assert order[-1] == "join"


# -- pyorchestration: ordered steps sharing a state object --------------------------------------------


class PipelineState:
    """pyorchestration's State: one object every step reads and writes."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.log: list[str] = []


CONFIG = {"source": "orders.csv", "min_total": 10, "publish": False}


def load(state: PipelineState, config: dict) -> int:
    state.log.append(f"load {config['source']}")
    state.records = [{"id": 1, "total": 5}, {"id": 2, "total": 25}, {"id": 3, "total": 40}]
    return len(state.records)


def clean(state: PipelineState, config: dict) -> int:
    state.log.append("clean")
    state.records = [r for r in state.records if r["total"] >= config["min_total"]]
    return len(state.records)


def publish(state: PipelineState, config: dict) -> str:
    if not config["publish"]:
        raise Skip("publishing is turned off")
    state.log.append("publish")
    return "published"


def summarize(state: PipelineState) -> int:
    state.log.append("summarize")
    return sum(r["total"] for r in state.records)


def test_pyorchestration_ordered_steps_share_state_and_skip_a_step():
    state = PipelineState()
    steps = Sequence(
        Task(load, config=CONFIG),
        Task(clean, config=CONFIG),
        Task(publish, config=CONFIG),
        Task(summarize, trigger_rule="none_failed"),  # runs after a skipped step, not after a failed one
        name="orders",
    )

    result = nborch.run(steps, state=state)

    assert result.ok
    assert result.states == {
        "load": TaskState.SUCCEEDED,
        "clean": TaskState.SUCCEEDED,
        "publish": TaskState.SKIPPED,
        "summarize": TaskState.SUCCEEDED,
    }
    assert result.value == [3, 2, None, 65]
    assert state.log == ["load orders.csv", "clean", "summarize"]


def test_pyorchestration_step_skipped_from_outside_with_skip_if():
    state = PipelineState()
    config = {**CONFIG, "publish": True}
    steps = Sequence(
        Task(load, config=config),
        Task(clean, config=config, skip_if=lambda state: not state.records),
        Task(publish, config=config, skip_if=lambda: True),
        Task(summarize, trigger_rule="none_failed"),
    )

    result = nborch.run(steps, state=state)

    assert result.states["publish"] is TaskState.SKIPPED
    assert "publish" not in state.log
    assert result.results["summarize"] == 65


def test_pyorchestration_failed_step_stops_the_later_steps():
    state = PipelineState()

    def broken(state: PipelineState) -> None:
        raise RuntimeError("bad input file")

    steps = Sequence(Task(load, config=CONFIG), Task(broken), Task(summarize, trigger_rule="none_failed"))

    result = nborch.run(steps, state=state)

    assert result.states["summarize"] is TaskState.UPSTREAM_FAILED
    assert state.log == ["load orders.csv"]


# -- DremioFrame: ETL with context passing and an alert on failure ------------------------------------


def build_etl(alerts: list[dict], fail_load: bool = False) -> DAG:
    @task
    def extract() -> list[dict]:
        return [{"city": "Oslo", "temp": 3}, {"city": "Rome", "temp": 19}]

    @task
    def transform(context) -> list[dict]:
        rows = context.get("extract")
        return [{**r, "temp_f": r["temp"] * 9 / 5 + 32} for r in rows]

    @task
    def load(context) -> int:
        if fail_load:
            raise ConnectionError("Dremio is unreachable")
        return len(context.get("transform"))

    @task(trigger_rule="one_failed")
    def alert(context) -> str:
        alerts.append(dict(context))
        return "on-call paged"

    etl = DAG(name="weather_etl")
    etl.add(extract)
    etl.add(transform, after=["extract"])
    etl.add(load, after=["transform"])
    etl.add(alert, after=["extract", "transform", "load"])
    return etl


def test_dremioframe_etl_passes_values_through_context():
    alerts: list[dict] = []

    result = nborch.run(build_etl(alerts))

    assert result.ok
    assert result.results["transform"] == [
        {"city": "Oslo", "temp": 3, "temp_f": 37.4},
        {"city": "Rome", "temp": 19, "temp_f": 66.2},
    ]
    assert result.results["load"] == 2
    assert result.states["alert"] is TaskState.SKIPPED
    assert alerts == []


def test_dremioframe_etl_alerts_when_a_step_fails():
    alerts: list[dict] = []

    result = nborch.run(build_etl(alerts, fail_load=True))

    assert result.ok is False
    assert result.states == {
        "extract": TaskState.SUCCEEDED,
        "transform": TaskState.SUCCEEDED,
        "load": TaskState.FAILED,
        "alert": TaskState.SUCCEEDED,
    }
    assert isinstance(result.errors["load"], ConnectionError)
    assert len(alerts) == 1
    assert alerts[0]["extract"][0]["city"] == "Oslo"
    assert alerts[0]["transform"][1]["temp_f"] == 66.2


def test_dremioframe_etl_node_run_raises_the_load_failure_after_the_alert():
    alerts: list[dict] = []

    try:
        build_etl(alerts, fail_load=True).run()
    except ConnectionError as error:
        assert str(error) == "Dremio is unreachable"
    else:  # pragma: no cover - the run must raise
        raise AssertionError("the failed load was not raised")

    assert len(alerts) == 1

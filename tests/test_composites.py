"""Points 4-8: running nodes, the Run record, unique names, Sequence, Parallel and DAG."""

from __future__ import annotations

import asyncio
import threading
import traceback
from collections.abc import Mapping

import pytest

import nborch
from nborch import DAG, GraphError, Parallel, Run, Sequence, Task, TaskState, task


@task
def fetch(n):
    return n


@task
def boom():
    raise ValueError("boom went the task")


class Gauge:
    """Counts how many jobs are inside at once (all on one event loop, so no lock needed)."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.finished = 0

    async def visit(self, value):
        self.active += 1
        self.peak = max(self.peak, self.active)
        for _ in range(5):  # stay inside for a few loop turns so others can pile up
            await asyncio.sleep(0)
        self.active -= 1
        self.finished += 1
        return value


# -- 4. node.run(), run_async(), await node -------------------------------------------------------


def test_task_run_returns_the_return_value():
    assert fetch(7).run() == 7


def test_task_run_async_returns_the_return_value():
    async def main():
        return await fetch(7).run_async()

    assert asyncio.run(main()) == 7


def test_awaiting_a_task_returns_the_return_value():
    async def main():
        return await fetch(7)

    assert asyncio.run(main()) == 7


def test_sequence_run_returns_the_step_values_in_order():
    assert Sequence(fetch(1), fetch(2), fetch(3)).run() == [1, 2, 3]


def test_parallel_run_returns_the_job_values_in_order():
    assert Parallel(fetch(1), fetch(2), fetch(3)).run() == [1, 2, 3]


def test_dag_run_returns_a_dict_of_task_name_to_value():
    @task
    def extract():
        return [1, 2]

    @task
    def total(extract):
        return sum(extract)

    assert DAG(extract, total).run() == {"extract": [1, 2], "total": 3}


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: fetch(1), 1),
        (lambda: Sequence(fetch(1), fetch(2)), [1, 2]),
        (lambda: Parallel(fetch(1), fetch(2)), [1, 2]),
        (lambda: DAG(Task(fetch, 1, name="one")), {"one": 1}),
    ],
    ids=["task", "sequence", "parallel", "dag"],
)
def test_run_async_and_await_give_the_same_value_as_run(make, expected):
    async def main():
        return await make().run_async(), await make()

    assert make().run() == expected
    assert asyncio.run(main()) == (expected, expected)


def test_run_raises_the_failing_tasks_own_exception():
    with pytest.raises(ValueError, match=r"^boom went the task") as info:
        Sequence(fetch(1), boom()).run()

    assert type(info.value) is ValueError


def test_raised_exception_carries_a_note_naming_the_task_and_attempt():
    with pytest.raises(ValueError) as info:
        boom().run()

    assert info.value.__notes__ == ["nborch: raised in task 'boom', attempt 1 of 1"]


def test_raised_exception_note_counts_the_retries():
    @task(retries=2)
    def always_fails():
        raise ConnectionError("down")

    with pytest.raises(ConnectionError) as info:
        always_fails().run()

    assert info.value.__notes__ == ["nborch: raised in task 'always_fails', attempt 3 of 3"]


def test_raised_exception_keeps_the_traceback_of_the_task_function():
    with pytest.raises(ValueError) as info:
        boom().run()

    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "boom" in frames


def test_await_raises_the_failing_tasks_own_exception():
    async def main():
        await Parallel(fetch(1), boom())

    with pytest.raises(ValueError, match=r"^boom went the task"):
        asyncio.run(main())


def test_run_raises_only_after_every_other_task_settled():
    failed = asyncio.Event()
    finished = []

    @task
    async def fail_first():
        failed.set()
        raise ValueError("first")

    @task
    async def slow_sibling():
        await asyncio.wait_for(failed.wait(), 5)
        for _ in range(5):
            await asyncio.sleep(0)
        finished.append("slow_sibling")
        return 1

    with pytest.raises(ValueError, match=r"^first"):
        DAG(fail_first(), slow_sibling()).run()

    assert finished == ["slow_sibling"]


def test_max_concurrency_option_bounds_the_whole_run():
    gauge = Gauge()
    jobs = [Task(gauge.visit, i) for i in range(6)]

    assert Parallel(*jobs).run(max_concurrency=2) == [0, 1, 2, 3, 4, 5]
    assert gauge.peak == 2


# -- 5. nborch.run() and the Run record ----------------------------------------------------------


def test_nborch_run_returns_a_run_record():
    result = nborch.run(fetch(3))

    assert isinstance(result, Run)
    assert result.ok is True
    assert result.value == 3
    assert result.states == {"fetch": TaskState.SUCCEEDED}
    assert result.results == {"fetch": 3}
    assert result.errors == {}
    assert result.attempts == {"fetch": 1}


def test_nborch_run_async_returns_a_run_record():
    async def main():
        return await nborch.run_async(Sequence(fetch(1), fetch(2)))

    result = asyncio.run(main())

    assert isinstance(result, Run)
    assert result.value == [1, 2]
    assert result.ok is True


def test_each_run_has_its_own_id():
    first, second = nborch.run(fetch(1)), nborch.run(fetch(1))

    assert isinstance(first.id, str) and first.id
    assert first.id != second.id


def test_nborch_run_does_not_raise_for_a_task_failure():
    result = nborch.run(Sequence(fetch(1), boom(), fetch(3)))

    assert result.ok is False
    assert result.states == {
        "fetch": TaskState.SUCCEEDED,
        "boom": TaskState.FAILED,
        "fetch[2]": TaskState.UPSTREAM_FAILED,
    }
    assert result.value == [1, None, None]


def test_nborch_run_async_does_not_raise_for_a_task_failure():
    async def main():
        return await nborch.run_async(boom())

    result = asyncio.run(main())

    assert result.ok is False
    assert result.states == {"boom": TaskState.FAILED}


def test_run_errors_hold_the_tasks_exception_by_name():
    result = nborch.run(Parallel(fetch(1), boom()))

    assert list(result.errors) == ["boom"]
    assert isinstance(result.errors["boom"], ValueError)
    assert str(result.errors["boom"]) == "boom went the task"


def test_run_attempts_count_every_try():
    tries = []

    @task(retries=3)
    def flaky():
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError("down")
        return "ok"

    result = nborch.run(flaky())

    assert result.attempts == {"flaky": 3}


def test_run_durations_are_seconds_per_task_that_ran():
    result = nborch.run(Parallel(fetch(1), fetch(2)))

    assert set(result.durations) == {"fetch", "fetch[2]"}
    assert all(isinstance(d, float) and 0 <= d < 5 for d in result.durations.values())


def test_run_is_not_ok_when_a_one_failed_task_handled_the_failure():
    @task(trigger_rule="one_failed")
    def alert(boom):
        return "alerted"

    result = nborch.run(DAG(boom(), alert))

    assert result.states == {"boom": TaskState.FAILED, "alert": TaskState.SUCCEEDED}
    assert result.ok is False


def test_report_is_readable_text_with_every_task_state_and_error():
    result = nborch.run(Sequence(fetch(1), boom(), fetch(3)))

    text = result.report()

    assert isinstance(text, str)
    lines = text.splitlines()
    assert any(line.split()[:2] == ["fetch", "succeeded"] for line in lines)
    assert any(
        line.split()[:2] == ["boom", "failed"] and "ValueError: boom went the task" in line for line in lines
    )
    assert any(line.split()[:2] == ["fetch[2]", "upstream_failed"] for line in lines)


def test_repr_html_is_a_table_with_escaped_names_and_messages():
    def explode():
        raise ValueError("a < b & <script>alert(1)</script>")

    result = nborch.run(Task(explode, name="<b>bold</b>"))

    page = result._repr_html_()

    assert "<table" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "a &lt; b &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page
    assert "<script>" not in page


def test_repeated_calls_of_one_task_function_get_numbered_names_in_call_order():
    result = nborch.run(Parallel(fetch(10), fetch(20), fetch(30)))

    assert result.results == {"fetch": 10, "fetch[2]": 20, "fetch[3]": 30}


def test_numbered_names_follow_call_order_not_position():
    called_first = fetch("called first")
    called_second = fetch("called second")

    result = nborch.run(Parallel(called_second, called_first))

    assert result.results == {"fetch": "called first", "fetch[2]": "called second"}


def test_repeated_task_constructor_calls_of_one_function_get_numbered_names():
    def save(x):
        return x

    result = nborch.run(Parallel(Task(save, 1), Task(save, 2), Task(save, 3)))

    assert list(result.states) == ["save", "save[2]", "save[3]"]


def test_derived_name_steps_aside_for_an_explicit_name():
    result = nborch.run(Parallel(fetch(1), Task(fetch, 2, name="fetch")))

    assert result.results == {"fetch": 2, "fetch[2]": 1}


def test_a_task_function_name_names_every_call_numbered_in_call_order():
    """@task(name=...) names the function, not each call (Pynenc's parallelize, DremioFrame's
    @task(name="extract", retries=3)): three calls are sum, sum[2], sum[3]."""

    @task(name="sum")
    def add(a, b):
        return a + b

    result = nborch.run(Parallel(add(1, 2), add(3, 4), add(5, 6)), store=False)

    assert result.results == {"sum": 3, "sum[2]": 7, "sum[3]": 11}


def test_a_named_task_function_called_as_child_tasks_keeps_numbering():
    @task(name="leaf")
    async def one(i):
        return i

    @task
    async def parent():
        return [await one(i) for i in range(3)]

    result = nborch.run(parent(), store=False)

    assert result.value == [0, 1, 2]
    assert sorted(result.states) == ["leaf", "leaf[2]", "leaf[3]", "parent"]


def test_two_functions_decorated_with_one_name_are_rejected():
    @task(name="extract")
    def one():
        return 1

    @task(name="extract")
    def two():
        return 2

    with pytest.raises(GraphError, match=r"^two different functions are named 'extract' .* Give each a unique name=\.$"):
        nborch.run(Parallel(one(), two()), store=False)


def test_a_node_name_and_a_function_name_that_clash_are_rejected():
    @task(name="load")
    def one():
        return 1

    with pytest.raises(GraphError, match=r"named 'load'"):
        nborch.run(Parallel(Task(lambda: 2, name="load"), one()), store=False)


def test_a_failed_build_gives_its_names_back():
    """Numbering stays contiguous after a child call whose graph was rejected."""

    @task
    async def leaf(i):
        return i

    @task
    async def parent():
        first = await leaf(0)
        a, b = leaf(1), leaf(1)
        a >> b >> a  # a cycle: found after the names were given
        try:
            await DAG(a, b)
        except nborch.CycleError:
            pass
        return [first, await leaf(2)]

    result = nborch.run(parent(), store=False)

    assert result.value == [0, 2]
    assert sorted(result.states) == ["leaf", "leaf[2]", "parent"]


# -- 6. Sequence --------------------------------------------------------------------------------


def test_sequence_runs_steps_in_order():
    order = []

    async def slow_first():
        for _ in range(5):
            await asyncio.sleep(0)
        order.append("first")

    def quick_second():
        order.append("second")

    Sequence(Task(slow_first), Task(quick_second)).run()

    assert order == ["first", "second"]


def test_sequence_pipes_the_previous_value_into_a_step_missing_an_argument():
    async def fetch_data(n):
        return {"id": n}

    def process(data):
        return {**data, "processed": True}

    def save(data):
        return f"saved {data['id']} processed={data['processed']}"

    result = nborch.run(Sequence(Task(fetch_data, 1), Task(process), Task(save)))

    assert result.value == [{"id": 1}, {"id": 1, "processed": True}, "saved 1 processed=True"]


def test_sequence_does_not_pipe_into_a_step_whose_arguments_are_all_bound():
    def double(x):
        return 2 * x

    assert Sequence(Task(double, 1), Task(double, 5)).run() == [2, 10]


def test_sequence_does_not_pipe_into_an_optional_parameter():
    def start():
        return "previous"

    def step(x="default"):
        return x

    assert Sequence(Task(start), Task(step)).run() == ["previous", "default"]


def test_sequence_piping_does_not_count_the_context_and_state_parameters():
    def start():
        return 41

    def step(x, state, context):
        return (x, state, dict(context))

    result = nborch.run(Sequence(Task(start), Task(step, 5)), state="shared")

    assert result.value == [41, (5, "shared", {"start": 41})]


def test_sequence_pipes_into_a_step_that_also_takes_state_and_context():
    shared = {"seen": []}

    def start():
        return 41

    def step(value, state, context):
        state["seen"].append(value)
        return value + 1

    result = nborch.run(Sequence(Task(start), Task(step)), state=shared)

    assert result.value == [41, 42]
    assert shared["seen"] == [41]


@pytest.mark.parametrize(
    "step",
    [lambda state, value: value + 1, lambda context, value: value + 1],
    ids=["state-first", "context-first"],
)
def test_sequence_pipes_past_a_leading_state_or_context_parameter(step):
    def start():
        return 41

    result = nborch.run(Sequence(Task(start), Task(step)), state={})

    assert result.errors == {}
    assert result.value == [41, 42]


def test_sequence_pipes_a_composite_steps_value():
    def total(values):
        return sum(values)

    assert Sequence(Parallel(fetch(1), fetch(2)), Task(total)).run() == [[1, 2], 3]


def test_sequence_stops_at_the_first_failure_and_later_steps_end_upstream_failed():
    ran = []

    def later():
        ran.append("later")

    result = nborch.run(Sequence(fetch(1), boom(), Task(later), Task(later, name="last")))

    assert ran == []
    assert result.states == {
        "fetch": TaskState.SUCCEEDED,
        "boom": TaskState.FAILED,
        "later": TaskState.UPSTREAM_FAILED,
        "last": TaskState.UPSTREAM_FAILED,
    }


def test_sequence_accepts_task_functions_and_plain_functions_as_steps():
    @task
    def process(x):
        return x * 10

    def describe(x):
        return f"value {x}"

    assert Sequence(fetch(1), process, describe).run() == [1, 10, "value 10"]


def test_sequence_accepts_a_name():
    seq = Sequence(fetch(1), name="steps")

    assert seq.name == "steps"
    assert seq.run() == [1]


# -- 7. Parallel --------------------------------------------------------------------------------


def test_parallel_runs_jobs_concurrently():
    gauge = Gauge()

    Parallel(*(Task(gauge.visit, i) for i in range(4))).run()

    assert gauge.peak == 4


@pytest.mark.parametrize("limit", [1, 2, 3], ids=["limit=1", "limit=2", "limit=3"])
def test_parallel_never_runs_more_than_limit_jobs_at_once(limit):
    gauge = Gauge()

    values = Parallel(*(Task(gauge.visit, i) for i in range(7)), limit=limit).run()

    assert values == list(range(7))
    assert gauge.finished == 7
    assert gauge.peak == limit


def test_parallel_limit_holds_for_sync_jobs_in_threads():
    lock = threading.Lock()
    state = {"active": 0, "peak": 0}

    def job(i):
        with lock:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
        try:
            for _ in range(1000):
                pass
            return i
        finally:
            with lock:
                state["active"] -= 1

    values = Parallel(*(Task(job, i) for i in range(8)), limit=2).run()

    assert values == list(range(8))
    assert 1 <= state["peak"] <= 2


def test_parallel_values_are_in_job_order_not_completion_order():
    done_order = []
    gates = [asyncio.Event() for _ in range(3)]

    async def job(i):
        if i < 2:
            await asyncio.wait_for(gates[i + 1].wait(), 5)  # job 0 waits for job 1, job 1 for job 2
        done_order.append(i)
        gates[i].set()
        return f"job{i}"

    values = Parallel(Task(job, 0), Task(job, 1), Task(job, 2)).run()

    assert done_order == [2, 1, 0]
    assert values == ["job0", "job1", "job2"]


def test_parallel_lets_siblings_finish_before_raising_the_first_failure():
    failed = asyncio.Event()
    finished = []

    async def fail():
        failed.set()
        raise ValueError("job failed")

    async def sibling(i):
        await asyncio.wait_for(failed.wait(), 5)
        for _ in range(3):
            await asyncio.sleep(0)
        finished.append(i)
        return i

    with pytest.raises(ValueError, match=r"^job failed"):
        Parallel(Task(sibling, 1), Task(fail), Task(sibling, 2)).run()

    assert sorted(finished) == [1, 2]


def test_parallel_record_shows_siblings_succeeded_after_a_failure():
    result = nborch.run(Parallel(fetch(1), boom(), fetch(3)))

    assert result.states == {
        "fetch": TaskState.SUCCEEDED,
        "boom": TaskState.FAILED,
        "fetch[2]": TaskState.SUCCEEDED,
    }
    assert result.value == [1, None, 3]


def test_parallel_without_fail_fast_still_runs_jobs_waiting_for_a_slot_after_a_failure():
    ran = []

    def record(i):
        ran.append(i)
        return i

    result = nborch.run(Parallel(boom(), Task(record, 1), Task(record, 2), limit=1))

    assert ran == [1, 2]
    assert result.states == {
        "boom": TaskState.FAILED,
        "record": TaskState.SUCCEEDED,
        "record[2]": TaskState.SUCCEEDED,
    }


def test_parallel_fail_fast_cancels_unfinished_siblings():
    started = asyncio.Event()

    async def hang():
        started.set()
        await asyncio.Event().wait()  # never set: only cancellation ends it

    async def fail():
        await asyncio.wait_for(started.wait(), 5)
        raise ValueError("stop everything")

    result = nborch.run(Parallel(Task(hang), Task(fail), fail_fast=True))

    assert result.states == {"hang": TaskState.CANCELLED, "fail": TaskState.FAILED}


def test_parallel_fail_fast_cancels_async_jobs_still_waiting_for_a_slot():
    ran = []

    async def record(i):
        ran.append(i)
        return i

    result = nborch.run(Parallel(boom(), Task(record, 1), Task(record, 2), limit=1, fail_fast=True))

    assert ran == []
    assert result.states == {
        "boom": TaskState.FAILED,
        "record": TaskState.CANCELLED,
        "record[2]": TaskState.CANCELLED,
    }


def test_parallel_fail_fast_never_starts_a_job_still_waiting_for_a_slot(recorder):
    def record(i):
        return i

    result = nborch.run(
        Parallel(boom(), Task(record, 1), Task(record, 2), limit=1, fail_fast=True), on_event=recorder
    )

    assert result.states["record"] is TaskState.CANCELLED
    assert recorder.states("record") == [TaskState.CANCELLED]
    assert recorder.states("record[2]") == [TaskState.CANCELLED]


def test_parallel_fail_fast_raises_the_failure_from_run():
    async def hang():
        await asyncio.Event().wait()

    with pytest.raises(ValueError, match=r"^boom went the task"):
        Parallel(Task(hang), boom(), fail_fast=True).run()


# -- 8. DAG -------------------------------------------------------------------------------------


def test_dag_parameter_named_after_a_task_receives_its_value():
    @task
    def extract():
        return [1, 2, 3]

    @task
    def transform(extract):
        return [x * 10 for x in extract]

    @task
    def load(transform):
        return sum(transform)

    value = DAG(load, transform, extract).run()

    assert value == {"load": 60, "transform": [10, 20, 30], "extract": [1, 2, 3]}


def test_dag_parameter_edge_waits_for_the_upstream():
    order = []

    @task
    async def extract():
        for _ in range(5):
            await asyncio.sleep(0)
        order.append("extract")
        return 1

    @task
    def report(extract):
        order.append("report")
        return extract

    DAG(report, extract).run()

    assert order == ["extract", "report"]


def test_passing_a_task_as_an_argument_makes_it_an_upstream():
    @task
    def extract():
        return [1, 2, 3]

    @task
    def transform(rows):
        return [r * 10 for r in rows]

    @task
    def load(rows):
        return sum(rows)

    result = nborch.run(load(transform(extract())))

    assert result.value == 60
    assert result.results == {"load": 60, "transform": [10, 20, 30], "extract": [1, 2, 3]}


def test_tasks_inside_list_and_dict_arguments_are_upstreams():
    def combine(parts, named):
        return sum(parts) + named["x"]

    assert Task(combine, [fetch(1), fetch(2)], {"x": fetch(3)}).run() == 6


def _ordering(kind):
    order = []

    async def first():
        for _ in range(5):
            await asyncio.sleep(0)
        order.append("first")

    def second():
        order.append("second")

    a, b = Task(first), Task(second)
    if kind == ">>":
        a >> b
        dag = DAG(b, a)
    elif kind == "<<":
        b << a
        dag = DAG(b, a)
    elif kind == "set_downstream":
        a.set_downstream(b)
        dag = DAG(b, a)
    elif kind == "add_after_node":
        dag = DAG(a)
        dag.add(b, after=[a])
    else:
        dag = DAG(a)
        dag.add(b, after=["first"])
    return dag, order


@pytest.mark.parametrize(
    "kind", [">>", "<<", "set_downstream", "add_after_node", "add_after_name"],
    ids=["a>>b", "b<<a", "set_downstream", "add_after_node", "add_after_name"],
)
def test_explicit_ordering_runs_the_downstream_after_the_upstream(kind):
    dag, order = _ordering(kind)

    result = nborch.run(dag)

    assert result.ok
    assert order == ["first", "second"]


def test_without_an_edge_the_quick_task_does_not_wait():
    order = []

    async def first():
        for _ in range(5):
            await asyncio.sleep(0)
        order.append("first")

    def second():
        order.append("second")

    DAG(Task(first), Task(second)).run()

    assert order == ["second", "first"]


def test_rshift_chains_and_returns_the_right_hand_side():
    a, b, c = fetch(1), fetch(2), fetch(3)

    assert (a >> b) is b
    a >> b >> c

    result = nborch.run(DAG(c, b, a))
    assert result.ok


def test_explicit_ordering_accepts_lists():
    order = []

    async def early(i):
        for _ in range(5):
            await asyncio.sleep(0)
        order.append(i)

    def late():
        order.append("late")

    ups = [Task(early, 1), Task(early, 2)]
    down = Task(late)
    ups >> down

    DAG(down, *ups).run()

    assert order[-1] == "late"
    assert sorted(order[:2]) == [1, 2]


def test_explicit_ordering_passes_no_data():
    @task
    def first():
        return "not passed"

    @task
    def second():
        return "no arguments"

    a, b = first(), second()
    a >> b

    assert DAG(a, b).run() == {"first": "not passed", "second": "no arguments"}


def test_dag_add_accepts_a_task_function_and_returns_its_node():
    @task
    def extract():
        return 1

    dag = DAG(extract)
    node = dag.add(lambda: 2, after=["extract"])

    assert isinstance(node, Task)
    assert dag.run() == {"extract": 1, "task": 2}


def test_context_receives_the_upstream_values():
    @task
    def extract():
        return [1, 2, 3]

    @task
    def transform(context):
        return [x * 2 for x in context.get("extract")]

    dag = DAG(extract)
    dag.add(transform, after=["extract"])

    assert dag.run() == {"extract": [1, 2, 3], "transform": [2, 4, 6]}


def test_context_holds_values_of_every_upstream_not_only_the_direct_ones():
    @task
    def extract():
        return "raw"

    @task
    def transform(extract):
        return extract.upper()

    @task
    def load(context):
        return dict(context)

    dag = DAG(extract, transform)
    dag.add(load, after=["transform"])

    assert dag.run()["load"] == {"extract": "raw", "transform": "RAW"}


def test_context_is_a_read_only_mapping():
    seen = {}

    @task
    def extract():
        return 1

    @task
    def inspect_context(context):
        seen["is_mapping"] = isinstance(context, Mapping)
        try:
            context["extract"] = 2
        except TypeError:
            seen["read_only"] = True
        return context["extract"]

    dag = DAG(extract)
    dag.add(inspect_context, after=["extract"])

    assert dag.run()["inspect_context"] == 1
    assert seen == {"is_mapping": True, "read_only": True}


def test_context_of_a_task_without_upstreams_is_empty():
    @task
    def alone(context):
        return dict(context)

    assert alone().run() == {}


def test_state_parameter_receives_the_shared_object_in_every_task():
    class State:
        def __init__(self):
            self.steps = []

    shared = State()

    @task
    def first(state):
        state.steps.append("first")
        return id(state)

    @task
    def second(first, state):
        state.steps.append("second")
        return id(state)

    result = nborch.run(DAG(first, second), state=shared)

    assert shared.steps == ["first", "second"]
    assert result.value == {"first": id(shared), "second": id(shared)}


def test_state_is_none_when_the_run_gets_none():
    @task
    def peek(state):
        return state

    assert peek().run() is None


def test_dag_accepts_a_name():
    dag = DAG(fetch(1), name="etl")

    assert dag.name == "etl"
    assert dag.run() == {"fetch": 1}


# -- composites nest freely ----------------------------------------------------------------------


def test_a_dag_may_hold_a_sequence():
    def double(x):
        return 2 * x

    @task
    def summarize(values):
        return sum(values)

    steps = Sequence(fetch(3), Task(double))
    result = nborch.run(DAG(steps, summarize(steps)))

    assert result.results == {"fetch": 3, "double": 6, "summarize": 9}


def test_a_parallel_may_hold_dags():
    @task
    def extract(source):
        return source

    @task
    def size(extract):
        return len(extract)

    left = DAG(Task(extract, "abc", name="left"), Task(size, name="left_size", extract=Task(fetch, "x")))
    right = DAG(extract("hello"), size)

    value = Parallel(left, right).run()

    assert value[1] == {"extract": "hello", "size": 5}
    assert value[0]["left"] == "abc"


def test_a_sequence_may_hold_parallels_and_dags():
    @task
    def a():
        return 1

    @task
    def b(a):
        return a + 1

    result = nborch.run(Sequence(Parallel(fetch(1), fetch(2)), DAG(a, b), fetch(3)))

    assert result.value == [[1, 2], {"a": 1, "b": 2}, 3]


def test_a_composite_after_another_composite_waits_for_all_of_it():
    order = []

    async def slow(i):
        for _ in range(i * 3):
            await asyncio.sleep(0)
        order.append(f"slow{i}")

    def quick(i):
        order.append(f"quick{i}")

    first = Parallel(Task(slow, 1), Task(slow, 2))
    second = Parallel(Task(quick, 1), Task(quick, 2))
    first >> second

    DAG(second, first).run()

    assert sorted(order[:2]) == ["slow1", "slow2"]
    assert sorted(order[2:]) == ["quick1", "quick2"]


def test_nested_composites_share_one_set_of_names():
    result = nborch.run(Parallel(Sequence(fetch(1), fetch(2)), DAG(fetch(3))))

    assert result.results == {"fetch": 1, "fetch[2]": 2, "fetch[3]": 3}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_body_raising_cancelled_error_itself_fails_its_task_and_the_run_goes_on(kind):
    """Sync or async alike: nobody cancelled it, so it is a failure (FAILED, its own exception),
    not a cancelled run; independent tasks still run."""
    if kind == "sync":
        def quits():
            raise asyncio.CancelledError("gave up")
    else:
        async def quits():
            raise asyncio.CancelledError("gave up")

    run = nborch.run(DAG(Task(quits), Task(lambda: "fine", name="other")), store=False)

    assert run.states == {"quits": TaskState.FAILED, "other": TaskState.SUCCEEDED}
    assert isinstance(run.errors["quits"], asyncio.CancelledError)
    assert run.status == "failed"
    with pytest.raises(asyncio.CancelledError, match="gave up"):
        Task(quits).run(store=False)


def test_a_sync_task_calling_sys_exit_fails_like_any_task():
    """In a thread, SystemExit is a failure of that task (asyncio itself lets an async task's
    SystemExit stop the loop: there it reaches the caller, with the run recorded)."""
    import sys

    def leave():
        sys.exit(0)

    run = nborch.run(DAG(Task(leave), Task(lambda: "fine", name="other")), store=False)

    assert run.states == {"leave": TaskState.FAILED, "other": TaskState.SUCCEEDED}
    assert isinstance(run.errors["leave"], SystemExit)

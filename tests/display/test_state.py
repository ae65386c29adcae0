"""RunView: events folded into per-task status, and reconciled with the final Run."""

from __future__ import annotations

import nborch
from nborch import DAG, Skip, Task, TaskState, task
from nborch.display.state import RunView
from nborch.core.eventbus import CircuitEvent, RunEvent, TaskEvent, TaskOutput, TaskProgress
from nborch.core.graph import build_graph

S = TaskState


def ev(name: str, state: TaskState, attempt: int = 1, time: float = 0.0, **kw) -> TaskEvent:
    return TaskEvent("r1", name, state, attempt, time, **kw)


def two_tasks() -> DAG:
    @task
    def load():
        return 1

    @task
    def clean(load):
        return load

    return DAG(load, clean)


def test_view_starts_with_every_task_pending():
    view = RunView(build_graph(two_tasks()))

    assert {n: st.state for n, st in view.tasks.items()} == {"load": S.PENDING, "clean": S.PENDING}
    assert (view.total, view.settled, view.status) == (2, 0, "starting")


def test_running_then_succeeded_gives_duration_from_event_times():
    view = RunView(build_graph(two_tasks()))

    view(ev("load", S.RUNNING, time=10.0))
    view(ev("load", S.SUCCEEDED, time=12.5))

    st = view.tasks["load"]
    assert (st.state, st.attempts, st.duration) == (S.SUCCEEDED, 1, 2.5)
    assert view.settled == 1
    assert view.counts()[S.SUCCEEDED] == 1 and view.counts()[S.PENDING] == 1


def test_retry_keeps_first_start_counts_attempts_and_clears_error_on_success():
    view = RunView(build_graph(two_tasks()))

    view(ev("load", S.RUNNING, 1, time=1.0))
    view(ev("load", S.RETRYING, 1, time=2.0, error=ValueError("flaky")))
    assert view.tasks["load"].error == "ValueError: flaky"
    assert view.tasks["load"].note() == "attempt 1"
    view(ev("load", S.RUNNING, 2, time=3.0))
    view(ev("load", S.SUCCEEDED, 2, time=4.0))

    st = view.tasks["load"]
    assert (st.attempts, st.duration, st.error) == (2, 3.0, "")
    assert st.note() == "2 attempts · 3.00s"


def test_failure_keeps_a_one_line_error():
    view = RunView()

    view(ev("x", S.RUNNING))
    view(ev("x", S.FAILED, error=KeyError("missing\ncolumn")))

    assert view.tasks["x"].error == "KeyError: 'missing\\ncolumn'"
    assert view.tasks["x"].state is S.FAILED


def test_child_task_event_adds_a_task_and_changes_the_shape():
    view = RunView(build_graph(two_tasks()))
    shape = view.shape

    view(ev("fib[2]", S.PENDING, 0, parent="load"))

    assert view.tasks["fib[2]"].parent == "load"
    assert view.shape == shape + 1
    assert view.total == 3


def test_progress_and_output_are_kept_per_task():
    view = RunView()

    view(TaskProgress("r1", "a", 3, 10))
    view(TaskOutput("r1", "a", "stdout", "hello\n"))
    view(TaskOutput("r1", "a", "stderr", "oops\n"))

    st = view.tasks["a"]
    assert (st.done, st.total, st.has_progress) == (3, 10, True)
    assert st.output == "hello\noops\n" and st.output_lines == 2
    assert list(view.progressing) == ["a"]


def test_output_keeps_only_the_tail_of_a_long_stream():
    view = RunView(output_limit=100)

    for i in range(1000):
        view(TaskOutput("r1", "a", "stdout", f"{i:04d}\n"))

    out = view.tasks["a"].output
    assert out.startswith("…") and out.endswith("0999\n")
    assert len(out) <= 201
    assert view.tasks["a"].output_lines == 1000


def test_run_and_circuit_events_set_run_status():
    view = RunView()

    view(RunEvent("r1", S.RUNNING, 5.0))
    view(CircuitEvent("api", "closed", "open"))
    assert (view.status, view.started, view.run_id) == ("running", 5.0, "r1")
    view(RunEvent("r1", S.FAILED, 7.0))

    assert (view.status, view.finished) == ("failed", 7.0)
    assert view.breakers == {"api": "open"}


def test_unknown_events_change_nothing():
    view = RunView()
    version = view.version

    assert view("not an event") is False
    assert view.version == version


def test_view_of_a_real_run_matches_the_run_record():
    @task
    def ok():
        print("working")
        return 1

    @task
    def boom(ok):
        raise ValueError("bad <row>")

    @task
    def after(boom):
        return 2

    @task
    def optional():
        raise Skip("not today")

    graph_node = DAG(ok, boom, after, optional)
    view = RunView(build_graph(graph_node))
    run = nborch.run(graph_node, on_event=view)

    states = {n: st.state for n, st in view.tasks.items()}
    assert states == run.states == {
        "ok": S.SUCCEEDED, "boom": S.FAILED, "after": S.UPSTREAM_FAILED, "optional": S.SKIPPED,
    }
    assert view.tasks["boom"].error == "ValueError: bad <row>"
    assert view.tasks["ok"].output == "working\n"
    assert view.settled == view.total == 4


def test_finish_takes_the_final_word_from_the_run():
    node = Task(lambda: 1, name="solo")
    view = RunView(build_graph(node))
    run = nborch.run(node)  # the view saw no events at all

    view.finish(run)

    st = view.tasks["solo"]
    assert (st.state, st.attempts) == (S.SUCCEEDED, 1)
    assert st.duration == run.durations["solo"]
    assert view.status == "succeeded"


def mixed_events():
    """The events of a real run with every kind of ending, retries, output and progress."""
    calls = []

    @task
    def load():
        print("rows")
        return [1, 2]

    @task(retries=1, retry_delay=0)
    def flaky(load):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("first")
        return sum(nborch.progress(load))

    @task
    def boom(flaky):
        raise ValueError("bad")

    @task
    def after(boom):
        return 1

    @task
    def optional():
        raise Skip("no")

    node = DAG(load, flaky, boom, after, optional)
    events = []
    run = nborch.run(node, on_event=events.append, store=False)
    return node, events, run


def details(view):
    return {
        n: (st.state, st.attempts, st.duration, st.error, st.cached, st.reused, st.output, st.done, st.parent)
        for n, st in view.tasks.items()
    }


def test_folding_a_batch_gives_what_folding_each_event_gives():
    node, events, run = mixed_events()
    one = RunView(build_graph(node))
    for e in events:
        one.apply(e)
    batch = RunView(build_graph(node))
    batch.apply_all(events[:7])
    batch.apply_all(events[7:])

    assert details(batch) == details(one)
    assert batch.counts() == one.counts() and batch.settled == one.settled == 5
    assert one.states == run.states


def test_a_task_that_simply_succeeded_gets_its_details_only_when_asked():
    graph = build_graph(two_tasks())
    view = RunView(graph)

    view.apply_all([ev("load", S.RUNNING, time=1.0), ev("load", S.SUCCEEDED, time=3.0, started=1.0),
                    ev("clean", S.SUCCEEDED, time=4.0, started=3.5)])

    assert view.states == {"load": S.SUCCEEDED, "clean": S.SUCCEEDED}
    assert "clean" not in view._details  # kept as its event until someone asks
    st = view.task("clean")
    assert (st.state, st.attempts, st.duration) == (S.SUCCEEDED, 1, 0.5)
    assert view.task("load").duration == 2.0


def test_the_view_of_a_run_record_alone():
    node, events, run = mixed_events()

    view = RunView.from_run(run)

    assert view.states == run.states and view.status == "failed"
    assert view.task("boom").error == "ValueError: bad"
    assert view.task("flaky").attempts == 2
    assert view.task("load").output == "rows\n"
    assert view.duration == run.duration


def test_cached_and_reused_marks_come_from_events_and_count_once():
    view = RunView(build_graph(two_tasks()))

    view.apply_all([ev("load", S.SUCCEEDED, 0, time=1.0, cached=True)])
    view.apply_all([ev("clean", S.SUCCEEDED, 1, time=2.0, started=1.5, reused=True)])

    assert (view.task("load").mark, view.task("clean").mark) == ("cached", "reused")
    assert view.not_run == 2
    assert view.task("load").note() == "cached" and view.task("load").attempts == 0


def test_running_tasks_told_late_tick_from_their_start():
    view = RunView(build_graph(two_tasks()))

    view.running({"load": 10.0})

    st = view.task("load")
    assert st.state is S.RUNNING and view.active == 1
    assert st.note(now=12.34) == "2.3s"
    assert st.elapsed(12.0) == 2.0


def test_known_task_is_a_frozen_record():
    from dataclasses import FrozenInstanceError

    from nborch.display.state import KnownTask

    k = KnownTask(S.SUCCEEDED, 1.5, "r1", stale="global threshold changed")
    assert (k.reused, k.cached) == (False, False)
    try:
        k.state = S.FAILED  # type: ignore[misc]
    except FrozenInstanceError:
        pass
    else:
        raise AssertionError("KnownTask must be frozen")


def test_the_names_state_exported_before_its_split_are_still_importable_from_it():
    from nborch.display import mapped_nodes, state, task_status

    homes = {name: module for module in (mapped_nodes, task_status) for name in module.__all__}
    assert sorted([*homes, "RunView"]) == sorted(state.__all__)
    assert [name for name, module in homes.items() if getattr(state, name) is not getattr(module, name)] == []

"""Point 14: the event bus, typed events, per-run subscribers and broken subscribers."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

import nborch
from nborch import DAG, EventBus, RunEvent, Sequence, TaskEvent, TaskState, task

pytestmark = pytest.mark.timeout(30)

S = TaskState


@pytest.fixture
def collected():
    """Subscribe a list to the global bus for the test, and always unsubscribe."""
    seen: list[object] = []
    unsubscribe = nborch.events.subscribe(seen.append)
    try:
        yield seen
    finally:
        unsubscribe()


def task_events(seen, name=None):
    return [e for e in seen if isinstance(e, TaskEvent) and (name is None or e.task == name)]


def logged(caplog, message: str) -> bool:
    """True if an error record carries the subscriber's exception with this message."""
    return any(
        r.levelno >= logging.ERROR and r.exc_info and str(r.exc_info[1]) == message for r in caplog.records
    )


def run_events(seen):
    return [e for e in seen if isinstance(e, RunEvent)]


@task
def double(x):
    return x * 2


@task
def explode():
    raise ValueError("kaboom")


def test_nborch_events_is_the_global_event_bus():
    assert isinstance(nborch.events, EventBus)
    from nborch.core.eventbus import events

    assert events is nborch.events


def test_subscribe_returns_a_callable_that_unsubscribes():
    seen: list[object] = []
    unsubscribe = nborch.events.subscribe(seen.append)
    try:
        assert callable(unsubscribe)
        double(1).run()
        assert seen
    finally:
        unsubscribe()
    seen.clear()
    double(2).run()
    assert seen == []


def test_sync_subscriber_gets_task_events_with_their_fields(collected):
    record = nborch.run(double(21))

    events = task_events(collected, "double")
    assert [e.state for e in events][-2:] == [S.RUNNING, S.SUCCEEDED]
    done = events[-1]
    assert done.run_id == record.id
    assert done.task == "double"
    assert done.attempt == 1
    assert done.result == 42
    assert done.error is None
    assert isinstance(done.time, float)
    assert events[-2].time <= done.time
    # every field is there and in its place (the engine builds events without TaskEvent.__new__)
    assert len(done) == len(TaskEvent._fields) and done == TaskEvent(**done._asdict())
    assert done.started is not None and done.started <= done.time and events[-2].started is None


def test_failed_task_event_carries_the_tasks_own_exception(collected):
    record = nborch.run(explode())

    failed = [e for e in task_events(collected, "explode") if e.state is S.FAILED]
    assert len(failed) == 1
    assert isinstance(failed[0].error, ValueError)
    assert failed[0].error is record.errors["explode"]
    assert failed[0].result is None
    assert failed[0].attempt == 1


def test_retrying_event_carries_attempt_and_error(collected):
    outcomes = iter([ConnectionError("once"), "ok"])

    @task(retries=1, retry_delay=0)
    def flaky():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    nborch.run(flaky())
    states = [(e.state, e.attempt) for e in task_events(collected, "flaky")]
    assert (S.RETRYING, 1) in states
    assert states[-1] == (S.SUCCEEDED, 2)
    retrying = next(e for e in task_events(collected, "flaky") if e.state is S.RETRYING)
    assert isinstance(retrying.error, ConnectionError)


def test_run_events_mark_the_start_and_the_end_of_a_run(collected):
    record = nborch.run(double(1))
    failed = nborch.run(explode())

    ok_events = [e for e in run_events(collected) if e.run_id == record.id]
    assert [e.state for e in ok_events] == [S.RUNNING, S.SUCCEEDED]
    assert ok_events[0].time <= ok_events[1].time
    bad_events = [e for e in run_events(collected) if e.run_id == failed.id]
    assert [e.state for e in bad_events] == [S.RUNNING, S.FAILED]


def test_run_event_comes_before_and_after_every_task_event_of_its_run(collected):
    record = nborch.run(Sequence(double(1), double(2)))

    mine = [e for e in collected if getattr(e, "run_id", None) == record.id]
    assert isinstance(mine[0], RunEvent) and mine[0].state is S.RUNNING
    assert isinstance(mine[-1], RunEvent) and mine[-1].state is S.SUCCEEDED
    assert all(isinstance(e, TaskEvent) for e in mine[1:-1])


def test_every_task_reports_its_final_state_as_an_event(collected):
    @task
    def extract():
        return 1

    @task
    def transform(extract):
        raise ValueError("bad row")

    @task
    def load(transform):
        return "never"

    @task
    def audit(extract):
        return "audited"

    record = nborch.run(DAG(extract, transform, load, audit))

    last: dict[str, TaskState] = {}
    for e in task_events(collected):
        if e.run_id == record.id:
            last[e.task] = e.state
    assert last == record.states
    assert last == {
        "extract": S.SUCCEEDED, "transform": S.FAILED, "load": S.UPSTREAM_FAILED, "audit": S.SUCCEEDED,
    }


def test_async_subscriber_receives_every_event_before_the_run_returns():
    seen: list[object] = []

    async def subscriber(event):
        await asyncio.sleep(0)
        seen.append(event)

    unsubscribe = nborch.events.subscribe(subscriber)
    try:
        record = nborch.run(double(5))
    finally:
        unsubscribe()
    states = [e.state for e in task_events(seen, "double") if e.run_id == record.id]
    assert states[-1] is S.SUCCEEDED
    assert [e.state for e in run_events(seen) if e.run_id == record.id] == [S.RUNNING, S.SUCCEEDED]


def test_async_subscriber_works_when_the_run_is_awaited():
    seen: list[object] = []

    async def subscriber(event):
        seen.append(event)

    async def main():
        unsubscribe = nborch.events.subscribe(subscriber)
        try:
            return await double(4).run_async()
        finally:
            unsubscribe()

    assert asyncio.run(main()) == 8
    assert [e.result for e in task_events(seen, "double") if e.state is S.SUCCEEDED] == [8]


def test_a_raising_sync_subscriber_is_logged_and_does_not_break_the_run(caplog):
    calls: list[object] = []

    def broken(event):
        calls.append(event)
        raise RuntimeError("observer bug")

    good: list[object] = []
    unsub_broken = nborch.events.subscribe(broken)
    unsub_good = nborch.events.subscribe(good.append)
    try:
        with caplog.at_level(logging.ERROR):
            assert double(3).run() == 6
            record = nborch.run(Sequence(double(1), double(2)))
    finally:
        unsub_broken()
        unsub_good()

    assert calls, "the subscriber was called"
    assert record.ok
    assert record.value == [2, 4]
    assert logged(caplog, "observer bug")
    assert [e.state for e in task_events(good) if e.run_id == record.id][-1] is S.SUCCEEDED


def test_a_raising_async_subscriber_is_logged_and_does_not_break_the_run(caplog):
    async def broken(event):
        await asyncio.sleep(0)
        raise RuntimeError("async observer bug")

    unsubscribe = nborch.events.subscribe(broken)
    try:
        with caplog.at_level(logging.ERROR):
            assert double(10).run() == 20
    finally:
        unsubscribe()
    assert logged(caplog, "async observer bug")


def test_a_raising_per_run_subscriber_is_logged_and_does_not_break_the_run(caplog):
    def broken(event):
        raise RuntimeError("per-run observer bug")

    with caplog.at_level(logging.ERROR):
        assert double(7).run(on_event=broken) == 14
    assert logged(caplog, "per-run observer bug")


def test_per_run_subscriber_gets_only_its_runs_events():
    mine: list[object] = []
    record = nborch.run(double(1), on_event=mine.append)
    nborch.run(double(2))

    assert mine
    assert {getattr(e, "run_id", record.id) for e in mine} == {record.id}
    assert [e.state for e in run_events(mine)] == [S.RUNNING, S.SUCCEEDED]
    assert [e.result for e in task_events(mine) if e.state is S.SUCCEEDED] == [2]


def test_node_run_accepts_on_event_too():
    mine: list[object] = []
    assert double(8).run(on_event=mine.append) == 16
    assert [e.state for e in task_events(mine)][-1] is S.SUCCEEDED


def test_per_run_subscribers_may_be_a_list_of_sync_and_async_callables():
    sync_seen: list[object] = []
    async_seen: list[object] = []

    async def async_sub(event):
        async_seen.append(event)

    nborch.run(double(1), on_event=[sync_seen.append, async_sub])
    assert sync_seen and [type(e) for e in sync_seen] == [type(e) for e in async_seen]


def test_global_and_per_run_subscribers_see_the_same_task_events(collected):
    mine: list[object] = []
    record = nborch.run(Sequence(double(1), double(2)), on_event=mine.append)

    ours = [(e.task, e.state) for e in task_events(collected) if e.run_id == record.id]
    assert ours == [(e.task, e.state) for e in task_events(mine)]


def test_events_from_sync_tasks_and_concurrent_runs_reach_a_subscriber_intact(collected):
    @task
    def work(i):
        return i

    records = []
    lock = threading.Lock()

    def one(i):
        r = nborch.run(work(i))
        with lock:
            records.append(r)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(records) == 6
    for r in records:
        done = [e for e in task_events(collected) if e.run_id == r.id and e.state is S.SUCCEEDED]
        assert [e.result for e in done] == [r.value]


def test_unsubscribing_twice_is_harmless():
    unsubscribe = nborch.events.subscribe(lambda e: None)
    unsubscribe()
    unsubscribe()
    assert double(1).run() == 2


def test_a_subscriber_whose_len_is_zero_still_gets_the_events():
    class Collector:  # falsy while empty, as a RunView or any sized collector is
        def __init__(self):
            self.events = []

        def __len__(self):
            return len(self.events)

        def __call__(self, event):
            self.events.append(event)

    got = Collector()
    nborch.run(nborch.task(lambda: 1)(), store=False, on_event=got)
    assert len(got) > 0  # it was dropped as "no subscriber" when it was falsy at the start


@pytest.mark.parametrize("store", [False, True])
def test_a_subscriber_with_a_journal_of_its_own_still_gets_every_event(tmp_path, store):
    """The store's recorder takes plain successes from the engine without events (an
    eventbus.Journal); a user's subscriber that happens to have a ``journal`` attribute is not
    taken for one: it gets the SUCCEEDED events, and its journal is never touched."""

    class Auditor:
        def __init__(self):
            self.seen = []
            self.journal = []  # the auditor's own notes

        def __call__(self, e):
            if isinstance(e, TaskEvent):
                self.seen.append((e.task, e.state))

    @task
    async def one(i):
        return i

    auditor = Auditor()
    run = nborch.run(Sequence(*[one(i) for i in range(3)]), on_event=auditor,
                     store=tmp_path / "home" if store else False)
    assert run.ok and run.value == [0, 1, 2]
    assert [n for n, s in auditor.seen if s is S.SUCCEEDED] == list(run.states)
    assert auditor.journal == []


@pytest.mark.parametrize("keep", [False, True])
def test_a_journal_that_raises_when_due_costs_the_run_nothing(caplog, keep):
    """The engine calls a journal's ``overdue`` itself, on its hot path, not through publish:
    it must be guarded as publish guards a subscriber (it hung the run: the exception ended the
    task's job before its downstream was decided). The subscriber is logged, and dropped unless
    it says ``keep_on_error``; a dropped one gets no more events."""
    from nborch.core.eventbus import Journal

    calls = []

    class Broken:
        keep_on_error = keep

        def __init__(self):
            self.journal = Journal(self.due)

        def due(self, now):
            calls.append(now)
            raise RuntimeError("the store went away")

        def __call__(self, e):
            pass

    @task
    async def one(i):
        return i

    broken = Broken()
    with caplog.at_level(logging.ERROR, logger="nborch.events"):
        run = nborch.run(Sequence(*[one(i) for i in range(5)]), on_event=broken, store=False)
    assert run.ok and run.value == [0, 1, 2, 3, 4]
    assert calls and "the store went away" in caplog.text
    # kept: called at every task's end (its due time is never moved on); dropped: only once
    assert len(calls) == (5 if keep else 1)
    assert len(broken.journal.entries) == (5 if keep else 1)

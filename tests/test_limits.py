"""Issue 11, items 12 and 13: rate limits (rate=, rate_by=, RetryPolicy(retry_after=True)) and
weighted slots in named pools (slots=, pool=, max_concurrency={...}). Real engine, fake clock."""

from __future__ import annotations

import asyncio
import math

import pytest

import nborch
from nborch import DAG, DefinitionError, Parallel, RetryPolicy, Task, TaskState, TaskWaiting, task

pytestmark = pytest.mark.timeout(30)

T0 = 1000.0  # FakeClock's start


def since(clock, t=None) -> float:
    return round((clock.now() if t is None else t) - T0, 9)


# -- RetryPolicy(retry_after=True) ---------------------------------------------------------------


class Throttled(Exception):
    def __init__(self, retry_after=None):
        super().__init__(f"429, retry after {retry_after!r}")
        if retry_after is not None:
            self.retry_after = retry_after


def throttled_once(asked, **policy):
    calls: list[int] = []

    def call():
        calls.append(1)
        if len(calls) == 1:
            raise Throttled(asked)
        return "ok"

    return Task(call, retry=RetryPolicy(max_attempts=2, delay=2.0, **policy)), calls


@pytest.mark.parametrize(
    ("retry_after", "policy", "slept"),
    [
        (7.5, {}, [7.5]),
        (3, {}, [3.0]),
        (None, {}, [2.0]),  # none given: the computed back-off
        (-3, {}, []),  # in the past: retry at once
        (1e9, {"max_delay": 60.0}, [60.0]),  # capped by max_delay
        (30, {"max_delay": 60.0, "jitter": 5.0}, [30.0]),  # exactly as asked: no jitter
        ("120", {}, [2.0]),  # not a number: ignored
        (math.nan, {}, [2.0]),
        (math.inf, {}, [2.0]),
        (True, {}, [2.0]),
    ],
    ids=["float", "int", "missing", "negative", "huge-capped", "no-jitter", "str", "nan", "inf", "bool"],
)
def test_retry_after_from_the_exception_replaces_the_back_off(fake_clock, retry_after, policy, slept):
    node, calls = throttled_once(retry_after, retry_after=True, **policy)

    assert node.run(clock=fake_clock, store=False) == "ok"
    assert len(calls) == 2
    assert fake_clock.slept == pytest.approx(slept)


def test_retry_after_is_ignored_unless_asked_for(fake_clock):
    node, _ = throttled_once(7.5)
    node.run(clock=fake_clock, store=False)
    assert fake_clock.slept == [2.0]


def test_retry_after_is_published_as_the_retrying_delay(fake_clock, recorder):
    node, _ = throttled_once(7.5, retry_after=True)
    nborch.run(node, clock=fake_clock, store=False, on_event=recorder)
    retrying = [e for e in recorder.task_events() if e.state is TaskState.RETRYING]
    assert [e.delay for e in retrying] == [7.5]


def test_retry_after_must_be_a_bool():
    with pytest.raises(DefinitionError, match=r"^RetryPolicy\(retry_after=...\) expects True or False, got 'yes'"):
        RetryPolicy(retry_after="yes")


# -- rate= ---------------------------------------------------------------------------------------


def test_a_rate_of_ten_a_second_starts_fifty_calls_a_tenth_of_a_second_apart(fake_clock):
    starts: dict[int, float] = {}

    @task(rate="10/s")
    async def fetch(i):
        starts[i] = since(fake_clock)
        return i

    record = nborch.run(Parallel(*(fetch(i) for i in range(50))), clock=fake_clock, store=False)

    assert record.value == list(range(50))
    assert [starts[i] for i in range(50)] == pytest.approx([i / 10 for i in range(50)])
    assert fake_clock.slept == pytest.approx([0.1] * 49)  # one sleep per start: nobody wakes in vain


@pytest.mark.parametrize(
    ("rate", "interval"),
    [("100/min", 0.6), ("5000/h", 0.72), ("2/5s", 2.5), ("0.5/s", 2.0), ("1 / 2 minutes", 120.0), ("3/2h", 2400.0)],
)
def test_a_rate_spaces_starts_by_its_period_over_its_count(fake_clock, rate, interval):
    starts: list[float] = []

    @task(rate=rate)
    async def call(i):
        starts.append(since(fake_clock))

    nborch.run(Parallel(*(call(i) for i in range(4))), clock=fake_clock, store=False)

    assert starts == pytest.approx([0.0, interval, 2 * interval, 3 * interval])


def test_a_rate_counts_every_call_of_the_function_across_the_run(fake_clock):
    starts: list[float] = []

    @task(rate="2/s")
    async def call(i):
        starts.append(since(fake_clock))

    nborch.run(DAG(Parallel(call(1), call(2)), Parallel(call(3), call(4))), clock=fake_clock, store=False)

    assert starts == pytest.approx([0.0, 0.5, 1.0, 1.5])


def test_rate_by_keeps_one_schedule_per_key(fake_clock):
    starts: dict[str, list[float]] = {"a": [], "b": []}

    @task(rate="10/s", rate_by=("host",))
    async def fetch(host, path):
        starts[host].append(since(fake_clock))

    calls = [fetch(host, i) for i in range(3) for host in ("a", "b")]
    nborch.run(Parallel(*calls), clock=fake_clock, store=False)

    assert starts["a"][0] == starts["b"][0] == 0.0  # b does not wait behind a
    for times in starts.values():
        assert len(times) == 3
        assert all(later - earlier >= 0.1 - 1e-9 for earlier, later in zip(times, times[1:]))


def test_rate_by_treats_positional_and_keyword_arguments_as_the_same_key(fake_clock):
    starts: list[float] = []

    @task(rate="1/s", rate_by="host")
    async def fetch(host, path=""):
        starts.append(since(fake_clock))

    nborch.run(Parallel(fetch("a", "x"), fetch(host="a", path="y")), clock=fake_clock, store=False)

    assert starts == [0.0, 1.0]


def test_a_task_waiting_for_its_rate_gives_its_slot_back(fake_clock):
    order: list[str] = []

    @task(rate="1/s")
    async def fetch(i):
        order.append(f"fetch{i}")

    @task
    async def other():
        order.append("other")

    record = nborch.run(Parallel(fetch(0), fetch(1), other()), clock=fake_clock, store=False, max_concurrency=1)

    assert record.ok
    # fetch1 was launched before other, but waiting for its rate it held no slot: other ran meanwhile
    assert order == ["fetch0", "other", "fetch1"]


def test_a_retry_waits_for_the_rate_like_a_first_attempt(fake_clock):
    starts: list[float] = []

    @task(rate="1/s", retries=2, retry_delay=0.25)
    async def flaky():
        starts.append(since(fake_clock))
        if len(starts) < 3:
            raise ConnectionError("try again")
        return "ok"

    record = nborch.run(flaky(), clock=fake_clock, store=False)

    assert record.value == "ok"
    assert starts == pytest.approx([0.0, 1.0, 2.0])
    # back-off (0.25, then 0.5: retries= doubles it), then the rest of the second the rate asks
    assert fake_clock.slept == pytest.approx([0.25, 0.75, 0.5, 0.5])


def test_a_task_waiting_for_its_rate_is_published_as_waiting_not_running(fake_clock, recorder):
    @task(rate="10/s", name="fetch")
    async def fetch(i):
        return i

    nborch.run(Parallel(fetch(0), fetch(1), fetch(2)), clock=fake_clock, store=False, on_event=recorder)

    waits = recorder.of_type(TaskWaiting)
    assert [(w.reason, w.attempt) for w in waits] == [("rate", 1), ("rate", 1)]
    assert [since(fake_clock, w.until) for w in waits] == pytest.approx([0.1, 0.2])
    for w in waits:
        events = [e for e in recorder.events if getattr(e, "task", None) == w.task]
        assert isinstance(events[0], TaskWaiting)  # waiting first: no RUNNING before its start
        assert [e.state for e in events[1:]] == [TaskState.RUNNING, TaskState.SUCCEEDED]
        assert since(fake_clock, events[1].time) == pytest.approx(since(fake_clock, w.until))


def test_a_tasks_duration_does_not_count_its_wait_for_the_rate(fake_clock):
    @task(rate="1/s")
    async def fetch(i):
        return i

    record = nborch.run(Parallel(*(fetch(i) for i in range(3))), clock=fake_clock, store=False)

    assert record.duration == pytest.approx(2.0)
    assert list(record.durations.values()) == [0.0, 0.0, 0.0]


def test_cached_calls_do_not_wait_for_the_rate(fake_clock, recorder, tmp_path):
    @task(rate="1/s", cache=True)
    def fetch(i):
        return i * 2

    flow = Parallel(*(fetch(i) for i in range(4)))
    first = nborch.run(flow, clock=fake_clock, store=tmp_path / "store.db")
    slept = list(fake_clock.slept)
    second = nborch.run(flow, clock=fake_clock, store=tmp_path / "store.db", on_event=recorder)

    assert first.value == second.value == [0, 2, 4, 6]
    assert slept == pytest.approx([1.0, 1.0, 1.0])
    ended = [e for e in recorder.task_events() if e.state.is_final]
    assert len(ended) == 4 and all(e.cached for e in ended)  # the second run ran no body
    assert recorder.of_type(TaskWaiting) == []
    assert fake_clock.slept == slept  # and waited for no rate


def test_a_run_stopped_while_tasks_wait_for_their_rate_cancels_them(fake_clock):
    started: list[int] = []

    @task(rate="1/s")
    async def fetch(i):
        started.append(i)

    @task
    async def boom():
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    record = nborch.run(Parallel(*(fetch(i) for i in range(20)), boom(), fail_fast=True), clock=fake_clock,
                        store=False)

    assert record.states["boom"] is TaskState.FAILED
    assert len(started) < 20
    assert sum(s is TaskState.CANCELLED for s in record.states.values()) == 20 - len(started)


def test_sync_tasks_keep_to_their_rate_too(fake_clock, recorder):
    @task(rate="4/s")
    def work(i):
        return i

    record = nborch.run(Parallel(*(work(i) for i in range(5))), clock=fake_clock, store=False, on_event=recorder)

    assert record.value == list(range(5))
    # when each attempt started, on the loop (a thread's body may read the fake clock later)
    starts = [since(fake_clock, e.time) for e in recorder.task_events() if e.state is TaskState.RUNNING]
    assert sorted(starts) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


FORMS = r"such as '10/s', '100/min' or '5000/h' \(also '2/5s': 2 starts every 5 seconds\)"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10", rf"^task 'fetch': rate= expects starts per period {FORMS}, got '10'\.$"),
        ("ten/s", rf"^task 'fetch': rate= expects starts per period {FORMS}, got 'ten/s'\.$"),
        ("10 per s", rf"got '10 per s'\.$"),
        ("", rf"got ''\.$"),
        (10, rf"^task 'fetch': rate= expects starts per period {FORMS}, got 10\. Write rate='10/s'\.$"),
        (True, rf"^task 'fetch': rate= expects starts per period {FORMS}, got True\.$"),
        ("10/day", r"^task 'fetch': rate= got '10/day': its period must be in seconds \(s\), minutes \(min\) or "
                   r"hours \(h\), not 'day'\. For 10 a day, write '10/24h'\.$"),
        ("10/week", r"^task 'fetch': rate= got '10/week': its period must be in seconds"),
        ("10/ms", r"not 'ms'\."),
        ("0/s", r"^task 'fetch': rate= needs a count and a period above zero, got '0/s' \(leave rate= out for no "
                r"limit\)\.$"),
        ("-1/s", r"^task 'fetch': rate= needs a count and a period above zero, got '-1/s'"),
        ("10/0s", r"^task 'fetch': rate= needs a count and a period above zero, got '10/0s'"),
        ("10/-2min", r"needs a count and a period above zero, got '10/-2min'"),
    ],
)
def test_a_bad_rate_is_a_definition_error_naming_the_task(value, message):
    def fetch():
        pass

    with pytest.raises(DefinitionError, match=message):
        task(rate=value)(fetch)  # named after its function
    with pytest.raises(DefinitionError, match=message):
        task(rate=value, name="fetch")(lambda: None)
    with pytest.raises(DefinitionError, match=message):
        Task(fetch, rate=value)
    with pytest.raises(DefinitionError, match=message):
        task(fetch).with_options(rate=value)


def test_rate_by_must_name_a_parameter():
    with pytest.raises(DefinitionError, match=r"^task 'fetch': rate_by= names 'hots', but fetch\(\) has no such "
                                              r"parameter\. Did you mean 'host'\? Its parameters: host, path\.$"):

        @task(rate="1/s", rate_by=("hots",))
        def fetch(host, path):
            pass


def test_rate_by_without_rate_is_a_definition_error():
    with pytest.raises(DefinitionError, match=r"rate_by= needs rate= as well"):

        @task(rate_by="host")
        def fetch(host):
            pass


def test_after_a_retry_after_the_retry_still_waits_for_the_rate(fake_clock):
    starts: list[float] = []

    @task(rate="1/s", retry=RetryPolicy(max_attempts=2, retry_after=True))
    async def fetch():
        starts.append(since(fake_clock))
        if len(starts) == 1:
            raise Throttled(0.25)

    nborch.run(fetch(), clock=fake_clock, store=False)

    assert starts == pytest.approx([0.0, 1.0])
    assert fake_clock.slept == pytest.approx([0.25, 0.75])

"""Issue 11, items 12 and 13: rate limits (rate=, rate_by=, RetryPolicy(retry_after=True)) and
weighted slots in named pools (slots=, pool=, max_concurrency={...}). Real engine, fake clock."""

from __future__ import annotations

import asyncio
import math
import threading
import time

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


def test_the_live_view_shows_tasks_waiting_for_their_rate_as_waiting_not_running(fake_clock):
    from nborch.display.state import RunView

    view = RunView()
    inside: set[str] = set()  # tasks whose body has started and not returned
    seen: list[tuple[set[str], set[str]]] = []
    sleep = fake_clock.sleep

    async def probing_sleep(seconds):  # a task waits for its rate: what does the view show?
        running = {name for name, st in view.tasks.items() if st.state is TaskState.RUNNING}
        seen.append((running, set(inside)))
        await sleep(seconds)

    fake_clock.sleep = probing_sleep

    @task(rate="1/s")
    async def fetch(name):
        inside.add(name)
        try:
            for _ in range(3):
                await asyncio.sleep(0)
        finally:
            inside.discard(name)

    names = ["fetch", "fetch[2]", "fetch[3]", "fetch[4]"]
    nborch.run(Parallel(*(fetch(n) for n in names)), clock=fake_clock, store=False, on_event=[view])

    assert len(seen) == 3  # fetch[2], [3] and [4] each waited for their turn
    for running, bodies in seen:  # running in the view: exactly the tasks whose body runs
        assert running == bodies
    assert seen[0] == ({"fetch"}, {"fetch"})


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


# -- slots= and pools ----------------------------------------------------------------------------


class Slots:
    """Sums the slots of the bodies running at once; records any moment above a pool's size."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.used: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.count = 0
        self.peak_count = 0

    def enter(self, pool: str, slots: int) -> None:
        with self.lock:
            self.used[pool] = self.used.get(pool, 0) + slots
            self.peak[pool] = max(self.peak.get(pool, 0), self.used[pool])
            self.count += 1
            self.peak_count = max(self.peak_count, self.count)

    def exit(self, pool: str, slots: int) -> None:
        with self.lock:
            self.used[pool] -= slots
            self.count -= 1


def worker(gauge: Slots, *, slots: int = 1, pool: str | None = None, name: str = "work", log=None):
    async def work(i):
        gauge.enter(pool or "default", slots)
        if log is not None:
            log.append(i)
        try:
            for _ in range(5):  # long enough for everything that fits to be inside too
                await asyncio.sleep(0)
            return i
        finally:
            gauge.exit(pool or "default", slots)

    work.__name__ = name
    return task(work, slots=slots, pool=pool) if (slots != 1 or pool) else task(work)


def test_slots_take_that_many_of_max_concurrency():
    gauge = Slots()
    big = worker(gauge, slots=2)

    assert Parallel(*(big(i) for i in range(6))).run(max_concurrency=4, store=False) == list(range(6))
    assert gauge.peak == {"default": 4}
    assert gauge.peak_count == 2


def test_small_and_big_tasks_share_a_pool_by_their_slots():
    gauge = Slots()
    small, big = worker(gauge, name="small"), worker(gauge, slots=3, name="big")

    flow = Parallel(*(t(i) for i in range(6) for t in (small, big)))
    assert nborch.run(flow, max_concurrency=4, store=False).ok
    assert gauge.peak == {"default": 4}


def test_a_named_pool_caps_its_tasks_and_takes_no_default_slot():
    gauge = Slots()
    gpu = worker(gauge, pool="gpu", name="train")
    cpu = worker(gauge, name="prep")

    record = nborch.run(Parallel(*(gpu(i) for i in range(3)), *(cpu(i) for i in range(6))),
                        max_concurrency={"default": 3, "gpu": 1}, store=False)

    assert record.ok
    assert gauge.peak == {"gpu": 1, "default": 3}
    assert gauge.peak_count == 4  # a gpu task runs beside three default ones


def test_slots_count_within_their_own_pool():
    gauge = Slots()
    two = worker(gauge, pool="gpu", slots=2, name="two")
    one = worker(gauge, pool="gpu", name="one")

    flow = Parallel(*(t(i) for i in range(4) for t in (two, one)))
    assert nborch.run(flow, max_concurrency={"default": 1, "gpu": 3}, store=False).ok
    assert gauge.peak == {"gpu": 3}


def test_pools_without_a_default_leave_other_tasks_unlimited():
    gauge = Slots()
    plain = worker(gauge)
    assert nborch.run(Parallel(*(plain(i) for i in range(10))), max_concurrency={"gpu": 1}, store=False).ok
    assert gauge.peak == {"default": 10}


def test_slots_without_a_limit_limit_nothing():
    gauge = Slots()
    big = worker(gauge, slots=3)
    assert nborch.run(Parallel(*(big(i) for i in range(5))), store=False).ok
    assert gauge.peak_count == 5


def test_parallel_and_task_limits_count_tasks_not_slots():
    gauge = Slots()
    big = worker(gauge, slots=2)

    assert nborch.run(Parallel(*(big(i) for i in range(6)), limit=2), max_concurrency=8, store=False).ok
    assert gauge.peak_count == 2  # two tasks of two slots: limit=2 counts tasks
    assert gauge.peak == {"default": 4}


def test_a_big_task_starts_before_the_small_ones_queued_after_it():
    gauge = Slots()
    log: list[str] = []
    small = worker(gauge, name="small", log=log)
    big = worker(gauge, slots=4, name="big", log=log)

    flow = Parallel(*(small(f"s{i}") for i in range(3)), big("big"), *(small(f"s{i}") for i in range(3, 10)))
    assert nborch.run(flow, max_concurrency=4, store=False).ok

    # with one slot free, s3 could have started beside s0-s2; it waits behind the big task
    assert log == ["s0", "s1", "s2", "big", *(f"s{i}" for i in range(3, 10))]
    assert gauge.peak == {"default": 4}


def test_a_stream_of_small_tasks_cannot_pass_a_big_one_forever():
    gauge = Slots()
    log: list[str] = []
    big = worker(gauge, slots=4, name="big", log=log)

    @task
    async def small(i):
        gauge.enter("default", 1)
        log.append(f"s{i}")
        try:
            for _ in range(3):
                await asyncio.sleep(0)
        finally:
            gauge.exit("default", 1)

    @task
    async def feeder():  # keeps the pool busy: a new small task joins as each one leaves
        calls = [asyncio.ensure_future(small(i)) for i in range(3)]
        await asyncio.sleep(0)
        calls.append(asyncio.ensure_future(big("big")))
        calls += [asyncio.ensure_future(small(i)) for i in range(3, 30)]
        await asyncio.gather(*calls)

    record = nborch.run(feeder(), max_concurrency=4, store=False)

    assert record.ok
    assert log.index("big") <= 3  # after the smalls already in, before any that came after it
    assert gauge.peak == {"default": 4}


def test_slots_held_by_a_big_task_that_is_cancelled_go_to_the_next_in_line():
    gate = asyncio.Event()

    @task(pool="gpu")
    async def long():  # holds one gpu slot until `opener` (queued behind `big`) has run
        await gate.wait()

    @task(pool="gpu", slots=2)
    async def big():
        raise AssertionError("cancelled before it could start")

    @task
    async def boom():  # not in the gpu pool: it fails while `big` holds the free gpu slot
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    @task(pool="gpu")
    async def opener():
        gate.set()

    flow = Parallel(long(), Parallel(boom(), big(), fail_fast=True), opener())
    record = nborch.run(flow, max_concurrency={"gpu": 2}, store=False)

    assert record.states == {"long": TaskState.SUCCEEDED, "boom": TaskState.FAILED, "big": TaskState.CANCELLED,
                             "opener": TaskState.SUCCEEDED}


def test_a_task_waiting_for_its_children_gives_its_slots_back():
    @task(slots=4)
    async def child(i):
        return i

    @task(slots=4)
    async def parent():
        return await Parallel(child(1), child(2))

    assert parent().run(max_concurrency=4, store=False) == [1, 2]


def test_a_retried_task_takes_its_slots_again():
    gauge = Slots()
    failures = [ConnectionError("once")]

    @task(slots=3, retries=1, retry_delay=0.0)
    async def flaky():
        gauge.enter("default", 3)
        try:
            await asyncio.sleep(0)
            if failures:
                raise failures.pop()
        finally:
            gauge.exit("default", 3)

    other = worker(gauge, slots=2, name="other")
    record = nborch.run(Parallel(flaky(), *(other(i) for i in range(4))), max_concurrency=4, store=False)
    assert record.ok
    assert gauge.peak["default"] <= 4


def test_sync_tasks_take_their_slots_too():
    used = []
    lock = threading.Lock()
    inside = [0]

    @task(slots=2)
    def heavy(i):
        with lock:
            inside[0] += 2
            used.append(inside[0])
        time.sleep(0.01)
        with lock:
            inside[0] -= 2
        return i

    assert Parallel(*(heavy(i) for i in range(6))).run(max_concurrency=5, store=False) == list(range(6))
    assert max(used) <= 4  # 5 slots: two tasks of 2 at once, never three


# -- bad input -----------------------------------------------------------------------------------


def test_a_task_in_an_unknown_pool_fails_before_anything_runs():
    ran: list[int] = []

    @task(pool="gpus")
    def train(i):
        ran.append(i)

    @task
    def prep():
        ran.append(0)

    with pytest.raises(DefinitionError, match=r"^task 'train' runs in pool 'gpus', but the run has no such pool "
                                              r"\(its pools: 'default', 'gpu'\)\. Did you mean 'gpu'\? Give its "
                                              r"size: max_concurrency=\{'default': 8, 'gpu': 1, 'gpus': 1\}\.$"):
        nborch.run(DAG(prep(), train(1)), max_concurrency={"default": 8, "gpu": 1}, store=False)
    assert ran == []


@pytest.mark.parametrize("mc", [None, 4])
def test_a_pool_must_be_given_its_size(mc):
    @task(pool="gpu")
    def train():
        pass

    with pytest.raises(DefinitionError, match=r"^task 'train' runs in pool 'gpu', but the run has no such pool"):
        train().run(max_concurrency=mc, store=False)


def test_the_default_pool_may_be_named():
    @task(pool="default", slots=2)
    def train():
        return 1

    assert train().run(max_concurrency=2, store=False) == 1
    assert train().run(store=False) == 1


def test_more_slots_than_the_pool_has_fail_before_anything_runs():
    ran: list[int] = []

    @task(slots=4)
    def train():
        ran.append(1)

    with pytest.raises(DefinitionError, match=r"^task 'train' takes slots=4, but pool 'default' has only 2: it "
                                              r"could never start\. Lower slots= or make the pool bigger "
                                              r"\(max_concurrency=\{'default': 4\}\)\.$"):
        train().run(max_concurrency=2, store=False)
    assert ran == []


def test_a_child_task_in_an_unknown_pool_fails_its_caller_only():
    @task(pool="gpu")
    async def child():
        return 1

    @task
    async def parent():
        return await child()

    @task
    async def sibling():
        return 2

    record = nborch.run(Parallel(parent(), sibling()), store=False)

    assert record.states == {"parent": TaskState.FAILED, "sibling": TaskState.SUCCEEDED}
    assert isinstance(record.errors["parent"], DefinitionError)
    assert "runs in pool 'gpu'" in str(record.errors["parent"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"slots": 0}, r"^task 'train': slots= expects an integer >= 1 \(how many slots of its pool one call "
                       r"takes\), got 0\. Write slots=2\.$"),
        ({"slots": 1.5}, r"^task 'train': slots= expects an integer >= 1 .*, got 1\.5\."),
        ({"slots": True}, r"^task 'train': slots= expects an integer >= 1 .*, got True\."),
        ({"slots": "2"}, r"^task 'train': slots= expects an integer >= 1 .*, got '2'\."),
        ({"pool": ""}, r"^task 'train': pool= expects a pool's name, got ''\. Write pool=\"gpu\""),
        ({"pool": 3}, r"^task 'train': pool= expects a pool's name, got 3\."),
    ],
)
def test_bad_slots_or_pool_are_definition_errors_naming_the_task(options, message):
    def train():
        pass

    with pytest.raises(DefinitionError, match=message):
        task(**options)(train)
    with pytest.raises(DefinitionError, match=message):
        Task(train, **options)


@pytest.mark.parametrize(
    ("mc", "message"),
    [
        ({"gpu": 0}, r"^max_concurrency=: pool 'gpu' expects a size >= 1 \(or None for no limit\), got 0$"),
        ({"gpu": 1.5}, r"^max_concurrency=: pool 'gpu' expects a size >= 1 .*, got 1\.5$"),
        ({"": 1}, r"^max_concurrency= names pools with non-empty strings, got '' in \{'': 1\}$"),
        ("4", r"^max_concurrency= expects an integer >= 1 or None, got '4' \(or pool sizes by name: "
              r"max_concurrency=\{'default': 8, 'gpu': 1\}\)$"),
        (0, r"^max_concurrency= expects an integer >= 1 or None, got 0"),
    ],
)
def test_bad_max_concurrency_is_a_definition_error(mc, message):
    with pytest.raises(DefinitionError, match=message):
        nborch.run(Task(lambda: 1), max_concurrency=mc, store=False)


def test_a_pool_of_none_has_no_limit():
    gauge = Slots()
    gpu = worker(gauge, pool="gpu", slots=2)
    assert nborch.run(Parallel(*(gpu(i) for i in range(5))), max_concurrency={"gpu": None}, store=False).ok
    assert gauge.peak_count == 5


# -- a property: pools never overflow, and every run ends ------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_random_pools_slots_retries_and_children_never_overflow_and_always_finish(seed, fake_clock):
    """Random pool sizes and slot weights, bodies of random length, failures retried after a
    back-off (which gives the slots back), tasks that wait for child tasks (which does too):
    at every moment the slots of the bodies running in a pool sum to at most its size, and
    every task ends as its failures say (no deadlock, nothing lost)."""
    import random

    rnd = random.Random(seed)
    sizes = {name: rnd.randint(1, 4) for name in ("default", "gpu", "io")}
    gauge = Slots()
    fails: dict[str, int] = {}  # task -> failures before it succeeds

    def make(name: str, pool: str, slots: int, steps: int, child=None):
        async def body():
            gauge.enter(pool, slots)
            try:
                for _ in range(steps):
                    await asyncio.sleep(0)
            finally:
                gauge.exit(pool, slots)
            if child is not None:  # outside its slots' count: waiting for a child gives them back
                await child()
            if fails.get(name, 0) > 0:
                fails[name] -= 1
                raise ConnectionError(f"{name} failed")
            return name

        body.__name__ = name
        options: dict = {"name": name, "retries": 2, "retry_delay": rnd.choice([0.0, 0.5])}
        if pool != "default":
            options["pool"] = pool
        if slots != 1:
            options["slots"] = slots
        return task(body, **options)

    nodes = []
    for i in range(rnd.randint(0, 30)):
        pool = rnd.choice(list(sizes))
        slots = rnd.randint(1, sizes[pool])
        name = f"t{i}"
        fails[name] = rnd.choice([0, 0, 0, 1, 2])
        child = None
        if rnd.random() < 0.2:
            cpool = rnd.choice(list(sizes))
            child = make(f"{name}_child", cpool, rnd.randint(1, sizes[cpool]), rnd.randint(0, 4))
        nodes.append(make(name, pool, slots, rnd.randint(0, 6), child)())
    record = nborch.run(Parallel(*nodes), max_concurrency=sizes, clock=fake_clock, store=False)

    assert record.ok, record.errors
    assert sorted(record.value) == sorted(f"t{i}" for i in range(len(nodes)))
    for pool, peak in gauge.peak.items():
        assert peak <= sizes[pool], (pool, peak, sizes)


# -- mapped items share their function's rate and pool ------------------------------------------


def test_fifty_mapped_items_share_their_functions_rate(fake_clock, recorder):
    starts: dict[int, float] = {}

    @task(rate="20/s")
    async def fetch(i):
        starts[i] = since(fake_clock)
        return i * 2

    record = nborch.run(fetch.map(range(50)), clock=fake_clock, store=False, on_event=recorder)

    assert record.value == [i * 2 for i in range(50)]
    assert sorted(starts.values()) == pytest.approx([i * 0.05 for i in range(50)])
    assert [r.state for r in record.items("fetch")] == [TaskState.SUCCEEDED] * 50
    # every item but the first waited for its turn, each published as waiting, not running
    assert sorted(w.task for w in recorder.of_type(TaskWaiting)) == sorted(f"fetch:{i}" for i in range(1, 50))


def test_items_of_a_dynamic_map_and_plain_calls_share_one_rate(fake_clock):
    starts: list[float] = []

    @task
    def ids():
        return list(range(5))

    @task(rate="2/s")
    async def fetch(i):
        starts.append(since(fake_clock))
        return i

    record = nborch.run(Parallel(fetch.map(ids()), fetch(99)), clock=fake_clock, store=False)

    assert record.ok
    assert sorted(starts) == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])


def test_rate_by_holds_per_value_across_mapped_items(fake_clock):
    starts: dict[str, list[float]] = {"a": [], "b": []}

    @task(rate="1/s", rate_by="host")
    async def fetch(host, path):
        starts[host].append(since(fake_clock))

    record = nborch.run(fetch.product(host=["a", "b"], path=range(3)), clock=fake_clock, store=False)

    assert record.ok
    for times in starts.values():
        assert len(times) == 3
        assert all(later - earlier >= 1.0 - 1e-9 for earlier, later in zip(times, times[1:]))


def test_mapped_items_take_their_slots_of_their_functions_pool():
    gauge = Slots()
    train = worker(gauge, pool="gpu", slots=2, name="train")
    prep = worker(gauge, name="prep")

    record = nborch.run(Parallel(train.map(range(10)), prep.map(range(10))),
                        max_concurrency={"default": 2, "gpu": 4}, store=False)

    assert record.ok
    assert [r.state for r in record.items("train")] == [TaskState.SUCCEEDED] * 10
    assert gauge.peak == {"gpu": 4, "default": 2}


def test_a_mapped_task_in_an_unknown_pool_fails_before_anything_runs():
    ran: list[str] = []

    @task
    def ids():
        ran.append("ids")
        return [1, 2]

    @task(pool="gpus")
    def train(i):
        ran.append(f"train {i}")

    with pytest.raises(DefinitionError, match=r"^task 'train' runs in pool 'gpus', but the run has no such pool"):
        nborch.run(train.map(ids()), max_concurrency={"gpu": 1}, store=False)
    assert ran == []

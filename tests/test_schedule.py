"""Scheduling: ``nborch.schedule(node, every=... | cron=..., times=...)``.

No racy sleeps: a run that must overlap the next tick blocks on an event the test releases
only after it has seen the skipped tick, and waits for conditions are bounded polls. Cron
runs on a manual clock whose sleeps end only when the test advances it.
"""

from __future__ import annotations

import _thread
import asyncio
import datetime
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import nborch
from nborch import DefinitionError, NborchError, Sequence, TaskState, task
from nborch.runtime.schedule import Schedule, active_schedules, cancel_all, schedule

pytestmark = pytest.mark.timeout(30)

BOUND = 10.0  # seconds: the most any wait here may take before the test fails


def until(condition, what: str, bound: float = BOUND) -> None:
    """Poll ``condition`` from a thread (bounded); fail naming ``what``."""
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


async def until_async(condition, what: str, bound: float = BOUND) -> None:
    """``until`` on the loop: yields to the schedule between checks."""
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


class ManualClock:
    """A scheduler clock in epoch seconds whose ``sleep`` ends only when ``advance`` gets there."""

    def __init__(self, start: float) -> None:
        self.time = start
        self.sleeps: list[float] = []
        self._wakers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        future = asyncio.get_running_loop().create_future()
        self._wakers.append((self.time + seconds, future))
        await future

    def advance(self, seconds: float) -> None:
        self.time += seconds
        for due, future in list(self._wakers):
            if due <= self.time:
                self._wakers.remove((due, future))
                if not future.done():
                    future.set_result(None)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NBORCH_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture(autouse=True)
def _no_leftover_schedules():
    yield
    left = active_schedules()
    cancel_all()
    for s in left:
        s._done.wait(BOUND)
    assert not left, f"a test left schedules running: {left}"


def history_rows(name: str) -> list[nborch.Run]:
    return [r for r in nborch.history(limit=None) if r.name == name]


# -- overlap, times, history ---------------------------------------------------------------------


def test_three_runs_under_a_second_apart_with_an_overlapping_run_skipped(home):
    release = threading.Event()
    calls: list[int] = []

    @task(name="overlap")
    def work():
        calls.append(1)
        if len(calls) == 1:  # the first run outlasts the interval until the test lets it go
            assert release.wait(BOUND)
        return len(calls)

    h = schedule(work, every=0.05, times=3)
    assert h.mode == "thread" and h.running
    # the first run's body may start after the first skipped tick (a run takes a while to get
    # going on a loaded machine): wait for both
    until(lambda: calls and h.skipped, "the first run's body and a tick skipped while it goes")
    assert len(calls) == 1 and h.runs == []  # skipped, not piled up
    release.set()
    assert h.wait(BOUND) is True
    assert not h.running
    runs = h.runs
    assert [r.value for r in runs] == [1, 2, 3]  # times= counts runs, not skipped ticks
    assert all(r.ok for r in runs)
    skipped = h.skipped
    assert skipped == sorted(skipped)
    # the first skipped tick fell before the first run ended; ticks sit on the interval's grid
    assert runs[0].started - 1 < skipped[0] < runs[0].finished
    for t in skipped:
        offset = t - skipped[0]
        assert abs(offset - round(offset / 0.05) * 0.05) < 1e-4  # epoch floats: ~1e-7 s apart
    # the history has the runs and, as state "skipped", the ticks
    rows = history_rows("overlap")
    assert sorted(r.id for r in rows if r.recorded_state == "succeeded") == sorted(r.id for r in runs)
    skip_rows = [r for r in rows if r.recorded_state == "skipped"]
    assert sorted(r.started for r in skip_rows) == pytest.approx(skipped)
    assert all(r.states == {} and r.finished == 0.0 for r in skip_rows)
    assert repr(h) == "<Schedule of overlap every 0.05s (times=3): done; 3 runs, " f"{len(skipped)} skipped>"


def test_times_counts_only_real_runs_and_the_schedule_then_ends(home):
    release = threading.Event()
    starts: list[float] = []

    @task(name="counted")
    def work():
        starts.append(time.time())
        if len(starts) == 1:
            assert release.wait(BOUND)

    h = schedule(work, every=0.02, times=2)
    until(lambda: len(h.skipped) >= 2, "two skipped ticks")
    release.set()
    assert h.wait(BOUND)
    assert len(h.runs) == 2 and len(starts) == 2
    assert len(h.skipped) >= 2
    # nothing starts after the end
    time.sleep(0.06)
    assert len(starts) == 2


def test_store_false_records_neither_runs_nor_skipped_ticks(home):
    release = threading.Event()

    @task(name="unrecorded")
    def work():
        release.wait(BOUND)

    h = schedule(work, every=0.02, times=2, store=False)
    until(lambda: h.skipped, "a skipped tick")
    release.set()
    assert h.wait(BOUND)
    assert len(h.runs) == 2
    assert history_rows("unrecorded") == []


# -- cancel ---------------------------------------------------------------------------------------


def test_cancel_stops_the_schedule_and_cancels_the_run_in_progress(home):
    in_second = threading.Event()
    count: list[int] = []

    @task(name="quick")
    def quick():
        count.append(1)
        return len(count)

    @task(name="slow")
    async def slow(n):
        if n == 2:
            in_second.set()
            await asyncio.sleep(60)  # cancelled long before
        return n

    h = schedule(Sequence(quick(), slow()), every=0.03, name="cancelme")
    assert in_second.wait(BOUND)
    h.cancel()
    assert h.wait(BOUND) is True
    assert not h.running and h.cancelled
    first, second = h.runs
    assert first.ok
    assert second.cancelled and second.states["slow"] is TaskState.CANCELLED
    assert second.states == {"quick": TaskState.SUCCEEDED, "slow": TaskState.CANCELLED}
    assert len(count) == 2
    # no tick after cancel(): the schedule's thread is gone
    h._thread.join(BOUND)
    assert not h._thread.is_alive()
    assert len(count) == 2
    recorded = {r.id: r.recorded_state for r in history_rows("cancelme")}
    assert recorded[second.id] == "cancelled"
    skipped = len(h.skipped)
    assert repr(h) == f"<Schedule of cancelme every 0.03s: cancelled; 2 runs (1 not ok), {skipped} skipped>"
    h.cancel()  # again: nothing happens


def test_cancel_right_after_start_runs_nothing_or_cancels_it(home):
    @task
    async def idle():
        await asyncio.sleep(60)

    h = schedule(idle, every=1, store=False)
    h.cancel()
    assert h.wait(BOUND)
    assert all(r.cancelled for r in h.runs)


def test_cancel_before_the_loop_gets_to_it_still_ends_the_schedule():
    async def cell():
        h = schedule(noop, every=1, store=False)
        h.cancel()  # the schedule's task has not taken a step yet
        assert await asyncio.wait_for(h.wait_async(), BOUND) is True
        assert h.runs == [] and not h.running
        assert repr(h) == "<Schedule of noop every 1s: cancelled; 0 runs, 0 skipped>"

    asyncio.run(cell())


def test_ctrl_c_in_wait_cancels_the_schedule(home):
    started = threading.Event()

    @task
    async def forever():
        started.set()
        await asyncio.sleep(60)

    h = schedule(forever, every=1, store=False)
    assert started.wait(BOUND)
    def ctrl_c_once_waiting():
        main = threading.main_thread().ident
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(main)
            while frame is not None:
                if frame.f_code.co_name == "wait" and frame.f_code.co_filename.endswith("schedule.py"):
                    _thread.interrupt_main()
                    return
                frame = frame.f_back
            time.sleep(0.002)

    interrupter = threading.Thread(target=ctrl_c_once_waiting)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        h.wait()
    interrupter.join()
    assert not h.running and h.cancelled
    assert h.runs[-1].cancelled


# -- loop mode (a notebook cell) and script mode ---------------------------------------------------


def test_loop_mode_runs_in_the_background_while_the_cell_keeps_awaiting():
    @task(name="beat")
    async def beat():
        await asyncio.sleep(0)
        return "ok"

    async def cell():
        threads_before = threading.active_count()
        h = schedule(beat, every=0.02, times=3, store=False)
        assert h.mode == "loop" and h._thread is None
        assert threading.active_count() == threads_before  # an asyncio task, no thread
        with pytest.raises(NborchError, match=r"would block the event loop this schedule runs on"):
            h.wait()
        # the "cell" keeps doing its own awaits; the runs happen in between
        seen: list[int] = []
        steps = 0
        while h.running:
            await asyncio.sleep(0.001)
            steps += 1
            seen.append(len(h.runs))
        assert steps > 3
        assert 1 in seen and 2 in seen  # observed mid-schedule, between the cell's awaits
        runs = await h
        assert [r.value for r in runs] == ["ok", "ok", "ok"]
        assert await h.wait_async() is True
        return h

    h = asyncio.run(cell())
    assert not h.running


def test_loop_mode_cancel_and_loop_shutdown_cancel_the_run():
    async def cell():
        started = asyncio.Event()

        @task
        async def long():
            started.set()
            await asyncio.sleep(60)

        h = schedule(long, every=0.01, store=False)
        await asyncio.wait_for(started.wait(), BOUND)
        await until_async(lambda: len(h.skipped) >= 2, "skipped ticks while the run is going")
        assert await h.wait_async(timeout=0.01) is False
        h.cancel()
        assert await asyncio.wait_for(h.wait_async(), BOUND) is True
        (run,) = h.runs
        assert run.cancelled

        # a schedule left running when asyncio.run() ends is cancelled with the loop
        h2 = schedule(long, every=0.01, store=False)
        await asyncio.sleep(0)
        return h2

    h2 = asyncio.run(cell())
    assert not h2.running


def test_script_mode_in_a_real_script_never_imports_croniter(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(
        """
        import json, sys
        import nborch
        from nborch.runtime.schedule import schedule

        def pipeline():
            return 42

        handle = schedule(pipeline, every=0.02, times=3)
        handle.wait()
        print(json.dumps({
            "values": [r.value for r in handle.runs],
            "mode": handle.mode,
            "croniter": "croniter" in sys.modules,
            "recorded": sorted(r.recorded_state for r in nborch.history(limit=None)),
            "skipped": len(handle.skipped),
        }))
        """
    ))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=30, env={**os.environ, "NBORCH_HOME": str(tmp_path / "h")})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # a cold first run (imports, opening the store) may outlast 20 ms: then a tick is skipped
    assert out["recorded"] == ["skipped"] * out["skipped"] + ["succeeded"] * 3
    del out["recorded"], out["skipped"]
    assert out == {"values": [42, 42, 42], "mode": "thread", "croniter": False}


# -- cron ------------------------------------------------------------------------------------------


def test_cron_follows_the_expression_on_a_manual_clock():
    pytest.importorskip("croniter")
    # 12:01:30 local time; "*/5" ticks are at :05, :10 ... in any real time zone (offsets are
    # whole quarters of an hour), so the sleeps below do not depend on where the test runs
    start = datetime.datetime(2026, 1, 5, 12, 1, 30).timestamp()
    clock = ManualClock(start)

    async def cell():
        gate = asyncio.Event()
        n: list[int] = []

        @task(name="report")
        async def report():
            n.append(1)
            if len(n) == 1:
                await gate.wait()
            return len(n)

        h = schedule(report, cron="*/5 * * * *", times=3, clock=clock, store=False)
        await until_async(lambda: clock.sleeps, "the first sleep")
        # the first run starts at once, not at 12:05 (its body may take a moment to get going;
        # the clock stands still until the test advances it)
        await until_async(lambda: n, "the first run's body")
        assert clock.time == start and len(n) == 1
        assert clock.sleeps == [210.0]  # to 12:05:00
        assert h.next_due == start + 210
        clock.advance(210)  # 12:05: the first run is still going -> skipped
        await until_async(lambda: len(clock.sleeps) == 2, "the sleep after the skipped tick")
        assert h.skipped == [start + 210]
        assert clock.sleeps[1] == 300.0  # to 12:10:00
        gate.set()
        await until_async(lambda: len(h.runs) == 1, "the first run to end")
        clock.advance(300)  # 12:10: second run
        await until_async(lambda: len(h.runs) == 2, "the second run")
        assert clock.sleeps[2] == 300.0
        clock.advance(300)  # 12:15: third run, times reached
        runs = await asyncio.wait_for(h.wait_async(), BOUND) and h.runs
        assert [r.value for r in runs] == [1, 2, 3]
        assert h.skipped == [start + 210]
        assert len(clock.sleeps) == 3
        return h

    h = asyncio.run(cell())
    assert repr(h) == "<Schedule of report cron '*/5 * * * *' (times=3): done; 3 runs, 1 skipped>"


def test_ticks_missed_while_the_loop_was_blocked_each_start_a_run_or_are_skipped():
    """Woken late past several ticks: the first starts a run, the others are skipped.

    The second run is held until the test has seen the skips, then the test waits for it to
    finish before the next tick: a run still going at +40 (a slow machine) would skip that
    tick too, and the third run would wait for a +50 the test never reaches.
    """
    clock = ManualClock(1_000_000.0)
    release = threading.Event()
    calls = []

    def body():
        calls.append(len(calls) + 1)
        if len(calls) == 2:
            release.wait(BOUND)

    async def cell():
        h = schedule(body, every=10, times=3, clock=clock, store=False)
        await until_async(lambda: clock.sleeps, "the first sleep")
        await until_async(lambda: len(h.runs) == 1, "the first run")
        clock.advance(35)  # ticks at +10, +20 and +30 are all due now
        await until_async(lambda: len(clock.sleeps) == 2, "the next sleep")
        assert clock.sleeps[1] == 5.0  # to +40, on the grid
        assert h.skipped == [1_000_020.0, 1_000_030.0]
        release.set()
        await until_async(lambda: len(h.runs) == 2, "the second run")
        clock.advance(5)
        assert await asyncio.wait_for(h.wait_async(), BOUND)
        return h

    h = asyncio.run(cell())
    assert len(h.runs) == 3
    assert calls == [1, 2, 3]
    assert h.skipped == [1_000_020.0, 1_000_030.0]


# -- validation ----------------------------------------------------------------------------------


@task
def noop():
    return None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "schedule() needs every= (seconds between runs) or cron= (a cron expression, "
             "e.g. '*/5 * * * *')"),
        ({"every": 1, "cron": "* * * * *"},
         "schedule() takes one of every= (seconds) or cron= (an expression), not both"),
        ({"every": 0}, "every= expects a number of seconds > 0, got 0"),
        ({"every": -1.5}, "every= expects a number of seconds > 0, got -1.5"),
        ({"every": float("inf")}, "every= expects a number of seconds > 0, got inf"),
        ({"every": "60"}, "every= expects a number of seconds > 0, got '60'"),
        ({"every": True}, "every= expects a number of seconds > 0, got True"),
        ({"every": datetime.timedelta(0)}, "every= expects a number of seconds > 0, got 0.0"),
        ({"every": 1, "times": 0}, "times= expects an integer >= 1 or None, got 0"),
        ({"every": 1, "times": 2.0}, "times= expects an integer >= 1 or None, got 2.0"),
        ({"every": 1, "times": True}, "times= expects an integer >= 1 or None, got True"),
        ({"cron": 5}, "cron= expects a cron expression string such as '*/5 * * * *', got 5"),
        ({"every": 1, "run_id": "x"}, "schedule() gives every run an id of its own; run_id= cannot be set"),
        ({"every": 1, "max_concurency": 2},
         "schedule() got an unknown option 'max_concurency'. Did you mean 'max_concurrency'?"),
        ({"every": 1, "max_concurrency": 0}, "max_concurrency= expects an integer >= 1 or None, got 0"),
        ({"every": 1, "clock": object()}, "clock= expects an object with now() and async sleep(seconds)"),
    ],
)
def test_bad_arguments_raise_before_anything_runs(kwargs, message):
    before = len(active_schedules())
    with pytest.raises(DefinitionError) as info:
        schedule(noop, **kwargs)
    assert str(info.value).startswith(message)
    assert len(active_schedules()) == before


def test_a_bad_cron_expression_is_named():
    pytest.importorskip("croniter")
    with pytest.raises(DefinitionError) as info:
        schedule(noop, cron="61 * * * *")
    message = str(info.value)
    assert message.startswith("cron= expression '61 * * * *' is not valid (")
    assert message.endswith(
        "). A cron expression has five fields, minute hour day-of-month month day-of-week, "
        "e.g. '*/5 * * * *'."
    )
    with pytest.raises(DefinitionError, match=r"^cron= expression 'every monday' is not valid"):
        schedule(noop, cron="every monday")


def test_cron_without_croniter_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "croniter", None)
    expected = r"^nborch.schedule\(cron=...\) needs the croniter package: pip install croniter$"
    with pytest.raises(ImportError, match=expected):
        schedule(noop, cron="* * * * *")


def test_a_bad_workflow_fails_at_schedule_time():
    @task(name="same")
    def a():
        return 1

    @task(name="same")
    def b():
        return 2

    with pytest.raises(DefinitionError):
        schedule(Sequence(a(), b()), every=1, store=False)
    assert active_schedules() == []


def test_a_broken_clock_stops_the_schedule_and_wait_raises_it():
    class Broken:
        def now(self):
            return 0.0

        async def sleep(self, seconds):
            raise RuntimeError("clock broke")

    h = schedule(noop, every=1, clock=Broken(), store=False)
    with pytest.raises(RuntimeError, match="clock broke"):
        h.wait(BOUND)
    assert not h.running
    assert h.runs == []  # the first run, created just before, was cancelled before it began
    assert "stopped by RuntimeError: clock broke" in repr(h)


def test_every_accepts_a_timedelta_and_the_handle_type_is_exported():
    h = schedule(noop, every=datetime.timedelta(milliseconds=20), times=2, store=False)
    assert isinstance(h, Schedule)
    assert h.wait(BOUND)
    assert len(h.runs) == 2

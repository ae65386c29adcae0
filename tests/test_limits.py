"""Issue 11, items 12 and 13: rate limits (rate=, rate_by=, RetryPolicy(retry_after=True)) and
weighted slots in named pools (slots=, pool=, max_concurrency={...}). Real engine, fake clock."""

from __future__ import annotations

import math

import pytest

import nborch
from nborch import DefinitionError, RetryPolicy, Task, TaskState

pytestmark = pytest.mark.timeout(30)

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

"""Retry and circuit-breaker policies: small values and pure state machines.

They only decide and record; the engine sleeps, runs and publishes the events.
"""

from __future__ import annotations

import enum
import itertools
import math
import random
import threading
from dataclasses import dataclass, field
from typing import cast

from .clock import Clock, SystemClock
from .errors import CircuitOpenError, DefinitionError

__all__ = ["BreakerState", "CircuitBreaker", "RetryPolicy"]


def is_seconds(value: object, *, zero: bool = False) -> bool:
    """True for a finite number of seconds (> 0, or >= 0 with ``zero``); never for a bool or NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return value >= 0 if zero else value > 0


def _exception_types(retry_on: object) -> tuple[type[BaseException], ...]:
    types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise DefinitionError(
                f"RetryPolicy(retry_on=...) expects exception classes, got {t!r}. "
                "Write retry_on=(ConnectionError, TimeoutError)."
            )
    return cast("tuple[type[BaseException], ...]", types)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failing task is tried again.

    ``max_attempts`` counts the first try. The wait before attempt ``n + 1`` is
    ``delay * backoff ** (n - 1)``, capped at ``max_delay``, plus up to ``jitter`` seconds
    drawn uniformly at random. Only exceptions that are instances of ``retry_on`` are retried.

    ``retry_after=True``: when the exception carries ``retry_after`` (seconds, an int or float,
    as a server's ``Retry-After`` header says), that wait replaces the computed one, without
    jitter; a negative one is 0 (retry at once), and one that is missing, None, not a number, a
    bool, NaN or infinite leaves the computed wait. It is capped at ``max_delay`` when that is
    given, else waited in full: give ``max_delay=`` to bound what a server may ask. It says only
    how long to wait; whether to retry is still ``max_attempts`` and ``retry_on``, and a task
    with ``rate=`` then also waits for its rate.
    """

    max_attempts: int = 3
    delay: float = 1.0
    backoff: float = 2.0
    max_delay: float | None = None
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    retry_after: bool = False
    _random: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise DefinitionError(
                f"RetryPolicy(max_attempts=...) expects an integer >= 1, got {self.max_attempts!r}"
            )
        for name in ("delay", "backoff", "jitter", "max_delay"):
            value = getattr(self, name)
            if value is None and name == "max_delay":
                continue
            if not is_seconds(value, zero=True):
                expects = "must be >= 0" if name == "max_delay" else "expects a number >= 0"
                why = ""
                if isinstance(value, float) and math.isnan(value):
                    why = " (NaN is not a number of seconds)"
                elif value == math.inf:
                    why = " (it must be finite: a task would wait forever)"
                raise DefinitionError(f"RetryPolicy({name}=...) {expects}, got {value!r}{why}")
        object.__setattr__(self, "retry_on", _exception_types(self.retry_on))
        if not isinstance(self.retry_after, bool):
            raise DefinitionError(
                f"RetryPolicy(retry_after=...) expects True or False, got {self.retry_after!r} "
                "(True: wait as long as the exception's retry_after attribute says)"
            )

    @classmethod
    def from_retries(cls, retries: int, retry_delay: float = 0.0) -> RetryPolicy:
        """The ``retries=N, retry_delay=s`` shortcut: N more attempts, exponential back-off."""
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise DefinitionError(f"retries= expects an integer >= 0, got {retries!r}")
        return cls(max_attempts=retries + 1, delay=retry_delay, backoff=2.0)

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """True if a failure of ``attempt`` (1-based) with ``error`` earns another try."""
        return attempt < self.max_attempts and isinstance(error, self.retry_on)

    def delay_for(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) that raised ``error``."""
        if self.retry_after and error is not None:
            asked = retry_after_of(error)
            if asked is not None:
                return min(asked, self.max_delay) if self.max_delay is not None else asked
        try:
            wait = self.delay * self.backoff ** (attempt - 1)
        except OverflowError:  # a huge attempt number: the cap (if any) still holds
            wait = math.inf
        if self.max_delay is not None:
            wait = min(wait, self.max_delay)
        if self.jitter:
            wait += self._random.uniform(0, self.jitter)
        return float(wait)


def retry_after_of(error: BaseException) -> float | None:
    """The wait ``error.retry_after`` asks for, in seconds (>= 0), or None when it asks none."""
    try:
        value = getattr(error, "retry_after", None)
    except Exception:  # a property that raises asks nothing
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(float(value), 0.0)


class BreakerState(str, enum.Enum):
    """A circuit breaker's state."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


Transition = tuple[BreakerState, BreakerState]
_names = itertools.count(1)


class CircuitBreaker:
    """Stops calling what keeps failing (Nygard's circuit breaker).

    CLOSED: calls go through; ``fail_max`` consecutive failures open the circuit.
    OPEN: calls fail at once with ``CircuitOpenError`` until ``reset_timeout`` seconds passed.
    HALF_OPEN: one trial call goes through (others still fail fast); its success closes
    the circuit, its failure opens it again for another ``reset_timeout``.

    A breaker outlives runs and is safe to share between threads and coroutines. The methods
    return the transition they caused, if any, so the engine can publish a ``CircuitEvent``.
    """

    def __init__(
        self,
        fail_max: int = 5,
        reset_timeout: float = 60.0,
        name: str | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(fail_max, bool) or not isinstance(fail_max, int) or fail_max < 1:
            raise DefinitionError(f"CircuitBreaker(fail_max=...) expects an integer >= 1, got {fail_max!r}")
        if isinstance(reset_timeout, bool) or not isinstance(reset_timeout, int | float) or not reset_timeout >= 0:
            raise DefinitionError(
                f"CircuitBreaker(reset_timeout=...) expects seconds >= 0, got {reset_timeout!r}"
            )
        self.fail_max = fail_max
        self.reset_timeout = float(reset_timeout)
        self.name = name or f"breaker{next(_names)}"
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self._state.value}, "
            f"failure_count={self._failures}, fail_max={self.fail_max})"
        )

    @property
    def state(self) -> BreakerState:
        """The current state (an OPEN breaker whose timeout passed still reads OPEN until called)."""
        return self._state

    @property
    def failure_count(self) -> int:
        """Consecutive failures counted so far."""
        return self._failures

    def before_call(self) -> Transition | None:
        """Admit one call or raise ``CircuitOpenError``; may move OPEN -> HALF_OPEN."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return None
            if self._state is BreakerState.OPEN:
                left = self._opened_at + self.reset_timeout - self._clock.now()
                if left > 0:
                    raise CircuitOpenError(self.name, self._failures, left)
                self._trial_running = True
                return self._move(BreakerState.HALF_OPEN)
            if self._trial_running:  # HALF_OPEN: one trial at a time
                raise CircuitOpenError(self.name, self._failures, 0.0)
            self._trial_running = True
            return None

    def on_success(self) -> Transition | None:
        """Record a successful call."""
        with self._lock:
            self._failures = 0
            self._trial_running = False
            if self._state is not BreakerState.CLOSED:
                return self._move(BreakerState.CLOSED)
            return None

    def on_failure(self) -> Transition | None:
        """Record a failed call; may open the circuit."""
        with self._lock:
            self._failures += 1
            self._trial_running = False
            if self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED and self._failures >= self.fail_max
            ):
                self._opened_at = self._clock.now()
                return self._move(BreakerState.OPEN)
            return None

    def release(self) -> None:
        """Forget an admitted call that ended without an outcome (it was cancelled)."""
        with self._lock:
            self._trial_running = False

    def reset(self) -> Transition | None:
        """Close the circuit by hand."""
        with self._lock:
            self._failures = 0
            self._trial_running = False
            return self._move(BreakerState.CLOSED) if self._state is not BreakerState.CLOSED else None

    def _move(self, new: BreakerState) -> Transition:
        old, self._state = self._state, new
        return (old, new)

"""Task options: what ``@task(...)`` and ``Task(fn, ..., **options)`` can set, and their checks.

``make_options`` validates the options given on top of a base (a task function's), raising
``DefinitionError`` that names the option; ``check_for`` makes the checks that need the
function itself (``limit_by=``/``rate_by=`` name its parameters). A task that sets no option
shares ``DEFAULT_OPTIONS``, and one that sets only ``name=`` shares its task function's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import hooks
from .errors import DefinitionError
from .introspection import FnInfo, fn_name
from .limits import Rate, parse_rate
from .policies import CircuitBreaker, RetryPolicy, is_seconds
from .state import check_trigger_rule

__all__ = [
    "CHECKED_WITHOUT_FN", "DEFAULT_OPTIONS", "OPTION_NAMES", "TaskOptions", "check_for", "make_options",
]

@dataclass(frozen=True, slots=True)
class TaskOptions:
    """Everything ``@task(...)`` / ``Task(..., **options)`` can set, validated."""

    name: str | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None
    trigger_rule: str = "all_success"
    limit: int | None = None
    limit_by: tuple[str, ...] = ()
    rate: Rate | None = None  # starts per period, evenly spaced (nborch.limits)
    rate_by: tuple[str, ...] = ()
    slots: int = 1  # slots it takes of its pool
    pool: str | None = None  # a pool of max_concurrency={...}; None: "default"
    breaker: CircuitBreaker | None = None
    skip_if: Callable[..., Any] | None = None
    dedupe: bool = False
    cache: bool = False
    reuse: bool = True  # False: never reused by an incremental run (it reads the outside world)
    executor: Any = None  # None (threads for sync, the loop for async), "thread", "process", an Executor
    extra: Mapping[str, Any] = field(default_factory=dict)


OPTION_NAMES = frozenset(
    {"name", "retries", "retry_delay", "retry", "timeout", "trigger_rule", "limit", "limit_by",
     "rate", "rate_by", "slots", "pool", "breaker", "skip_if", "dedupe", "cache", "reuse", "executor"}
)


def _parameter_names(given: dict[str, Any], option: str, who: str) -> tuple[str, ...]:
    """``limit_by=`` / ``rate_by=``: one parameter name or several, as a tuple."""
    by = given[option]
    by = (by,) if isinstance(by, str) else tuple(by)
    if not all(isinstance(b, str) for b in by):
        raise DefinitionError(f"{who}{option}= expects parameter names, got {given[option]!r}")
    return by


def make_options(base: TaskOptions | None = None, **given: Any) -> TaskOptions:
    """Validate ``given`` options on top of ``base`` (raises DefinitionError, naming the option)."""
    opts = base or DEFAULT_OPTIONS  # (given no option, a task function shares the defaults too)
    changes: dict[str, Any] = {}
    who = f"task {given.get('name') or opts.name!r}: " if (given.get("name") or opts.name) else ""
    if "name" in given and given["name"] is not None:
        name = given["name"]
        if not isinstance(name, str) or not name:
            raise DefinitionError(f"{who}name= expects a non-empty string, got {name!r}")
        changes["name"] = name
    retry_delay = given.get("retry_delay")
    if retry_delay is not None and not is_seconds(retry_delay, zero=True):
        raise DefinitionError(f"{who}retry_delay= expects a finite number of seconds >= 0, got {retry_delay!r}")
    if given.get("retry") is not None:
        if not isinstance(given["retry"], RetryPolicy):
            raise DefinitionError(
                f"{who}retry= expects a RetryPolicy, got {given['retry']!r}. "
                "Write retry=RetryPolicy(max_attempts=3, delay=1.0)."
            )
        if given.get("retries") is not None or retry_delay is not None:
            raise DefinitionError(
                f"{who}give either retry=RetryPolicy(...) or retries=/retry_delay=, not both "
                "(put the delay in RetryPolicy(delay=...))"
            )
        changes["retry"] = given["retry"]
    elif given.get("retries") is not None:
        changes["retry"] = RetryPolicy.from_retries(given["retries"], retry_delay or 0.0)
    elif retry_delay is not None:
        if opts.retry is None:
            raise DefinitionError(
                f"{who}retry_delay= has no effect without retries=N. "
                f"Write retries=3, retry_delay={retry_delay!r}."
            )
        changes["retry"] = replace(opts.retry, delay=float(retry_delay))
    if given.get("timeout") is not None:
        t = given["timeout"]
        if not is_seconds(t):
            raise DefinitionError(
                f"{who}timeout= expects seconds > 0, got {t!r}"
                + (" (leave it out for no timeout)" if t == float("inf") else "")
            )
        changes["timeout"] = float(t)
    if given.get("trigger_rule") is not None:
        changes["trigger_rule"] = check_trigger_rule(given["trigger_rule"], task=given.get("name") or opts.name)
    if given.get("limit") is not None:
        lim = given["limit"]
        if isinstance(lim, bool) or not isinstance(lim, int) or lim < 1:
            raise DefinitionError(f"{who}limit= expects an integer >= 1, got {lim!r}")
        changes["limit"] = lim
    if given.get("limit_by") is not None:
        changes["limit_by"] = _parameter_names(given, "limit_by", who)
    if given.get("rate") is not None:
        try:
            changes["rate"] = parse_rate(given["rate"], who)
        except DefinitionError:
            if who:
                raise
            changes["rate"] = given["rate"]  # check_for raises, naming the task
    if given.get("rate_by") is not None:
        changes["rate_by"] = _parameter_names(given, "rate_by", who)
    if given.get("slots") is not None:
        changes["slots"] = given["slots"]  # checked by check_for, which can name the task
    if given.get("pool") is not None:
        changes["pool"] = given["pool"]
    if given.get("breaker") is not None:
        if not isinstance(given["breaker"], CircuitBreaker):
            raise DefinitionError(f"{who}breaker= expects a CircuitBreaker, got {given['breaker']!r}")
        changes["breaker"] = given["breaker"]
    if given.get("skip_if") is not None:
        if not callable(given["skip_if"]):
            raise DefinitionError(f"{who}skip_if= expects a callable, got {given['skip_if']!r}")
        changes["skip_if"] = given["skip_if"]
    if given.get("dedupe") is not None:
        changes["dedupe"] = bool(given["dedupe"])
    if given.get("cache") is not None:
        changes["cache"] = bool(given["cache"])
    if given.get("reuse") is not None:
        if not isinstance(given["reuse"], bool):
            raise DefinitionError(f"{who}reuse= expects True or False, got {given['reuse']!r}")
        changes["reuse"] = given["reuse"]
    if given.get("executor") is not None:
        changes["executor"] = hooks.check_executor(given["executor"], who)
    opts = replace(opts, **changes) if changes else opts
    if opts.limit_by and opts.limit is None:
        raise DefinitionError(f"{who}limit_by= needs limit=N as well (at most N at once per key)")
    if opts.rate_by and opts.rate is None:
        raise DefinitionError(f"{who}rate_by= needs rate= as well (rate='10/s': at most 10 starts a second per key)")
    return opts


DEFAULT_OPTIONS = TaskOptions()

# the options make_options checks alone; the others need check_for, which has the function
CHECKED_WITHOUT_FN = OPTION_NAMES - {"limit_by", "rate_by", "rate", "slots", "pool"}


def check_for(fn: Callable[..., Any], options: TaskOptions, info: FnInfo) -> None:
    """The checks of ``options`` that need the function: ``limit_by=``/``rate_by=`` name its
    parameters, and ``rate=``/``slots=``/``pool=`` errors name the task."""
    if options.rate is not None and not isinstance(options.rate, Rate):
        parse_rate(options.rate, f"task {options.name or fn_name(fn)!r}: ")  # raises: make_options kept it
    if type(options.slots) is not int or options.slots != 1 or options.pool is not None:
        name = options.name or fn_name(fn)
        slots = options.slots
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise DefinitionError(
                f"task {name!r}: slots= expects an integer >= 1 (how many slots of its pool one call "
                f"takes), got {slots!r}. Write slots=2."
            )
        if not isinstance(options.pool, str | None) or options.pool == "":
            raise DefinitionError(
                f"task {name!r}: pool= expects a pool's name, got {options.pool!r}. Write pool=\"gpu\" "
                "and run with max_concurrency={\"default\": 8, \"gpu\": 1}."
            )
    for option, names in (("limit_by", options.limit_by), ("rate_by", options.rate_by)):
        if names and info.signature is not None and not info.var_keyword:
            missing = [p for p in names if p not in info.params]
            if missing:
                from .errors import did_you_mean

                name = options.name or fn_name(fn)
                raise DefinitionError(
                    f"task {name!r}: {option}= names {missing[0]!r}, but {fn_name(fn)}() has no such "
                    f"parameter.{did_you_mean(missing[0], info.params)} "
                    f"Its parameters: {', '.join(info.params) or '(none)'}."
                )


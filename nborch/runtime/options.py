"""The options of ``run()`` and ``run_async()``, checked before anything runs, and the node they run.

``check_options`` raises ``DefinitionError`` naming the bad option (with a "did you mean")
or the bad value; ``check_schedule_options`` makes the same checks for the options
``schedule()`` passes to its runs.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import DefinitionError, did_you_mean
from ..core.slots import check_max_concurrency
from ..core.introspection import check_callable
from ..core.node import Node
from ..core.task import Task, TaskFunction

__all__ = ["RUN_OPTIONS", "SCHEDULE_RUN_OPTIONS", "as_node", "check_options", "check_schedule_options",
           "event_subscribers", "reuse_memory"]

RUN_OPTIONS = (
    "max_concurrency", "state", "on_event", "clock", "display", "run_id", "capture",
    "store", "force", "resume", "name", "executor", "durable", "reuse", "timeout",
)
# run_id= cannot be passed through: every run of a schedule needs an id of its own. clock= is
# schedule()'s own parameter (the scheduler's time source), so it never reaches the runs.
SCHEDULE_RUN_OPTIONS = tuple(o for o in RUN_OPTIONS if o not in ("run_id", "clock"))


def as_node(node: Any) -> Node:
    """``node`` as a Node: a Node as it is, a task function or a plain callable as a Task."""
    if isinstance(node, Node):
        return node
    if isinstance(node, TaskFunction):
        return Task(node)
    check_callable(node, "run()")
    return Task(node)


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` if they are run options with good values; else ``DefinitionError`` naming one."""
    _reject_unknown("run()", options, RUN_OPTIONS, RUN_OPTIONS)
    check_max_concurrency(options.get("max_concurrency"))
    timeout = options.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not timeout > 0):
        raise DefinitionError(f"timeout= expects a number of seconds > 0 or None, got {timeout!r}")
    if options.get("executor") is not None:
        from ..core.executors import check_executor

        check_executor(options["executor"])
    if options.get("durable") and options.get("store", True) in (False, None):
        raise DefinitionError("durable=True commits each task's row as it ends, but store=False records "
                              "nothing: drop one of the two.")
    if options.get("reuse") is not None:
        reuse_memory(options["reuse"])
    for s in event_subscribers(options):
        if not callable(s):
            raise DefinitionError(f"on_event= expects a callable or a list of callables, got {s!r}")
    return options


def check_schedule_options(options: dict[str, Any]) -> None:
    """The checks of ``check_options`` for the run options ``schedule()`` passes to its runs."""
    if "run_id" in options:
        raise DefinitionError("schedule() gives every run an id of its own; run_id= cannot be set")
    known = ("every", "cron", "times", "clock", *SCHEDULE_RUN_OPTIONS)
    _reject_unknown("schedule()", options, SCHEDULE_RUN_OPTIONS, known)
    check_options(options)  # the value checks run() makes (max_concurrency=, on_event=)


def _reject_unknown(caller: str, options: dict[str, Any], allowed: tuple[str, ...],
                    known: tuple[str, ...]) -> None:
    """``DefinitionError`` naming the first of ``options`` not ``allowed`` (a close match in ``known``)."""
    unknown = [k for k in options if k not in allowed]
    if unknown:
        bad = unknown[0]
        raise DefinitionError(
            f"{caller} got an unknown option {bad!r}.{did_you_mean(bad, known)} Options: {', '.join(known)}."
        )


def event_subscribers(options: dict[str, Any]) -> list[Any]:
    """The subscribers ``on_event=`` names: none, one, or a list (or tuple) of them."""
    on_event = options.get("on_event")
    if on_event is None:
        return []
    return list(on_event) if isinstance(on_event, list | tuple) else [on_event]


def reuse_memory(option: Any) -> Any:
    """The ``Memory`` that ``reuse=`` names for an incremental run: ``reuse=True``, the process's
    memory; a ``Memory``, that one; False/None: None (no reuse)."""
    if option is None or option is False:
        return None
    from ..core.reuse import Memory, default_memory

    if option is True:
        return default_memory
    if isinstance(option, Memory):
        return option
    raise DefinitionError(f"reuse= expects True, False or a nborch.reuse.Memory, got {option!r}")

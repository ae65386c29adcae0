"""The ``%%task`` line: its options, their parser and the checks on a task cell's name.

No IPython import: ``nborch graph`` parses ``%%task`` lines without it. The magic builds its
``magic_arguments`` (what ``%%task?`` shows) from ``TASK_ARGUMENTS`` and parses with
``parse_task_line``, as the command line does, so the two never drift apart.
"""

from __future__ import annotations

import argparse
import builtins
import keyword
import re
import shlex
from dataclasses import dataclass
from typing import Any

from ..core.errors import DefinitionError
from ..core.task_options import make_options

__all__ = ["TASK_ARGUMENTS", "TaskLine", "check_task_name", "parse_task_line", "task_options"]

# The options of ``%%task``, once: the magic's ``magic_arguments`` (its ``%%task?`` help) and the
# parser below (the magic and ``nborch run`` / ``nborch graph`` parse with it) are built from this.
TASK_ARGUMENTS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("name",), {"help": "the task's name (a Python identifier)"}),
    (("--after",), {"nargs": "+", "default": [], "metavar": "TASK", "help": "run after these tasks"}),
    (("--retries",), {"type": int, "default": None, "metavar": "N"}),
    (("--retry-delay",), {"type": float, "default": None, "metavar": "S"}),
    (("--timeout",), {"type": float, "default": None, "metavar": "S"}),
    (("--trigger",), {"default": None, "metavar": "RULE", "help": "trigger rule, e.g. one_failed"}),
    (("--limit",), {"type": int, "default": None, "metavar": "N"}),
    (("--cache",), {"action": "store_true",
                    "help": "reuse the stored value while code and inputs are unchanged"}),
    (("--map",), {"nargs": 3, "default": None, "metavar": ("ITEM", "in", "SOURCE"),
                  "help": "run the cell once per element of SOURCE (a task or a variable) with ITEM bound"}),
    (("--always",), {"action": "store_true",
                     "help": "run every time: never reused by an incremental %%orch run (it reads the outside world)"}),
    (("--flow",), {"default": "default", "metavar": "FLOW",
                   "help": "the named workflow this task belongs to"}),
    (("--run",), {"action": "store_true", "help": "run this task and its upstream now"}),
)

# Names a notebook gets from the interpreter and from IPython (which puts display and
# get_ipython among the builtins once a shell exists): the same set with or without IPython.
_BUILTINS = frozenset(dir(builtins)) | {"display", "get_ipython", "exit", "quit", "__IPYTHON__"}
_IPYTHON_CACHE = re.compile(r"_{1,3}|_i{1,3}|_i?\d+|_ih|_oh|_dh")  # reassigned after every cell


class _LineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # raise, never exit
        raise DefinitionError(message)


def _line_parser() -> argparse.ArgumentParser:
    parser = _LineParser(prog="%%task", add_help=False)
    for flags, spec in TASK_ARGUMENTS:
        parser.add_argument(*flags, **spec)
    return parser


_PARSER = _line_parser()


@dataclass(frozen=True)
class TaskLine:
    """A parsed and checked ``%%task`` line."""

    name: str
    options: dict[str, Any]
    after: tuple[str, ...] = ()
    flow: str = "default"
    run: bool = False
    map: tuple[str, str] | None = None  # --map ITEM in SOURCE: (ITEM, SOURCE)


def check_task_name(name: str) -> None:
    """Raise DefinitionError unless ``name`` can name a task cell: its value becomes a variable of
    that name in the notebook, so keywords, builtins and IPython's own names cannot."""
    if not name.isidentifier():
        raise DefinitionError(f"the task name must be a Python identifier, got {name!r}")
    if keyword.iskeyword(name):
        raise DefinitionError(
            f"{name!r} is a Python keyword, so it cannot name a task (its value becomes a variable of that "
            f"name). Choose another name, such as {name + '_'!r}."
        )
    if name in _BUILTINS:
        raise DefinitionError(
            f"{name!r} is a built-in name: a task named {name!r} would shadow the built-in in the notebook's "
            f"namespace once it runs, and every cell that uses {name} would depend on this task. "
            f"Choose another name, such as {name + '_'!r}."
        )
    if _IPYTHON_CACHE.fullmatch(name):  # also '_', the soft keyword of match patterns
        raise DefinitionError(
            f"{name!r} cannot name a task: IPython reassigns it after every cell (its output and input "
            "history). Choose another name."
        )
    if name in ("In", "Out"):
        history = "input" if name == "In" else "output"
        raise DefinitionError(
            f"{name!r} cannot name a task: it is IPython's {history} history. Choose another name."
        )
    if name in ("_orch_run", "_orch_schedule"):
        what = "run record" if name == "_orch_run" else "handle"
        raise DefinitionError(
            f"{name!r} cannot name a task: %orch {name[6:]} puts its {what} there. Choose another name."
        )


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The task options a parsed ``%%task`` line gives (only those given)."""
    given = {
        "retries": args.retries,
        "retry_delay": args.retry_delay,
        "timeout": args.timeout,
        "trigger_rule": args.trigger,
        "limit": args.limit,
        "cache": True if args.cache else None,
        "reuse": False if args.always else None,
    }
    return {k: v for k, v in given.items() if v is not None}


def parse_task_line(line: str) -> TaskLine:
    """Parse and check what follows ``%%task`` (no IPython needed). Raises DefinitionError with a
    one-line message: the magic shows it as a UsageError, ``nborch run`` / ``graph`` on stderr."""
    options_hint = " See '%%task?' for options."
    try:
        argv = shlex.split(line)
    except ValueError as err:  # "No closing quotation"
        raise DefinitionError(f"cannot read the options {line!r}: {err}.{options_hint}") from None
    try:
        args = _PARSER.parse_args(argv)
    except DefinitionError as err:  # argparse's own message: "argument --retries: invalid int value: 'x'"
        raise DefinitionError(f"{err}.{options_hint}") from None
    check_task_name(args.name)
    options = task_options(args)
    try:
        make_options(None, name=args.name, **options)
    except DefinitionError as err:
        raise DefinitionError(f"{err}.{options_hint}") from None
    if not args.flow.isidentifier():
        raise DefinitionError(f"the flow name must be a Python identifier, got {args.flow!r}")
    mapping = None
    if args.map is not None:
        item, word, source = args.map
        if word != "in" or not item.isidentifier() or keyword.iskeyword(item) or not source.isidentifier():
            raise DefinitionError(
                f"--map expects ITEM in SOURCE with two Python names (--map url in urls), got "
                f"{' '.join(args.map)!r}.{options_hint}"
            )
        if item in (args.name, source):
            raise DefinitionError(f"--map {item} in {source}: ITEM must differ from the task and SOURCE names")
        mapping = (item, source)
    return TaskLine(args.name, options, tuple(args.after), args.flow, args.run, mapping)

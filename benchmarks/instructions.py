"""Instructions a task costs, counted by ``valgrind --tool=callgrind``: a count that does not
swing with the machine's load, as wall-clock times do on a shared VM.

    python benchmarks/instructions.py                 # 2,000-task layered DAG, five runs
    python benchmarks/instructions.py --tasks 5000
    python benchmarks/instructions.py --more          # also child tasks and mapped items

Each case runs in a process of its own under callgrind: a layered DAG (``raw_baseline.layered_dag``)
built with ``Task(fn, *upstream_tasks, name=...)`` into a ``DAG`` (``build``), built and run with
``store=False`` or with the defaults (recording into a temporary store), and the hand-written
floor (``raw_baseline.raw_run``), five times each. A process that only imports and makes the
DAG's shape is subtracted, so what is left is per task, the build included in the run rows.
nborch's modules and this folder's are byte-compiled first (``compileall``, which writes them
even under ``PYTHONDONTWRITEBYTECODE``): a module compiled from source inside a case would
count its compilation. Needs ``valgrind`` (Debian: ``apt-get install valgrind``).

``--more`` adds issue 13's two other per-task comparisons, with the defaults: recursive
``fib(--fib)`` as child tasks with ``max_concurrency=2`` against the same call tree built as a
static DAG (``engine.py``'s ``fib_tree``), and ``noop.map(range(--tasks))`` against as many plain
calls in a ``Parallel``; each twice in one process, the import-only process subtracted.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = ("none", "build", "store=False", "defaults", "floor")
MORE = ("fib children", "fib static", "mapped", "calls")
REPEAT = 5


def fib_tasks(n: int) -> int:
    """The tasks fib(n) makes: 2 * fib(n + 1) - 1."""
    a, b = 0, 1
    for _ in range(n + 1):
        a, b = b, a + b
    return 2 * a - 1


def more_case(mode: str, tasks: int, n: int) -> None:
    """One of ``MORE``, here (the functions as engine.py has them: importing it would put this
    checkout first on sys.path)."""
    import nborch
    from nborch import DAG, Parallel, Task, task

    @task
    async def fib(k: int) -> int:
        return k if k < 2 else await fib(k - 1) + await fib(k - 2)

    @task
    async def noop(i: int) -> int:
        return i

    async def leaf(k: int) -> int:
        return k

    async def add(a: int, b: int) -> int:
        return a + b

    def fib_tree(k: int, nodes: list[Task[int]]) -> Task[int]:
        t = (Task(leaf, k, name=f"f{len(nodes)}") if k < 2
             else Task(add, fib_tree(k - 1, nodes), fib_tree(k - 2, nodes), name=f"f{len(nodes)}"))
        nodes.append(t)
        return t

    with tempfile.TemporaryDirectory(prefix="nborch-instr-") as home:
        for _ in range(2):
            if mode == "fib children":
                run = nborch.run(fib(n), max_concurrency=2, store=home)
            elif mode == "fib static":
                nodes: list[Task[int]] = []
                fib_tree(n, nodes)
                run = nborch.run(DAG(*nodes), max_concurrency=2, store=home)
            elif mode == "mapped":
                run = nborch.run(noop.map(range(tasks)), store=home)
            else:
                run = nborch.run(Parallel(*[noop(i) for i in range(tasks)]), store=home)
            assert run.ok, run.summary()


def case(mode: str, tasks: int, n: int) -> None:
    """Run one case, here (the process that callgrind counts)."""
    sys.path.insert(0, str(HERE))
    import nborch
    from nborch import DAG, Task
    from raw_baseline import anoop, layered_dag, raw_run

    if mode in MORE:
        more_case(mode, tasks, n)
        return
    deps = layered_dag(tasks)

    # engine.build_args, written out: importing benchmarks/engine.py puts this checkout first on
    # sys.path, and this script also measures other commits' code (PYTHONPATH=their tree)
    def build() -> DAG:
        nodes: list[Task[int]] = []
        for i, ups in enumerate(deps):
            nodes.append(Task(anoop, *[nodes[j] for j in ups], name=f"t{i}"))
        return DAG(*nodes)

    with tempfile.TemporaryDirectory(prefix="nborch-instr-") as home:
        for _ in range(REPEAT):
            if mode == "build":
                build()
            elif mode == "store=False":
                nborch.run(build(), store=False)
            elif mode == "defaults":
                nborch.run(build(), store=home)
            elif mode == "floor":
                asyncio.run(raw_run(deps))


def count(mode: str, tasks: int, n: int) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
         "--case", mode, "--tasks", str(tasks), "--fib", str(n)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=2_000)
    p.add_argument("--fib", type=int, default=16, help="fib(N) for --more (16: 3,193 tasks)")
    p.add_argument("--more", action="store_true", help="also child tasks and mapped items")
    p.add_argument("--case", choices=CASES + MORE, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        case(args.case, args.tasks, args.fib)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    spec = importlib.util.find_spec("nborch")
    assert spec is not None and spec.origin is not None
    for folder in (Path(spec.origin).parent, HERE):
        compileall.compile_dir(folder, quiet=1)
    counts = {mode: count(mode, args.tasks, args.fib) for mode in CASES + (MORE if args.more else ())}
    per = {m: (counts[m] - counts["none"]) / (REPEAT * args.tasks) / 1000 for m in CASES[1:]}
    print(f"Python {sys.version.split()[0]}, layered DAG of {args.tasks:,} tasks, {REPEAT} runs; "
          "thousands of instructions a task")
    for mode in CASES[1:]:
        print(f"  {mode:12} {per[mode]:7.1f}")
    print(f"  defaults / floor {per['defaults'] / per['floor']:.2f}x, "
          f"store=False / floor {per['store=False'] / per['floor']:.2f}x")
    if args.more:
        fibs, items = 2 * fib_tasks(args.fib), 2 * args.tasks
        more = {m: (counts[m] - counts["none"]) / (fibs if m.startswith("fib") else items) / 1000
                for m in MORE}
        print(f"  fib({args.fib}) ({fibs // 2:,} tasks), max_concurrency=2, defaults: children "
              f"{more['fib children']:.1f}, static DAG {more['fib static']:.1f} "
              f"({more['fib children'] / more['fib static']:.2f}x)")
        print(f"  {args.tasks:,} items, defaults: noop.map {more['mapped']:.1f}, "
              f"plain calls {more['calls']:.1f} ({more['mapped'] / more['calls']:.2f}x)")


if __name__ == "__main__":
    main()

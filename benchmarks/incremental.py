"""Incremental runs in a notebook: how long deciding what is up to date takes.

    python benchmarks/incremental.py            # 200 task cells, layered
    python benchmarks/incremental.py --tasks 1000

A real IPython shell with ``%load_ext nborch`` defines N ``%%task`` cells (each reads one or two
tasks of the layer above and a helper), runs them once, then edits one cell in the middle.
Reported, best of ``--repeat``:

* decide: ``workflow.plan()`` (every task's key, compared with its last success), the time
  ``%orch run`` spends deciding before anything runs; target at most 50 ms at 200 tasks;
* ``%orch run`` with nothing changed (everything reused) and with the one cell edited (that
  task and its downstream run), against running every task (``--all``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ["NBORCH_HOME"] = tempfile.mkdtemp(prefix="nborch-bench-")

    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "nborch")
    magics = ip.magics_manager.registry["OrchMagics"]

    def cell(src: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # the "task tN <- ..." lines
            result = ip.run_cell(src)
        if result.error_in_exec is not None or result.error_before_exec is not None:
            raise SystemExit(f"cell failed: {src[:60]!r}: {result.error_in_exec or result.error_before_exec}")

    n, width = args.tasks, 20
    rng = random.Random(7)
    cell("def scale(x):\n    return x * 2\nthreshold = 10")
    names = [f"t{i}" for i in range(n)]
    for i, name in enumerate(names):
        layer = i // width
        ups = rng.sample(names[(layer - 1) * width: layer * width], 2) if layer else []
        body = " + ".join(ups) if ups else str(i)
        cell(f"%%task {name}\nscale({body}) % threshold + {i}")
    cell("%orch run --no-display")
    edited = names[n // 2]

    def best(fn) -> float:
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    decide = best(lambda: magics.workflow.plan(ip.user_ns))
    unchanged = best(lambda: cell("%orch run --no-display"))

    edits = itertools.count(1000)

    def edit_and_run() -> None:  # a different constant each time: the cell really changed
        cell(f"%%task {edited}\nscale({edited.replace('t', '')}) % threshold + {next(edits)}")
        cell("%orch run --no-display")

    changed = best(edit_and_run)
    reran = len([s for s in ip.user_ns["_orch_run"].states if s not in ip.user_ns["_orch_run"].reused])
    everything = best(lambda: cell("%orch run --no-display --all"))
    print(f"{n} task cells; one edited cell re-runs {reran} tasks (itself and its downstream)")
    print(f"  decide what is up to date (workflow.plan)   {decide * 1e3:8.1f} ms   (target <= 50 ms at 200)")
    print(f"  %orch run, nothing changed (all reused)    {unchanged * 1e3:8.1f} ms")
    print(f"  %orch run, one cell edited                 {changed * 1e3:8.1f} ms")
    print(f"  %orch run --all (every task runs)          {everything * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()

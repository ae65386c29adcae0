"""Child-task cost: recursive fibonacci, every call a child task of the running one.

    python benchmarks/children.py              # fib(15), fib(20), fib(25)
    python benchmarks/children.py 15 20        # chosen sizes

Each figure is the wall time of ``nborch.run(fib(n), max_concurrency=2)`` divided by the
number of tasks the run made (fib(n) makes 2*fib(n+1)-1 of them), best of ``--repeat``. The
cost per child task must stay flat as the run grows (naming, dedupe and wait-cycle checks
touch only the new call, never the whole run).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nborch  # noqa: E402
from nborch import task  # noqa: E402


@task
async def fib(n: int) -> int:
    return n if n < 2 else await fib(n - 1) + await fib(n - 2)


def measure(n: int, store: bool) -> tuple[int, float]:
    start = time.perf_counter()
    run = nborch.run(fib(n), max_concurrency=2, store=None if not store else True)
    elapsed = time.perf_counter() - start
    assert run.ok, run.summary()
    return len(run.states), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, default=[15, 20, 25])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", action="store_true", help="record the runs (default: store=False)")
    args = parser.parse_args()
    print(f"{'run':<10} {'tasks':>9} {'seconds':>9} {'µs/task':>9}")
    for n in args.sizes:
        best = None
        for _ in range(args.repeat if n < 25 else 1):
            tasks, elapsed = measure(n, args.store)
            best = elapsed if best is None else min(best, elapsed)
        print(f"fib({n}){'':<{4 - len(str(n))}} {tasks:>9,} {best:>9.2f} {best / tasks * 1e6:>9.1f}")


if __name__ == "__main__":
    main()

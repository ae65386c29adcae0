"""What the cyclic GC's collections cost a run's tasks, with and without the run frozen out of
the GC's sight (``nborch.core.gc_pause.FREEZE_AT``), in a process that holds many objects of its
own, as a notebook kernel does.

    python benchmarks/gc_cost.py                       # 1,000 and 5,000 tasks, a million objects
    python benchmarks/gc_cost.py --tasks 2000 --heap 0

Each case runs in a fresh process: layered DAGs (``raw_baseline.layered_dag``) built with
``Task(fn, *upstream_tasks, name=...)`` (``engine.build_args``) and run with ``store=False``
until 40,000 tasks have run; ``gc.callbacks`` times every collection. "frozen" is nborch as it
is; "not frozen" sets FREEZE_AT above the run's size, as 10,000 was before it was lowered to 1,000.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(tasks: int, heap: int, frozen: bool) -> tuple[float, int]:
    """(µs a task spent in collections, collections) of one case, in this process."""
    sys.path.insert(0, str(HERE))
    import nborch
    import nborch.core.gc_pause as gc_pause
    from engine import anoop, build_args
    from raw_baseline import layered_dag

    if not frozen:
        gc_pause.FREEZE_AT = tasks + 1
    kept = [{"i": i, "l": [i]} for i in range(heap // 2)]  # the process's own objects
    gc.collect()
    deps = layered_dag(tasks)
    spent = [0.0, 0.0]
    count = [0]

    def timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            spent[1] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - spent[1]
            count[0] += 1

    runs = max(1, 40_000 // tasks)
    gc.callbacks.append(timer)
    for _ in range(runs):
        assert nborch.run(build_args(deps, anoop), store=False).ok
    gc.callbacks.remove(timer)
    del kept
    return spent[0] * 1e6 / (runs * tasks), count[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, nargs="*", default=[1_000, 5_000])
    p.add_argument("--heap", type=int, default=1_000_000, help="objects the process holds besides")
    p.add_argument("--case", nargs=3, help=argparse.SUPPRESS)  # tasks heap frozen: one case, here
    args = p.parse_args()
    if args.case:
        cost, n = measure(int(args.case[0]), int(args.case[1]), args.case[2] == "1")
        print(f"{cost:.2f} {n}")
        return
    print(f"Python {sys.version.split()[0]}, a process holding {args.heap:,} objects; "
          "µs a task spent in the GC's collections (collections)")
    for tasks in args.tasks:
        row = []
        for frozen in (False, True):
            case = [str(tasks), str(args.heap), str(int(frozen))]
            out = subprocess.run([sys.executable, __file__, "--case", *case],
                                 capture_output=True, text=True, check=True).stdout.split()
            row.append(f"{float(out[0]):6.2f} ({out[1]})")
        print(f"{tasks:>7,} tasks | not frozen {row[0]} | frozen {row[1]}")


if __name__ == "__main__":
    main()

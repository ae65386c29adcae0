"""Live display overhead: the same run with the notebook display on and off.

    python benchmarks/display.py                 # 1,000 tasks of asyncio.sleep(0.01), max_concurrency=100
    python benchmarks/display.py --tasks 150     # a graph small enough to be drawn in full
    python benchmarks/display.py --show-after 0.25   # the notebook's default: quick runs show no widget

The display is the real ``LiveDisplay`` (ipywidgets without a kernel: every trait is set,
nothing is sent), registered as the notebook extension would register it, so each run pays
for its widgets, its graph layout (Graphviz, in a worker thread, once per shape: later runs
reuse it), the coalesced repaints and the final snapshot. By default the widget shows at once
(``--show-after 0``), so the live path is measured; in a notebook it shows only once a run
lasted 0.25 s. ``benchmarks/display_kernel.py`` measures the display in a real kernel. Runs do not record into a store (``store=False``): the display alone is
measured. Runs alternate off / on; the figure is the best of ``--repeat`` each.
Target: on / off <= 1.2.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nborch  # noqa: E402
from nborch import Parallel, Task  # noqa: E402
from nborch.display.widget import LiveDisplay  # noqa: E402


async def nap() -> None:
    await asyncio.sleep(0.01)


def timed(n: int, concurrency: int, display: bool, shown: list[LiveDisplay], show_after: float = 0.0) -> float:
    # Explicit names, as in benchmarks/engine.py: 1,000 unnamed calls of one function spend
    # most of graph building on naming them nap[2], nap[3]... (quadratic), on both sides.
    flow = Parallel(*[Task(nap, name=f"nap{i}") for i in range(n)])
    gc.collect()
    def factory(handle: nborch.RunHandle) -> LiveDisplay:
        shown.append(LiveDisplay(handle, show_after=show_after))
        return shown[-1]

    unregister = nborch.register_display(factory) if display else None
    try:
        t0 = time.perf_counter()
        run = nborch.run(flow, max_concurrency=concurrency, store=False)  # the display alone
        elapsed = time.perf_counter() - t0
    finally:
        if unregister is not None:
            unregister()
    assert run.ok and len(run.states) == n, run.summary()
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--max-concurrency", type=int, default=100)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--show-after", type=float, default=0.0, help="seconds before the widget shows")
    args = p.parse_args()
    off: list[float] = []
    on: list[float] = []
    shown: list[LiveDisplay] = []
    timed(args.tasks, args.max_concurrency, True, [])  # warm up imports, graphviz and the thread pool
    for _ in range(args.repeat):
        off.append(timed(args.tasks, args.max_concurrency, False, shown))
        on.append(timed(args.tasks, args.max_concurrency, True, shown, args.show_after))
    last = shown[-1]
    assert last.snapshot is not None and f"{args.tasks}/{args.tasks} tasks settled" in last.snapshot
    best_off, best_on = min(off), min(on)
    print(f"{args.tasks} tasks of asyncio.sleep(0.01), max_concurrency={args.max_concurrency}, "
          f"best of {args.repeat}")
    print(f"  display off: {best_off * 1e3:8.1f} ms")
    print(f"  display on:  {best_on * 1e3:8.1f} ms   ({last.repaints} repaints, {last.layouts} layout(s), "
          f"widget {'shown' if last.shown else 'not shown'} in the last run)")
    print(f"  ratio on/off: {best_on / best_off:.3f}x (target <= 1.2x)")


if __name__ == "__main__":
    main()

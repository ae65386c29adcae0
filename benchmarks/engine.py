"""Engine overhead benchmark: nborch against a minimal hand-written asyncio scheduler.

    python benchmarks/engine.py            # full table: 1,000 / 10,000 / 100,000 tasks
    python benchmarks/engine.py --quick    # 1,000 / 10,000 only

Every figure is measured in this process, in one run, so the ratios compare like with like.
The engine rows run with ``store=False`` (no recording); recording is measured on its own.
Per-task cost = wall time of the whole run (graph building and validation included, node
construction excluded on both sides) divided by the number of tasks; best of ``--repeat`` (of 2 at
100,000 tasks).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import graphlib
import os
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nborch  # noqa: E402
from nborch import DAG, Task  # noqa: E402

# -- shapes: {node: [upstream nodes]} -----------------------------------------------------------


def chain(n: int) -> dict[int, list[int]]:
    return {i: ([i - 1] if i else []) for i in range(n)}


def fan(n: int) -> dict[int, list[int]]:
    mid = list(range(1, n - 1))
    deps: dict[int, list[int]] = {0: []}
    deps.update({i: [0] for i in mid})
    deps[n - 1] = mid
    return deps


def layered(n: int, width: int = 100, seed: int = 7) -> dict[int, list[int]]:
    rng = random.Random(seed)
    deps: dict[int, list[int]] = {}
    prev: list[int] = []
    for i in range(n):
        if i % width == 0 and i:
            prev = list(range(i - width, i))
        deps[i] = rng.sample(prev, min(2, len(prev))) if prev else []
    return deps


SHAPES: dict[str, Callable[[int], dict[int, list[int]]]] = {"chain": chain, "fan": fan, "layered": layered}

# -- the tasks ----------------------------------------------------------------------------------


async def anoop(*_: Any) -> None:
    return None


def snoop(*_: Any) -> None:
    return None


# -- the hand-written baseline: graphlib + create_task / run_in_executor -------------------------


async def baseline(deps: dict[int, list[int]], sync: bool) -> None:
    loop = asyncio.get_running_loop()
    ts: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter(deps)
    ts.prepare()
    done = loop.create_future()
    remaining = len(deps)

    def finished(node: int, fut: Any) -> None:
        nonlocal remaining
        fut.result()
        ts.done(node)
        remaining -= 1
        if not remaining:
            done.set_result(None)
            return
        for m in ts.get_ready():
            start(m)

    def start(node: int) -> None:
        fut = loop.run_in_executor(None, snoop) if sync else loop.create_task(anoop())
        fut.add_done_callback(functools.partial(finished, node))

    for node in ts.get_ready():
        start(node)
    await done


def build_nborch(deps: dict[int, list[int]], sync: bool) -> DAG:
    fn = snoop if sync else anoop
    tasks = [Task(fn, name=f"t{i}") for i in deps]
    dag = DAG()
    for i, ups in deps.items():
        dag.add(tasks[i], after=[tasks[u] for u in ups])
    return dag


def dask_graph(deps: dict[int, list[int]]) -> dict[str, Any]:
    return {f"t{i}": (snoop, *[f"t{u}" for u in ups]) for i, ups in deps.items()}


# -- timing -------------------------------------------------------------------------------------


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(shape: str, n: int, sync: bool, repeat: int, with_dask: bool) -> dict[str, float]:
    deps = SHAPES[shape](n)
    out: dict[str, float] = {}
    out["base"] = best(lambda: asyncio.run(baseline(deps, sync)), repeat) / n

    def run_nborch() -> None:
        dag = build_nborch(deps, sync)
        t0 = time.perf_counter()
        run = nborch.run(dag, store=False)
        elapsed = time.perf_counter() - t0
        assert run.ok and len(run.states) == n
        times.append(elapsed)

    times: list[float] = []
    for _ in range(repeat):
        gc.collect()
        run_nborch()
    out["nborch"] = min(times) / n
    if with_dask:
        import dask.threaded

        dsk = dask_graph(deps)
        out["dask"] = best(lambda: dask.threaded.get(dsk, [f"t{n - 1}"]), max(1, repeat - 1)) / n
    return out


def memory_per_task(n: int) -> float:
    deps = layered(n)
    gc.collect()
    tracemalloc.start()
    dag = build_nborch(deps, sync=False)
    run = nborch.run(dag, store=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert run.ok
    del dag, run
    return peak / n


def io_case() -> float:
    async def io() -> None:
        await asyncio.sleep(0.1)

    dag = DAG(*[Task(io, name=f"io{i}") for i in range(1000)])
    t0 = time.perf_counter()
    run = nborch.run(dag, max_concurrency=100, store=False)
    assert run.ok
    return time.perf_counter() - t0


def recording(n: int = 10_000) -> tuple[float, float]:
    """Wall time of a layered run without and with recording into a SQLite store."""
    import tempfile

    from nborch.store import SqliteStore

    deps = layered(n)
    with tempfile.TemporaryDirectory() as home:
        store = SqliteStore(home)
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(5):  # interleaved; single runs vary by +-15% on a shared 2-core VM
            for recorded in (False, True):
                dag = build_nborch(deps, sync=False)
                gc.collect()
                t0 = time.perf_counter()
                run = nborch.run(dag, store=store if recorded else False)
                times[recorded].append(time.perf_counter() - t0)
                assert run.ok
    return min(times[False]), min(times[True])


def import_time() -> float:
    code = "import time; t=time.perf_counter(); import nborch; print(time.perf_counter()-t)"
    samples = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        samples.append(float(out.stdout))
    return min(samples)


def us(x: float) -> str:
    return f"{x * 1e6:7.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,000 and 10,000 tasks only")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-dask", action="store_true")
    args = p.parse_args()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    try:
        import dask  # noqa: F401

        has_dask = not args.no_dask
    except ImportError:
        has_dask = False

    print(f"nborch {nborch.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print("per-task cost in µs (best of %d, of 2 at 100,000); ratio = nborch / hand-written baseline\n" % args.repeat)
    header = f"{'kind':5} {'shape':8} {'tasks':>7} {'baseline':>9} {'nborch':>8} {'ratio':>6}"
    if has_dask:
        header += f" {'dask-thr':>9}"
    print(header)
    print("-" * len(header))
    verdicts: list[tuple[str, bool]] = []
    per_size: dict[tuple[str, str], dict[int, float]] = {}
    for sync in (False, True):
        kind = "sync" if sync else "async"
        limit = 1.5 if sync else 3.0
        for shape in SHAPES:
            for n in sizes:
                dask_here = has_dask and n <= 10_000  # Dask needs minutes at 100,000
                r = measure(shape, n, sync, args.repeat if n < 100_000 else 2, dask_here)
                ratio = r["nborch"] / r["base"]
                per_size.setdefault((kind, shape), {})[n] = r["nborch"]
                line = f"{kind:5} {shape:8} {n:>7,} {us(r['base']):>9} {us(r['nborch']):>8} {ratio:6.2f}"
                if has_dask:
                    line += f" {us(r['dask']) if 'dask' in r else '      -':>9}"
                print(line, flush=True)
                verdicts.append((f"{kind} {shape} {n:,}: ratio {ratio:.2f} <= {limit}", ratio <= limit))
    print()
    if 100_000 in sizes:
        for (kind, shape), costs in per_size.items():
            growth = costs[100_000] / costs[1_000]
            verdicts.append((f"{kind} {shape}: cost at 100,000 / cost at 1,000 = {growth:.2f} <= 1.3", growth <= 1.3))
        mem = memory_per_task(100_000)
        print(f"peak memory per task at 100,000 (layered, async): {mem / 1024:.2f} KiB")
        verdicts.append((f"memory {mem / 1024:.2f} KiB/task <= 3 KB", mem <= 3000))
    plain, recorded = recording()
    print(f"recording a 10,000-task run into SQLite: {plain:.3f}s -> {recorded:.3f}s ({recorded / plain:.2f}x)")
    verdicts.append((f"recording {recorded / plain:.2f}x <= 1.3", recorded / plain <= 1.3))
    io = io_case()
    print(f"I/O: 1,000 x asyncio.sleep(0.1), max_concurrency=100: {io:.3f}s, {io / 1.0:.3f} x ideal 1.0s")
    verdicts.append((f"I/O {io:.3f} x ideal <= 1.05", io <= 1.05))
    imp = import_time()
    print(f"import nborch: {imp * 1e3:.1f} ms")
    verdicts.append((f"import {imp * 1e3:.1f} ms < 150 ms", imp < 0.150))
    print("\ntargets:")
    for text, ok in verdicts:
        print(f"  [{'ok' if ok else 'MISS'}] {text}")


if __name__ == "__main__":
    main()

"""Scale-out benchmarks: CPU-bound tasks on threads, a process pool and Dask; nborch's overhead on Dask.

    python benchmarks/scale.py            # the full table (about a minute on 2 cores)
    python benchmarks/scale.py --quick    # smaller sizes

1. Speed-up: ``--tasks`` independent pure-Python CPU-bound tasks (a loop that holds the GIL) run by
   nborch on threads, on ``ProcessExecutor(max_workers=2)`` and on ``DaskExecutor`` (a LocalCluster of
   2 single-threaded worker processes). Target: process pool and Dask at least 1.7x faster than threads.
2. Overhead: the same no-op DAGs (a chain, a fan-out/fan-in, a layered DAG) run by nborch on Dask and
   as plain ``client.submit`` calls passing futures as arguments, on the same cluster, in this run.
   Per-task cost = wall time / tasks. Target: nborch at most 1.3x plain ``client.submit``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nborch  # noqa: E402
from nborch import DAG, DaskExecutor, ProcessExecutor, Task  # noqa: E402


def burn(n: int) -> int:
    """Pure-Python CPU work: holds the GIL the whole time."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def noop(*args: object) -> int:
    return 0


# -- DAG shapes, as (name, [upstream names]) in topological order ----------------------------------


def chain(n: int) -> list[tuple[str, list[str]]]:
    return [(f"t{i}", [f"t{i - 1}"] if i else []) for i in range(n)]


def fan(n: int) -> list[tuple[str, list[str]]]:
    leaves = [(f"leaf{i}", ["root"]) for i in range(n - 2)]
    return [("root", []), *leaves, ("sink", [name for name, _ in leaves])]


def layered(n: int, width: int = 10, seed: int = 1) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    shape: list[tuple[str, list[str]]] = []
    previous: list[str] = []
    for layer in range(n // width):
        names = [f"l{layer}_{i}" for i in range(width)]
        for name in names:
            shape.append((name, rng.sample(previous, min(2, len(previous)))))
        previous = names
    return shape


def as_dag(shape: list[tuple[str, list[str]]]) -> DAG:
    nodes: dict[str, Task] = {}
    for name, ups in shape:
        nodes[name] = Task(noop, *(nodes[u] for u in ups), name=name)
    return DAG(*nodes.values())


def plain_submit(client: object, shape: list[tuple[str, list[str]]]) -> None:
    futures: dict[str, object] = {}
    for name, ups in shape:
        futures[name] = client.submit(noop, *(futures[u] for u in ups), pure=False)  # type: ignore[attr-defined]
    client.gather(list(futures.values()))  # type: ignore[attr-defined]


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--tasks", type=int, default=8, help="CPU-bound tasks (default 8)")
    options = parser.parse_args()
    work = 1_500_000 if options.quick else 4_000_000
    sizes = [50, 200] if options.quick else [100, 400]
    repeat = 2 if options.quick else 3

    pool = ProcessExecutor(max_workers=2)
    dask = DaskExecutor(n_workers=2, threads_per_worker=1, silence_logs=logging.CRITICAL)
    client = dask.client
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, dask.distributed LocalCluster "
          f"(2 worker processes x 1 thread), process pool of 2 ({pool.start_method})")
    load = os.getloadavg()[0]
    print(f"load average before the run: {load:.2f}"
          + ("  (WARNING: other processes use the CPUs; speed-ups are understated)\n"
             if load > 0.5 * (os.cpu_count() or 1) else "\n"))

    # -- 1. CPU-bound speed-up ----------------------------------------------------------------
    cpu = DAG(*(Task(burn, work, name=f"burn{i}") for i in range(options.tasks)))
    nborch.run(cpu, executor=pool, store=False)  # warm up: workers started, functions imported
    nborch.run(cpu, executor=dask, store=False)
    rows = []
    for label, executor in (("threads", "thread"), ("process pool", pool), ("Dask", dask)):
        t = best(lambda: nborch.run(cpu, executor=executor, store=False), repeat)
        rows.append((label, t))
    threads = rows[0][1]
    print(f"CPU-bound: {options.tasks} tasks of burn({work:,}), best of {repeat}")
    print(f"{'executor':<14}{'wall':>10}{'speed-up':>11}  target")
    for label, t in rows:
        target = "" if label == "threads" else (">= 1.7x  " + ("ok" if threads / t >= 1.7 else "MISSED"))
        print(f"{label:<14}{t:>9.2f}s{threads / t:>10.2f}x  {target}")

    # -- 2. per-task overhead on Dask ---------------------------------------------------------
    print(f"\nOverhead on Dask: no-op tasks, per-task wall time (median of {repeat + 2})")
    print(f"{'shape':<10}{'tasks':>7}{'client.submit':>15}{'nborch':>11}{'ratio':>8}  target")
    for size in sizes:
        for shape_name, make in (("chain", chain), ("fan", fan), ("layered", layered)):
            shape = make(size)
            dag = as_dag(shape)
            n = len(shape)
            nborch.run(dag, executor=dask, store=False)  # warm up
            plain_submit(client, shape)
            plain, ours = [], []
            for _ in range(repeat + 2):  # interleaved, so both see the same cluster state
                start = time.perf_counter()
                plain_submit(client, shape)
                plain.append(time.perf_counter() - start)
                start = time.perf_counter()
                run = nborch.run(dag, executor=dask, store=False, capture=False)
                ours.append(time.perf_counter() - start)
                assert run.ok
            p, o = statistics.median(plain) / n, statistics.median(ours) / n
            verdict = "ok" if o / p <= 1.3 else "MISSED"
            print(f"{shape_name:<10}{n:>7}{p * 1e3:>13.2f}ms{o * 1e3:>9.2f}ms{o / p:>7.2f}x  <= 1.3x {verdict}")

    dask.close()
    pool.shutdown()


if __name__ == "__main__":
    main()

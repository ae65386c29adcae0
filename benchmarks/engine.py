"""Engine overhead as a user pays it: nborch against minimal hand-written schedulers.

    python benchmarks/engine.py            # 1,000 / 10,000 / 100,000 tasks, fib(25): several minutes
    python benchmarks/engine.py --quick    # 1,000 / 10,000 tasks, fib(20)

Every figure comes from this one process, and figures that are compared are measured
interleaved (the variants of a row take turns, in a rotating order, ``--repeat`` times; 2 at
100,000 tasks); each is the best of its turns. Per-task cost = wall time / number of tasks.
After each turn, untimed, the row's store is flushed: the WAL checkpoint that a recorded run
leaves to the store's writer thread must not run into the next variant's time. A turn whose
run nborch could not record ("cannot record run ...": it did not pay for recording) is run
again, and listed at the end.

nborch is timed as a user runs it: building the nodes through the public API, then
``nborch.run(dag)``. Two build styles are timed:

* headline: ``Task(fn, *upstream_tasks, name=...)``, each task receiving its upstreams' values
  as arguments (as the baseline passes results), all of them into ``DAG(*tasks)``;
* ``dag.add(Task(fn, name=...), after=[...])``: ordering without data.

``defaults`` is the headline row: default options, so the run records into a store (a fresh
temporary directory per row, given as ``store=``); ``store=False`` runs beside it. ``build``
is node construction alone (the same runs, the clock read between building and running), and
``plain`` the same loop building ``PlainNode``, a plain object with three fields, into a list:
what the issue compares node construction with.

Baselines, each on the same graph: ``raw`` is ``benchmarks/raw_baseline.py``, the project's
reference floor (in-degree counting, ``create_task`` per ready node, results as arguments);
``graphlib`` is ``graphlib.TopologicalSorter`` + ``create_task`` + done-callbacks (the previous
baseline). For sync tasks: ``tpe`` is a plain ``ThreadPoolExecutor`` DAG (in-degree counting,
``executor.submit``, a done-callback that hands the finished node back to the submitting thread
through a ``queue.SimpleQueue``: that thread alone touches the counts, so no lock), ``rie`` is
the raw scheduler with ``loop.run_in_executor`` instead of coroutines, and ``graphlib`` its
graphlib twin.

Small runs: 200 runs of a 10-task layered DAG one after another, defaults against
``store=False``, what recording costs a notebook's many small runs; here the store is not
flushed inside a turn, so the upkeep one run leaves (a WAL checkpoint) is paid by the next.

Shapes: chain (each task after the previous), fan (one root, n - 2 leaves, one task after all
leaves), layered (``raw_baseline.layered_dag``: about sqrt(n) layers, each task after 1-3 random
tasks of the previous layer).

The machine this runs on may be shared: the load average is printed in the header, per row and
at the end, so a reader can judge the noise.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import graphlib
import os
import queue
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import nborch  # noqa: E402
from nborch import DAG, Parallel, Task, task  # noqa: E402
from nborch.store import get_store  # noqa: E402
from raw_baseline import layered_dag, raw_run  # noqa: E402

Deps = list[list[int]]  # deps[i]: the upstream indices of task i (raw_baseline's format)

# -- shapes -------------------------------------------------------------------------------------


def chain(n: int) -> Deps:
    return [[]] + [[i - 1] for i in range(1, n)]


def fan(n: int) -> Deps:
    return [[]] + [[0] for _ in range(n - 2)] + [list(range(1, n - 1))]


SHAPES: dict[str, Callable[[int], Deps]] = {"chain": chain, "fan": fan, "layered": layered_dag}

# -- the task bodies ----------------------------------------------------------------------------


async def anoop(*_: Any) -> int:
    return 0


def snoop(*_: Any) -> int:
    return 0


# -- baselines ----------------------------------------------------------------------------------


def raw(deps: Deps) -> None:
    asyncio.run(raw_run(deps))


def graphlib_run(deps: Deps, sync: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ts: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter(dict(enumerate(deps)))
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

    asyncio.run(main())


def rie_run(deps: Deps) -> None:
    """raw_baseline's scheduler with ``loop.run_in_executor`` (asyncio's default thread pool)."""

    async def main() -> None:
        n = len(deps)
        children: list[list[int]] = [[] for _ in range(n)]
        indeg = [len(d) for d in deps]
        for i, d in enumerate(deps):
            for j in d:
                children[j].append(i)
        results: list[Any] = [None] * n
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        remaining = n

        def finished(i: int, fut: asyncio.Future[Any]) -> None:
            nonlocal remaining
            results[i] = fut.result()
            remaining -= 1
            for c in children[i]:
                indeg[c] -= 1
                if indeg[c] == 0:
                    start(c)
            if remaining == 0:
                done.set_result(None)

        def start(i: int) -> None:
            fut = loop.run_in_executor(None, snoop, *[results[j] for j in deps[i]])
            fut.add_done_callback(functools.partial(finished, i))

        for i in range(n):
            if indeg[i] == 0:
                start(i)
        await done

    asyncio.run(main())


def tpe_run(deps: Deps) -> None:
    """A plain ThreadPoolExecutor DAG: in-degree counting, ``submit``, and a done-callback that
    hands the finished node back to this thread, which alone updates the counts."""
    n = len(deps)
    children: list[list[int]] = [[] for _ in range(n)]
    indeg = [len(d) for d in deps]
    for i, d in enumerate(deps):
        for j in d:
            children[j].append(i)
    results: list[Any] = [None] * n
    finished: queue.SimpleQueue[tuple[int, Future[Any]]] = queue.SimpleQueue()
    with ThreadPoolExecutor() as ex:

        def start(i: int) -> None:
            fut = ex.submit(snoop, *[results[j] for j in deps[i]])
            fut.add_done_callback(lambda f, i=i: finished.put((i, f)))  # type: ignore[misc]

        for i in range(n):
            if indeg[i] == 0:
                start(i)
        for _ in range(n):
            i, fut = finished.get()
            results[i] = fut.result()
            for c in children[i]:
                indeg[c] -= 1
                if indeg[c] == 0:
                    start(c)


# -- nborch, through the public API -------------------------------------------------------------


def build_args(deps: Deps, fn: Callable[..., Any]) -> DAG:
    """The headline style: upstream tasks as arguments, all tasks into a DAG."""
    tasks: list[Task[Any]] = []
    for i, ups in enumerate(deps):
        tasks.append(Task(fn, *[tasks[j] for j in ups], name=f"t{i}"))
    return DAG(*tasks)


def build_after(deps: Deps, fn: Callable[..., Any]) -> DAG:
    """``dag.add(task, after=[...])``: ordering only, no data."""
    tasks = [Task(fn, name=f"t{i}") for i in range(len(deps))]
    dag = DAG()
    for i, ups in enumerate(deps):
        dag.add(tasks[i], after=[tasks[j] for j in ups])
    return dag


class PlainNode:
    """What issue 13 compares node construction with: a plain object with a few fields."""

    __slots__ = ("args", "fn", "name")

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str | None = None) -> None:
        self.fn, self.args, self.name = fn, args, name


def build_plain(deps: Deps, fn: Callable[..., Any]) -> list[PlainNode]:
    """``build_args`` with ``PlainNode`` for ``Task`` (and a list for the DAG, which copies its tasks)."""
    tasks: list[PlainNode] = []
    for i, ups in enumerate(deps):
        tasks.append(PlainNode(fn, *[tasks[j] for j in ups], name=f"t{i}"))
    return list(tasks)


def nborch_run(build: Callable[[Deps, Callable[..., Any]], DAG], deps: Deps, fn: Callable[..., Any],
               **options: Any) -> tuple[float, float]:
    """(build seconds, build + run seconds) of one run."""
    t0 = time.perf_counter()
    dag = build(deps, fn)
    t1 = time.perf_counter()
    run = nborch.run(dag, **options)
    t2 = time.perf_counter()
    assert run.ok and len(run.states) == len(deps), run.summary()
    return t1 - t0, t2 - t0


# -- timing -------------------------------------------------------------------------------------


UNRECORDED: list[str] = []  # turns thrown away: their run went unrecorded (see interleaved)


def interleaved(
    variants: dict[str, Callable[[], Any]], repeat: int, home: str | None = None
) -> dict[str, float]:
    """Best wall time of each variant; the variants take turns, in a rotating order. A variant
    that returns (build, total) seconds also yields ``<name>.build``. After each turn (untimed)
    the store at ``home`` is flushed: the WAL checkpoint a recorded run leaves to the store's
    writer thread must not run into the next variant's time. A turn whose run could not be
    recorded (nborch warns "cannot record run") did not pay for recording: it is thrown away,
    noted in ``UNRECORDED``, and run again (at most twice)."""
    best: dict[str, float] = {}
    names = list(variants)
    for r in range(repeat):
        for name in names[r % len(names):] + names[: r % len(names)]:
            for _ in range(3):
                gc.collect()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    t0 = time.perf_counter()
                    out = variants[name]()
                    elapsed = time.perf_counter() - t0
                if home is not None:
                    get_store(home).flush()
                lost = [str(w.message) for w in caught if "cannot record run" in str(w.message)]
                for w in caught:
                    if "cannot record run" not in str(w.message):
                        print(f"  warning in {name}: {w.message}", flush=True)
                if not lost:
                    break
                UNRECORDED.append(f"{name}: {lost[0]}")
            if isinstance(out, tuple):
                best[name + ".build"] = min(best.get(name + ".build", 1e9), out[0])
                elapsed = out[1]
            best[name] = min(best.get(name, 1e9), elapsed)
    return best


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def async_row(shape: str, n: int, repeat: int) -> dict[str, float]:
    deps = SHAPES[shape](n)
    with tempfile.TemporaryDirectory(prefix="nborch-bench-") as home:
        t = interleaved({
            "raw": lambda: raw(deps),
            "graphlib": lambda: graphlib_run(deps, sync=False),
            "defaults": lambda: nborch_run(build_args, deps, anoop, store=home),
            "store=False": lambda: nborch_run(build_args, deps, anoop, store=False),
            "after": lambda: nborch_run(build_after, deps, anoop, store=home),
            "plain": lambda: build_plain(deps, anoop),
        }, repeat, home)
    return {k: v / n for k, v in t.items()}


def sync_row(shape: str, n: int, repeat: int) -> dict[str, float]:
    deps = SHAPES[shape](n)
    with tempfile.TemporaryDirectory(prefix="nborch-bench-") as home:
        t = interleaved({
            "tpe": lambda: tpe_run(deps),
            "rie": lambda: rie_run(deps),
            "graphlib": lambda: graphlib_run(deps, sync=True),
            "defaults": lambda: nborch_run(build_args, deps, snoop, store=home),
            "store=False": lambda: nborch_run(build_args, deps, snoop, store=False),
        }, repeat, home)
    return {k: v / n for k, v in t.items()}


# -- child tasks, mapping, memory, import, I/O --------------------------------------------------


@task
async def fib(n: int) -> int:
    return n if n < 2 else await fib(n - 1) + await fib(n - 2)


def fib_value(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


async def leaf(k: int) -> int:
    return k


async def add(a: int, b: int) -> int:
    return a + b


def fib_tree(n: int) -> DAG:
    """fib(n)'s call tree as a static DAG: one task per call, its two calls as upstreams."""
    tasks: list[Task[int]] = []

    def node(k: int) -> Task[int]:
        if k < 2:
            t = Task(leaf, k, name=f"f{len(tasks)}")
        else:
            t = Task(add, node(k - 1), node(k - 2), name=f"f{len(tasks)}")
        tasks.append(t)
        return t

    node(n)
    return DAG(*tasks)


def children_row(n: int, repeat: int) -> dict[str, float]:
    """Per-task cost of fib(n) as child tasks against the same tree built as a static DAG, both
    with max_concurrency=2 and the defaults (recording into a temporary store)."""
    tasks = 2 * fib_value(n + 1) - 1
    with tempfile.TemporaryDirectory(prefix="nborch-bench-") as home:

        def children() -> None:
            run = nborch.run(fib(n), max_concurrency=2, store=home)
            assert run.ok and run.value == fib_value(n) and len(run.states) == tasks, run.summary()

        def static(**options: Any) -> None:
            run = nborch.run(fib_tree(n), store=home, **options)
            assert run.ok and len(run.states) == tasks, run.summary()

        t = interleaved({
            "children": children,
            "static": lambda: static(max_concurrency=2),
            "static, no limit": static,
        }, repeat, home)
    return {"tasks": tasks, **{k: v / tasks for k, v in t.items()}}


@task
async def noop(i: int) -> int:
    return i


def mapped_row(n: int, repeat: int) -> dict[str, float]:
    """``noop.map(range(n))`` per item against n plain calls ``Parallel(*[noop(i) ...])`` (as in
    benchmarks/mapping.py), build included, defaults."""
    with tempfile.TemporaryDirectory(prefix="nborch-bench-") as home:

        def mapped() -> None:
            run = nborch.run(noop.map(range(n)), store=home)
            assert run.ok and len(run.value) == n, run.summary()

        def plain() -> None:
            run = nborch.run(Parallel(*[noop(i) for i in range(n)]), store=home)
            assert run.ok and len(run.value) == n, run.summary()

        t = interleaved({"plain": plain, "mapped": mapped}, repeat, home)
    return {k: v / n for k, v in t.items()}


def small_runs_row(repeat: int, runs: int = 200, n: int = 10) -> dict[str, float]:
    """Seconds a run of ``runs`` back-to-back runs of a ``layered_dag(n)`` (build included),
    defaults against ``store=False``: what a notebook's small runs pay for being recorded, the
    store's upkeep between runs included (no flush inside a turn: a WAL checkpoint the writer
    thread runs after one run falls into the next ones, as it does for a user)."""
    deps = layered_dag(n)
    with tempfile.TemporaryDirectory(prefix="nborch-bench-") as home:

        def many(**options: Any) -> None:
            for _ in range(runs):
                nborch.run(build_args(deps, anoop), **options)

        t = interleaved({"store=False": lambda: many(store=False), "defaults": lambda: many(store=home)},
                        repeat, home)
    return {k: v / runs for k, v in t.items()}


def memory_per_task(n: int) -> float:
    """Peak traced bytes per task of building and running the layered DAG with the defaults
    (a run that went unrecorded is measured again, as in ``interleaved``)."""
    deps = layered_dag(n)
    with tempfile.TemporaryDirectory(prefix="nborch-bench-") as home:

        def measure() -> tuple[float, float]:  # (build, total) in interleaved's terms: the peak twice
            tracemalloc.start()
            run = nborch.run(build_args(deps, anoop), store=home)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert run.ok
            return peak, peak

        return interleaved({"memory": measure}, 1, home)["memory"] / n


def import_time() -> float:
    """Best of 5 fresh interpreters timing ``import nborch``, bytecode cached (one warm-up
    import writes the .pyc files, even where PYTHONDONTWRITEBYTECODE is set)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.path.dirname(HERE)
    code = "import time; t=time.perf_counter(); import nborch; print(time.perf_counter()-t)"
    samples = []
    for _ in range(6):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env=env)
        samples.append(float(out.stdout))
    return min(samples[1:])


def io_case() -> float:
    async def io() -> None:
        await asyncio.sleep(0.1)

    dag = DAG(*[Task(io, name=f"io{i}") for i in range(1000)])
    t0 = time.perf_counter()
    run = nborch.run(dag, max_concurrency=100, store=False)
    assert run.ok
    return time.perf_counter() - t0


# -- the report ---------------------------------------------------------------------------------


def us(x: float, w: int = 7) -> str:
    return f"{x * 1e6:{w}.1f}"


def ratio(x: float, w: int = 5) -> str:
    return f"{x:{w}.2f}"


class Targets:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def check(self, what: str, values: list[float], limit: float, fmt: str = "{:.2f}x") -> None:
        ok = all(v <= limit for v in values)
        shown = " ".join(fmt.format(v) for v in values)
        self.lines.append(f"  [{'ok' if ok else 'MISS'}] {what}: {shown}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1,000 and 10,000 tasks, fib(20)")
    p.add_argument("--repeat", type=int, default=3,
                   help="turns per variant (at most 2 at 100,000 tasks and for fib(25))")
    args = p.parse_args()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    fib_n = 20 if args.quick else 25

    def turns(n: int) -> int:
        return args.repeat if n < 100_000 else min(args.repeat, 2)

    started = time.perf_counter()
    print(f"nborch {nborch.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          f"load average {load()} (1/5/15 min) at the start")
    print(f"µs per task, best of {args.repeat} interleaved turns (of 2 at 100,000); "
          f"x = ratio to the baseline named; load = 1/5/15-min load average after the row\n")
    targets = Targets()

    print("async no-op. nborch: build + run; headline = Task(fn, *upstream_tasks, name=...) into DAG(*tasks)")
    head = (f"{'shape':8} {'tasks':>7} | {'raw':>6} {'graphlib':>8} | {'plain':>5} {'build':>6} "
            f"{'defaults':>8} {'x raw':>5} {'store=False':>11} {'x raw':>5} {'rec':>5} | "
            f"{'after: build':>12} {'defaults':>8} {'x raw':>5} | load")
    print(head)
    print("-" * len(head))
    arows: dict[tuple[str, int], dict[str, float]] = {}
    for shape in SHAPES:
        for n in sizes:
            r = arows[shape, n] = async_row(shape, n, turns(n))
            print(f"{shape:8} {n:>7,} | {us(r['raw'], 6)} {us(r['graphlib'], 8)} | {us(r['plain'], 5)} "
                  f"{us(r['defaults.build'], 6)} {us(r['defaults'], 8)} {ratio(r['defaults'] / r['raw'])} "
                  f"{us(r['store=False'], 11)} "
                  f"{ratio(r['store=False'] / r['raw'])} {ratio(r['defaults'] / r['store=False'])} | "
                  f"{us(r['after.build'], 12)} {us(r['after'], 8)} {ratio(r['after'] / r['raw'])} | {load()}",
                  flush=True)
    print("(plain = the same build with a plain three-field object for Task, into a list; "
          "rec = defaults / store=False: what recording costs; "
          "after = dag.add(Task(fn, name=...), after=[...]), defaults)\n")

    print("sync no-op. nborch: build + run, Task(fn, *upstream_tasks, name=...) into DAG(*tasks)")
    head = (f"{'shape':8} {'tasks':>7} | {'tpe':>6} {'rie':>6} {'graphlib':>8} | {'build':>6} "
            f"{'defaults':>8} {'x tpe':>5} {'x rie':>5} {'store=False':>11} {'x tpe':>5} | load")
    print(head)
    print("-" * len(head))
    srows: dict[tuple[str, int], dict[str, float]] = {}
    for shape in SHAPES:
        for n in sizes:
            r = srows[shape, n] = sync_row(shape, n, turns(n))
            print(f"{shape:8} {n:>7,} | {us(r['tpe'], 6)} {us(r['rie'], 6)} {us(r['graphlib'], 8)} | "
                  f"{us(r['defaults.build'], 6)} {us(r['defaults'], 8)} {ratio(r['defaults'] / r['tpe'])} "
                  f"{ratio(r['defaults'] / r['rie'])} {us(r['store=False'], 11)} "
                  f"{ratio(r['store=False'] / r['tpe'])} | "
                  f"{load()}", flush=True)
    print("(tpe = ThreadPoolExecutor + done-callbacks; rie = in-degree asyncio + run_in_executor)\n")

    print(f"child tasks: fib({fib_n}) with max_concurrency=2, defaults, against the same call tree as a "
          "static DAG")
    c = children_row(fib_n, turns(100_000) if fib_n >= 25 else args.repeat)
    print(f"  {int(c['tasks']):,} tasks: children {us(c['children']).strip()} µs/task, static DAG "
          f"{us(c['static']).strip()} (max_concurrency=2), {us(c['static, no limit']).strip()} (no limit); "
          f"ratio {c['children'] / c['static']:.2f}x | load {load()}\n", flush=True)

    print("mapped: noop.map(range(n)) against Parallel(*[noop(i) for i in range(n)]), build included, "
          "defaults")
    mrows: dict[int, dict[str, float]] = {}
    for n in sizes:
        m = mrows[n] = mapped_row(n, turns(n))
        print(f"  {n:>7,} items: plain {us(m['plain'])} mapped {us(m['mapped'])} µs/task, "
              f"ratio {m['mapped'] / m['plain']:.2f}x | load {load()}", flush=True)
    print()

    small = small_runs_row(args.repeat)
    print(f"small runs: 200 runs of a 10-task layered DAG in a row, build included: store=False "
          f"{small['store=False'] * 1e3:.3f} ms a run, defaults {small['defaults'] * 1e3:.3f} ms "
          f"(recording {(small['defaults'] - small['store=False']) * 1e3:.3f} ms a run) | load {load()}")

    mem_n = sizes[-1]
    mem = memory_per_task(mem_n)
    print(f"peak memory (tracemalloc), layered {mem_n:,} tasks, build + run with defaults: "
          f"{mem:,.0f} bytes/task ({mem / 1000:.2f} KB)")
    imp = import_time()
    print(f"import nborch (bytecode cached, best of 5 fresh interpreters): {imp * 1e3:.1f} ms")
    io = io_case()
    print(f"I/O: 1,000 x asyncio.sleep(0.1), max_concurrency=100, store=False: {io:.3f} s "
          f"= {io:.3f} x ideal 1.0 s")

    per_size = "at " + " / ".join(f"{n:,}" for n in sizes)
    for shape in SHAPES:
        targets.check(f"async no-op, defaults, build included <= 3x raw, {shape} ({per_size})",
                      [arows[shape, n]["defaults"] / arows[shape, n]["raw"] for n in sizes], 3.0)
    for shape in SHAPES:
        targets.check(f"  moonshot <= 2x raw, {shape}",
                      [arows[shape, n]["defaults"] / arows[shape, n]["raw"] for n in sizes], 2.0)
    for shape in SHAPES:
        targets.check(f"async no-op, store=False, build included <= 2x raw, {shape}",
                      [arows[shape, n]["store=False"] / arows[shape, n]["raw"] for n in sizes], 2.0)
    for shape in SHAPES:
        targets.check(f"recording: defaults <= 1.15x store=False (async), {shape}",
                      [arows[shape, n]["defaults"] / arows[shape, n]["store=False"] for n in sizes], 1.15)
    for shape in SHAPES:
        targets.check(f"sync no-op, defaults <= 1.5x ThreadPoolExecutor, {shape}",
                      [srows[shape, n]["defaults"] / srows[shape, n]["tpe"] for n in sizes], 1.5)
    for shape in SHAPES:
        targets.check(f"sync no-op, defaults <= 1.0x run_in_executor, {shape}",
                      [srows[shape, n]["defaults"] / srows[shape, n]["rie"] for n in sizes], 1.0)
    if 100_000 in sizes:
        for kind, rows in (("async", arows), ("sync", srows)):
            for shape in SHAPES:
                targets.check(f"{kind} defaults: nborch's cost per task at 100,000 <= 1.2x at 1,000, {shape}",
                              [rows[shape, 100_000]["defaults"] / rows[shape, 1_000]["defaults"]], 1.2)
    targets.check("node construction, Task(fn, *ups) into DAG, <= 2 µs/task (async, chain/fan/layered, "
                  f"{per_size})", [arows[s, n]["defaults.build"] * 1e6 for s in SHAPES for n in sizes], 2.0,
                  "{:.1f}")
    targets.check("node construction about a plain object's (read as: Task build <= 2x the PlainNode build, "
                  "same order)",
                  [arows[s, n]["defaults.build"] / arows[s, n]["plain"] for s in SHAPES for n in sizes], 2.0)
    targets.check("node construction, dag.add(after=), <= 2 µs/task (same order)",
                  [arows[s, n]["after.build"] * 1e6 for s in SHAPES for n in sizes], 2.0, "{:.1f}")
    targets.check(f"child tasks: fib({fib_n}) <= 2x a static DAG of the same tree",
                  [c["children"] / c["static"]], 2.0)
    targets.check(f"mapped: an item <= 1.5x a plain task ({per_size})",
                  [mrows[n]["mapped"] / mrows[n]["plain"] for n in sizes], 1.5)
    targets.check(f"peak memory at {mem_n:,} tasks <= 2 KB/task", [mem / 1000], 2.0, "{:.2f} KB")
    targets.check("import nborch < 100 ms, bytecode cached", [imp * 1e3], 99.999, "{:.1f} ms")
    targets.check("I/O: within 1.05x of ideal", [io], 1.05, "{:.3f}x")
    if UNRECORDED:
        print(f"\n{len(UNRECORDED)} turn(s) thrown away and run again, their run unrecorded:")
        for line in UNRECORDED:
            print(f"  {line}")
    print("\ntargets:")
    print("\n".join(targets.lines))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average {load()} at the end")


if __name__ == "__main__":
    main()

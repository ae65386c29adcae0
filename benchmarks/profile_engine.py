"""Where a task's microseconds go: the hot loop of a layered async DAG run with the defaults.

    python benchmarks/profile_engine.py                  # 10,000 tasks
    python benchmarks/profile_engine.py --tasks 100000 --top 40
    python benchmarks/profile_engine.py --no-pyinstrument
    python benchmarks/profile_engine.py --bytecodes --tasks 2000   # deterministic counts

The DAG is ``raw_baseline.layered_dag(n)`` of async no-ops, built as benchmarks/engine.py's
headline row builds it (``Task(fn, *upstream_tasks, name=...)`` into ``DAG(*tasks)``) and run
with the defaults (recording into a temporary store).

1. Phases by wall clock, no profiler (best of ``--repeat``, interleaved): building the nodes;
   graph validation/compile (``nborch.core.graph.build_graph`` on its own, with the GC paused as the
   run pauses it); a run with ``store=False`` (the scheduling loop: compile, engine set-up,
   the loop, the Run record); the same with a subscriber that wants what the recorder wants
   (events built and published, nothing recorded); the defaults (recording). Differences give
   the cost of each layer.
2. cProfile of one build + run with the defaults: the top functions by own time (tottime), and
   own time summed by phase. A function's phase is that of its nearest ancestor among the
   phase roots (build_args: build; build_graph, Engine.__init__, run_tasks.add_specs: compile;
   anything in nborch/store and runtime/recording.open_recorder: recording; core/publishing.py
   and the event bus: events; recording.make_record and core/record.py: the Run record; the
   task body; the rest: scheduling loop), shared among callers in proportion to the time each caller spent in it.
   cProfile inflates call-heavy code, so read its shares, and take the sizes from part 1.
3. pyinstrument's call tree of the same, when pyinstrument is installed (not a dependency).
4. ``--bytecodes``: the Python bytecodes executed per task, by function, for the build, a run
   with ``store=False``, what the defaults add (recording), and the raw_baseline floor
   (``sys.settrace`` with per-opcode events: slow, but the counts do not depend on the machine's
   load, so they compare across runs and commits where wall clocks swing by 30%). What a
   function does in C (SQLite, asyncio's C parts, dict and set operations) is not counted:
   ``valgrind --tool=callgrind`` counts that.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import nborch  # noqa: E402
from engine import anoop, build_args, interleaved, load  # noqa: E402
from nborch.core.graph import build_graph  # noqa: E402
from nborch.store import get_store  # noqa: E402
from raw_baseline import layered_dag, raw_run  # noqa: E402

NBORCH = os.path.dirname(os.path.abspath(nborch.__file__)) + os.sep


class Quiet:
    """A subscriber that wants what the store's recorder wants, and does nothing with it."""

    wants_running = False

    def __call__(self, event: Any) -> None:
        return None


# -- part 1: phases by wall clock ---------------------------------------------------------------


def phases(n: int, repeat: int, home: str) -> dict[str, float]:
    deps = layered_dag(n)

    def compile_only() -> float:
        dag = build_args(deps, anoop)
        gc.disable()
        try:
            t0 = time.perf_counter()
            build_graph(dag, dedupe={})
            return time.perf_counter() - t0
        finally:
            gc.enable()

    def run_only(**options: Any) -> Callable[[], float]:
        def go() -> float:
            dag = build_args(deps, anoop)
            gc.collect()
            t0 = time.perf_counter()
            run = nborch.run(dag, **options)
            elapsed = time.perf_counter() - t0
            assert run.ok and len(run.states) == n
            return elapsed
        return go

    def timed(fn: Callable[[], float]) -> Callable[[], tuple[float, float]]:
        def go() -> tuple[float, float]:
            t = fn()
            return t, t
        return go

    t = interleaved({
        "raw": lambda: asyncio.run(raw_run(deps)),
        "build": lambda: build_args(deps, anoop),
        "compile": timed(compile_only),
        "store=False": timed(run_only(store=False)),
        "events": timed(run_only(store=False, on_event=Quiet())),
        "defaults": timed(run_only(store=home)),
    }, repeat, home)
    return {k: v / n for k, v in t.items() if not k.endswith(".build")}


class GcPauses:
    """The cyclic GC's pauses while in use (``gc.callbacks``): seconds and collections by
    generation. cProfile charges a pause to whatever function allocated when it struck."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._t0 = 0.0

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._t0
            self.count[info["generation"]] += 1

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *_: Any) -> None:
        gc.callbacks.remove(self._cb)


def gc_during(n: int, home: str) -> tuple[GcPauses, GcPauses, float, float]:
    """GC pauses while building, and while running with the defaults (one run each)."""
    deps = layered_dag(n)
    get_store(home).flush()
    gc.collect()
    with GcPauses() as in_build:
        t0 = time.perf_counter()
        dag = build_args(deps, anoop)
        t1 = time.perf_counter()
    with GcPauses() as in_run:
        run = nborch.run(dag, store=home)
        t2 = time.perf_counter()
    assert run.ok
    return in_build, in_run, t1 - t0, t2 - t1


# -- part 2: cProfile by phase ------------------------------------------------------------------

Func = tuple[str, int, str]  # pstats' (file, line, function)


def root_phase(func: Func) -> str | None:
    file, _, name = func
    here = file.startswith(NBORCH)
    rel = file[len(NBORCH):] if here else ""
    if name in ("build_args", "build_after") and file.endswith("engine.py") and not here:
        return "build"
    if name == "anoop":
        return "task body"
    if not here:
        return None
    recording = os.path.join("runtime", "recording.py")
    graph, engine = os.path.join("core", "graph.py"), os.path.join("core", "engine.py")
    if rel.startswith("store" + os.sep) or (rel == recording and name in ("open_recorder", "open_store")):
        return "recording"
    if ((rel == graph and name == "build_graph") or (rel == engine and name == "__init__")
            or (rel == os.path.join("core", "run_tasks.py") and name == "add_specs")):
        return "graph validation/compile"
    if rel in (os.path.join("core", "eventbus.py"), os.path.join("core", "publishing.py")):
        return "events"
    if rel == os.path.join("core", "record.py") or (rel == recording and name == "make_record"):
        return "Run record"
    return None


def by_phase(stats: dict[Func, Any]) -> dict[str, dict[str, float]]:
    """{phase: {module: own seconds}}, each function's own time given to its nearest root."""
    memo: dict[Func, dict[str, float]] = {}

    def shares(func: Func, seen: frozenset[Func]) -> dict[str, float]:
        if func in memo:
            return memo[func]
        phase = root_phase(func)
        if phase is not None:
            out = {phase: 1.0}
        else:
            callers = stats[func][4] if func in stats else {}
            weights = {c: v[3] for c, v in callers.items() if c not in seen and v[3] > 0}
            total = sum(weights.values())
            if not total:
                out = {"scheduling loop": 1.0}  # the loop itself (asyncio.run and below)
            else:
                acc: dict[str, float] = defaultdict(float)
                for c, w in weights.items():
                    for p, f in shares(c, seen | {func}).items():
                        acc[p] += f * w / total
                out = dict(acc)
        memo[func] = out  # (a caller cut off to break a cycle stays cut off: close enough)
        return out

    result: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for func, (_, _, tt, _, _) in stats.items():
        for p, f in shares(func, frozenset()).items():
            result[p][module_of(func)] += tt * f
    return result


def c_name(name: str) -> str:
    """``<method 'get' of 'dict' objects>`` -> ``dict.get``; ``<built-in method builtins.id>`` -> ``id``."""
    if name.startswith("<method '"):
        meth, _, owner = name[len("<method '"):].partition("' of '")
        return f"{owner.split(chr(39))[0]}.{meth}"
    if name.startswith("<built-in method "):
        return name[len("<built-in method "):].rstrip(">").removeprefix("builtins.")
    return name


def module_of(func: Func) -> str:
    file = func[0]
    if file.startswith(NBORCH):
        return "nborch/" + file[len(NBORCH):]
    if file == "~":
        return "C: " + c_name(func[2])
    if os.path.dirname(file) == HERE:
        return "benchmarks/" + os.path.basename(file)
    parts = file.split(os.sep)
    return "/".join(parts[-2:]) if "asyncio" in parts else os.path.basename(file)


def where(func: Func) -> str:
    file, line, name = func
    if file.startswith(NBORCH):
        return f"nborch/{file[len(NBORCH):]}:{line}({name})"
    if file == "~":
        return c_name(name)
    return f"{module_of(func)}:{line}({name})"


def profile(n: int, top: int, home: str) -> tuple[pstats.Stats, float]:
    deps = layered_dag(n)
    nborch.run(build_args(deps, anoop), store=home)  # warm up: imports, the store's schema
    get_store(home).flush()
    gc.collect()
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    run = nborch.run(build_args(deps, anoop), store=home)
    pr.disable()
    elapsed = time.perf_counter() - t0
    assert run.ok and len(run.states) == n
    return pstats.Stats(pr), elapsed


def print_profile(st: pstats.Stats, n: int, top: int, elapsed: float, wall: float) -> None:
    stats: dict[Func, Any] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    print(f"cProfile: build + run with the defaults took {elapsed:.2f} s under the profiler "
          f"({elapsed / n * 1e6:.1f} µs/task); own time recorded {total:.2f} s\n")
    print(f"top {top} functions by own time (µs/task = tottime / {n:,} tasks)")
    print(f"{'µs/task':>8} {'share':>6} {'calls':>9} {'cum µs/task':>11}  function")
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    for func, (_, nc, tt, ct, _) in rows:
        print(f"{tt / n * 1e6:8.2f} {tt / total:6.1%} {nc:9,} {ct / n * 1e6:11.2f}  {where(func)}")
    scale = wall / elapsed
    print(f"\nown time by phase, and the modules it is spent in: µs/task under the profiler, and scaled "
          f"by {scale:.2f} to the\nunprofiled wall time of part 1 "
          "(rough: the profiler's overhead is per call)")
    phase = by_phase(stats)
    order = sorted(phase, key=lambda p: -sum(phase[p].values()))
    for p in order:
        mods = phase[p]
        s = sum(mods.values())
        print(f"  {p:42} {s / n * 1e6:7.2f} {s / n * 1e6 * scale:7.2f}  {s / total:6.1%}")
        for m, t in sorted(mods.items(), key=lambda kv: -kv[1])[:6]:
            if t / total >= 0.005:
                print(f"      {m:38} {t / n * 1e6:7.2f} {t / n * 1e6 * scale:7.2f}")


def pyinstrument_tree(n: int, home: str, lines: int) -> None:
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("\n(pyinstrument is not installed: no call tree; `pip install pyinstrument` to get one)")
        return
    deps = layered_dag(n)
    get_store(home).flush()
    gc.collect()
    prof = Profiler(interval=0.0005, async_mode="disabled")
    prof.start()
    run = nborch.run(build_args(deps, anoop), store=home)
    prof.stop()
    assert run.ok
    print("\npyinstrument call tree (build + run with the defaults):")
    tree = prof.output_text(unicode=True, color=False, show_all=False).splitlines()
    print("\n".join(tree[:lines]) + (f"\n... ({len(tree) - lines} more lines)" if len(tree) > lines else ""))


def bytecodes(n: int, home: str, top: int) -> None:
    """Part 4: executed Python bytecodes per task, by function, for each phase."""
    from collections import Counter

    deps = layered_dag(n)
    counts: Counter[tuple[str, str]] = Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[(os.path.basename(code.co_filename), code.co_name)] += 1
        return tracer

    def traced(fn: Callable[[], Any]) -> Counter[tuple[str, str]]:
        counts.clear()
        gc.collect()
        sys.settrace(tracer)
        try:
            fn()
        finally:
            sys.settrace(None)
        return Counter(counts)

    nborch.run(nborch.Task(anoop), store=home)  # imports, the store opened: as a user's second run
    dag = build_args(deps, anoop)
    dag2 = build_args(deps, anoop)
    results = {
        "build": traced(lambda: build_args(deps, anoop)),
        "run, store=False": traced(lambda: nborch.run(dag, store=False)),
        "run, defaults": traced(lambda: (nborch.run(dag2, store=home), get_store(home).flush())),
        "raw_baseline": traced(lambda: asyncio.run(raw_run(deps))),
    }
    recording = results["run, defaults"] - results["run, store=False"]
    print(f"Python bytecodes executed per task, layered_dag({n:,}) (C code not counted)")
    for what, c in (*results.items(), ("recording (defaults - store=False)", recording)):
        print(f"  {what:40} {sum(c.values()) / n:8.1f}")
    for what, c in (("run, store=False", results["run, store=False"]), ("recording", recording),
                    ("raw_baseline", results["raw_baseline"])):
        print(f"\n  {what}, by function (bytecodes per task):")
        for (file, name), k in c.most_common(top):
            print(f"    {k / n:8.1f}  {file}:{name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--no-pyinstrument", action="store_true")
    p.add_argument("--tree-lines", type=int, default=90, help="lines of pyinstrument's tree to print")
    p.add_argument("--bytecodes", action="store_true",
                   help="only part 4: executed bytecodes per task by function (load-independent)")
    args = p.parse_args()
    n = args.tasks
    if args.bytecodes:
        print(f"nborch {nborch.__version__}, Python {sys.version.split()[0]}\n")
        with tempfile.TemporaryDirectory(prefix="nborch-profile-") as home:
            bytecodes(n, home, args.top)
        return
    print(f"nborch {nborch.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          f"load average {load()}; layered_dag({n:,}) of async no-ops, build + run with the defaults\n")
    with tempfile.TemporaryDirectory(prefix="nborch-profile-") as home:
        ph = phases(n, args.repeat, home)
        rows = [
            ("build: Task(fn, *ups, name=...) into DAG", ph["build"]),
            ("graph validation/compile (build_graph)", ph["compile"]),
            ("scheduling loop (store=False run - compile)", ph["store=False"] - ph["compile"]),
            ("events (a subscriber, no store)", ph["events"] - ph["store=False"]),
            ("recording (defaults - events)", ph["defaults"] - ph["events"]),
        ]
        print(f"phases by wall clock, µs/task, best of {args.repeat} interleaved (no profiler)")
        for what, t in rows:
            print(f"  {what:46} {t * 1e6:7.2f}")
        user = ph["build"] + ph["defaults"]
        print(f"  {'= build + run with the defaults':46} {user * 1e6:7.2f}   "
              f"(raw_baseline {ph['raw'] * 1e6:.2f}: {user / ph['raw']:.1f}x)")
        print(f"  runs: store=False {ph['store=False'] * 1e6:.2f}, "
              f"with a subscriber {ph['events'] * 1e6:.2f}, "
              f"defaults {ph['defaults'] * 1e6:.2f}; load {load()}")
        in_build, in_run, tb, tr = gc_during(n, home)
        for what, g, t in (("building", in_build, tb), ("a defaults run", in_run, tr)):
            print(f"  cyclic GC while {what}: {sum(g.seconds) / n * 1e6:.2f} of {t / n * 1e6:.2f} µs/task "
                  f"(collections of generation 0/1/2: {'/'.join(map(str, g.count))}; generation 2 "
                  f"took {g.seconds[2] / n * 1e6:.2f})")
        print()
        st, elapsed = profile(n, args.top, home)
        print_profile(st, n, args.top, elapsed, user * n)
        if not args.no_pyinstrument:
            pyinstrument_tree(n, home, args.tree_lines)


if __name__ == "__main__":
    main()

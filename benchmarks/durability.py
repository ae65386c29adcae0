"""What a SIGKILL loses, and what ``durable=True`` costs.

    python benchmarks/durability.py                # both parts
    python benchmarks/durability.py --kills 40     # only the SIGKILL window, 40 kills per mode
    python benchmarks/durability.py --cost         # only the cost table

The window: a subprocess runs 20,000 short tasks (async and sync, ``limit=8``, or ``--limit``;
0: no limit, so tasks start in bursts of 1,000) into a store,
and an independent subscriber (after the recorder) appends each SUCCEEDED task with its time
to a file opened with O_APPEND. The process is SIGKILLed at a random moment; then every
witnessed task that is not in the store counts as lost, and the window is the age, at the
kill, of the oldest lost one. Default mode commits every 50 ms from the run's loop;
``durable=True`` commits each task's row before any other subscriber sees the event.

The cost: no-op tasks in a ``Parallel`` (1,000 and 10,000), ``store=False`` against the
default recording against ``durable=True``, best of ``--repeat``, interleaved; µs per task
is the run's wall time (graph building included) divided by the number of tasks.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import nborch  # noqa: E402
from nborch import Parallel, Task  # noqa: E402

KILLED = textwrap.dedent(
    """
    import asyncio, os, sys, time, nborch
    from nborch import Parallel, Task, TaskState

    home, log, mode, limit = sys.argv[1:5]
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def witness(e):
        if type(e).__name__ == "TaskEvent" and e.state is TaskState.SUCCEEDED:
            os.write(fd, f"{e.task} {time.time():.6f}\\n".encode())

    async def tick(i):
        await asyncio.sleep(0.001 * (i % 3))
        return i

    def sync_tick(i):
        return i

    tasks = [Task(tick if i % 4 else sync_tick, i, name=f"t{i}") for i in range(20_000)]
    nborch.run(Parallel(*tasks, limit=int(limit) or None), store=home, run_id="killed", durable=mode == "durable",
               on_event=witness)
    """
)


def kill_once(folder: Path, mode: str, delay: float, limit: int) -> tuple[int, int, float]:
    """(witnessed, lost, window in s) of one kill."""
    home, log, script = folder / "home", folder / "log", folder / "killed.py"
    script.write_text(KILLED)
    proc = subprocess.Popen([sys.executable, str(script), str(home), str(log), mode, str(limit)])
    while not (log.exists() and log.stat().st_size):
        time.sleep(0.005)
    time.sleep(delay)
    killed_at = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    witnessed = {}
    for line in log.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            name, at = line.split()
            witnessed[name] = float(at)
    db = sqlite3.connect(home / "nborch.db")
    stored = {t for (t,) in db.execute("SELECT task FROM tasks")}
    db.close()
    lost = [killed_at - at for name, at in witnessed.items() if name not in stored]
    return len(witnessed), len(lost), max(lost, default=0.0)


def window(kills: int, limit: int) -> None:
    rng = random.Random(1)
    for mode in ("default", "durable"):
        windows, total, lost_total = [], 0, 0
        for i in range(kills):
            with tempfile.TemporaryDirectory() as d:
                seen, lost, w = kill_once(Path(d), mode, rng.uniform(0.05, 1.5), limit)
            total, lost_total = total + seen, lost_total + lost
            windows.append(w)
            print(f"  {mode:<8} kill {i + 1:>3}: {seen:>6} finished, {lost:>4} not in the store, "
                  f"oldest lost {w * 1000:6.1f} ms before the kill", flush=True)
        windows.sort()
        print(f"{mode}: {kills} kills, {lost_total} of {total} finished tasks lost "
              f"({100 * lost_total / max(total, 1):.2f}%); window median {windows[len(windows) // 2] * 1000:.0f} ms, "
              f"max {windows[-1] * 1000:.0f} ms\n", flush=True)


def cost(repeat: int) -> None:
    def noop() -> None:
        return None

    print(f"{'tasks':>7} {'store=False':>12} {'default':>9} {'durable':>9}   (µs per task, best of {repeat})")
    from nborch.store import SqliteStore

    with tempfile.TemporaryDirectory() as d:
        store = SqliteStore(d)
        for n in (1_000, 10_000):
            best = {"store=False": 1e9, "default": 1e9, "durable": 1e9}
            for _ in range(repeat):
                for label, opts in (("store=False", {"store": False}), ("default", {"store": store}),
                                    ("durable", {"store": store, "durable": True})):
                    flow = Parallel(*[Task(noop, name=f"n{i}") for i in range(n)])
                    start = time.perf_counter()
                    nborch.run(flow, **opts)
                    best[label] = min(best[label], time.perf_counter() - start)
            print(f"{n:>7,} " + " ".join(f"{best[k] / n * 1e6:>{w}.1f}" for k, w in
                                         (("store=False", 12), ("default", 9), ("durable", 9))), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=0, help="measure the window only, with this many kills")
    parser.add_argument("--cost", action="store_true", help="measure the cost only")
    parser.add_argument("--limit", type=int, default=8, help="Parallel(limit=) of the killed run; 0: none")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not args.cost:
        window(args.kills or 20, args.limit)
    if args.cost or not args.kills:
        cost(args.repeat)


if __name__ == "__main__":
    main()

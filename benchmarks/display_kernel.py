"""The live display's cost where users pay it: ``dag.run()`` in a real Jupyter kernel.

    python benchmarks/display_kernel.py                    # 1,000 and 10,000 tasks, best of 7
    python benchmarks/display_kernel.py --tasks 1000 --repeat 11 --messages
    python benchmarks/display_kernel.py --shape mapped --tasks 10000   # one map of 10,000 items

A kernel of this Python (jupyter_client's KernelManager, the ``python3`` kernelspec) runs
``%load_ext nborch``, builds a layered DAG of async no-ops (100 tasks per layer, two upstreams
each, as ``benchmarks/engine.py``), then runs it with a plain blocking ``dag.run()`` in a cell,
as a user would: the run goes to nborch's loop thread while the cell waits, and the live widget
sends its comm messages to this client, which reads them as a front end would. Each run is
timed inside the cell (``time.perf_counter`` around ``dag.run()``, and ``time.process_time``:
the kernel's CPU time, every thread, which other processes on a busy machine disturb less);
runs alternate display on / ``display=False`` (the order flips every round) and the figures are
the best of ``--repeat`` each. Both runs record into the kernel's store, as a plain ``dag.run()`` does (``--no-store``:
neither does, which leaves the display alone against the engine). ``--messages`` prints what the display sent per run (iopub messages by
kind, and their JSON size). ``--shape mapped`` runs one mapped node instead,
``item.map(range(n))`` (its items appear when it expands, in the run). Target: on / off <= 1.2
at 1,000 and 10,000 tasks, and for a 10,000-item map.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import tempfile
import textwrap
import time
from collections import Counter
from typing import Any

SETUP = """
import gc, random, time
import nborch
from nborch import DAG, Task
%load_ext nborch

async def noop(*_):
    return None

def layered(n, width=100, seed=7):
    rng = random.Random(seed)
    dag, prev, tasks = DAG(), [], []
    for i in range(n):
        if i % width == 0 and i:
            prev = tasks[i - width:i]
        t = Task(noop, name=f"t{{i}}")
        tasks.append(t)
        dag.add(t, after=rng.sample(prev, min(2, len(prev))) if prev else [])
    return dag

@nborch.task
async def item(x):
    return None

_bench = {{}}
# layered: n tasks in layers of 100; mapped: one mapped node of n items (item.map(range(n)))
dags = {{n: layered(n) if {shape!r} == "layered" else item.map(range(n)) for n in {sizes!r}}}
"""

CELL = """
gc.collect()
_c0, _t0 = time.process_time(), time.perf_counter()
_r = dags[{n}].run(display={display}, store={store})
_bench["t"], _bench["cpu"] = time.perf_counter() - _t0, time.process_time() - _c0
assert len(_r) == {n}  # a DAG: its values by task; a map: its items' values
"""


class Kernel:
    """A real kernel; ``execute`` returns the cell's user expression and the iopub messages it caused."""

    def __init__(self, cwd: str) -> None:
        from jupyter_client import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=cwd, env={**os.environ, "NBORCH_HOME": cwd})
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def execute(self, code: str, expr: str | None = None, timeout: float = 300) -> tuple[Any, list[dict]]:
        msg_id = self.kc.execute(textwrap.dedent(code), user_expressions={"x": expr} if expr else None)
        msgs: list[dict] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise TimeoutError(f"cell did not finish in {timeout}s: {code[:80]!r}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            msgs.append(msg)
            if msg["msg_type"] == "error":
                raise RuntimeError("\n".join(msg["content"]["traceback"]))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        while True:
            reply = self.kc.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        value = None
        if expr:
            got = reply["content"]["user_expressions"]["x"]
            if got["status"] != "ok":
                raise RuntimeError(f"{expr}: {got}")
            value = json.loads(got["data"]["text/plain"])
        return value, msgs

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def message_summary(msgs: list[dict]) -> str:
    kinds: Counter[str] = Counter()
    size: Counter[str] = Counter()
    for m in msgs:
        kind = m["msg_type"]
        if kind in ("status", "execute_input"):
            continue
        if kind == "comm_msg":
            kind += "/" + ",".join(sorted(m["content"].get("data", {}).get("state", {}))) or "-"
        kinds[kind] += 1
        size[kind] += len(json.dumps(m["content"]))
    total = sum(size.values())
    lines = [f"    {sum(kinds.values())} iopub messages, {total / 1024:.1f} KiB of JSON"]
    for kind, n in kinds.most_common():
        lines.append(f"      {n:5d} x {kind:40s} {size[kind] / 1024:8.1f} KiB")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--no-store", dest="store", action="store_false", help="store=False on both sides")
    p.add_argument("--messages", action="store_true", help="print the iopub messages of the last run")
    p.add_argument("--shape", choices=("layered", "mapped"), default="layered",
                   help="layered DAGs of n tasks, or one mapped node of n items (item.map(range(n)))")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="nborch-bench-") as cwd:
        kernel = Kernel(cwd)
        try:
            kernel.execute(SETUP.format(sizes=args.tasks, shape=args.shape))
            for n in args.tasks:
                times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
                last_msgs: list[dict] = []

                def once(display: bool, n: int = n) -> list[dict]:
                    code = CELL.format(n=n, display=display, store=args.store, shape=args.shape)
                    t, msgs = kernel.execute(code, '[_bench["t"], _bench["cpu"]]')
                    times[display].append(tuple(t))
                    return msgs

                once(True), once(False)  # warm up: imports, graphviz, the first layout
                times = {True: [], False: []}
                for i in range(args.repeat):
                    for display in ((True, False) if i % 2 else (False, True)):
                        msgs = once(display)
                        if display:
                            last_msgs = msgs
                what = "layered" if args.shape == "layered" else "one mapped node (item.map(range(n)))"
                print(f"{n:,} tasks, {what}, async no-ops, node.run() in a kernel cell, "
                      f"store={args.store}, best of {args.repeat}")
                for what, i in (("wall", 0), ("cpu ", 1)):
                    on = min(t[i] for t in times[True])
                    off = min(t[i] for t in times[False])
                    med_on = sorted(t[i] for t in times[True])[args.repeat // 2]
                    med_off = sorted(t[i] for t in times[False])[args.repeat // 2]
                    print(f"  {what}: display=False {off * 1e3:7.1f} ms, on {on * 1e3:7.1f} ms: "
                          f"{on / off:.3f}x (target <= 1.2x; medians {med_off * 1e3:.1f} / {med_on * 1e3:.1f} ms)")
                if args.messages:
                    print(message_summary(last_msgs))
                sys.stdout.flush()
        finally:
            kernel.close()


if __name__ == "__main__":
    main()

"""The floor that nborch's engine is measured against: a minimal hand-written asyncio scheduler.

The project's reference floor: copied unchanged from ../shared/bench/raw_baseline.py (only this
paragraph is added), so that benchmarks/engine.py measures against exactly that code.

In-degree counting, one coroutine per task started with ``create_task`` when its last upstream
finishes, results passed as arguments. No retries, limits, events or records: what any
orchestrator must at least do. ``layered_dag(n)`` is the held-out benchmark's shape (about
sqrt(n) layers, each node depending on 1-3 random nodes of the previous layer).

    deps = layered_dag(10_000)
    asyncio.run(raw_run(deps))          # compare with building and running the same DAG in nborch
"""
import asyncio
import random


def layered_dag(n, seed=7):
    rnd = random.Random(seed)
    width = max(1, int(n ** 0.5))
    deps = []
    for i in range(n):
        layer = i // width
        if layer == 0:
            deps.append([])
        else:
            lo, hi = (layer - 1) * width, layer * width
            k = rnd.randint(1, 3)
            deps.append(sorted(rnd.sample(range(lo, min(hi, n)), min(k, hi - lo))))
    return deps


async def anoop(*args):
    return 0


async def raw_run(deps):
    n = len(deps)
    children = [[] for _ in range(n)]
    indeg = [len(d) for d in deps]
    for i, d in enumerate(deps):
        for j in d:
            children[j].append(i)
    results = [None] * n
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    remaining = n

    async def go(i):
        nonlocal remaining
        results[i] = await anoop(*[results[j] for j in deps[i]])
        remaining -= 1
        for c in children[i]:
            indeg[c] -= 1
            if indeg[c] == 0:
                loop.create_task(go(c))
        if remaining == 0:
            done.set()

    for i in range(n):
        if indeg[i] == 0:
            loop.create_task(go(i))
    await done.wait()
    return results

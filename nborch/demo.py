"""The built-in demo workflow (``nborch demo``): a few seconds of visible, varied work."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any

from .core.policies import RetryPolicy
from .core.task import task
from .core.workflow import DAG, Parallel

_attempts: dict[str, int] = {}


@task(limit=3)
async def fetch(source: str) -> list[int]:
    """Pretend to download a source (I/O: async)."""
    await asyncio.sleep(0.3 + random.random() * 0.4)
    return [len(source) * i for i in range(1, 6)]


@task(retry=RetryPolicy(max_attempts=3, delay=0.2, backoff=2.0))
async def fetch_flaky() -> list[int]:
    """Fails on its first attempt, to show a retry."""
    _attempts["flaky"] = _attempts.get("flaky", 0) + 1
    await asyncio.sleep(0.2)
    if _attempts["flaky"] < 2:
        raise ConnectionError("upstream API hiccup")
    return [7, 7, 7]


@task
def clean(rows: list[list[int]]) -> list[int]:
    """CPU work in a worker thread (sync)."""
    time.sleep(0.3)
    return sorted(x for part in rows for x in part)


@task
def stats(clean: list[int]) -> dict[str, float]:
    time.sleep(0.2)
    return {"n": len(clean), "mean": sum(clean) / len(clean)}


@task
async def fib(n: int) -> int:
    """Recursive child tasks: each call is its own task in the run."""
    if n < 2:
        return n
    await asyncio.sleep(0.01)
    return await fib(n - 1) + await fib(n - 2)


@task
def report(stats: dict[str, float], fib: int) -> str:
    return f"{int(stats['n'])} rows, mean {stats['mean']:.1f}, fib = {fib}"


def build() -> DAG:
    """The demo DAG: parallel fetches (one flaky) -> clean -> stats, beside a fib(5) tree."""
    _attempts.clear()
    sources = Parallel(*(fetch(s) for s in ("alpha", "beta", "gamma", "delta", "epsilon")), fetch_flaky())
    return DAG(clean(sources), stats, fib(5), report, name="demo")


def main(**options: Any) -> int:
    from .runtime.runner import run

    result = run(build(), display=True, **options)
    sys.stderr.flush()
    print(result.value["report"] if result.ok else result.report(), flush=True)
    return 0 if result.ok else 1

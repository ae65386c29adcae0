"""Checked by mypy and pyright (tests/test_typing.py), never run: what users' type checkers see."""
# pyright: reportUnnecessaryTypeIgnoreComment=true

from typing import assert_type

import nborch
from nborch import DAG, Task, task


def plain(n: int) -> str:
    return str(n)


async def plain_async(n: int) -> str:
    return str(n)


@task
def parse(text: str, strict: bool = False) -> int:
    return len(text)


@task
async def fetch(url: str) -> bytes:
    return url.encode()


@task(retries=2, timeout=5.0)
def total(values: list[int]) -> float:
    return float(sum(values))


@task(retries=1)
async def slow(n: int) -> list[int]:
    return [n]


assert_type(parse("x"), Task[int])
assert_type(parse("x", strict=True).run(), int)
assert_type(fetch("u"), Task[bytes])
assert_type(fetch("u").run(), bytes)
assert_type(total([1, 2]).run(), float)
assert_type(slow(3).run(), list[int])
assert_type(Task(plain, 1), Task[str])
assert_type(Task(plain_async, 1), Task[str])
assert_type(Task(fetch, "u"), Task[bytes])
assert_type(nborch.run(DAG(parse("a"))), nborch.Run)
assert_type(parse.with_options(retries=3)("x"), Task[int])


async def inside() -> None:
    assert_type(await fetch("u"), bytes)
    assert_type(await slow(1).run_async(), list[int])


# A task's arguments may be nodes standing for their values: no error for the idiom
assert_type(total(slow(1)).run(), float)
assert_type(parse(text=parse.fn("x").__str__()), Task[int])
parse.fn(1)  # type: ignore[arg-type]  # the plain function keeps its signature: an error

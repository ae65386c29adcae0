"""Concurrency slots: the run's pools, a Parallel's and a task function's limits, and how a
task takes and gives back its slots. One ``Slots`` per engine (``engine.slots``) owns them.

**Pools.** ``max_concurrency=N`` is the pool "default" of N slots; ``max_concurrency={"default":
8, "gpu": 1}`` adds named pools, and ``@task(pool="gpu", slots=2)`` takes 2 slots of "gpu" (and
none of "default"). A pool serves its waiters in order (first come, first served, as Go's
``semaphore.Weighted`` does): a task that needs more slots than are free holds the free ones,
first in line, and gathers the others as they are released, so a stream of one-slot tasks
cannot pass a two-slot one forever; the price is that later tasks wait behind it even when one
would fit. ``Parallel(limit=)`` and ``@task(limit=)`` count tasks, not slots: they say how many
calls may overlap, while slots say how much of a shared resource one call takes. A task that
takes more slots than its pool has, or names a pool the run does not have, is a
DefinitionError before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import DefinitionError, did_you_mean
from .invocation import Inv, Limit
from .limits import call_values

if TYPE_CHECKING:
    from .engine import Engine
    from .graph import Spec

__all__ = [
    "DEFAULT_POOL", "Slots", "acquire_weighted", "check_max_concurrency", "check_pool", "drop_waiter",
    "make_pools", "unhold",
]

DEFAULT_POOL = "default"


class Slots:
    """The slots of one run: its pools (``max_concurrency``), its Parallels' limits and its task
    functions' ``limit=`` (per ``limit_by`` value too). A task takes one slot of each limit it
    is under (``slots=N``: N of its pool) before its body starts, or waits in the line of the
    first full one; a released slot goes to the first in line."""

    __slots__ = ("engine", "pools", "default", "by_fn", "by_group")

    def __init__(self, engine: Engine, max_concurrency: int | Mapping[str, int | None] | None) -> None:
        self.engine = engine
        self.pools = make_pools(max_concurrency)  # by name: "default" (max_concurrency=N) and named pools
        self.default = self.pools.get(DEFAULT_POOL)  # max_concurrency's pool; None: no limit
        self.by_fn: dict[Any, Limit] = {}  # (function, limit_by values or None) -> its limit=
        self.by_group: dict[int, Limit] = {}  # id(Group) -> a Parallel's limit=

    def limits_for(self, inv: Inv) -> tuple[Limit, ...]:
        """The limits ``inv`` is under, its pool first (``acquire_weighted`` finds it there,
        ``release`` pumps it first); sets its weight (``slots=``)."""
        spec = inv.spec
        opts = spec.task.options
        limits: list[Limit] = []
        pool = self.default if opts.pool is None else self.pools.get(opts.pool)
        if pool is not None:
            limits.append(pool)
            inv.weight = opts.slots
        for grp in spec.groups:
            if grp.limit:
                lim = self.by_group.get(id(grp))
                if lim is None:
                    lim = self.by_group[id(grp)] = Limit(grp.limit)
                limits.append(lim)
        if opts.limit and not opts.limit_by:
            key = (spec.task.fn, None)
            lim = self.by_fn.get(key)
            if lim is None:
                lim = self.by_fn[key] = Limit(opts.limit)
            limits.append(lim)
        return tuple(limits)

    def keyed(self, inv: Inv) -> Limit:
        """``limit_by=``: the limit of the values of those arguments in ``inv``'s call."""
        opts = inv.spec.task.options
        args, kwargs = inv.call  # type: ignore[misc]  # keyed tasks always resolve their call
        key = (inv.spec.task.fn, call_values(inv, opts.limit_by, args, kwargs))
        lim = self.by_fn.get(key)
        if lim is None:
            lim = self.by_fn[key] = Limit(opts.limit)  # type: ignore[arg-type]
        return lim

    def acquire(self, inv: Inv, front: bool) -> bool:
        """Take a slot in every limit of ``inv``, or queue it on the first full one."""
        if inv.weight != 1:  # slots=N: N slots of its pool
            return acquire_weighted(inv, front)
        for lim in inv.limits:
            if lim.used >= lim.cap:
                if front:
                    lim.waiters.appendleft(inv)
                else:
                    lim.waiters.append(inv)
                return False
        for lim in inv.limits:
            lim.used += 1
        inv.holding = True
        return True

    def release(self, inv: Inv) -> None:
        if not inv.holding:
            return
        inv.holding = False
        if inv.weight != 1:
            inv.limits[0].used -= inv.weight - 1
        for lim in inv.limits:
            lim.used -= 1
        for lim in inv.limits:
            self.pump(lim)

    def pump(self, lim: Limit) -> None:
        """Give ``lim``'s free slots to its waiters, in order: a task that gave its slots back
        while it waited resumes; a task that has not started yet is launched."""
        engine = self.engine
        waiters = lim.waiters
        while waiters and lim.used < lim.cap:
            inv = waiters.popleft()
            if lim.held:  # slots kept for the first in line (slots=N): it takes them or keeps them
                unhold(lim)
            resuming = inv.resume is not None
            if inv.state.is_final or ((engine.cancelling or inv.stop) and not resuming):
                continue
            if self.acquire(inv, front=resuming):
                if resuming:
                    fut, inv.resume = inv.resume, None
                    if not fut.done():  # type: ignore[union-attr]
                        fut.set_result(None)  # type: ignore[union-attr]
                else:
                    engine.launch(inv)

    async def reacquire(self, inv: Inv) -> None:
        """Take the slots back after a wait, ahead of tasks that have not started yet."""
        if not inv.limits or self.acquire(inv, front=True):
            return
        inv.resume = self.engine.loop.create_future()  # type: ignore[union-attr]
        try:
            await inv.resume
        except BaseException:
            inv.resume = None
            raise


def check_max_concurrency(value: Any) -> None:
    """Raise DefinitionError unless ``value`` is a valid ``max_concurrency=``."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return
    if not isinstance(value, Mapping):
        raise DefinitionError(
            f"max_concurrency= expects an integer >= 1 or None, got {value!r} "
            "(or pool sizes by name: max_concurrency={'default': 8, 'gpu': 1})"
        )
    for name, size in value.items():
        if not isinstance(name, str) or not name:
            raise DefinitionError(f"max_concurrency= names pools with non-empty strings, got {name!r} in {value!r}")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise DefinitionError(
                f"max_concurrency=: pool {name!r} expects a size >= 1 (or None for no limit), got {size!r}"
            )


def make_pools(max_concurrency: int | Mapping[str, int | None] | None) -> dict[str, Limit | None]:
    """The run's pools by name (None: a pool without a limit); an int N is {"default": N}."""
    if max_concurrency is None:
        return {}
    if isinstance(max_concurrency, int):
        return {DEFAULT_POOL: Limit(max_concurrency)}
    return {name: None if size is None else Limit(size) for name, size in max_concurrency.items()}


def check_pool(pools: dict[str, Limit | None], spec: Spec) -> None:
    """A DefinitionError, naming the task and the fix, if ``spec``'s task names a pool the run
    does not have or takes more slots than its pool has."""
    opts = spec.task.options
    name = opts.pool or DEFAULT_POOL
    if name not in pools and name != DEFAULT_POOL:  # "default" not sized: no limit
        known = sorted({*pools, DEFAULT_POOL})
        sizes = {k: (v.cap if v is not None else None) for k, v in pools.items()}
        sizes[name] = 1
        raise DefinitionError(
            f"task {spec.name!r} runs in pool {name!r}, but the run has no such pool "
            f"(its pools: {', '.join(map(repr, known))}).{did_you_mean(name, known)} "
            f"Give its size: max_concurrency={sizes!r}."
        )
    pool = pools.get(name)
    if pool is not None and opts.slots > pool.cap:
        raise DefinitionError(
            f"task {spec.name!r} takes slots={opts.slots}, but pool {name!r} has only {pool.cap}: it could "
            f"never start. Lower slots= or make the pool bigger (max_concurrency={{{name!r}: {opts.slots}}})."
        )


def acquire_weighted(inv: Inv, front: bool) -> bool:
    """``Slots.acquire`` for a task that takes ``weight`` > 1 slots of its pool (its first
    limit) and one slot of each other limit: take them, or queue it (True: taken).

    When its pool has some free slots but not enough, and nobody holds slots already, it holds
    the free ones (``Limit.held``, counted as used, so nobody behind it takes them) and waits
    first in line: each release of the pool offers it the held slots and the freed ones
    (``Slots.pump`` calls ``unhold``) until they are enough. So a stream of one-slot tasks
    cannot pass it forever; the price is that they wait behind it while it gathers its slots."""
    pool = inv.limits[0]
    for lim in inv.limits:
        if lim is not pool and lim.used >= lim.cap:
            if front:
                lim.waiters.appendleft(inv)
            else:
                lim.waiters.append(inv)
            return False
    free = pool.cap - pool.used
    if free >= inv.weight:
        for lim in inv.limits:
            lim.used += 1
        pool.used += inv.weight - 1
        inv.holding = True
        return True
    if free > 0 and not pool.held:  # first in line: keep what is free, wait for the rest
        pool.held = free
        pool.used = pool.cap
        pool.waiters.appendleft(inv)
    elif front:  # a task that gave its slots back while it waited: ahead of new work
        pool.waiters.appendleft(inv)
    else:
        pool.waiters.append(inv)
    return False


def unhold(lim: Limit) -> None:
    """The first in line of ``lim`` is being served: the slots held for it are free again (it
    takes them now, or holds them again)."""
    lim.used -= lim.held
    lim.held = 0


def drop_waiter(slots: Slots, inv: Inv) -> None:
    """``inv`` (``slots`` > 1) settled while it waited for its slots: if it held some, they go
    to the next in line."""
    pool = inv.limits[0]
    if pool.held and pool.waiters and pool.waiters[0] is inv:
        pool.waiters.popleft()
        unhold(pool)
        slots.pump(pool)

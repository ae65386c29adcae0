"""``cache=True``: the outermost step of a task's attempts (``nborch.core.attempts``). Before
anything else it computes the task's key and looks it up: a hit is the task's value, and
nothing below runs (no executor, no rate wait, no breaker, no attempt). After a success the
value is saved under the key, on disk before SUCCEEDED goes out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .policy_steps import Step
from .remote import Remote, collect_remotes, has_remote, materialize, replace_remotes

__all__ = ["Cache"]


class Cache(Step):
    """Looks the task's value up before it runs, and saves it after it succeeded."""

    __slots__ = ()

    async def __call__(self, args: Any, kwargs: Any) -> Any:
        # the key hashes remote arguments where they are, before they are prepared
        hit, value = await self.lookup(args, kwargs)
        if hit:
            return value
        value = await self.inner(args, kwargs)
        inv, cache = self.inv, self.engine.cache
        if inv.cache_key is not None:
            local = (await materialize(value)) if isinstance(value, Remote) else value
            inv.size = await asyncio.to_thread(cache.save, inv.cache_key, inv.name, local)
            if inv.size is None:
                inv.cache_key = None
        return value

    async def lookup(self, args: Any, kwargs: Any) -> tuple[bool, Any]:
        """Compute the task's cache key (``inv.cache_key``); (True, value) on a hit (the task
        is then ``cached``), else (False, None) with ``inv.cache_miss`` saying why."""
        inv, engine = self.inv, self.engine
        invs = engine.invs
        ups = [invs[u.name].cache_key for u in inv.spec.up if u.name in invs and invs[u.name].cache_key]
        if engine.remotes and has_remote((args, kwargs)):
            args, kwargs = await fingerprinted(args, kwargs)
        key = await asyncio.to_thread(engine.cache.call_key, inv.spec.task.fn, args, kwargs, ups)
        inv.cache_key = key.digest if key is not None else None
        if key is None:
            inv.cache_miss = "its key cannot be computed"
            return False, None
        memory = engine.memory
        before = memory.cache_keys.get(inv.name) if memory is not None else None
        if memory is not None:
            memory.cache_keys[inv.name] = key
        if engine.force:
            inv.cache_miss = "the cache was ignored (force)"
            return False, None
        hit, value, size = await asyncio.to_thread(engine.cache.load, key.digest)
        if not hit:
            from .reuse import describe_changes

            changed = describe_changes(inv.spec, key, before) if before is not None else None
            inv.cache_miss = (f"no value stored for its key: {changed}" if changed
                              else "no value stored for its key (first run with this code and these inputs)")
            return False, None
        inv.cached, inv.size = True, size
        return True, value


async def fingerprinted(args: Any, kwargs: Any) -> tuple[Any, Any]:
    """Arguments for a cache key: a Remote already fetched (a cached upstream's) as its value,
    the same key a local run computes; any other as a hash of its value computed on the
    cluster, so the value does not come back for that."""
    found: list[Remote] = []
    collect_remotes((args, kwargs), found)
    prints = {
        id(r): r.value if r.fetched else ("nborch-remote-value", await r.executor.fingerprint(r))
        for r in found
    }
    return replace_remotes(args, lambda r: prints[id(r)]), replace_remotes(kwargs, lambda r: prints[id(r)])

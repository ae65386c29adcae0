"""``nborch.cache``: manage cached task results (``@task(cache=True)``, ``%%task NAME --cache``)."""

from __future__ import annotations

from typing import Any

__all__ = ["clear"]


def clear(store: Any = None) -> int:
    """Empty the cache of the default store (or ``store``); returns how many values were removed."""
    from .store import get_store

    return (store or get_store()).clear_cache()

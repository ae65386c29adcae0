"""Cached task results: keys from code and inputs, values on disk with cloudpickle.

The key of a call hashes (1) the task's code, from its bytecode and constants (source is not
always there), followed through the helper functions, closures and globals it reads, which a
source-only key misses (PrefectHQ/prefect#23062); (2) its argument values; (3) the keys of its
cached upstreams. So changed code or inputs invalidate the task and everything downstream.
Values are written atomically (temporary file, then rename) before SUCCEEDED is published.
"""

from __future__ import annotations

import hashlib
import os
import types
import warnings
from collections.abc import Iterable
from typing import Any

from .sqlite import SqliteStore

__all__ = ["Cache", "code_hash", "fingerprint"]

_SIMPLE = (int, float, complex, str, bytes, bool, type(None))
VERSION = "nborch-cache-1"


def _code_names(code: types.CodeType) -> Iterable[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _hash_code(code: types.CodeType, h: Any) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(const, h)
        else:
            h.update(repr(const).encode())


def _hash_value(name: str, value: Any, h: Any, seen: set[int]) -> None:
    h.update(name.encode())
    fn = getattr(value, "fn", None)  # a TaskFunction: hash the function it wraps
    if isinstance(fn, types.FunctionType):
        value = fn
    if isinstance(value, types.FunctionType):
        _hash_function(value, h, seen)
    elif isinstance(value, types.ModuleType):
        h.update(value.__name__.encode())
    elif isinstance(value, type):
        h.update(f"{value.__module__}.{value.__qualname__}".encode())
    elif isinstance(value, _SIMPLE) or (
        isinstance(value, tuple | frozenset) and all(isinstance(v, _SIMPLE) for v in value)
    ):
        h.update(repr(value).encode())
    else:  # a large object read as a global: its type only (hashing it would cost more than the task)
        h.update(type(value).__qualname__.encode())


def _hash_function(fn: types.FunctionType, h: Any, seen: set[int]) -> None:
    if id(fn) in seen:
        return
    seen.add(id(fn))
    code = fn.__code__
    _hash_code(code, h)
    h.update(repr(fn.__defaults__).encode())
    if fn.__closure__:
        for var, cell in zip(code.co_freevars, fn.__closure__, strict=False):
            try:
                _hash_value(var, cell.cell_contents, h, seen)
            except ValueError:  # an empty cell
                h.update(var.encode())
    globs = fn.__globals__
    for name in sorted(set(_code_names(code))):
        if name in globs:
            _hash_value(name, globs[name], h, seen)


def code_hash(fn: Any) -> str:
    """A hash of ``fn``'s code and of the code and simple values it reads."""
    h = hashlib.sha256(VERSION.encode())
    fn = getattr(fn, "fn", fn)
    if isinstance(fn, types.FunctionType):
        _hash_function(fn, h, set())
    else:
        h.update(repr(fn).encode())
    return h.hexdigest()


def fingerprint(value: Any) -> str | None:
    """A hash of a value (its cloudpickle bytes), or None if it cannot be pickled."""
    import cloudpickle

    try:
        return hashlib.sha256(cloudpickle.dumps(value, protocol=5)).hexdigest()
    except Exception:
        return None


class Cache:
    """Task results by key, in a ``SqliteStore``'s folder."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.folder = store.home / "values"
        self._warned = store.warned  # one warning per task and store, not one per run

    def key(self, fn: Any, args: Any, kwargs: dict[str, Any], upstream_keys: Iterable[str]) -> str | None:
        """The key of one call, or None when its arguments cannot be fingerprinted."""
        inputs = fingerprint((args, sorted(kwargs.items())))
        if inputs is None:
            return None
        h = hashlib.sha256(code_hash(fn).encode())
        h.update(inputs.encode())
        for k in sorted(upstream_keys):
            h.update(k.encode())
        return h.hexdigest()[:32]

    def load(self, key: str) -> tuple[bool, Any, int]:
        """(hit, value, size in bytes)."""
        import cloudpickle

        entry = self.store.cache_entry(key)
        if entry is None:
            return False, None, 0
        path, size = entry
        try:
            with open(self.folder / path, "rb") as f:
                return True, cloudpickle.load(f), size
        except (OSError, EOFError, Exception):  # a missing or damaged file is a miss
            return False, None, 0

    def save(self, key: str, task: str, value: Any) -> int | None:
        """Store a value; returns its size, or None (with one warning) if it cannot be pickled."""
        import cloudpickle

        try:
            data = cloudpickle.dumps(value, protocol=5)
        except Exception as err:
            if task not in self._warned:
                self._warned.add(task)
                warnings.warn(
                    f"nborch: the value of task {task!r} cannot be pickled ({type(err).__name__}: {err}); "
                    "it is not cached.",
                    RuntimeWarning,
                    stacklevel=1,
                )
            return None
        name = f"{key}.pkl"
        tmp = self.folder / f".{name}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / name)
        self.store.add_cache_entry(key, task, name, len(data))
        return len(data)

"""Keys of task calls: one key for the disk cache, incremental re-runs and ``%orch why``.

The key of a call (``call_key``) hashes (1) the task's code, from its bytecode and constants
(source is not always there), followed through the helper functions, classes and closures it
reaches, which a source-only key misses (PrefectHQ/prefect#23062); (2) by value, every global
and closure variable that code reads (a dict, a list, an array, a callable object's state);
(3) its argument values; (4) the keys of its upstreams. A value that cannot be hashed, or is
too big to (``HASH_LIMIT``), raises ``Unhashable`` naming it.

Values are hashed from their pickle stream (protocol 5): array and frame buffers go to the
hash out of band, without a copy (100 MB in about 0.07 s); functions and the classes of the
user's own code go in as their code, not as a memory address or a per-process class id; sets
in sorted order, so that a key does not depend on the hash seed of the process. Code and
classes from the standard library and installed packages count by name (and the package's
version), not by their code. The key keeps each part's digest (``CallKey``): the code of each
function and class it reached, each value it read, the arguments, the upstreams; so it can
say which part changed.

Core: the standard library only.
"""

from __future__ import annotations

import dis
import functools
import hashlib
import os
import pickle
import site
import sys
import sysconfig
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .task import TaskFunction

__all__ = ["HASH_LIMIT", "CallKey", "Unhashable", "call_key", "code_hash", "fingerprint"]

VERSION = "nborch-cache-2"
HASH_LIMIT = 1 << 30  # bytes hashed for one key at most: 1 GiB takes about 1.5 s
_ATOMS = frozenset({str, int, float, bytes, bool, type(None), complex})


class Unhashable(Exception):
    """A value that a call's key depends on cannot be hashed, or is too big to."""

    def __init__(self, what: str, reason: str, *, too_big: bool = False) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = what  # how the call reaches it: "reads the global 'DB'", "gets argument 1"
        self.reason = reason
        self.too_big = too_big


@dataclass(frozen=True, slots=True)
class CallKey:
    """The key of one task call (``digest``) and the digest of each part it is made of."""

    digest: str
    code: str  # the task's code, and that of each function and class of the user's it reaches
    values: dict[str, str]  # "global CONFIG", "closure variable k", ... -> the value's digest
    arguments: str
    upstream: str  # the keys of the upstreams
    # the code of each function and class of the user's reached, by qualified name (the task's
    # own function first): what `%orch why` names when the code changed
    functions: dict[str, str] = field(default_factory=dict)

    def changes(self, other: CallKey) -> list[str]:
        """What differs from ``other``: "code", the name of each changed value, "arguments",
        "upstream"."""
        out = ["code"] if self.code != other.code else []
        names = [*self.values, *(n for n in other.values if n not in self.values)]
        out += [n for n in names if self.values.get(n) != other.values.get(n)]
        if self.arguments != other.arguments:
            out.append("arguments")
        if self.upstream != other.upstream:
            out.append("upstream")
        return out


def call_key(fn: Any, args: Any = (), kwargs: dict[str, Any] | None = None,
             upstream_keys: Iterable[str] = ()) -> CallKey:
    """The key of the call ``fn(*args, **kwargs)`` whose cached upstreams have ``upstream_keys``.

    Raises ``Unhashable`` when a value it depends on cannot be hashed or is too big to."""
    if isinstance(fn, TaskFunction):
        fn = fn.fn
    func = getattr(fn, "__func__", fn)  # a bound method: its function's module is home
    walk = _Walk(getattr(func, "__module__", None) or type(fn).__module__, fn)
    if isinstance(fn, types.FunctionType):
        walk.function(fn)
    else:  # a bound method, a callable object, a partial: its function(s) and its state
        what = "is bound to an object" if isinstance(fn, types.MethodType) else "is a callable object"
        walk.values["callable"] = walk.digest(fn, what)
    kwargs = kwargs or {}
    try:
        arguments = walk.raw_digest((tuple(args), sorted(kwargs.items())))
    except Exception:  # say which one
        for i, value in enumerate(args):
            walk.digest(value, f"gets argument {i + 1}")
        for name, value in kwargs.items():
            walk.digest(value, f"gets the argument {name!r}")
        raise
    upstream = hashlib.sha256("\0".join(sorted(upstream_keys)).encode()).hexdigest()[:32]
    code = walk.code.hexdigest()[:32]
    h = hashlib.sha256(code.encode())
    for name, digest in walk.values.items():
        h.update(f"\0{name}\0{digest}".encode())
    h.update(f"\0{arguments}\0{upstream}".encode())
    return CallKey(h.hexdigest()[:32], code, walk.values, arguments, upstream, walk.functions)


def code_hash(fn: Any) -> str:
    """A hash of ``fn``'s code and of the code and values it reads (no arguments)."""
    key = call_key(fn)
    return hashlib.sha256(f"{key.code}{sorted(key.values.items())}".encode()).hexdigest()


def fingerprint(value: Any) -> str | None:
    """A hash of a value, as keys hash arguments; None if it cannot be hashed."""
    try:
        return _Walk(None, None).raw_digest(value)
    except Exception:
        return None


# -- the walk over code and values -----------------------------------------------------------------


class _TooBig(Exception):
    pass


class _Walk:
    """One key's walk: the code digest grows as functions and classes are reached, each value
    read gets its own digest; ``seen`` stops cycles; ``left`` is what may still be hashed."""

    def __init__(self, home: str | None, root: Any) -> None:
        self.code = hashlib.sha256(VERSION.encode())
        self.values: dict[str, str] = {}
        self.functions: dict[str, str] = {}
        self.seen: set[int] = set()
        self.home = home  # the task's module: its globals are named without a module
        self.root = root
        self.left = HASH_LIMIT

    def function(self, fn: types.FunctionType) -> None:
        if id(fn) in self.seen:
            return
        self.seen.add(id(fn))
        module = fn.__module__
        if _by_reference(module):
            self.code.update(_reference(module, fn.__qualname__))
            return
        code = fn.__code__
        digest = _code_digest(code)
        self.functions.setdefault(fn.__qualname__, digest.hex()[:16])
        self.code.update(b"\0def " + fn.__qualname__.encode() + digest)
        of = "" if fn is self.root else f" of {fn.__qualname__}"
        if fn.__defaults__ is not None or fn.__kwdefaults__:
            self.bind(f"defaults{of}", f"has a default value{of}", (fn.__defaults__, fn.__kwdefaults__))
        if fn.__closure__:
            for var, cell in zip(code.co_freevars, fn.__closure__, strict=False):
                try:
                    value = cell.cell_contents
                except ValueError:  # not assigned yet
                    self.code.update(b"\0empty " + var.encode())
                    continue
                self.bind(f"closure variable {var}{of}", f"reads the closure variable {var!r}{of}", value)
        globs = fn.__globals__
        prefix = "" if module == self.home else f"{module}."
        for name in _global_names(code):
            if name in globs:  # else a builtin
                self.bind(f"global {prefix}{name}", f"reads the global {prefix + name!r}", globs[name])

    def klass(self, cls: type) -> None:
        if id(cls) in self.seen:
            return
        self.seen.add(id(cls))
        module = cls.__module__
        if _by_reference(module):
            self.code.update(_reference(module, cls.__qualname__))
            return
        self.code.update(b"\0class " + cls.__qualname__.encode())
        for base in cls.__bases__:
            self.klass(base)
        for name, attr in list(vars(cls).items()):
            if isinstance(attr, staticmethod | classmethod):
                attr = attr.__func__
            self.code.update(b"\0." + name.encode())
            if isinstance(attr, types.FunctionType):
                self.function(attr)
            elif isinstance(attr, property | functools.cached_property):
                for f in (attr.fget, attr.fset, attr.fdel) if isinstance(attr, property) else (attr.func,):
                    if isinstance(f, types.FunctionType):
                        self.function(f)
            elif isinstance(attr, type):
                self.klass(attr)
            elif name.startswith(("__", "_abc_")) or hasattr(type(attr), "__get__"):
                continue  # the class's machinery (__dict__, __slots__, dataclass fields, abc caches)
            else:  # class data, read like a global: by value
                label = f"{cls.__qualname__}.{name}"
                self.bind(f"attribute {label}", f"reads the class attribute {label!r}", attr)

    def bind(self, label: str, what: str, value: Any) -> None:
        """``value`` is read under ``label``: code is followed, anything else hashed by value."""
        if isinstance(value, TaskFunction):
            value = value.fn
        if isinstance(value, types.FunctionType):
            self.code.update(b"\0" + label.encode())
            self.function(value)
        elif isinstance(value, types.ModuleType):
            self.code.update(f"\0{label} module {value.__name__}".encode())
        elif isinstance(value, type):
            self.code.update(b"\0" + label.encode())
            self.klass(value)
        elif label not in self.values:
            self.values[label] = self.digest(value, what)

    def digest(self, value: Any, what: str) -> str:
        try:
            return self.raw_digest(value)
        except Unhashable:
            raise
        except _TooBig:
            raise Unhashable(what, f"over {HASH_LIMIT} bytes", too_big=True) from None
        except Exception as err:
            raise Unhashable(what, f"{type(err).__name__}: {err}") from None

    def raw_digest(self, value: Any) -> str:
        h = hashlib.sha256()
        _Hasher(_Sink(h, self), self).dump(value)
        return h.hexdigest()[:32]

    def sorted_items(self, items: set[Any] | frozenset[Any]) -> tuple[Any, ...]:
        try:
            return tuple(sorted(items))
        except TypeError:  # not mutually comparable: in the order of their own digests
            return tuple(sorted(self.raw_digest(item) for item in items))


class _Sink:
    """Where a value's pickle stream goes: into the hash, counted against the walk's budget;
    out-of-band buffers (arrays, frames) go in the same way, without a copy."""

    __slots__ = ("h", "walk")

    def __init__(self, h: Any, walk: _Walk) -> None:
        self.h = h
        self.walk = walk

    def write(self, data: Any) -> int:
        n = len(data)
        self.walk.left -= n
        if self.walk.left < 0:
            raise _TooBig
        self.h.update(data)
        return n

    def buffer(self, buf: pickle.PickleBuffer) -> None:
        raw = buf.raw()
        self.walk.left -= raw.nbytes
        if self.walk.left < 0:
            raise _TooBig
        self.h.update(raw.nbytes.to_bytes(8, "little"))
        self.h.update(raw)


class _Hasher(pickle.Pickler):
    """A pickler whose stream identifies a value the same way in every process."""

    def __init__(self, sink: _Sink, walk: _Walk) -> None:
        super().__init__(sink, protocol=5, buffer_callback=sink.buffer)
        self.walk = walk

    def persistent_id(self, obj: Any) -> Any:  # called for every object in the value
        t = type(obj)
        if t in _ATOMS:
            return None
        if t is types.FunctionType:  # its code (and what it reads), not a name or an address
            self.walk.function(obj)
            return ("nborch-function", obj.__module__, obj.__qualname__)
        if t is set or t is frozenset:  # the order of str items follows the process's hash seed
            return ("nborch-set", t.__name__, self.walk.sorted_items(obj))
        if isinstance(obj, type) and not _by_reference(obj.__module__):
            self.walk.klass(obj)  # a class of the user's: by its code, not a per-process id
            return ("nborch-class", obj.__qualname__)
        if t is TaskFunction and isinstance(obj.fn, types.FunctionType):
            self.walk.function(obj.fn)
            return ("nborch-task", obj.fn.__qualname__)
        return None


@functools.lru_cache(maxsize=4096)
def _code_digest(code: types.CodeType) -> bytes:
    h = hashlib.sha256()
    _hash_code(code, h)
    return h.digest()


def _hash_code(code: types.CodeType, h: Any) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            h.update(b"\0code")
            _hash_code(const, h)
        else:
            h.update(b"\0" + _const_repr(const).encode())


def _const_repr(const: Any) -> str:
    if isinstance(const, frozenset):  # `x in {"a", "b"}`: its repr's order follows the hash seed
        return f"frozenset({sorted(map(_const_repr, const))})"
    if isinstance(const, tuple):
        return f"({','.join(map(_const_repr, const))})"
    return repr(const)


@functools.lru_cache(maxsize=4096)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """The global names ``code`` (and the code nested in it) loads; not attribute names."""
    names: set[str] = set()
    stack = [code]
    while stack:
        c = stack.pop()
        for ins in dis.get_instructions(c):
            if ins.opname == "LOAD_GLOBAL" or ins.opname == "LOAD_NAME":
                names.add(ins.argval)
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return tuple(sorted(names))


_REFERENCE: dict[str, bool] = {}


def _by_reference(module: str | None) -> bool:
    """True for code of the standard library, of installed packages and of nborch: it counts
    by name and version. The user's own code (``__main__``, a notebook, a project's modules)
    counts by its code."""
    if not module:
        return False
    known = _REFERENCE.get(module)
    if known is not None:
        return known
    top = module.partition(".")[0]
    if top == "__main__":
        found = False
    elif top in sys.stdlib_module_names or top in ("builtins", "nborch"):
        found = True
    else:
        mod = sys.modules.get(top)
        if mod is None:
            return False
        path = getattr(mod, "__file__", None) or next(iter(getattr(mod, "__path__", None) or ()), None)
        found = path is not None and os.path.realpath(path).startswith(_installed_dirs())
    _REFERENCE[module] = found
    return found


@functools.cache
def _installed_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {*site.getsitepackages(), site.getusersitepackages(), paths["purelib"], paths["platlib"]}
    return tuple(os.path.realpath(d) + os.sep for d in dirs if d)


def _reference(module: str, qualname: str) -> bytes:
    version = getattr(sys.modules.get(module.partition(".")[0]), "__version__", "")
    return f"\0ref {module}.{qualname} {version if isinstance(version, str) else ''}".encode()


# -- values on disk --------------------------------------------------------------------------------



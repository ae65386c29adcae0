"""How calls, values and errors travel to worker processes and Dask workers: cloudpickle, except
that code keeps the file name it had here.

cloudpickle pickles the functions of a notebook cell (or of ``exec``) by value. Since 3.1.3 it
writes every such code object with the file name ``<dynamic-code>``, to make its payloads
deterministic (cloudpipe/cloudpickle#560, with no switch to turn it off), so the traceback of a
task that fails on a worker would name no file and show no line. Here code objects are written
with ``marshal`` instead (the format of ``.pyc`` files: the whole code, nested functions and
comprehensions included, its file name too), so every frame of a remote traceback names the cell,
file or ``<string>`` the user's code came from, whatever cloudpickle release is installed.

Source lines: a notebook cell has no file; IPython (and ``%%task``) keep its lines in
``linecache`` under its pseudo file name. The lines of such in-memory files that the pickled
code comes from travel along, and the receiving process adds them to its own ``linecache``, so a
traceback formatted there shows them. Real files are read where the traceback is formatted, as
usual.
"""

from __future__ import annotations

import io
import linecache
import marshal
import pickle
import types
from collections import ChainMap
from typing import Any

import cloudpickle

__all__ = ["dumps", "loads"]

PROTOCOL = 5


class _Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, writing code objects with their own file names."""

    def __init__(self, file: io.BytesIO) -> None:
        self.files: set[str] = set()
        # The C pickler reads dispatch_table once, in __init__: an instance attribute, so that
        # the reducer can record the files of the code it writes.
        own: dict[Any, Any] = {types.CodeType: self._reduce_code}
        base: Any = cloudpickle.Pickler.dispatch_table
        self.dispatch_table: ChainMap[Any, Any] = ChainMap(own, base)
        super().__init__(file, protocol=PROTOCOL)

    def _reduce_code(self, code: types.CodeType) -> Any:
        try:
            data = marshal.dumps(code)
        except ValueError:  # a constant marshal cannot write (code built by hand): cloudpickle's way
            return cloudpickle.Pickler.dispatch_table[types.CodeType](code)
        _files_of(code, self.files)
        return marshal.loads, (data,)


def _files_of(code: types.CodeType, into: set[str]) -> None:
    into.add(code.co_filename)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _files_of(const, into)


def _in_memory_sources(files: set[str]) -> dict[str, tuple[Any, ...]]:
    """The linecache entries of ``files`` that exist only in memory (an mtime of None: IPython's
    cells, ``%%task`` cells); files on disk are read by whoever formats the traceback."""
    sources = {}
    for name in files:
        entry = linecache.cache.get(name)
        if entry is not None and len(entry) == 4 and entry[1] is None:
            sources[name] = entry
    return sources


def dumps(obj: Any) -> bytes:
    """``obj`` pickled for another process: cloudpickle, with code under its own file names and
    the in-memory source lines it comes from."""
    buf = io.BytesIO()
    pickler = _Pickler(buf)
    pickler.dump(obj)
    sources = _in_memory_sources(pickler.files)
    if sources:  # a second pickle in the same bytes: loads() registers it
        pickle.dump(sources, buf, protocol=PROTOCOL)
    return buf.getvalue()


def loads(data: bytes) -> Any:
    """The object ``dumps`` wrote; the source lines that came with it go into ``linecache``."""
    buf = io.BytesIO(data)
    obj = pickle.load(buf)
    if buf.tell() < len(data):
        linecache.cache.update(pickle.load(buf))
    return obj

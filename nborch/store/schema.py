"""The database's schema, in this one place: its tables, their migrations, the rows runs write.

A store file is versioned with ``PRAGMA user_version`` (``SCHEMA_VERSION``); ``MIGRATIONS``
takes an older file to the next version, one step at a time. A run writes its start
(``RUN_START``), a row per task that settled (``TASK_ROW``, narrow: a 10,000-task run writes
10,000 of them), what only some tasks have (``DETAIL_ROW``: an error, a cached value, a parent
task), the earlier attempts of retried tasks (``ATTEMPT_ROW``) and its end (``RUN_END``, with the
run's edges, ``encode_graph``).
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ATTEMPT_ROW", "DETAIL_ROW", "ITEMS_KEY", "MARK_CRASHED", "MIGRATIONS", "RUN_END", "RUN_START",
    "SCHEMA_VERSION", "SUCCESS_ROW", "TABLES", "TASK_ROW", "decode_graph", "encode_graph",
]

SCHEMA_VERSION = 3
TABLES = [
    # runs: pid, host and proc (the process's start) tell a crashed run from one still going
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY, name TEXT, state TEXT NOT NULL, started REAL, finished REAL,
        tasks INTEGER DEFAULT 0, pid INTEGER, host TEXT, proc TEXT, graph TEXT)""",
    # tasks: one row per task, its final state (and so its last attempt); kept narrow because a
    # 10,000-task run writes 10,000 of them
    """CREATE TABLE IF NOT EXISTS tasks (
        run_id TEXT NOT NULL, task TEXT NOT NULL, attempts INTEGER, state TEXT NOT NULL,
        started REAL, finished REAL)""",
    "CREATE INDEX IF NOT EXISTS tasks_run ON tasks(run_id)",
    # details: what only some tasks have (an error, a cached value, a parent task)
    """CREATE TABLE IF NOT EXISTS details (
        run_id TEXT NOT NULL, task TEXT NOT NULL, error_type TEXT, message TEXT, traceback TEXT,
        cached INTEGER DEFAULT 0, cache_key TEXT, parent TEXT)""",
    "CREATE INDEX IF NOT EXISTS details_run ON details(run_id)",
    # attempts: the earlier attempts of retried tasks (each failed, then was tried again)
    """CREATE TABLE IF NOT EXISTS attempts (
        run_id TEXT NOT NULL, task TEXT NOT NULL, attempt INTEGER NOT NULL, started REAL,
        finished REAL, error_type TEXT, message TEXT, traceback TEXT, delay REAL)""",
    "CREATE INDEX IF NOT EXISTS attempts_run ON attempts(run_id)",
    # cache: an index of values/ (a lookup reads the value's file itself)
    """CREATE TABLE IF NOT EXISTS cache (
        key TEXT PRIMARY KEY, task TEXT, path TEXT NOT NULL, size INTEGER, created REAL)""",
    "CREATE INDEX IF NOT EXISTS runs_started ON runs(started)",
]
MIGRATIONS = {  # version -> the statements that take a file from it to the next version
    1: ["ALTER TABLE runs ADD COLUMN pid INTEGER", "ALTER TABLE runs ADD COLUMN host TEXT",
        "ALTER TABLE runs ADD COLUMN proc TEXT"],
    # graph: the run's edges {task: [its upstream tasks]}, so a past run can be drawn
    # (``encode_graph``; JSON text in runs recorded before it)
    2: ["ALTER TABLE runs ADD COLUMN graph TEXT"],
}

TASK_ROW = "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?)"
# the same rows for plain successes (writer.Successes): ?1 the run's id, ?2 the engine clock's
# offset to wall time, then (name, attempts, started, finished) per task, in the engine's clock
SUCCESS_ROW = ("INSERT INTO tasks SELECT ?1, column1, column2, 'succeeded', column3 + ?2, column4 + ?2"
               " FROM (VALUES (?, ?, ?, ?))")
DETAIL_ROW = "INSERT INTO details VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
ATTEMPT_ROW = "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
RUN_START = "INSERT OR REPLACE INTO runs (id, name, state, started, pid, host, proc) VALUES (?, ?, ?, ?, ?, ?, ?)"
RUN_END = "UPDATE runs SET state = ?, finished = ?, tasks = ?, graph = ? WHERE id = ?"
# a run left "running" by a process that is gone: "crashed", counted, finished where its tasks stopped
MARK_CRASHED = (
    "UPDATE runs SET state = 'crashed', tasks = (SELECT COUNT(*) FROM tasks WHERE run_id = runs.id),"
    " finished = COALESCE((SELECT MAX(finished) FROM tasks WHERE run_id = runs.id), started)"
    " WHERE id = ? AND state = 'running'"
)

ITEMS_KEY = "\x00items"  # in a run's recorded graph: each item's parameters (no task has that name)


def encode_graph(edges: Mapping[str, Sequence[str]], params: dict[str, dict[str, Any]]) -> bytes:
    """A run's ``graph`` column: its edges, {task: the names of its upstream tasks}, and, under
    ``ITEMS_KEY``, each mapped item's parameters as JSON text (a value JSON cannot hold as its
    ``repr``). A pickle (protocol 5, names, lists and tuples only), not JSON: a 10,000-task
    run's edges take about 0.6 ms at its end instead of the 4-11 ms of ``json.dumps`` (and
    ``Run._edges`` hands over the tuples the plan keeps, with no copy)."""
    table: Any = edges
    if params:
        table = {**edges, ITEMS_KEY: json.dumps(params, separators=(",", ":"), default=repr)}
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=5)
    pickler.fast = True  # no memo (the table holds no cycle): half the time, 10% more bytes
    pickler.dump(table)
    return out.getvalue()


class _NamesOnly(pickle.Unpickler):
    """Unpickles names, lists, tuples and dicts, and nothing that would run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a run's graph holds names only, not {module}.{name}")


def decode_graph(value: Any) -> dict[str, Any]:
    """The table ``encode_graph`` wrote (or the JSON of a run recorded before it), edges as
    lists; ``ITEMS_KEY``'s parameters decoded. Empty for a run recorded without edges, or a
    value that cannot be read."""
    try:
        if isinstance(value, bytes):
            table = _NamesOnly(io.BytesIO(value)).load()
        else:
            table = json.loads(value) if value else {}
    except Exception:  # (a damaged row: the run loads, with its tasks unconnected)
        return {}
    if not isinstance(table, dict):
        return {}
    out = {name: list(ups) if isinstance(ups, tuple) else ups for name, ups in table.items()}
    params = out.get(ITEMS_KEY)
    if isinstance(params, str):
        try:
            out[ITEMS_KEY] = json.loads(params)
        except ValueError:
            del out[ITEMS_KEY]
    return out

"""The database's schema, in this one place: its tables, their migrations, the rows runs write.

A store file is versioned with ``PRAGMA user_version`` (``SCHEMA_VERSION``); ``MIGRATIONS``
takes an older file to the next version, one step at a time. A run writes its start
(``RUN_START``), a row per task that settled (``TASK_ROW``, narrow: a 10,000-task run writes
10,000 of them), what only some tasks have (``DETAIL_ROW``: an error, a cached value, a parent
task), the earlier attempts of retried tasks (``ATTEMPT_ROW``) and its end (``RUN_END``, with the
run's edges as JSON).
"""

from __future__ import annotations

__all__ = [
    "ATTEMPT_ROW", "DETAIL_ROW", "ITEMS_KEY", "MARK_CRASHED", "MIGRATIONS", "RUN_END", "RUN_START",
    "SCHEMA_VERSION", "TABLES", "TASK_ROW",
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
    # graph: the run's edges as JSON {task: [its upstream tasks]}, so a past run can be drawn
    2: ["ALTER TABLE runs ADD COLUMN graph TEXT"],
}

TASK_ROW = "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?)"
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

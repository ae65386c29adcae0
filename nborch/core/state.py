"""Task states and trigger rules (Apache Airflow's semantics, as its code decides them)."""

from __future__ import annotations

import enum

from .errors import DefinitionError, did_you_mean

__all__ = ["TRIGGER_RULES", "TaskState", "decide", "check_trigger_rule"]


class TaskState(str, enum.Enum):
    """Where a task is in its life; the last five are final."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True once the task will not change state again in this run."""
        return self in _FINAL

    def __str__(self) -> str:
        return self.value


_FINAL = frozenset(
    {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.UPSTREAM_FAILED,
        TaskState.SKIPPED,
        TaskState.CANCELLED,
    }
)

TRIGGER_RULES = (
    "all_success",
    "all_failed",
    "all_done",
    "all_done_min_one_success",
    "all_skipped",
    "one_success",
    "one_failed",
    "one_done",
    "none_failed",
    "none_failed_min_one_success",
    "none_skipped",
    "always",
)

RUN = "run"  # decide() says: start the task now
WAIT = None  # decide() says: not yet


def check_trigger_rule(rule: str, *, task: str | None = None) -> str:
    """Return ``rule`` if it is a known trigger rule, else raise a DefinitionError."""
    if rule in TRIGGER_RULES:
        return rule
    where = f"task {task!r}: " if task else ""
    raise DefinitionError(
        f"{where}unknown trigger rule {rule!r}.{did_you_mean(str(rule), TRIGGER_RULES)} "
        f"Known rules: {', '.join(TRIGGER_RULES)}."
    )


def decide(
    rule: str, upstream: int, success: int, failed: int, upstream_failed: int, skipped: int
) -> str | TaskState | None:
    """What a task with this rule does given its settled upstream counts.

    Returns ``"run"``, a final state (UPSTREAM_FAILED or SKIPPED) when the rule can no longer
    be met, or None to keep waiting. This mirrors ``_evaluate_direct_relatives`` in Airflow's
    ``trigger_rule_dep.py``: first the "new state" branch, then the "passed" condition.
    A CANCELLED upstream counts as upstream_failed here (Airflow has no such state).
    """
    done = success + failed + upstream_failed + skipped
    upstream_done = done >= upstream
    if rule == "all_success":
        if failed or upstream_failed:
            return TaskState.UPSTREAM_FAILED
        if skipped:
            return TaskState.SKIPPED
        return RUN if success >= upstream else WAIT
    if rule == "all_failed":
        if success or skipped:
            return TaskState.SKIPPED
        return RUN if failed + upstream_failed >= upstream else WAIT
    if rule == "all_done":
        return RUN if upstream_done else WAIT
    if rule == "all_done_min_one_success":
        # Airflow's code (not its docs) treats any skipped upstream as "cannot be met".
        if skipped:
            return TaskState.SKIPPED
        if upstream_done:
            return RUN if success else TaskState.UPSTREAM_FAILED
        return WAIT
    if rule == "one_success":
        if success:
            return RUN
        if upstream_done:
            return TaskState.SKIPPED if done == skipped else TaskState.UPSTREAM_FAILED
        return WAIT
    if rule == "one_failed":
        if failed or upstream_failed:
            return RUN
        return TaskState.SKIPPED if upstream_done else WAIT
    if rule == "one_done":
        if success or failed:
            return RUN
        return TaskState.SKIPPED if upstream_done else WAIT
    if rule == "none_failed":
        if failed or upstream_failed:
            return TaskState.UPSTREAM_FAILED
        return RUN if upstream_done else WAIT
    if rule == "none_failed_min_one_success":
        if failed or upstream_failed:
            return TaskState.UPSTREAM_FAILED
        if skipped >= upstream:
            return TaskState.SKIPPED
        # Airflow's "passed" check is the same as none_failed's (success or skipped).
        return RUN if upstream_done else WAIT
    if rule == "none_skipped":
        if skipped:
            return TaskState.SKIPPED
        return RUN if upstream_done else WAIT
    if rule == "all_skipped":
        if success or failed or upstream_failed:
            return TaskState.SKIPPED
        return RUN if skipped >= upstream else WAIT
    if rule == "always":
        return RUN
    raise AssertionError(f"unchecked trigger rule {rule!r}")  # pragma: no cover

"""An independent reading of Apache Airflow's trigger rules, for the property tests.

Written from Airflow's own code, not from nborch's: ``TriggerRuleDep`` in
``airflow-core/src/airflow/ti_deps/deps/trigger_rule_dep.py`` (apache/airflow main,
``_get_dep_statuses`` and ``_evaluate_direct_relatives``) and the scheduler loop that calls it,
``DagRun._get_ready_tis`` in ``airflow-core/src/airflow/models/dagrun.py``.

How Airflow decides one task instance, each time the scheduler looks at it:

1. ``_get_dep_statuses``: no upstream, or ``trigger_rule == ALWAYS``: the dependency passes at
   once, before any upstream is looked at.
2. ``_evaluate_direct_relatives`` counts the *finished* upstreams by state (``success``,
   ``skipped``, ``failed``, ``upstream_failed``; ``done`` is their sum, ``upstream`` the number of
   upstream tasks, ``upstream_done = done >= upstream``).
3. With ``dep_context.flag_upstream_failed`` (the scheduler always sets it), the "new state"
   branch may set the task to UPSTREAM_FAILED or SKIPPED when its rule can no longer be met
   (``changed = ti.set_state(new_state, session)``).
4. Then the rule's "passed" condition yields a passing or failing status.
5. ``DagRun._get_ready_tis`` schedules a task only if its dependencies are met *and*
   ``schedulable.state in SCHEDULEABLE_STATES``: a task the new-state branch just set to
   SKIPPED is not run even when the passed condition also holds (``none_failed_min_one_success``
   with every upstream skipped). So the new state wins over "passed".

``evaluate`` returns what one such look decides: ``"upstream_failed"`` or ``"skipped"`` (the new
state), ``"run"`` (no new state and the rule passed), or ``None`` (not yet: look again when
another upstream finishes). Mapped tasks, setup/teardown tasks and the REMOVED state do not
exist in nborch and are left out.

The one documented difference (nborch's README, "Trigger rules"): nborch has a CANCELLED state
that Airflow lacks, and "a CANCELLED upstream counts as upstream-failed"; ``airflow_state``
maps it so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

__all__ = ["RULES", "RUN", "SKIPPED", "UPSTREAM_FAILED", "airflow_state", "evaluate"]

SUCCESS = "success"
FAILED = "failed"
SKIPPED = "skipped"
UPSTREAM_FAILED = "upstream_failed"
RUN = "run"

RULES = (
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

_FROM_NBORCH = {
    "succeeded": SUCCESS,
    "failed": FAILED,
    "skipped": SKIPPED,
    "upstream_failed": UPSTREAM_FAILED,
    "cancelled": UPSTREAM_FAILED,  # nborch's README: "A CANCELLED upstream counts as upstream-failed"
}


def airflow_state(nborch_state: object) -> str:
    """The Airflow TaskInstanceState a final nborch state counts as."""
    return _FROM_NBORCH[str(nborch_state)]


def _new_state(rule: str, c: Counter[str], upstream: int) -> str | None:
    """The ``if dep_context.flag_upstream_failed:`` branch of ``_evaluate_direct_relatives``."""
    success, skipped, failed, upstream_failed = c[SUCCESS], c[SKIPPED], c[FAILED], c[UPSTREAM_FAILED]
    done = success + skipped + failed + upstream_failed
    upstream_done = done >= upstream
    if rule == "all_success":
        # if upstream_failed or failed: UPSTREAM_FAILED / elif skipped: SKIPPED
        if upstream_failed or failed:
            return UPSTREAM_FAILED
        if skipped:
            return SKIPPED
    elif rule == "all_failed":
        # if success or skipped: SKIPPED
        if success or skipped:
            return SKIPPED
    elif rule == "one_success":
        # if upstream_done and done == skipped: SKIPPED
        # elif upstream_done and success <= 0: UPSTREAM_FAILED
        if upstream_done and done == skipped:
            return SKIPPED
        if upstream_done and success <= 0:
            return UPSTREAM_FAILED
    elif rule == "one_failed":
        # if upstream_done and not (failed or upstream_failed): SKIPPED
        if upstream_done and not (failed or upstream_failed):
            return SKIPPED
    elif rule == "one_done":
        # if upstream_done and not (failed or success): SKIPPED
        if upstream_done and not (failed or success):
            return SKIPPED
    elif rule == "none_failed":
        # if upstream_failed or failed: UPSTREAM_FAILED
        if upstream_failed or failed:
            return UPSTREAM_FAILED
    elif rule == "none_failed_min_one_success":
        # if upstream_failed or failed: UPSTREAM_FAILED / elif skipped == upstream: SKIPPED
        if upstream_failed or failed:
            return UPSTREAM_FAILED
        if skipped == upstream:
            return SKIPPED
    elif rule == "none_skipped":
        # if skipped: SKIPPED
        if skipped:
            return SKIPPED
    elif rule == "all_skipped":
        # if success or failed or upstream_failed: SKIPPED
        if success or failed or upstream_failed:
            return SKIPPED
    elif rule == "all_done_min_one_success":
        # non_skipped_done = success + failed + upstream_failed + removed
        # non_skipped_upstream = upstream - skipped
        # if skipped > 0: SKIPPED
        # elif non_skipped_done >= non_skipped_upstream and success == 0: UPSTREAM_FAILED
        non_skipped_done = success + failed + upstream_failed
        non_skipped_upstream = upstream - skipped
        if skipped > 0:
            return SKIPPED
        if non_skipped_done >= non_skipped_upstream and success == 0:
            return UPSTREAM_FAILED
    # all_done sets no new state
    return None


def _passed(rule: str, c: Counter[str], upstream: int) -> bool:
    """The second half of ``_evaluate_direct_relatives``: no failing status is yielded."""
    success, skipped, failed, upstream_failed = c[SUCCESS], c[SKIPPED], c[FAILED], c[UPSTREAM_FAILED]
    done = success + skipped + failed + upstream_failed
    upstream_done = done >= upstream
    if rule == "one_success":
        return success > 0  # failing if success <= 0
    if rule == "one_failed":
        return bool(failed or upstream_failed)  # failing if not failed and not upstream_failed
    if rule == "one_done":
        return success + failed > 0  # failing if success + failed <= 0
    if rule == "all_success":
        return upstream - success <= 0  # num_failures = upstream - success
    if rule == "all_failed":
        return upstream - failed - upstream_failed <= 0  # num_success = upstream - failed - upstream_failed
    if rule == "all_done":
        return upstream_done  # failing if not upstream_done
    if rule in ("none_failed", "none_failed_min_one_success"):
        return upstream - success - skipped <= 0  # num_failures = upstream - success - skipped
    if rule == "none_skipped":
        return upstream_done and skipped == 0  # failing if not upstream_done or (skipped > 0)
    if rule == "all_skipped":
        return upstream - skipped <= 0  # num_non_skipped = upstream - skipped
    if rule == "all_done_min_one_success":
        # failing if skipped > 0, elif non_skipped_done < non_skipped_upstream, elif success == 0
        non_skipped_done = success + failed + upstream_failed
        return skipped == 0 and non_skipped_done >= upstream - skipped and success != 0
    raise ValueError(f"No strategy to evaluate trigger rule {rule!r}")


def evaluate(rule: str, finished: Iterable[str], upstream: int) -> str | None:
    """One look of Airflow's scheduler at a task with ``upstream`` upstream tasks, of which
    those ``finished`` (Airflow states, see ``airflow_state``) have finished.

    Returns ``"upstream_failed"`` or ``"skipped"`` when the new-state branch sets that state,
    ``"run"`` when the task is scheduled, ``None`` when it keeps waiting.
    """
    if rule not in RULES:
        raise ValueError(f"unknown trigger rule {rule!r}")
    # _get_dep_statuses: "if not ti.task.upstream_task_ids: yield self._passing_status(...)"
    # and "if ti.task.trigger_rule == TR.ALWAYS: yield self._passing_status(...)"
    if upstream == 0 or rule == "always":
        return RUN
    c = Counter(finished)
    if sum(c.values()) > upstream:
        raise ValueError(f"{sum(c.values())} finished upstreams of {upstream}")
    new = _new_state(rule, c, upstream)
    if new is not None:  # DagRun._get_ready_tis: only "schedulable.state in SCHEDULEABLE_STATES" runs
        return new
    return RUN if _passed(rule, c, upstream) else None

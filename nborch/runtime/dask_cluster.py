"""Starting the LocalCluster of a ``DaskExecutor()`` so that its workers never receive SIGINT.

A kernel interrupt or a Ctrl-C then cancels the run, not the workers (see ``_without_sigint``).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["start_local_cluster"]


def start_local_cluster(cluster_options: dict[str, Any]) -> tuple[Any, Any]:
    """A ``distributed.LocalCluster(**cluster_options)`` of worker processes and its client."""
    from distributed import Client, LocalCluster

    # Task errors reach the run with their traceback; the workers' own "Compute Failed" logs
    # would only repeat them on stderr (silence_logs=logging.WARNING brings them back).
    options = {"processes": True, "silence_logs": logging.CRITICAL, "dashboard_address": ":0"}
    options.update(cluster_options)

    def start() -> tuple[Any, Any]:
        cluster = LocalCluster(**options)
        try:
            return cluster, Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise

    return _without_sigint(start)


def _without_sigint(start: Callable[[], tuple[Any, Any]]) -> tuple[Any, Any]:
    """``start()`` (a LocalCluster and its client), run in a thread of its own that blocks SIGINT.

    A kernel interrupt is a SIGINT to the kernel's whole process group (jupyter_client), and a
    Ctrl-C in a terminal one to the foreground group: the worker processes of a LocalCluster,
    children of this process, would get it too, die with KeyboardInterrupt and be restarted
    by their nannies, losing their tasks and data while the interrupted run cancels them (the
    next run then hung). A blocked signal stays blocked in the threads a thread starts and
    across fork and exec: the cluster's threads, and every worker process they spawn, now or
    when a nanny restarts one, never receive SIGINT. This process still does (in its main
    thread, where Python handles it), and the cluster stops as usual with ``close()``."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows: no process groups
        return start()
    done = threading.Event()
    box: dict[str, Any] = {}
    abandoned = threading.Event()

    def target() -> None:
        # multiprocessing starts its resource tracker with SIGINT blocked, then *unblocks* it
        # (whatever the mask was before): start it first, so that nothing undoes the mask below
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            box["value"] = start()
        except BaseException as exc:
            box["error"] = exc
        done.set()
        if abandoned.is_set() and "value" in box:  # interrupted meanwhile: nobody will use it
            cluster, client = box.pop("value")
            client.close()
            cluster.close()

    threading.Thread(target=target, name="nborch-dask-cluster", daemon=True).start()
    try:
        done.wait()  # not join(): an interrupted join may report a live thread finished
    except BaseException:
        abandoned.set()
        raise
    if "error" in box:
        raise box.pop("error")
    return box.pop("value")

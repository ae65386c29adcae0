"""``nborch run a.ipynb b.ipynb ...``: several notebooks, one after the other or side by side.

Each notebook runs in its own ``python -m nborch run`` process (its own namespace, as papermill
gives each notebook its own kernel; side by side they use several cores), with the same options,
its executed notebook written to ``--output-dir`` under its own file name. A failed notebook
does not stop the others unless ``--fail-fast``: then the ones not started yet are not run, and
with ``--parallel`` the running ones are interrupted (they still write their notebook). The
exit status is the first non-zero status in the order the notebooks were given (0 if none), not
counting those that ``--fail-fast`` interrupted.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Job", "output_paths", "run_batch"]


@dataclass
class Job:
    """One notebook of the batch, and how it ended (``code`` None: not run)."""

    notebook: str
    output: str | None
    code: int | None = None
    out: str = ""
    err: str = ""
    stopped: bool = False  # interrupted by --fail-fast, because another one failed


def output_paths(notebooks: list[str], output_dir: str | None) -> list[str | None]:
    """Each notebook's executed notebook in ``output_dir`` (its own file name), or None each.
    Raises ValueError when two notebooks have the same file name."""
    if output_dir is None:
        return [None] * len(notebooks)
    seen: dict[str, str] = {}
    for nb in notebooks:
        name = Path(nb).name
        if name in seen:
            raise ValueError(f"--output-dir: {seen[name]!r} and {nb!r} would both be written to "
                             f"{str(Path(output_dir) / name)!r}; rename one, or run them separately")
        seen[name] = nb
    return [str(Path(output_dir) / Path(nb).name) for nb in notebooks]


_STATUS = {0: "succeeded", 1: "failed", 2: "bad usage or unreadable", 3: "timed out", 130: "interrupted"}


def _command(job: Job, options: list[str]) -> list[str]:
    return [sys.executable, "-m", "nborch", "run", job.notebook, *(["-o", job.output] if job.output else []),
            *options]


def run_batch(jobs: list[Job], options: list[str], *, parallel: bool = False, fail_fast: bool = False) -> int:
    """Run every job (``options``: the ``nborch run`` options each gets); returns the exit status."""
    if parallel:
        _side_by_side(jobs, options, fail_fast)
    else:
        for job in jobs:
            print(f"nborch: running {job.notebook}", file=sys.stderr, flush=True)
            proc = subprocess.Popen(_command(job, options))  # its output as it comes
            try:
                job.code = proc.wait()
            except KeyboardInterrupt:  # it got the same SIGINT: let it write its notebook
                job.code = proc.wait()
                raise
            if fail_fast and job.code != 0:
                break
    _summary(jobs)
    return next((j.code for j in jobs if j.code and not j.stopped), 0) or next((j.code for j in jobs if j.code), 0)


def _side_by_side(jobs: list[Job], options: list[str], fail_fast: bool) -> None:
    procs = [(job, subprocess.Popen(_command(job, options), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, encoding="utf-8", errors="replace")) for job in jobs]
    lock = threading.Lock()
    failed = threading.Event()

    def wait(job: Job, proc: subprocess.Popen[str]) -> None:
        job.out, job.err = proc.communicate()
        code = job.code = proc.returncode
        with lock:  # each notebook's output as one block, when it ends
            sys.stderr.write(f"nborch: {job.notebook}: {_STATUS.get(code, f'exit status {code}')}\n")
            sys.stderr.write(job.err)
            sys.stdout.write(job.out)
            sys.stdout.flush()
            sys.stderr.flush()
        if job.code != 0:
            failed.set()
            if fail_fast:
                for other, p in procs:
                    if other is not job and p.poll() is None:
                        other.stopped = True
                        p.send_signal(signal.SIGINT)  # it stops as on Ctrl-C, and writes its notebook

    threads = [threading.Thread(target=wait, args=pair, daemon=True) for pair in procs]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.1)
    except KeyboardInterrupt:  # the children got the same SIGINT: wait for them to write their notebooks
        for t in threads:
            t.join()
        raise


def _summary(jobs: list[Job]) -> None:
    if len(jobs) < 2:
        return
    def state(j: Job) -> str:
        if j.code is None:
            return "not run (--fail-fast)"
        return "interrupted (--fail-fast)" if j.stopped else str(_STATUS.get(j.code, j.code))

    lines = [f"  {j.notebook}: {state(j)}"
             + (f" -> {j.output}" if j.output and j.code is not None and j.code != 2 else "") for j in jobs]
    print("nborch: " + f"{sum(1 for j in jobs if j.code == 0)} of {len(jobs)} notebooks succeeded\n"
          + "\n".join(lines), file=sys.stderr, flush=True)

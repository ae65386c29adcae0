"""How often a SIGINT is slept through, with and without ``nborch run``'s relay.

    python benchmarks/interrupts.py            # 300 processes each way
    python benchmarks/interrupts.py --runs 900

Each run starts a Python process that writes a line and then sleeps 20 s, and sends it SIGINT
as soon as the line arrives: the moment a cell's output reaches ``nborch run --log-output`` or
a test. A SIGINT that lands after the child's last bytecode and before its ``time.sleep``
blocks is noted by CPython and slept through (see ``nborch/notebook/interrupts.py``); a child
still alive 5 s after its SIGINT counts as missed. ``relay`` runs the same code inside
``relay_interrupts()``. Both kinds take turns, so the machine's load falls on both alike; the
race is rare and shows best on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = {
    "plain": (
        "import sys, time\n"
        "import nborch.notebook.interrupts\n"
        "sys.stderr.write('WAITING\\n'); sys.stderr.flush()\n"
        "time.sleep(20)\n"
    ),
    "relay": (
        "import sys, time\n"
        "from nborch.notebook.interrupts import relay_interrupts\n"
        "with relay_interrupts():\n"
        "    sys.stderr.write('WAITING\\n'); sys.stderr.flush()\n"
        "    time.sleep(20)\n"
    ),
}


def one(kind: str) -> bool:
    """Whether a child of ``kind`` slept through its SIGINT (still alive 5 s after it)."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", CHILD[kind]], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
            return False
        except subprocess.TimeoutExpired:
            return True
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=300, help="processes of each kind")
    args = p.parse_args()
    missed = {kind: 0 for kind in CHILD}
    started = time.perf_counter()
    for _ in range(args.runs):
        for kind in CHILD:
            missed[kind] += one(kind)
    print(f"Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}, "
          f"{time.perf_counter() - started:.0f} s")
    for kind, n in missed.items():
        print(f"  {kind:5}: {n} of {args.runs} SIGINTs slept through (child alive 5 s after it)")


if __name__ == "__main__":
    main()

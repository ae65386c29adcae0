"""``nborch run`` against ``papermill`` on the same notebook: wall time of each, interleaved.

    python benchmarks/headless.py [NOTEBOOK] [--repeat 5]

Each round runs ``nborch run NOTEBOOK OUT`` then ``papermill NOTEBOOK OUT`` (a fresh store and
output folder each time), as a user would from a shell; the table shows every round's wall
times, and the medians' ratio. papermill is not a dependency of nborch: install it to compare
(``pip install papermill``). nborch runs no Jupyter kernel, papermill starts one per notebook.
Refuses to run while the machine is busy (1-minute load >= 2), which would make the figures
meaningless; ``--force`` runs anyway.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "notebooks" / "02_cell_magics.ipynb"


def timed(cmd: list[str], cwd: Path) -> float:
    env = {**os.environ, "NBORCH_HOME": str(cwd / ".nborch")}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebook", nargs="?", default=str(DEFAULT))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--force", action="store_true", help="run even when the machine is busy")
    args = p.parse_args()
    load = os.getloadavg()[0]
    if load >= 2 and not args.force:
        print(f"load average {load:.2f} >= 2: the machine is busy, figures would be noise (--force to run anyway)")
        return 2
    papermill = shutil.which("papermill", path=str(Path(sys.executable).parent)) or shutil.which("papermill")
    if papermill is None:
        print("papermill is not installed: pip install papermill")
        return 2
    notebook = str(Path(args.notebook).resolve())
    rows = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            ours = timed([sys.executable, "-m", "nborch", "run", notebook, "out.ipynb"], Path(a))
            theirs = timed([papermill, notebook, "out.ipynb", "--no-progress-bar"], Path(b))
        rows.append((ours, theirs))
        print(f"round {i + 1}: nborch run {ours:6.2f}s   papermill {theirs:6.2f}s   ratio {theirs / ours:5.2f}x",
              flush=True)
    ours_m = statistics.median(r[0] for r in rows)
    theirs_m = statistics.median(r[1] for r in rows)
    print(f"\n{Path(notebook).name}: median nborch run {ours_m:.2f}s, papermill {theirs_m:.2f}s: "
          f"papermill takes {theirs_m / ours_m:.2f}x as long (load average {load:.2f} at start)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

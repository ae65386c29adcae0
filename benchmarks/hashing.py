"""Cache-key cost for big globals: a task that reads a 100 MB NumPy array or pandas DataFrame.

    python benchmarks/hashing.py               # 100 MB each, best of 5
    python benchmarks/hashing.py --mb 500

A cached task's key hashes every global it reads by value (``nborch.store.cache.call_key``).
Arrays and frames go to SHA-256 as out-of-band pickle buffers, without a copy; the rest of
their pickle stream (dtypes, shapes, the index) is small. Printed: seconds per key, and the
bare SHA-256 of the same bytes for comparison (the floor). Needs numpy and pandas (not
dependencies of nborch). Target: well under a second for 100 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from nborch.store.cache import call_key  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.mb * 2**20 // 8
    rng = np.random.default_rng(0)
    array = rng.random(n)
    frame = pd.DataFrame({f"c{i}": rng.random(n // 10) for i in range(10)})
    raw = array.tobytes()

    def reads_array():
        return array.mean()

    def reads_frame():
        return frame.mean()

    rows = [
        ("ndarray global", best(lambda: call_key(reads_array), args.repeat)),
        ("DataFrame global", best(lambda: call_key(reads_frame), args.repeat)),
        ("sha256 of the bytes", best(lambda: hashlib.sha256(raw).digest(), args.repeat)),
    ]
    print(f"{args.mb} MB, best of {args.repeat} (numpy {np.__version__}, pandas {pd.__version__})")
    for label, seconds in rows:
        print(f"  {label:<22} {seconds:.3f} s")


if __name__ == "__main__":
    main()

"""Cache keys: the globals a cached task reads count by value, callables by their code and state.

A key that misses a change returns a stale value (a wrong result); a key that changes when
nothing did (a memory address, a set's order under hash randomization) never hits across
processes. Both are checked by what runs and what comes back, in this process and across
fresh interpreters.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import nborch
from nborch import Task, task
from nborch.store import SqliteStore
from nborch.store.cache import call_key

CONFIG = {"rate": 1.0}
WEIGHTS = [1, 2, 3]
LOCK = threading.Lock()


@pytest.fixture
def store(tmp_path):
    return SqliteStore(tmp_path / "home")


class Log(list):
    """Records calls without being part of the key: ``__reduce__`` leaves the entries out."""

    def __reduce__(self):
        return (Log, ())


def test_a_changed_global_dict_or_list_runs_the_task_again(store):
    ran = Log()

    @task(cache=True)
    def price(n):
        ran.append(n)
        return n * CONFIG["rate"] * sum(WEIGHTS)

    assert nborch.run(price(2), store=store).value == 12.0
    assert nborch.run(price(2), store=store).cached == {"price"}
    CONFIG["rate"] = 2.0
    try:
        again = nborch.run(price(2), store=store)
        assert again.value == 24.0 and again.cached == set()
        WEIGHTS.append(4)
        assert nborch.run(price(2), store=store).value == 40.0
    finally:
        CONFIG["rate"] = 1.0
        del WEIGHTS[3:]
    assert ran == [2, 2, 2]
    assert nborch.run(price(2), store=store).cached == {"price"}  # back to the first inputs: a hit


class Scaler:
    def __init__(self, factor):
        self.factor = factor

    def apply(self, x):
        return x * self.factor

    def __call__(self, x):
        return x * self.factor


SCALE = Scaler(2)


def test_a_bound_method_task_is_keyed_by_its_function_and_its_state(store):
    first = nborch.run(Task(Scaler(2).apply, 5, cache=True), store=store)
    assert first.value == 10 and first.cached == set()
    twin = nborch.run(Task(Scaler(2).apply, 5, cache=True), store=store)  # another object, same state
    assert twin.value == 10 and twin.cached == {"apply"}
    changed = nborch.run(Task(Scaler(3).apply, 5, cache=True), store=store)
    assert changed.value == 15 and changed.cached == set()


def test_a_callable_object_task_and_a_callable_global_count_by_state(store):
    assert nborch.run(Task(Scaler(4), 2, cache=True, name="scale"), store=store).value == 8
    assert nborch.run(Task(Scaler(4), 2, cache=True, name="scale"), store=store).cached == {"scale"}
    assert nborch.run(Task(Scaler(5), 2, cache=True, name="scale"), store=store).value == 10

    @task(cache=True)
    def scaled(x):
        return SCALE(x)

    assert nborch.run(scaled(3), store=store).value == 6
    SCALE.factor = 7
    try:
        assert nborch.run(scaled(3), store=store).value == 21
    finally:
        SCALE.factor = 2


def test_a_changed_method_of_a_class_the_task_uses_changes_the_key():
    def make(offset):
        class Model:
            def predict(self, x):
                return x + offset
        return Model

    first, second = make(1), make(2)
    model = first()

    def use(x):
        return model.predict(x)

    before = call_key(use, (1,), {}, ())
    model = second()  # same class name and code, a different closure: the key changes
    assert call_key(use, (1,), {}, ()).digest != before.digest


def test_an_unhashable_global_warns_once_naming_it_and_the_task_is_not_cached(store):
    ran = Log()

    @task(cache=True)
    def guarded():
        with LOCK:
            ran.append(1)
        return len(ran)

    with pytest.warns(RuntimeWarning, match=r"^nborch: 'guarded' reads the global 'LOCK', which cannot be "
                      r"hashed for its cache key \(TypeError: .*\); its calls are not cached\."):
        first = nborch.run(guarded(), store=store)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same store does not warn again
        second = nborch.run(guarded(), store=store)
    assert first.ok and second.ok and ran == [1, 1]
    assert second.cached == set() and not second.cache_keys


def test_an_attribute_named_like_an_unhashable_global_is_not_read_as_that_global(store):
    class Holder:
        LOCK = None

    holder = Holder()

    @task(cache=True)
    def reads_attribute():
        return holder.LOCK is None  # an attribute called LOCK, not the global LOCK

    nborch.run(reads_attribute(), store=store)
    assert nborch.run(reads_attribute(), store=store).cached == {"reads_attribute"}


def test_a_value_too_big_to_hash_warns_and_is_not_cached(store, monkeypatch):
    import nborch.core.keys as cache_mod

    monkeypatch.setattr(cache_mod, "HASH_LIMIT", 1000)
    big = bytes(5000)

    @task(cache=True)
    def reads_big():
        return len(big)

    with pytest.warns(RuntimeWarning, match=r"'reads_big' reads the closure variable 'big', which is too big "
                      r"to hash for its cache key \(over 1000 bytes\)"):
        run = nborch.run(reads_big(), store=store)
    assert run.ok and run.value == 5000 and run.cached == set()


def test_the_key_says_which_part_changed():
    rate = {"v": 1}

    def helper(x):
        return x * CONFIG["rate"]

    def f(x):
        return helper(x) + rate["v"]

    a = call_key(f, (1,), {}, ["up1"])
    assert a.digest == call_key(f, (1,), {}, ["up1"]).digest
    assert set(a.values) == {"global CONFIG", "closure variable rate"}
    assert a.changes(call_key(f, (2,), {}, ["up1"])) == ["arguments"]
    assert a.changes(call_key(f, (1,), {}, ["up2"])) == ["upstream"]
    rate["v"] = 2
    assert a.changes(call_key(f, (1,), {}, ["up1"])) == ["closure variable rate"]
    CONFIG["rate"] = 3.0
    try:
        assert a.changes(call_key(f, (1,), {}, ["up1"])) == ["global CONFIG", "closure variable rate"]
    finally:
        CONFIG["rate"] = 1.0

    def helper(x):  # noqa: F811 - the point: a changed helper is a change of code
        return x * CONFIG["rate"] + 0

    rate["v"] = 1
    assert a.changes(call_key(f, (1,), {}, ["up1"])) == ["code"]


def test_a_100_mb_array_and_frame_global_hash_fast_and_by_value():
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    array = np.zeros(100 * 2**20 // 8)
    frame = pd.DataFrame({f"c{i}": np.zeros(100 * 2**20 // 8 // 10) for i in range(10)})

    def uses_array():
        return array.sum()

    def uses_frame():
        return frame.sum()

    for fn in (uses_array, uses_frame):
        call_key(fn, (), {}, ())  # warm: imports, code walks
        start = time.perf_counter()
        before = call_key(fn, (), {}, ())
        assert time.perf_counter() - start < 1.0, "hashing 100 MB took over a second"
    assert before.digest == call_key(uses_frame, (), {}, ()).digest
    array[12_345] = 1.0
    frame.iloc[777, 3] = 1.0
    assert call_key(uses_frame, (), {}, ()).digest != before.digest


ACROSS = textwrap.dedent(
    """
    import pathlib, sys, nborch
    from nborch import Task

    marker = pathlib.Path(sys.argv[1])
    CONFIG = {"rate": float(sys.argv[2])}
    TAGS = {"alpha", "beta", "gamma", "delta"}  # a set of strings: its order follows the hash seed

    class Scaler:
        def __init__(self, factor):
            self.factor = factor

        def apply(self, x):
            with marker.open("a") as f:
                f.write("apply\\n")
            return x * self.factor

    @nborch.task(cache=True)
    def price(n):
        with marker.open("a") as f:
            f.write("price\\n")
        return n * CONFIG["rate"] + len(TAGS) + ("beta" in {"beta", "zeta"})

    run = nborch.run(nborch.Parallel(price(2), Task(Scaler(3).apply, 2, cache=True)))
    print(run.value, sorted(run.cached))
    """
)


def test_keys_hit_across_interpreters_and_change_with_a_global(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(ACROSS)
    marker = tmp_path / "ran.txt"

    def run(rate, seed):
        env = {**os.environ, "NBORCH_HOME": str(tmp_path / "home"), "PYTHONHASHSEED": str(seed)}
        return subprocess.run([sys.executable, str(script), str(marker), rate], env=env, capture_output=True,
                              text=True, check=True, timeout=60).stdout

    assert run("1.0", 1) == "[7.0, 6] []\n"
    assert run("1.0", 2) == "[7.0, 6] ['apply', 'price']\n"  # another hash seed, a fresh process: hits
    assert run("2.0", 3) == "[9.0, 6] ['apply']\n"  # CONFIG changed: price runs again
    assert sorted(marker.read_text().split()) == ["apply", "price", "price"]

"""``nborch run a.ipynb b.ipynb ...``: several notebooks in order or ``--parallel``, each written to
``--output-dir``; ``--fail-fast``; the rule that tells OUT from a second notebook to run."""

from __future__ import annotations

import time

from headless_support import by_source, nborch, notebook, outputs, read, write

STEP = "with open({log!r}, 'a') as f:\n    f.write({name!r} + '\\n')"


def step(tmp, name, *more):
    return write(tmp / f"{name}.ipynb", notebook(STEP.format(log=str(tmp / "order.log"), name=name), *more))


def test_notebooks_run_in_order_each_in_its_own_namespace_and_a_failure_does_not_stop_the_others(tmp_path):
    a = step(tmp_path, "a", "shared = 'from a'")
    b = step(tmp_path, "b", "raise RuntimeError('b breaks')")
    c = step(tmp_path, "c", "print('shared' in globals())")
    r = nborch("run", a, b, c, "--output-dir", "outs", cwd=tmp_path)
    assert r.code == 1, r.err
    assert (tmp_path / "order.log").read_text().split() == ["a", "b", "c"]
    outs = tmp_path / "outs"
    assert outputs(by_source(read(outs / "c.ipynb"), "print(")) == [("stdout", "False\n")]  # not a's namespace
    assert outputs(by_source(read(outs / "b.ipynb"), "raise"))[-1] == ("error", "RuntimeError: b breaks")
    assert read(outs / "a.ipynb")["metadata"]["nborch"]["status"] == "succeeded"
    assert "nborch: 2 of 3 notebooks succeeded\n" in r.err and f"  {b}: failed -> outs/b.ipynb" in r.err


def test_fail_fast_stops_at_the_first_failure(tmp_path):
    a = step(tmp_path, "a", "raise RuntimeError('a breaks')")
    b = step(tmp_path, "b")
    r = nborch("run", a, b, "--output-dir", "outs", "--fail-fast", cwd=tmp_path)
    assert r.code == 1
    assert (tmp_path / "order.log").read_text().split() == ["a"]
    assert not (tmp_path / "outs" / "b.ipynb").exists()
    assert f"  {b}: not run (--fail-fast)" in r.err


WAIT_FOR = ("import pathlib, time\npathlib.Path({mine!r}).touch()\nfor _ in range(600):\n"
            "    if pathlib.Path({other!r}).exists(): break\n    time.sleep(0.05)\nelse:\n"
            "    raise TimeoutError('alone')\nprint('met')")


def test_parallel_runs_them_side_by_side(tmp_path):
    one, two = tmp_path / "one.started", tmp_path / "two.started"
    a = write(tmp_path / "a.ipynb", notebook(WAIT_FOR.format(mine=str(one), other=str(two))))
    b = write(tmp_path / "b.ipynb", notebook(WAIT_FOR.format(mine=str(two), other=str(one))))
    r = nborch("run", a, b, "--parallel", "--output-dir", "outs", cwd=tmp_path)  # in order, each would wait alone
    assert r.code == 0, r.err
    for name in ("a", "b"):
        assert outputs(read(tmp_path / "outs" / f"{name}.ipynb")["cells"][0]) == [("stdout", "met\n")]


def test_parallel_fail_fast_interrupts_the_others_which_still_write_their_notebook(tmp_path):
    slow = write(tmp_path / "slow.ipynb", notebook("import time\ntime.sleep(120)", "print('never')"))
    bad = write(tmp_path / "bad.ipynb", notebook("import time\ntime.sleep(1)\nraise RuntimeError('bad')"))
    started = time.monotonic()
    r = nborch("run", slow, bad, "--parallel", "--fail-fast", "--output-dir", "outs", cwd=tmp_path)
    assert time.monotonic() - started < 60
    assert r.code == 1, r.err  # the failure's status, not the interrupted one's
    slow_out = read(tmp_path / "outs" / "slow.ipynb")
    assert slow_out["metadata"]["nborch"]["status"] == "interrupted"
    assert f"  {slow}: interrupted (--fail-fast)" in r.err


def test_a_second_notebook_that_exists_is_run_one_that_does_not_is_out(tmp_path):
    a = step(tmp_path, "a")
    b = step(tmp_path, "b")
    r = nborch("run", a, b, cwd=tmp_path)
    assert r.code == 0, r.err
    assert (tmp_path / "order.log").read_text().split() == ["a", "b"]
    assert "notebooks succeeded" in r.err
    r = nborch("run", a, "new.ipynb", cwd=tmp_path)
    assert r.code == 0 and read(tmp_path / "new.ipynb")["metadata"]["nborch"]["status"] == "succeeded"
    r = nborch("run", a, "new.ipynb", cwd=tmp_path)  # written by a run: OUT again, not a notebook to run
    assert r.code == 0 and (tmp_path / "order.log").read_text().split() == ["a", "b", "a", "a"]


def test_several_notebooks_bad_usage(tmp_path):
    a = step(tmp_path, "a")
    b = step(tmp_path, "b")
    sub = tmp_path / "sub"
    sub.mkdir()
    a2 = step(sub, "a")
    r = nborch("run", a, b, "-o", "x.ipynb", cwd=tmp_path)
    assert r.code == 2 and "with several notebooks give --output-dir DIR" in r.err
    r = nborch("run", a, a2, "--output-dir", "outs", cwd=tmp_path)
    assert r.code == 2 and "would both be written to" in r.err
    assert not (tmp_path / "order.log").exists()

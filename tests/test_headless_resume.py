"""``nborch run --resume [RUN_ID]``, ``--from TASK``, ``--force`` and ``--tasks``: what runs again
is checked by side effects (each task appends its name to ran.log when it runs)."""

from __future__ import annotations

import pytest

from nborch.store import SqliteStore, history

from headless_support import by_source, code_cells, nborch, notebook, outputs, read, write

LOG = "with open('ran.log', 'a') as f:\n    f.write({name!r} + '\\n')\n"


def task(name: str, body: str, options: str = "") -> str:
    return f"%%task {name}{options}\n" + LOG.format(name=name) + body


PIPELINE = notebook(
    "%load_ext nborch",
    ("scale = 1", ["parameters"]),
    "import pathlib",
    task("a", "print('a ran')\n10 * scale"),
    task("b", "if not pathlib.Path('fixed').exists():\n    raise ValueError('not fixed yet')\na + 1"),
    task("c", "b * 2"),
    task("side", "'unrelated'"),
    "%orch run",
    "print('c is', c, 'a is', a)",
)


def ran(cwd) -> list[str]:
    log = cwd / "ran.log"
    names = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return sorted(names)


def test_resume_after_a_failure_runs_only_the_failed_task_and_its_downstream(tmp_path):
    nb = write(tmp_path / "pipe.ipynb", PIPELINE)
    first = nborch("run", nb, "out.ipynb", "-p", "scale=3", cwd=tmp_path)
    assert first.code == 1 and "task 'b' failed: ValueError: not fixed yet" in first.err
    assert ran(tmp_path) == ["a", "b", "side"]
    (tmp_path / "fixed").touch()
    r = nborch("run", nb, "out.ipynb", "--resume", cwd=tmp_path)
    assert r.code == 0, r.err
    assert ran(tmp_path) == ["b", "c"]  # a and side stand, with their values
    out = read(tmp_path / "out.ipynb")  # complete: every task cell shows its output
    assert outputs(by_source(out, "%%task a")) == [("stdout", "a ran\n"), ("execute_result", "30")]
    assert outputs(by_source(out, "%%task b")) == [("execute_result", "31")]
    assert outputs(by_source(out, "%%task c")) == [("execute_result", "62")]
    assert outputs(by_source(out, "%%task side")) == [("execute_result", "'unrelated'")]
    assert outputs(by_source(out, "print('c is'")) == [("stdout", "c is 62 a is 30\n")]  # scale=3 again
    assert all(c["execution_count"] is not None for c in code_cells(out))
    meta = out["metadata"]["nborch"]
    runs = history(None, store=SqliteStore(r.home))
    assert meta["resumed_from"] == runs[1].id and meta["run_id"] == runs[0].id
    assert meta["reused"] == ["a", "side"] and meta["parameters"] == {"scale": 3}
    assert runs[0].recorded_state == "succeeded"


def test_from_task_reruns_it_and_its_downstream_only(tmp_path):
    nb = write(tmp_path / "pipe.ipynb", PIPELINE)
    (tmp_path / "fixed").touch()
    assert nborch("run", nb, cwd=tmp_path).code == 0
    assert ran(tmp_path) == ["a", "b", "c", "side"]
    r = nborch("run", nb, "-o", "out.ipynb", "--from", "b", cwd=tmp_path)
    assert r.code == 0, r.err
    assert ran(tmp_path) == ["b", "c"]
    out = read(tmp_path / "out.ipynb")
    assert outputs(by_source(out, "%%task a")) == [("stdout", "a ran\n"), ("execute_result", "10")]


def test_resume_without_an_id_takes_the_last_run_of_this_notebook_file(tmp_path):
    nb = write(tmp_path / "pipe.ipynb", PIPELINE)
    other = write(tmp_path / "other.ipynb", notebook("%load_ext nborch", task("z", "1")))
    first = nborch("run", nb, cwd=tmp_path)
    assert first.code == 1
    assert nborch("run", other, cwd=tmp_path).code == 0  # a newer run, of another notebook
    ran(tmp_path)
    (tmp_path / "fixed").touch()
    r = nborch("run", nb, "--resume", cwd=tmp_path)
    assert r.code == 0, r.err
    assert ran(tmp_path) == ["b", "c"]
    runs = history(None, store=SqliteStore(r.home))
    pipe_first = [run.id for run in runs if run.name == "pipe"][-1]
    r = nborch("run", nb, "--resume", pipe_first, "--tasks", "b", cwd=tmp_path)  # an explicit id
    assert r.code == 0, r.err
    assert ran(tmp_path) == ["b"]


@pytest.mark.parametrize(("args", "message"), [
    (["--resume"], "nborch: nothing to resume: no run of "),
    (["--resume", "deadbeef"], "nborch: --resume deadbeef: no run 'deadbeef' in "),
    (["--from", "bb"], "nborch: --from bb: no task cell is named 'bb'. Did you mean 'b'? Tasks: a, b, c, side.\n"),
], ids=["no-earlier-run", "unknown-id", "unknown-task"])
def test_nothing_to_resume_is_bad_usage(tmp_path, args, message):
    nb = write(tmp_path / "pipe.ipynb", PIPELINE)
    r = nborch("run", nb, "out.ipynb", *args, cwd=tmp_path)
    assert r.code == 2, r.err
    assert r.err.startswith(message) and r.err.count("\n") == 1, r.err
    assert not (tmp_path / "out.ipynb").exists() and not (tmp_path / "ran.log").exists()


def test_a_value_that_does_not_pickle_is_computed_again_when_needed(tmp_path):
    nb = write(tmp_path / "lock.ipynb", notebook(
        "%load_ext nborch",
        "import pathlib, threading",
        task("holder", "threading.Lock()"),  # a lock does not pickle: not kept for --resume
        task("user", "if not pathlib.Path('fixed').exists():\n    raise ValueError('no')\ntype(holder).__name__"),
    ))
    assert nborch("run", nb, cwd=tmp_path).code == 1
    ran(tmp_path)
    (tmp_path / "fixed").touch()
    r = nborch("run", nb, "out.ipynb", "--resume", cwd=tmp_path)
    assert r.code == 0, r.err
    assert ran(tmp_path) == ["holder", "user"]
    assert outputs(by_source(read(tmp_path / "out.ipynb"), "%%task user")) == [("execute_result", "'lock'")]


def test_force_ignores_the_disk_cache_and_tasks_selects_targets(tmp_path):
    nb = write(tmp_path / "cache.ipynb", notebook(
        "%load_ext nborch", task("slow", "42", " --cache"), task("other", "1"), task("after", "slow + 1"),
    ))
    assert nborch("run", nb, cwd=tmp_path).code == 0
    assert ran(tmp_path) == ["after", "other", "slow"]
    assert nborch("run", nb, "--tasks", "after", cwd=tmp_path).code == 0
    assert ran(tmp_path) == ["after"]  # slow came from the cache; other is not a target
    assert nborch("run", nb, "--tasks", "after", "--force", cwd=tmp_path).code == 0
    assert ran(tmp_path) == ["after", "slow"]


def test_only_the_newest_runs_of_a_notebook_keep_their_values(tmp_path):
    from nborch.notebook import resume

    folder = tmp_path / resume.FOLDER
    for i in range(resume.KEEP + 3):
        resume.save_run(tmp_path, f"run{i}", notebook=str(tmp_path / "a.ipynb"), params={}, flow=None,
                        targets=[], values={"t": i}, outputs={})
    resume.save_run(tmp_path, "other", notebook=str(tmp_path / "b.ipynb"), params={}, flow=None,
                    targets=[], values={}, outputs={})
    kept = sorted(p.stem for p in folder.glob("*.json"))
    assert len([k for k in kept if k.startswith("run")]) == resume.KEEP and "other" in kept
    assert sorted(p.stem for p in folder.glob("*.pkl")) == kept
    assert resume.last_run_of(tmp_path, str(tmp_path / "a.ipynb")) == f"run{resume.KEEP + 2}"

"""``nborch run --log-output`` and ``--cwd DIR``, in real subprocesses."""

from __future__ import annotations

import subprocess
import sys
import time

from headless_support import by_source, env_for, nborch, notebook, outputs, read, write


def test_log_output_streams_cell_and_task_output_to_stderr_as_it_happens(tmp_path):
    go = tmp_path / "go"
    nb = write(tmp_path / "log.ipynb", notebook(
        "%load_ext nborch",
        "print('CELL OUTPUT')",
        f"%%task waits\nimport pathlib, time\nprint('TASK STARTED', flush=True)\n"
        f"while not pathlib.Path({str(go)!r}).exists():\n    time.sleep(0.02)\nprint('TASK DONE')\n7",
    ))
    proc = subprocess.Popen([sys.executable, "-m", "nborch", "run", str(nb), "-", "--log-output"],
                            cwd=tmp_path, env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "TASK STARTED" in line:
                break
        running = proc.poll() is None  # the task waits for us: its line came while it ran
        go.touch()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert running and proc.returncode == 0, err
    assert "CELL OUTPUT\n" in seen
    assert "TASK DONE" in err
    nb_out = __import__("json").loads(out)  # stdout carries the notebook only
    assert outputs(by_source(nb_out, "%%task waits")) == [
        ("stdout", "TASK STARTED\nTASK DONE\n"), ("execute_result", "7")]


def test_without_log_output_an_out_run_prints_no_cell_output(tmp_path):
    nb = write(tmp_path / "quiet.ipynb", notebook("%load_ext nborch", "print('CELL')", "%%task t\nprint('TASK')"))
    r = nborch("run", nb, "out.ipynb", cwd=tmp_path)
    assert r.code == 0, r.err
    assert "CELL" not in r.out + r.err and "TASK" not in r.out + r.err
    assert "1 succeeded" in r.err  # progress stays on stderr


def test_cwd_runs_the_code_in_dir_and_keeps_paths_and_store_the_callers(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "localmod.py").write_text("GREETING = 'from localmod'\n")
    (work / "input.txt").write_text("data in work\n")
    nb = write(tmp_path / "cwd.ipynb", notebook(
        "%load_ext nborch",
        "import os, localmod\nprint(os.path.basename(os.getcwd()), localmod.GREETING)",
        "%%task reads\nopen('input.txt').read().strip()",
        "open('written.txt', 'w').write(reads)",
    ))
    r = nborch("run", nb, "out.ipynb", "--cwd", "work", cwd=tmp_path, home=False)  # the default store: ./.nborch
    assert r.code == 0, r.err
    assert (work / "written.txt").read_text() == "data in work"  # the cells ran in DIR
    assert not (tmp_path / "written.txt").exists()
    out = read(tmp_path / "out.ipynb")  # OUT is relative to where nborch was started
    assert outputs(by_source(out, "import os")) == [("stdout", "work from localmod\n")]
    assert (tmp_path / ".nborch" / "nborch.db").exists() and not (work / ".nborch").exists()


def test_cwd_that_does_not_exist_is_bad_usage(tmp_path):
    nb = write(tmp_path / "a.ipynb", notebook("print('x')"))
    started = time.monotonic()
    r = nborch("run", nb, "--cwd", "nowhere", cwd=tmp_path)
    assert r.code == 2
    assert r.err == "nborch: --cwd 'nowhere': the folder does not exist\n"
    assert time.monotonic() - started < 60 and r.out == ""

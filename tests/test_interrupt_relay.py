"""``nborch run`` never sleeps through a Ctrl-C (``nborch/notebook/interrupts.py``).

CPython wakes a blocking call (``time.sleep``) with SIGINT only when the call is already
blocked as the signal lands on the main thread; one that lands just before, or on another
thread, is noted and slept through. The relay wakes the main thread (SIGURG), and the noted
SIGINT is acted on. A signal sent to another thread of the process (``signal.pthread_kill``) is
the deterministic form of that race: without the relay the processes here that sleep 60 s
sleep it out.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from headless_support import env_for, notebook, outputs, read, write

# Defined in each script: once the main thread is in the call on the caller's next line, a
# SIGINT that lands on another thread (the kicking thread's own, by pthread_kill). On that line
# the main thread cannot move on before the call returns; 0.2 s later it is blocked in it.
KICKER = """
import inspect, signal, sys, threading, time
from nborch.notebook.interrupts import relay_interrupts

def sigint_elsewhere_during_next_line():
    line, main = inspect.currentframe().f_back.f_lineno + 1, threading.get_ident()

    def kick():
        while sys._current_frames()[main].f_lineno != line:
            time.sleep(0.01)
        time.sleep(0.2)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    threading.Thread(target=kick).start()
"""
KICK = "sigint_elsewhere_during_next_line()"


def python(tmp_path, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(KICKER + textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, env=env_for(tmp_path))


def test_a_sigint_the_main_thread_would_sleep_through_interrupts_it_once(tmp_path):
    r = python(tmp_path, f"""
        interrupts = 0
        with relay_interrupts():
            started = time.monotonic()
            try:
                {KICK}
                time.sleep(60)
            except KeyboardInterrupt:
                interrupts += 1
            print("stopped after", round(time.monotonic() - started, 1))
            time.sleep(1.0)  # a second interrupt would land here
        print("interrupts", interrupts)
        print("handler restored", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        print("wakeup fd restored", signal.set_wakeup_fd(-1) == -1)
        print("WAKE restored", signal.getsignal(signal.SIGURG) is signal.SIG_DFL)
        print("relay thread gone", [t.name for t in threading.enumerate()] == ["MainThread"])
    """)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert float(lines[0].split()[-1]) < 30  # not the 60 s sleep
    assert lines[1:] == ["interrupts 1", "handler restored True", "wakeup fd restored True",
                         "WAKE restored True", "relay thread gone True"]


def test_a_sigint_handled_at_once_is_not_sent_again(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import time
        from nborch.notebook.interrupts import relay_interrupts
        interrupts = 0
        with relay_interrupts():
            try:  # (a SIGINT may land as soon as "ready" is out, before print returns)
                print("ready", flush=True)
                time.sleep(60)
            except KeyboardInterrupt:
                interrupts += 1
            time.sleep(1.0)  # a relayed second interrupt would land here
        print("interrupts", interrupts)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env=env_for(tmp_path))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == "interrupts 1\n"


def test_a_handler_that_does_not_raise_is_woken_once_and_the_sleep_goes_on(tmp_path):
    """SIGINT keeps its handler (asyncio.run installs its graceful one only over the default):
    the relay only wakes the main thread, and a wake the handler does not act on changes nothing."""
    r = python(tmp_path, f"""
        with relay_interrupts():
            print("default handler kept", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
            calls = []
            signal.signal(signal.SIGINT, lambda signum, frame: calls.append(time.monotonic()))
            started = time.monotonic()
            {KICK}
            time.sleep(3)
            print("calls", len(calls))
            print("woken early", calls[0] - started < 2.5)
            print("slept on", time.monotonic() - started >= 3)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "default handler kept True", "calls 1", "woken early True", "slept on True"]


def test_nborch_run_stops_a_cell_that_sleeps_through_a_sigint(tmp_path):
    """Headless, the deterministic form of the race that made an interrupted run sleep on."""
    cell = f"print('WAITING', flush=True)\n{KICK}\ntime.sleep(60)"
    nb = write(tmp_path / "wait.ipynb", notebook(KICKER, cell))
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "nborch", "run", str(nb), "out.ipynb"], check=False,
                       cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=90)
    assert r.returncode == 130, r.stderr
    assert time.monotonic() - started < 45  # the cell's 60 s sleep did not run out
    assert "nborch: interrupted" in r.stderr
    out = read(tmp_path / "out.ipynb")
    assert out["metadata"]["nborch"]["status"] == "interrupted"
    assert outputs(out["cells"][-1])[0] == ("stdout", "WAITING\n")
    assert outputs(out["cells"][-1])[-1][0] == "error"


def test_nborch_run_cancels_a_task_graph_whose_loop_sleeps_through_a_sigint(tmp_path):
    """The task graph's loop asleep in select() for a 60 s timer: woken, asyncio's own SIGINT
    handler (the relay leaves it in place) cancels the run gracefully, the record says so."""
    kicker = ("import pathlib, signal, threading, time\n"
              "def kick():\n"
              "    while not pathlib.Path('started').exists():\n"
              "        time.sleep(0.01)\n"
              "    time.sleep(0.5)\n"
              "    signal.pthread_kill(threading.get_ident(), signal.SIGINT)\n"
              "threading.Thread(target=kick, daemon=True).start()")
    nb = write(tmp_path / "graph.ipynb", notebook(
        "%load_ext nborch",
        kicker,
        "%%task slow\nimport asyncio, pathlib\npathlib.Path('started').write_text('1')\n"
        "await asyncio.sleep(60)",
        "%%task after\nslow",
        "%orch run",
    ))
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "nborch", "run", str(nb), "out.ipynb"], check=False,
                       cwd=tmp_path, env=env_for(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 130, r.stderr
    assert time.monotonic() - started < 45  # not the task's 60 s
    out = read(tmp_path / "out.ipynb")
    assert out["metadata"]["nborch"]["status"] == "interrupted"
    assert out["metadata"]["nborch"]["tasks"] == {"slow": "cancelled", "after": "cancelled"}

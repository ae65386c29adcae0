"""Output capture's stand-in for ``sys.stdout`` / ``sys.stderr`` (``nborch.runtime.capture._Router``)."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import weakref

from nborch.runtime import capture


class CountingStream(io.TextIOWrapper):
    """A real text stream that counts the flushes it is asked for."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8")
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_collecting_a_router_neither_flushes_nor_closes_the_stream_it_wrapped():
    stream = CountingStream()
    router = capture._Router(stream, "stdout")
    router.write("text outside any task\n")
    gone = weakref.ref(router)
    del router  # freed here, by reference count (no gc.collect(): it would also collect, and
    assert gone() is None  # blame this test for, whatever earlier tests left behind)
    assert stream.flushes == 0
    assert not stream.closed
    assert stream.buffer.getvalue() == b""  # still buffered: the stream's owner decides when
    stream.flush()
    assert stream.buffer.getvalue() == b"text outside any task\n"


def test_a_router_reports_its_stream_state_and_closing_it_leaves_the_stream_alone():
    stream = CountingStream()
    router = capture._Router(stream, "stderr")
    router.close()
    assert not stream.closed and not router.closed
    router.write("still usable\n")
    stream.close()
    assert router.closed  # the wrapped stream's own state
    router.close()  # no "I/O operation on closed file"


def test_a_router_outliving_its_closed_stream_is_collected_silently():
    """The reported case (3.13, or -X dev): a handler made inside a task keeps the router, the
    run ends, the stream it wrapped is closed (pytest's and IPython's capture files are),
    then the router is collected: io's finalizer must not raise from it."""
    script = textwrap.dedent(
        """
        import gc, io, logging, sys
        import nborch

        stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
        sys.stdout = stream
        kept = []

        @nborch.task
        def job():
            kept.append(logging.StreamHandler(sys.stdout))  # holds the router
            print("hi")

        run = nborch.run(job, store=False, display=False)
        sys.stdout = sys.__stdout__
        assert run.ok and type(kept[0].stream).__name__ == "_Router"
        stream.close()
        logging.getLogger().handlers.clear()
        kept.clear()
        gc.collect()
        print("collected")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "collected"
    assert "Exception ignored" not in proc.stderr
    assert "I/O operation on closed file" not in proc.stderr

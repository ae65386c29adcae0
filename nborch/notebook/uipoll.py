"""Widget messages during a blocking run: the live display's Cancel button works while a cell
blocks in ``node.run()`` or ``%orch run``, not only for awaited runs.

The problem. A kernel handles the front end's shell messages (execute_request, comm_msg, ...)
one at a time on its main thread's event loop. A plain cell that calls ``node.run()`` blocks
that thread until the run ends (the run itself goes on in a worker thread), so a click on a
widget waits in a socket until the cell is over: too late for a Cancel button.

What this module does. ``install(shell)`` registers a ``WidgetPump`` with
``nborch.register_wait_hook``; the loop driver calls it about every 0.1 s in the thread that
waits for a blocking run. In the kernel's main thread, when a message is waiting, it empties
the socket through which the main thread's shell messages arrive, by the socket's own stream
(``ZMQStream.flush``) with the stream's callback swapped for a sorter:

- ``comm_open`` / ``comm_msg`` / ``comm_close`` are handled at once, by the kernel's own handlers
  (``kernel.shell_handlers``), with the message as the parent (so the widget's replies and echoes
  are addressed to it, as ipykernel does) and the cell's parent back afterwards, so the run's
  output keeps going to its cell. No busy/idle status is published (the cell is still busy), as
  ipykernel 7.4 does for comm messages that arrive during an awaited cell;
- every other message (execute_request, kernel_info_request, ...) goes on, in arrival order, to
  the stream's own callback, which queues it exactly as if the loop had read it: it is handled
  once, after the cell, in order (on ipykernel 7 it is a task waiting for the shell's lock; on 6
  an entry in ``msg_queue``).

The kernel's Stop (SIGINT) is held while messages are read and handled (microseconds for a
click), so that none is lost between the socket and its handler, and delivered right after; a
second Stop while a widget's own handler runs interrupts that handler, and the comm messages not
handled yet go on to the kernel's queue. It costs nothing when no blocking run is in progress
(the runner calls wait hooks only while it waits), and one ``zmq_poll`` (about 4 us) per 0.1 s
during one.

Where it cannot work (a terminal IPython, an in-process kernel, an ipykernel whose internals
differ from the ones below, or a major version other than 6 and 7), ``install`` registers
nothing: ``RunHandle.polls_ui`` is then False for a blocking run and the display disables its
Cancel button. Called outside the kernel's main thread (a blocking run waited for in a subshell
or in a thread of the user's), the pump does nothing and returns False.

ipykernel internals relied on (read from its source; tests/notebook/test_uipoll.py passes with
ipykernel 6.29.5, 6.31.0, 7.0.1, 7.1.0, 7.2.0, 7.3.0 and 7.4.0, pyzmq 27.3, jupyter_client 8.10):

- the main thread's shell messages arrive on one ``ZMQStream`` bound to the main thread's
  loop: on 7.x ``kernel.shell_channel_thread.manager.get_shell_channel_to_subshell_pair(None)
  .to_stream`` (an inproc PAIR fed by the shell channel thread), on 6.x (or a 7.x kernel with no
  shell channel thread) ``kernel.shell_stream``;
- that stream's receive callback (``ZMQStream._recv_callback``, pyzmq) takes the raw frames and
  either queues them (6.x) or returns a coroutine that pyzmq would ``ensure_future`` (7.x);
- ``kernel.session`` (jupyter_client ``Session.feed_identities`` / ``deserialize``: a header-only
  ``deserialize(content=False)`` does not record the signature, so the kernel can still read the
  message later), ``kernel.shell_handlers[comm_*]``, ``kernel.set_parent(ident, parent,
  channel)``, ``kernel.get_parent("shell")`` and ``kernel._parent_ident["shell"]``;
- on 7.x, the process-wide fallback parent (``_parent_header_global``) of the output streams, the
  display hook and publisher and the shell, which ``set_parent`` sets besides their contextvar:
  it is put back to the cell's while a handler runs (``_global_parents``), so that output from
  threads without the cell's context stays the cell's.

jupyter-ui-poll is not used: it calls ``kernel.do_one_iteration()``, which ipykernel 7 no longer
has (it then silently does nothing), and on ipykernel 6 it replaces the kernel's execute_request
handler and replays held requests itself. The stream flush above is what ipykernel 6's own
``do_one_iteration`` did, and it works the same on 6 and 7.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import inspect
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..runtime.loop_driver import register_wait_hook

__all__ = ["WidgetPump", "find_pump", "install"]

log = logging.getLogger("nborch")

COMM_MESSAGES = frozenset({"comm_open", "comm_msg", "comm_close"})
TESTED_MAJORS = (6, 7)  # ipykernel major versions whose internals are the ones described above


def _global_parents(kernel: Any) -> list[tuple[Any, Any]]:
    """(holder, its parent) for what keeps a process-wide parent header besides its contextvar
    (ipykernel 7: the output streams, the display hook and publisher, the shell): the parent that
    output from threads without the cell's context goes under. Wrapped streams (nborch's output
    router) are unwrapped; on ipykernel 6 there are none (its parents are thread-local)."""
    shell = getattr(kernel, "shell", None)
    found = []
    candidates: list[Any] = [sys.stdout, sys.stderr, shell, getattr(shell, "displayhook", None),
                             getattr(shell, "display_pub", None)]
    for obj in candidates:
        for _ in range(4):  # a stream wrapped by a router or two
            if obj is None or "_parent_header_global" in getattr(obj, "__dict__", {}):
                break
            obj = getattr(obj, "original", None)
        if obj is not None and "_parent_header_global" in getattr(obj, "__dict__", {}):
            found.append((obj, obj._parent_header_global))
    return found


class WidgetPump:
    """A wait hook that hands the front end's comm messages to their handlers while the kernel's
    main thread waits for a blocking run; every other shell message goes on to the kernel's own
    queue, in order. Calling it returns whether it can work in the calling thread."""

    def __init__(self, kernel: Any, stream: Any, reply_to: Any) -> None:
        self.kernel = kernel
        self.stream = stream  # the ZMQStream that feeds the main thread its shell messages
        self.reply_to = reply_to  # what ipykernel passes its handlers as ``stream``
        self.thread = threading.main_thread()  # ipykernel's shell runs there (the stream's loop)
        self.handled = 0  # comm messages handled during blocking runs
        self.forwarded = 0  # other messages passed on to the kernel's queue
        self._busy = False
        self._in_handler = False

    def __call__(self) -> bool:
        if threading.current_thread() is not self.thread:
            return False
        if self._busy:  # a widget handler is itself blocked in a run: no nesting
            return True
        socket = self.stream.socket
        if socket is None:  # the stream was closed: the kernel is shutting down
            return False
        if not socket.poll(0):
            return True
        self._busy = True
        try:
            with self._sigint_held():
                self._pump()
        finally:
            self._busy = False
        return True

    def _pump(self) -> None:
        comms = self._take()
        try:
            while comms:
                self._dispatch(comms.popleft())
        finally:
            for msg in comms:  # a Stop inside a handler: the rest are handled after the cell
                self._forward(msg)
            # Output is filed under its parent as it is written (ipykernel >= 6.29): the
            # handlers' output goes out under their messages, flushed here as ipykernel does.
            for out in (sys.stdout, sys.stderr):
                if out is not None:
                    out.flush()

    def _take(self) -> collections.deque[Any]:
        """Empty the socket: comm messages are returned, the rest go on to the kernel's queue."""
        import zmq

        stream = self.stream
        forward = stream._recv_callback
        comms: collections.deque[Any] = collections.deque()

        def sort(msg: Any) -> Any:
            if self._msg_type(msg) in COMM_MESSAGES:
                comms.append(msg)
                return None
            self.forwarded += 1
            return forward(msg)  # a coroutine (7.x) is scheduled by pyzmq, as the loop would

        stream._recv_callback = sort
        try:
            stream.flush(zmq.POLLIN)
        finally:
            stream._recv_callback = forward
        return comms

    def _forward(self, msg: Any) -> None:
        result = self.stream._recv_callback(msg)
        if inspect.isawaitable(result):
            asyncio.ensure_future(result)
        self.forwarded += 1

    def _msg_type(self, msg: Any) -> str | None:
        session = self.kernel.session
        try:
            _, frames = session.feed_identities(msg, copy=False)
            header = session.deserialize(frames, content=False, copy=False)["header"]
        except Exception:  # not ours to judge: the kernel logs it when it reads it
            return None
        return header.get("msg_type")

    def _dispatch(self, msg: Any) -> None:
        """Handle one comm message as ipykernel would, with it as the parent meanwhile."""
        kernel = self.kernel
        session = kernel.session
        idents, frames = session.feed_identities(msg, copy=False)
        try:
            request = session.deserialize(frames, content=True, copy=False)
        except Exception:
            kernel.log.error("Invalid Message", exc_info=True)
            return
        handler = kernel.shell_handlers.get(request["header"]["msg_type"])
        if handler is None:
            return
        cell_ident, cell_parent = kernel._parent_ident["shell"], kernel.get_parent("shell")
        shared = _global_parents(kernel)

        def handle() -> None:
            kernel.set_parent(idents, request, channel="shell")
            for holder, parent in shared:  # only the handler's context has the message as parent:
                holder._parent_header_global = parent  # threads without one still write to the cell
            self._in_handler = True  # a stuck widget handler can still be interrupted
            try:
                handler(self.reply_to, idents, request)
            except Exception:
                kernel.log.error("Exception in message handler:", exc_info=True)
            finally:
                self._in_handler = False

        self.handled += 1
        try:
            # In a copy of the context: the message is the parent of the handler only, not of
            # the cell's context. What set_parent also sets globally (ipykernel 7: the parent of
            # output from threads that do not carry the cell's context, such as a plain
            # threading.Thread's) is put back at once, inside handle: else a thread's print
            # during a click handler went out under the click (seen: 1 line in 1,500, in CI).
            contextvars.copy_context().run(handle)
        finally:
            kernel.set_parent(cell_ident, cell_parent, channel="shell")

    @contextlib.contextmanager
    def _sigint_held(self) -> Iterator[None]:
        """Hold a SIGINT (the kernel's Stop) while messages are read and handled, so that none is
        lost between the socket and its handler; deliver it afterwards to the handler it was
        meant for. A second one while a widget's own handler runs interrupts that handler."""
        held: list[Any] = []

        def on_sigint(signum: int, frame: Any) -> None:
            if held and self._in_handler and callable(previous):
                previous(signum, frame)  # a second Stop: KeyboardInterrupt in the widget's code
            else:
                held.append(frame)

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
        if held:
            _deliver(previous, held[0])


def _deliver(handler: Any, frame: Any) -> None:
    if callable(handler):
        handler(signal.SIGINT, frame)  # the kernel's: KeyboardInterrupt
    else:  # SIG_DFL / SIG_IGN, or set outside Python: as if it arrived now
        signal.raise_signal(signal.SIGINT)


def find_pump(shell: Any) -> WidgetPump | None:
    """A ``WidgetPump`` for ``shell``'s kernel, or None where it cannot work (no kernel, an
    in-process kernel, an ipykernel whose internals are not the ones this module relies on)."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return None
    try:
        import ipykernel
        from zmq.eventloop.zmqstream import ZMQStream
    except ImportError:
        return None
    if getattr(ipykernel, "version_info", (0,))[0] not in TESTED_MAJORS:
        return None
    if threading.current_thread() is not threading.main_thread():
        return None  # a subshell: the manager may be read from the main thread only
    try:
        channel = getattr(kernel, "shell_channel_thread", None)
        if channel is not None:
            manager = channel.manager
            stream = manager.get_shell_channel_to_subshell_pair(None).to_stream
            reply_to = manager.get_subshell_to_shell_channel_socket(None)
        else:
            stream = reply_to = getattr(kernel, "shell_stream", None)
        ok = (
            isinstance(stream, ZMQStream)
            and callable(getattr(stream, "_recv_callback", None))
            and all(callable(kernel.shell_handlers.get(t)) for t in COMM_MESSAGES)
            and callable(getattr(kernel.session, "feed_identities", None))
            and callable(getattr(kernel.session, "deserialize", None))
            and callable(getattr(kernel, "set_parent", None))
            and callable(getattr(kernel, "get_parent", None))
            and "shell" in kernel._parent_ident
        )
    except Exception:
        log.debug("nborch: this kernel's shell stream was not found", exc_info=True)
        return None
    return WidgetPump(kernel, stream, reply_to) if ok else None


def install(shell: Any) -> Callable[[], None] | None:
    """Register a ``WidgetPump`` for ``shell`` as a wait hook; return the function that
    unregisters it, or None (nothing registered) where it cannot work."""
    pump = find_pump(shell)
    if pump is None:
        return None
    return register_wait_hook(pump)

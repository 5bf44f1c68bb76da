"""Run a generator in a forked child process and iterate what it yields in the parent.

For CPU-bound Python that feeds a database writer (CSV intake): in threads of one process the two
take turns at one interpreter lock, so parsing and writing cannot run at the same time however
many cores there are. A forked child parses on a core of its own and sends each item, pickled,
through a pipe; the pipe's buffer is the only thing between the two, so the child is never more
than an item ahead and memory stays flat.

The child is a copy of the parent and shares its open sockets: it must not touch the database (its
queries would interleave with the parent's on the same connection). It leaves with `os._exit`, so
no atexit handler runs and no output the parent had buffered is written twice.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO

_ITEM, _DONE, _FAILED = 0, 1, 2
# Threads a fork may leave behind: multiprocessing's queue feeder (a django-q2 worker has one from
# its first task on) only ever holds its own queue's lock, which the child never touches.
_HARMLESS_THREADS = {"QueueFeederThread"}


def can_fork() -> bool:
    """Whether forking now is safe. The child gets every lock in the state it was in, but only the
    thread that forked: a lock another thread held at that moment (phonenumbers' metadata lock while
    it loads a region) is never released there, and the child waits forever. So: only when no other
    thread runs (the import command, a django-q2 worker), never beside a threaded web server's
    requests or a test's live server."""
    if not hasattr(os, "fork"):
        return False
    me = threading.current_thread()
    return all(t is me or t.name in _HARMLESS_THREADS for t in threading.enumerate())


class ChildFailed(RuntimeError):
    """The child stopped without saying why (killed, out of memory) or raised what cannot be pickled."""


@contextmanager
def iterate_in_fork(produce: Callable[[], Iterable[Any]]) -> Iterator[Iterator[Any] | None]:
    """Fork on entry, run `produce()` in the child, and give an iterator over its items here, in order;
    or None when the system cannot fork now (out of memory or processes): the caller then does the
    work itself (`produce` is not called).

    Call it only when can_fork() says so. An exception in the child is raised here when its turn
    comes. Leaving the block, however and whenever (the items consumed or not), kills the child if
    it still runs and reaps it.
    """
    read_fd, write_fd = os.pipe()
    # The child's collections then leave the parent's objects, and the pages they sit on, alone. A
    # host process that froze objects of its own keeps them frozen: we only undo our own freeze.
    froze = gc.get_freeze_count() == 0
    if froze:
        gc.freeze()
    try:
        pid = os.fork()
    except OSError:
        if froze:
            gc.unfreeze()
        os.close(read_fd)
        os.close(write_fd)
        yield None
        return
    if pid == 0:  # pragma: no cover - the child's coverage is not collected; its effects are tested
        _run_child(produce, read_fd, write_fd)
    child = _Child(pid)
    try:
        if froze:
            gc.unfreeze()
        os.close(write_fd)  # the child's end: once the child has gone, reading here ends
        with open(read_fd, "rb") as inp:
            yield _receive(inp, child)
    finally:
        child.stop()


class _Child:
    """The forked worker as the parent sees it: reaped exactly once, however its end comes."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status: int | None = None  # as waitpid gives it, once reaped

    def ended(self, wait: float | None = None) -> str | None:
        """How the child ended, waiting for it to end (at most `wait` seconds; None if it still runs)."""
        deadline = None if wait is None else time.monotonic() + wait
        while self.status is None:
            pid, status = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            if pid:
                self.status = status
            elif time.monotonic() >= deadline:  # type: ignore[operator]
                return None
            else:
                time.sleep(0.01)
        if os.WIFSIGNALED(self.status):
            sig = os.WTERMSIG(self.status)
            return f"killed by signal {sig}" + (" — out of memory?" if sig == signal.SIGKILL else "")
        return f"exit status {os.WEXITSTATUS(self.status)}"

    @property
    def exited_cleanly(self) -> bool:
        """Reaped, having left by itself with status 0: it said all it had to say."""
        return self.status is not None and os.WIFEXITED(self.status) and os.WEXITSTATUS(self.status) == 0

    def stop(self) -> None:
        if self.status is None:
            with suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.ended()


def _run_child(produce: Callable[[], Iterable[Any]], read_fd: int, write_fd: int) -> None:  # pragma: no cover
    status = 1
    try:
        os.close(read_fd)
        with open(write_fd, "wb") as out:
            try:
                for item in produce():
                    # Pickled whole before writing: an item that cannot be pickled leaves no half in the pipe.
                    out.write(pickle.dumps((_ITEM, item), pickle.HIGHEST_PROTOCOL))
                    out.flush()  # the parent may be waiting for exactly this item
                message: tuple[int, Any] = (_DONE, None)
            except Exception as exc:  # every failure is the parent's to raise
                exc.add_note("Raised in the forked worker process:\n" + "".join(traceback.format_tb(exc.__traceback__)))
                message = (_FAILED, exc)
            try:
                blob = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
            except Exception:  # an exception that cannot be pickled: say what it was
                blob = pickle.dumps((_FAILED, ChildFailed(f"{type(message[1]).__name__}: {message[1]}")),
                                    pickle.HIGHEST_PROTOCOL)
            out.write(blob)
        status = 0
    except BaseException:  # noqa: S110 - the parent gone (broken pipe), ^C: just leave
        pass
    finally:
        os._exit(status)


def _receive(inp: BinaryIO, child: _Child) -> Iterator[Any]:
    while True:
        try:
            kind, payload = pickle.load(inp)  # noqa: S301 - our own child, through our own pipe
        except EOFError:
            raise ChildFailed(f"the worker process ended before it finished ({child.ended()})") from None
        except (pickle.UnpicklingError, AttributeError, ImportError, TypeError) as exc:
            # Killed in the middle of writing an item (a chunk is far larger than the pipe's buffer),
            # or an exception class whose constructor wants other arguments than it pickled with.
            how = child.ended(wait=1.0)
            if how is not None and not child.exited_cleanly:
                raise ChildFailed(f"the worker process ended before it finished ({how})") from exc
            raise ChildFailed(f"unreadable message from the worker process: {exc!r}") from exc
        if kind == _DONE:
            return
        if kind == _FAILED:
            raise payload
        yield payload

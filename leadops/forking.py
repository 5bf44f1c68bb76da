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

import os
import pickle
import signal
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO

_ITEM, _DONE, _FAILED = 0, 1, 2


def can_fork() -> bool:
    return hasattr(os, "fork")


class ChildFailed(RuntimeError):
    """The child stopped without saying why (killed, out of memory) or raised what cannot be pickled."""


@contextmanager
def iterate_in_fork(produce: Callable[[], Iterable[Any]]) -> Iterator[Iterator[Any]]:
    """Fork on entry, run `produce()` in the child, and give an iterator over its items here, in order.

    An exception in the child is raised here when its turn comes. Leaving the block, however and
    whenever (the items consumed or not), kills the child if it still runs and reaps it.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected; its effects are tested
        _run_child(produce, read_fd, write_fd)
    os.close(write_fd)
    try:
        with open(read_fd, "rb") as inp:
            yield _receive(inp)
    finally:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


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
                blob = pickle.dumps((_FAILED, ChildFailed(f"{type(message[1]).__name__}: {message[1]}")))
            out.write(blob)
        status = 0
    except BaseException:  # noqa: S110 - the parent gone (broken pipe), ^C: just leave
        pass
    finally:
        os._exit(status)


def _receive(inp: BinaryIO) -> Iterator[Any]:
    while True:
        try:
            kind, payload = pickle.load(inp)  # noqa: S301 - our own child, through our own pipe
        except EOFError:
            raise ChildFailed("the worker process ended before it finished") from None
        except Exception as exc:  # e.g. an exception class whose constructor wants other arguments
            raise ChildFailed(f"unreadable message from the worker process: {exc!r}") from exc
        if kind == _DONE:
            return
        if kind == _FAILED:
            raise payload
        yield payload

"""iterate_in_fork: a generator run in a forked worker, its items read here in order; failures come
back as exceptions, and the worker never outlives the block nor writes out what was ours to write."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from leadops import forking
from leadops.forking import ChildFailed, can_fork, iterate_in_fork


def my_children() -> set[int]:
    """The pids of this process's children, zombies included (Linux)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        pids |= {int(pid) for pid in (task / "children").read_text().split()}
    return pids


pytestmark = pytest.mark.skipif(
    not Path(f"/proc/self/task/{threading.get_native_id()}/children").exists(), reason="reads /proc to find children"
)


def test_the_items_arrive_in_order_and_the_worker_is_reaped():
    before = my_children()

    with iterate_in_fork(lambda: ((i, os.getpid()) for i in range(2000))) as items:
        got = list(items)

    assert [i for i, _ in got] == list(range(2000))
    assert {pid for _, pid in got} != {os.getpid()}  # made in another process
    assert my_children() == before


def test_an_exception_in_the_worker_is_raised_here_with_where_it_came_from():
    def produce():
        yield 1
        raise ValueError("row 7 is broken")

    with pytest.raises(ValueError, match="row 7 is broken") as caught, iterate_in_fork(produce) as items:
        assert next(items) == 1
        next(items)

    assert any("forked worker process" in note for note in caught.value.__notes__)


def test_an_exception_that_cannot_be_pickled_still_says_what_it_was():
    class Local(Exception):  # a local class cannot be pickled
        pass

    def produce():
        raise Local("no way back")
        yield

    with pytest.raises(ChildFailed, match="Local: no way back"), iterate_in_fork(produce) as items:
        list(items)


def test_a_worker_that_dies_is_a_clear_error_not_a_hang():
    def produce():
        yield "first"
        os._exit(3)  # killed, out of memory, ...

    with pytest.raises(ChildFailed, match="ended before it finished"), iterate_in_fork(produce) as items:
        assert next(items) == "first"
        next(items)


def test_a_worker_killed_says_so():
    def produce():
        yield "first"
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would

    with pytest.raises(ChildFailed, match="killed by signal 9"), iterate_in_fork(produce) as items:
        assert next(items) == "first"
        next(items)


def test_leaving_early_kills_a_worker_that_is_busy_and_not_writing():
    """A worker stuck in its own work never notices that nobody reads any more: it must be killed."""
    before = my_children()

    def produce():
        yield 0
        time.sleep(60)
        yield 1

    start = time.monotonic()
    with iterate_in_fork(produce) as items:
        assert next(items) == 0

    assert time.monotonic() - start < 5
    assert my_children() == before


def test_it_is_not_safe_to_fork_while_another_thread_runs():
    """The child would inherit any lock that thread holds, with nobody left to release it."""
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert not can_fork()
    finally:
        release.set()
        other.join()


def test_only_a_queue_feeder_thread_may_run_beside_a_fork(monkeypatch):
    """A django-q2 worker has multiprocessing's queue feeder from its first task on: that one is fine.
    (Judged on a given list of threads: the session may run threads of its own, e.g. a live server.)"""
    me = threading.current_thread()

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

    monkeypatch.setattr(forking.threading, "enumerate", lambda: [me])
    assert can_fork()
    monkeypatch.setattr(forking.threading, "enumerate", lambda: [me, Named("QueueFeederThread")])
    assert can_fork()
    monkeypatch.setattr(forking.threading, "enumerate", lambda: [me, Named("Thread-7 (serve_forever)")])
    assert not can_fork()


def test_when_the_system_cannot_fork_the_caller_is_told_and_nothing_is_left_open(monkeypatch):
    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(forking.os, "fork", no_fork)
    fds, frozen = len(os.listdir("/proc/self/fd")), gc.get_freeze_count()
    produced: list[int] = []

    with iterate_in_fork(lambda: produced.append(1) or iter(())) as items:
        assert items is None

    assert produced == []  # the caller does the work itself, its own way
    assert len(os.listdir("/proc/self/fd")) == fds  # the pipe is closed again
    assert gc.get_freeze_count() == frozen


def test_the_parents_objects_are_collectable_again_after_the_fork():
    """gc.freeze() spares the child's pages; the parent must not keep its objects frozen."""
    frozen = gc.get_freeze_count()

    with iterate_in_fork(lambda: iter(range(3))) as items:
        assert gc.get_freeze_count() == frozen
        assert list(items) == [0, 1, 2]


class TwoArgs(Exception):
    """Pickles, but cannot be rebuilt from what it pickled (its args are one message)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a} and {b}")


def test_a_message_that_cannot_be_read_here_is_a_clear_error():
    def produce():
        raise TwoArgs("this", "that")
        yield

    with pytest.raises(ChildFailed, match="unreadable message"), iterate_in_fork(produce) as items:
        list(items)


def test_a_worker_killed_in_the_middle_of_an_item_says_it_was_killed():
    """A chunk is far larger than the pipe's buffer, so a worker killed by the out-of-memory killer is
    most likely blocked half-way through writing one: the parent reads a truncated item."""

    def produce():
        yield os.getpid()
        yield "x" * 4_000_000  # blocks: nobody reads yet

    with iterate_in_fork(produce) as items:
        pid = next(items)
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ChildFailed, match="killed by signal 9"):
            next(items)


def test_leaving_early_stops_a_worker_that_would_never_end():
    before = my_children()

    def forever():
        n = 0
        while True:
            yield n
            n += 1

    start = time.monotonic()
    with iterate_in_fork(forever) as items:
        assert [next(items) for _ in range(3)] == [0, 1, 2]

    assert time.monotonic() - start < 5
    assert my_children() == before


def test_the_worker_does_not_write_out_what_we_had_not_written_yet(tmp_path):
    """The worker is a copy of this process, buffers included: it must leave without flushing them
    (os._exit), or whatever we had buffered is written twice."""
    path = tmp_path / "log.txt"
    with path.open("w") as log:
        log.write("written once")  # still in this process's buffer

        with iterate_in_fork(lambda: iter(range(3))) as items:
            assert list(items) == [0, 1, 2]

    assert path.read_text() == "written once"

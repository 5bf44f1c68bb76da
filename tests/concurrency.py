"""Start several threads at the same instant against the real database (PostgreSQL row locks)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import connection

T = TypeVar("T")


def run_at_once(work: Callable[[], T], threads: int) -> list[T]:
    """Run `work` in `threads` threads released together by a barrier; return their results.

    Each thread has its own database connection (closed when it ends). An exception in any thread
    is raised here, because a thread cannot fail the test itself.
    """
    barrier = threading.Barrier(threads)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(work())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return results

"""Helpers for the two pipelines that overlap Python with PostgreSQL (batch routing, CSV intake)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# A thread that gets its answer from PostgreSQL has to win the GIL back before it can send the next
# statement; by default the busy thread keeps it for up to 5 ms. A pipeline's writer makes dozens of
# round trips per batch (every 128 KB of a COPY is one), so it would spend most of its time waiting
# for the deciding/parsing thread instead of keeping the database busy.
PIPELINE_SWITCH_INTERVAL = 0.0005  # seconds


_lock = threading.Lock()
_active = 0  # pipelines running in this process
_saved = 0.0  # the interval before the first of them started


@contextmanager
def responsive_threads(interval: float = PIPELINE_SWITCH_INTERVAL) -> Iterator[None]:
    """Let a thread that waited on I/O take the GIL back within `interval` while the block runs.

    The interval is process-wide: it is lowered (never raised) when the first pipeline starts and
    given back when the last one ends, so pipelines that overlap and end in any order leave the
    process as they found it."""
    global _active, _saved
    with _lock:
        if _active == 0:
            _saved = sys.getswitchinterval()
        _active += 1
        sys.setswitchinterval(min(sys.getswitchinterval(), interval))
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                sys.setswitchinterval(_saved)

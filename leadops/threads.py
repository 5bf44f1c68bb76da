"""Process-wide interpreter settings for the bulk pipelines (batch routing, CSV intake).

Each setting is changed while at least one pipeline needs it and put back when the last one ends,
so pipelines that overlap (two threads, or a pipeline inside another) and end in any order leave
the process as they found it.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# A thread that gets its answer from PostgreSQL has to win the GIL back before it can send the next
# statement; by default the busy thread keeps it for up to 5 ms. A pipeline's writer makes dozens of
# round trips per batch (every 128 KB of a COPY is one), so it would spend most of its time waiting
# for the deciding/parsing thread instead of keeping the database busy.
PIPELINE_SWITCH_INTERVAL = 0.0005  # seconds

# CPython 3.11 collects the youngest generation after every 700 new container objects, and walks
# every object of the process about once in a hundred of those while new objects keep surviving —
# as they do while a batch's decisions wait to be written. Routing 28,000 leads allocates ~20
# objects a lead (a trace entry per candidate); with the default it spent 1.8 of its 4.2 s in the
# collector, with 20,000 about none. Nothing is left uncollected: collections are fewer, not off.
BULK_GC_THRESHOLD = 20_000


class _SharedSetting:
    """One process-wide setting, held by however many blocks are running."""

    def __init__(self, read: Callable[[], Any], write: Callable[[Any], None]) -> None:
        self._read, self._write = read, write
        self._lock = threading.Lock()
        self._active = 0
        self._saved: Any = None

    @contextmanager
    def held(self, combine: Callable[[Any], Any]) -> Iterator[None]:
        """Apply `combine(current value)` while the block runs."""
        with self._lock:
            if self._active == 0:
                self._saved = self._read()
            self._active += 1
            self._write(combine(self._read()))
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._write(self._saved)


_switch_interval = _SharedSetting(sys.getswitchinterval, sys.setswitchinterval)
_gc_threshold = _SharedSetting(gc.get_threshold, lambda t: gc.set_threshold(*t))


def responsive_threads(interval: float = PIPELINE_SWITCH_INTERVAL):
    """Let a thread that waited on I/O take the GIL back within `interval` while the block runs
    (lowered, never raised)."""
    return _switch_interval.held(lambda current: min(current, interval))


def fewer_collections(threshold: int = BULK_GC_THRESHOLD):
    """Run the youngest generation's collection after `threshold` new objects (never more often
    than the process already does) while the block allocates in bulk."""
    return _gc_threshold.held(lambda current: (max(current[0], threshold), *current[1:]))

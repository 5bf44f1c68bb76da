"""Helpers for the two pipelines that overlap Python with PostgreSQL (batch routing, CSV intake)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

# A thread that gets its answer from PostgreSQL has to win the GIL back before it can send the next
# statement; by default the busy thread keeps it for up to 5 ms. A pipeline's writer makes dozens of
# round trips per batch (every 128 KB of a COPY is one), so it would spend most of its time waiting
# for the deciding/parsing thread instead of keeping the database busy.
PIPELINE_SWITCH_INTERVAL = 0.0005  # seconds


@contextmanager
def responsive_threads(interval: float = PIPELINE_SWITCH_INTERVAL) -> Iterator[None]:
    """Let a thread that waited on I/O take the GIL back within `interval` while the block runs.

    The interval is process-wide; it is restored afterwards (never raised above what it was)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, interval))
    try:
        yield
    finally:
        sys.setswitchinterval(before)

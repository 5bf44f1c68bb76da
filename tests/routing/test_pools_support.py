"""Helpers shared by the pool/claim/board tests (no tests here)."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from routing.models import Lead
from tests.factories import LeadFactory

NOW = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)  # a Monday, 10:00 UTC


def pooled(pool, *, at: dt.datetime | None = None, **fields) -> Lead:
    """A lead waiting in `pool`, as the engine leaves it after lead_enter_pool."""
    at = at or timezone.now()
    fields.setdefault("received_at", at)
    return LeadFactory(status=Lead.Status.POOLED, pool=pool, pooled_at=at, routed_at=at, **fields)

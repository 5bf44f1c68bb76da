"""Hand-made leads with known answers. `NOW` is fixed so figures never depend on the clock."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from reports.selectors import make_scope
from tests.factories import LeadFactory

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # a Wednesday


def minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


def answered_lead(received_at: dt.datetime, after_minutes: float | None, **fields):
    """A lead received at `received_at` and first touched `after_minutes` later (None = not yet)."""
    touched = received_at + minutes(after_minutes) if after_minutes is not None else None
    fields.setdefault("status", "contacted" if touched else "assigned")
    fields.setdefault("assigned_at", received_at)
    return LeadFactory(received_at=received_at, first_touch_at=touched, **fields)


@pytest.fixture
def scope_for():
    def build(days: int = 7, tz: str = "UTC", now: dt.datetime = NOW, **dims):
        return make_scope(now=now, tz=zoneinfo.ZoneInfo(tz), days=days, **dims)

    return build

"""Clock benchmarks: how long a sweep takes over a big table of open leads.

Each prints one JSON line {"name", "value", "unit", "baseline", "ratio"}; the baseline is a plain
`SELECT count(*)` of the same table measured in the same run, because absolute times on a shared
machine are noise. BENCH_SCALE sets the number of open leads (default 100,000); 1% are due.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest
from django.db import connection

from routing.models import Lead, LeadEvent
from routing.sla import sweep_overdue
from tests.factories import RepFactory

pytestmark = [pytest.mark.bench, pytest.mark.django_db]

NOW = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)


def scale() -> int:
    return int(os.environ.get("BENCH_SCALE", "100000"))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def count_all() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {Lead._meta.db_table}")
        cursor.fetchone()


def report(name: str, value: float, baseline: float) -> None:
    print(json.dumps({"name": name, "value": round(value, 6), "unit": "s", "baseline": round(baseline, 6),
                      "ratio": round(value / baseline, 2) if baseline else None}))


def open_leads(n: int, due_every: int) -> int:
    """n assigned, untouched leads; every `due_every`-th is past its deadline at NOW. Returns the number due."""
    # Reps without email or webhook: delivery is network-bound and measured elsewhere.
    reps = [RepFactory(user__email="") for _ in range(20)]
    batch: list[Lead] = []
    due = 0
    for i in range(n):
        is_due = i % due_every == 0
        due += is_due
        batch.append(Lead(
            email=f"bench{i}@customer.example", status=Lead.Status.ASSIGNED, owner=reps[i % len(reps)],
            received_at=NOW - dt.timedelta(hours=2), assigned_at=NOW - dt.timedelta(hours=1),
            sla_due_at=NOW - dt.timedelta(seconds=i + 1) if is_due else NOW + dt.timedelta(minutes=30 + i % 600),
        ))
        if len(batch) == 5000:
            Lead.objects.bulk_create(batch)
            batch = []
    Lead.objects.bulk_create(batch)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Lead._meta.db_table}")
    return due


def test_sweep_100k():
    due = open_leads(scale(), due_every=100)
    count_all()  # warm the cache so the baseline is not a cold read
    baseline = min(timed(count_all) for _ in range(3))

    result: dict = {}
    elapsed = timed(lambda: result.update(sweep_overdue(NOW)))

    assert result["escalated"] == due
    assert LeadEvent.objects.filter(kind=LeadEvent.Kind.SLA_BREACHED).count() == due
    report("sweep_100k", elapsed, baseline)

    # The same sweep again finds nothing to do: it must cost about one index probe, not a table scan.
    idle = timed(lambda: result.update(sweep_overdue(NOW)))
    assert result["escalated"] == 0
    report("sweep_100k_idle", idle, baseline)

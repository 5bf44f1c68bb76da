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
from django.utils import timezone

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


# -- speed to lead: received → notified with the django-q2 cluster running ------------------------


def _database_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@pytest.mark.django_db(transaction=True)
def test_speed_to_lead(settings):
    """Leads are routed one by one as they arrive; the worker (a real `qcluster` on the ORM broker)
    delivers the owner's email. Baseline: delivering the same email in-process, without the queue."""
    import subprocess
    import sys
    from pathlib import Path

    from routing.models import Notification
    from routing.notify import lead_notify, notification_deliver
    from routing.services import route_leads
    from tests.factories import LeadFactory
    from tests.routing.test_sla import make_rule

    if connection.vendor != "postgresql":
        pytest.skip("the worker process needs a database it can share: run with DATABASE_URL=postgres://…")
    n = max(20, min(200, scale() // 1000))
    RepFactory(user__username="fast")
    make_rule(candidates={"reps": ["fast"]}, strategy="first_available")

    # In-process baseline: one pending email delivered directly.
    direct = []
    for _ in range(10):
        lead = LeadFactory()
        Lead.objects.filter(pk=lead.pk).update(owner_id=RepFactory().pk, status=Lead.Status.ASSIGNED)
        (email,) = [pk for pk in lead_notify(lead.pk, "assigned")
                    if Notification.objects.get(pk=pk).channel == Notification.Channel.EMAIL]
        direct.append(timed(lambda pk=email: notification_deliver(pk)))
    baseline = _percentile(direct, 0.5)

    settings.TESTING = False  # queue for the cluster instead of running tasks inline
    env = {**os.environ, "DATABASE_URL": _database_url(), "DEBUG": "1", "Q_SYNC": "0", "EMAIL_URL": "consolemail://"}
    root = Path(__file__).resolve().parents[2]
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"], cwd=root, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        warm = LeadFactory()
        route_leads([warm.pk])
        assert _wait(lambda: Lead.objects.filter(pk=warm.pk, notified_at__isnull=False).exists(), 60), "no worker"

        ids = []
        for _ in range(n):
            lead = LeadFactory(received_at=timezone.now())
            route_leads([lead.pk])
            ids.append(lead.pk)
            time.sleep(0.02)
        assert _wait(lambda: Lead.objects.filter(pk__in=ids, notified_at__isnull=True).count() == 0, 120)
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    latencies = [(lead.notified_at - lead.received_at).total_seconds() for lead in Lead.objects.filter(pk__in=ids)]
    report("speed_to_lead_p50", _percentile(latencies, 0.5), baseline)
    report("speed_to_lead_p99", _percentile(latencies, 0.99), baseline)

"""Reports benchmark: the dashboard and the conversion report over 90 days of a big lead table.

Generates N leads and 5N events with SQL `generate_series` (PostgreSQL), then times rendering the
two pages (warm, best of 3) against a baseline `SELECT count(*)` over the events table measured in
the same run. Prints one JSON line per page: {"name", "value", "unit", "baseline", "ratio"}.

BENCH_SCALE = N (default 1,000,000, the full size; use 100000 for a quick run).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest
from django.db import connection, models
from django.utils import timezone

from routing.models import Lead, LeadEvent, Pool, Rule, RuleSet
from tests.factories import RepFactory, TeamFactory, UserFactory

# transaction=True: the data is committed so VACUUM can set the visibility map, as autovacuum would.
pytestmark = [pytest.mark.bench, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DAYS = 365  # a year of leads, arriving in time order as they do in production
LIMIT_SECONDS = 1.5
LIMIT_RATIO = 10


def scale() -> int:
    return int(os.environ.get("BENCH_SCALE", "1000000"))


def report(name: str, value: float, baseline: float) -> None:
    print(json.dumps({"name": name, "value": round(value, 4), "unit": "s", "baseline": round(baseline, 4),
                      "ratio": round(value / baseline, 2) if baseline else None}))


def best_of(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _filler(field: models.Field) -> str:
    """A value for every NOT NULL column the generator does not set (other apps may add fields)."""
    if isinstance(field, models.JSONField):
        return "'{}'::jsonb"
    if isinstance(field, models.BooleanField):
        return "false"
    if isinstance(field, models.DateTimeField):
        return "now()"
    if isinstance(field, models.IntegerField | models.DecimalField | models.FloatField):
        return "0"
    return "''"


def insert_select(model: type[models.Model], values: dict[str, str], source: str) -> None:
    columns, exprs = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        if field.column in values:
            exprs.append(values[field.column])
        elif field.null:
            continue
        else:
            exprs.append(_filler(field))
        columns.append(field.column)
    sql = f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(exprs)} FROM {source}"
    with connection.cursor() as cursor:
        cursor.execute(sql)


def generate(n: int, now: dt.datetime) -> None:
    teams = [TeamFactory(name=f"Team {i}") for i in range(4)]
    reps = [RepFactory(team=teams[i % 4], weight=1 + i % 3, capacity=200) for i in range(40)]
    pools = [Pool.objects.create(name=f"bench pool {i}", claim_limit=10) for i in range(3)]
    rule_set = RuleSet.objects.create(name="bench", version=9001, status="archived")
    rules = [Rule.objects.create(rule_set=rule_set, position=i, name=f"rule {i}") for i in range(8)]
    rep_ids = ",".join(str(r.pk) for r in reps)
    pool_ids = ",".join(str(p.pk) for p in pools)
    rule_ids = ",".join(str(r.pk) for r in rules)
    stamp = f"'{now.isoformat()}'::timestamptz"
    # g is 1..n, oldest first, spread evenly over DAYS with up to an hour of jitter; answer delays from
    # a minute to days, skewed short.
    step = DAYS * 86400 / n
    received = (f"({stamp} - (({n} - g) * {step:.6f} + (g::bigint * 7919) % 3600) * interval '1 second')")
    owned = "(g % 10 <> 0)"
    pooled = "(g % 4 = 1)"
    touch_minutes = "(((g::bigint * 37) % 97) * ((g::bigint * 13) % 31) + 1)"
    touched = f"({owned} AND g % 9 <> 0)"
    status = (f"CASE WHEN NOT {owned} THEN 'unassigned' WHEN NOT {touched} THEN 'assigned' "
              "ELSE (ARRAY['contacted','qualified','won','lost','lost'])[1 + (g / 7) % 5] END")
    insert_select(
        Lead,
        {
            "email": "'bench' || g || '@customer.example'",
            "company": "'Company ' || (g % 5000)",
            "source": "(ARRAY['web','webinar','referral','purchased list','partner'])[1 + g % 5]",
            "industry": "(ARRAY['fintech','retail','health','saas','logistics','energy'])[1 + (g / 5) % 6]",
            "country": "(ARRAY['DE','FR','US','GB','ES'])[1 + (g / 3) % 5]",
            "company_size": "(ARRAY[8, 30, 120, 600, 2500, 9000])[1 + (g / 11) % 6]",
            "score": "g % 100",
            "priority": "CASE WHEN g % 50 = 0 THEN 'urgent' ELSE 'normal' END",
            "value": "((g % 50) * 100)::numeric",
            "received_at": received,
            "status": status,
            "owner_id": f"CASE WHEN {owned} THEN (ARRAY[{rep_ids}])[1 + g % {len(reps)}] END",
            "pool_id": f"CASE WHEN {pooled} THEN (ARRAY[{pool_ids}])[1 + g % {len(pools)}] END",
            "rule_id": f"(ARRAY[{rule_ids}])[1 + (g / 2) % {len(rules)}]",
            "routed_at": f"{received} + (g % 10) * interval '1 second'",
            "pooled_at": f"CASE WHEN {pooled} THEN {received} + interval '10 seconds' END",
            "claimed_at": f"CASE WHEN {pooled} AND {owned} THEN {received} + (g % 40) * interval '1 minute' END",
            "assigned_at": f"CASE WHEN {owned} THEN {received} + interval '1 minute' END",
            "notified_at": f"CASE WHEN {owned} THEN {received} + interval '80 seconds' END",
            "first_touch_at": f"CASE WHEN {touched} THEN {received} + {touch_minutes} * interval '1 minute' END",
            "closed_at": f"CASE WHEN {touched} AND (g / 7) % 5 >= 2 THEN {received} + interval '5 days' END",
            "sla_due_at": f"CASE WHEN {owned} THEN {received} + interval '15 minutes' END",
            "escalation_step": f"CASE WHEN {owned} AND (NOT {touched} OR {touch_minutes} > 15) THEN 1 ELSE 0 END",
            "created_at": received,
            "updated_at": received,
        },
        f"generate_series(1, {n}) AS g",
    )
    lead_table = Lead._meta.db_table
    insert_select(
        LeadEvent,
        {
            "lead_id": "l.id",
            "kind": "k.kind",
            "at": "l.received_at + k.secs * interval '1 second'",
            "rep_id": "CASE WHEN k.kind <> 'received' THEN l.owner_id END",
            "rule_id": "l.rule_id",
            "detail": "'{}'::jsonb",
        },
        f"{lead_table} l CROSS JOIN (VALUES ('received', 0), ('routed', 5), ('notified', 80), "
        "('status_changed', 1200), ('escalated', 900)) AS k(kind, secs)",
    )
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {lead_table}")
        cursor.execute(f"VACUUM ANALYZE {LeadEvent._meta.db_table}")


def test_reports_1m(client):
    n = scale()
    now = timezone.now()
    generate(n, now)
    assert LeadEvent.objects.count() == 5 * n
    client.force_login(UserFactory(username="bench-manager", groups=["Managers"], is_superuser=True))

    def baseline_query():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {LeadEvent._meta.db_table}")
            cursor.fetchone()

    baseline_query()  # warm the cache so the baseline is not a cold read
    baseline = best_of(baseline_query)

    today = now.date()
    period = f"start={today - dt.timedelta(days=89)}&end={today}"
    pages = {
        "reports_1m_dashboard": f"/reports/?{period}",
        "reports_1m_conversion": f"/reports/conversion/?{period}&by=rep",
    }
    results = {}
    if os.environ.get("BENCH_PROFILE"):
        from django.test.utils import CaptureQueriesContext

        for url in pages.values():
            with CaptureQueriesContext(connection) as ctx:
                client.get(url)
            for q in sorted(ctx.captured_queries, key=lambda q: -float(q["time"]))[:8]:
                print(q["time"], q["sql"][:600])
    for name, url in pages.items():
        assert client.get(url).status_code == 200
        results[name] = best_of(lambda url=url: client.get(url))
        report(name, results[name], baseline)
    for name, seconds in results.items():
        assert seconds <= LIMIT_SECONDS or seconds <= LIMIT_RATIO * baseline, f"{name} took {seconds:.2f} s"

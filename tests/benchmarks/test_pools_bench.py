"""Pool benchmarks (`make bench`; marker `bench`). Each prints one JSON line
{"name", "value", "unit", "baseline", "ratio"} with a baseline measured in the same run.

- claim_contention (PostgreSQL): successful claims/s of 20 concurrent claimers on 1,000 leads of one
  pool, each trying random leads (so they collide), against one claimer alone on the same kind of
  pool. Also its p99 claim latency (baseline: the lone claimer's p99) and the number of leads with
  more than one claim (must be 0).
- board_render: time to render /board/ with 1,000 waiting leads against an empty board (ratio ≤ 3:
  the table is paginated and counted in SQL, so the pool's size must not show in the page time).
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from collections import Counter

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone

from leadops import roles
from reps.models import Rep
from routing.models import Lead, LeadEvent, Pool, PoolMembership
from routing.pools import ClaimRefused, lead_claim

pytestmark = pytest.mark.bench

CLAIMERS = 20
LEADS = 1_000
ATTEMPTS_EACH = 100


def emit(name: str, value: float, unit: str, baseline: float, ratio: float) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, "baseline": round(baseline, 3),
                      "ratio": round(ratio, 2)}))


def make_reps(n: int, prefix: str) -> list[Rep]:
    from django.contrib.auth.models import Group

    users = User.objects.bulk_create([User(username=f"{prefix}{i:03d}", password="!") for i in range(n)])
    group, _ = Group.objects.get_or_create(name=roles.REPS)
    group.user_set.add(*users)
    Rep.objects.bulk_create([Rep(user=u) for u in users])
    return list(Rep.objects.filter(user__username__startswith=prefix).select_related("user"))


def make_pool(name: str, reps: list[Rep], leads: int) -> list[int]:
    pool = Pool.objects.create(name=name)
    PoolMembership.objects.bulk_create([PoolMembership(pool=pool, rep=r) for r in reps])
    now = timezone.now()
    Lead.objects.bulk_create([
        Lead(email=f"{name}{i}@bench.example", company=f"Company {i}", country="DE", company_size=10 + i % 900,
             industry=f"industry{i % 7}", score=i % 101, source="web", status=Lead.Status.POOLED, pool=pool,
             pooled_at=now, received_at=now)
        for i in range(leads)
    ], batch_size=1000)
    if connection.vendor == "postgresql":
        # A live database has statistics (autovacuum); without them the planner may walk the pool's
        # partial index instead of the primary key for a claim's UPDATE.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Lead._meta.db_table}")
    return list(Lead.objects.filter(pool=pool).values_list("pk", flat=True))


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] if len(samples) >= 2 else (samples[0] if samples else 0.0)


def timed_claims(rep: Rep, lead_ids: list[int], latencies: list[float]) -> int:
    won = 0
    for pk in lead_ids:
        start = time.perf_counter()
        try:
            lead_claim(Lead(pk=pk), rep=rep)
            won += 1
        except ClaimRefused:
            pass
        latencies.append(time.perf_counter() - start)
    return won


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_claim_contention():
    rng = random.Random(7)
    # Baseline: one claimer alone, same number of attempts as each concurrent claimer.
    (solo,) = make_reps(1, "solo")
    solo_ids = make_pool("solo", [solo], ATTEMPTS_EACH)
    solo_lat: list[float] = []
    start = time.perf_counter()
    solo_won = timed_claims(solo, solo_ids, solo_lat)
    solo_rate = solo_won / (time.perf_counter() - start)

    reps = make_reps(CLAIMERS, "claimer")
    lead_ids = make_pool("contended", reps, LEADS)
    plans = [rng.sample(lead_ids, ATTEMPTS_EACH) for _ in reps]
    latencies: list[float] = []
    wins: list[int] = []
    barrier = threading.Barrier(CLAIMERS)
    lock = threading.Lock()

    def claimer(rep: Rep, plan: list[int]) -> None:
        mine: list[float] = []
        try:
            barrier.wait()
            won = timed_claims(rep, plan, mine)
            with lock:
                latencies.extend(mine)
                wins.append(won)
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer, args=(r, p)) for r, p in zip(reps, plans, strict=True)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start

    claims = Counter(
        LeadEvent.objects.filter(kind=LeadEvent.Kind.CLAIMED, lead_id__in=lead_ids).values_list("lead_id", flat=True)
    )
    double = sum(1 for n in claims.values() if n > 1)
    rate = sum(wins) / elapsed
    emit("claim_contention", rate, "claims/s", solo_rate, rate / solo_rate)
    emit("claim_contention_p99", p99(latencies) * 1000, "ms", p99(solo_lat) * 1000, p99(latencies) / p99(solo_lat))
    emit("claim_contention_double_owners", double, "leads", 0, 0)
    assert double == 0
    assert sum(wins) == len(claims) == Lead.objects.filter(pk__in=lead_ids, owner__isnull=False).count()


def median_renders(clients: list[Client], runs: int = 15) -> list[float]:
    """Median page time per client, measured alternately so load on a shared machine hits both alike."""
    for client in clients:
        client.get("/board/")  # warm templates and caches
    times: list[list[float]] = [[] for _ in clients]
    for _ in range(runs):
        for i, client in enumerate(clients):
            start = time.perf_counter()
            response = client.get("/board/")
            times[i].append(time.perf_counter() - start)
            assert response.status_code == 200
    return [statistics.median(t) for t in times]


@pytest.mark.django_db
def test_board_render():
    empty_rep, busy_rep = make_reps(2, "board")
    make_pool("empty", [empty_rep], 0)
    make_pool("busy", [busy_rep], LEADS)
    empty, busy = Client(), Client()
    empty.force_login(empty_rep.user)
    busy.force_login(busy_rep.user)

    baseline, value = median_renders([empty, busy])

    emit("board_render", value * 1000, "ms", baseline * 1000, value / baseline)
    assert value / baseline <= 3

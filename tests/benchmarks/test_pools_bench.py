"""Pool benchmarks (`make bench`; marker `bench`). Each prints one JSON line
{"name", "value", "unit", "baseline", "ratio"} with a baseline measured in the same run.

- claim_contention (PostgreSQL): successful claims/s of 20 concurrent claimers on 1,000 leads of one
  pool, each trying random leads (so they collide), against one claimer alone on the same kind of
  pool. Also its p99 claim latency (baseline: the lone claimer's p99) and the number of leads with
  more than one claim (must be 0). Also p50 latency and this process's CPU per attempt
  (time.process_time; less sensitive to neighbours' load than wall-clock figures).
- claim_contention_procs (PostgreSQL): the same figures with the 20 claimers in 20 processes, each
  with its own connection, as web requests are served by separate worker processes. The threads
  variant mostly measures 20 claimers queueing for one interpreter's GIL. This pool has a claim
  limit, so members also reach it; no member may end above it.
- claim_contention_sql_floor (PostgreSQL): the claimers of claim_contention_procs again, each sending
  the claim's own prepared statements straight through psycopg — no Django, no Lead object, no
  refusal message. What is left is what the database needs for these claims on this machine: the
  floor under claim_contention_procs on the same machine (its baseline is the lone claimer's
  figure, as above).
- claim_burst (PostgreSQL): the shotgun moment — a lead announced to 20 members, all of whom click at
  the same instant (20 processes released by a barrier, one lead per round, 200 rounds). Every
  attempt's latency (baseline: the lone claimer), exactly one winner per lead. Unlike the closed
  loops above, claimers do not queue behind their own previous attempt, so the p99 is the time the
  20th click of a burst waits.
- board_render: time to render /board/ with 1,000 waiting leads against an empty board (ratio ≤ 3:
  the table is paginated and counted in SQL, so the pool's size must not show in the page time).

Claim timings start with warm connections (every claimer, and the solo baseline, first makes one
claim that is refused before anything is written): the steady state of a web worker that keeps its
connection (CONN_MAX_AGE > 0), not the first claim of a fresh database session, which also fills the
session's catalog caches and prepares the claim statements.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass

import psycopg
import pytest
from django.contrib.auth.models import User
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from leadops import roles
from reps.models import Rep
from routing.models import Lead, LeadEvent, Pool, PoolMembership
from routing.pools import _CLAIM_EXECUTE, ClaimRefused, NotAMember, _claim_prepare_sql, lead_claim
from tests.benchmarks.forked import run_forked

pytestmark = pytest.mark.bench

CLAIMERS = 20
LEADS = 1_000
ATTEMPTS_EACH = 100
# For the processes variant: about 43 wins per member are expected (2,000 random attempts cover ~865
# of 1,000 leads), so the luckier members reach the limit and are refused by it.
PROCS_CLAIM_LIMIT = 50


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


def make_pool(name: str, reps: list[Rep], leads: int, claim_limit: int | None = None) -> list[int]:
    pool = Pool.objects.create(name=name, claim_limit=claim_limit)
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


def timed_claims(rep: Rep, lead_ids: list[int], latencies: list[float], before_each=None) -> int:
    """Claim each lead in turn (after `before_each()`, e.g. a barrier), timing every attempt."""
    won = 0
    for pk in lead_ids:
        if before_each is not None:
            before_each()
        start = time.perf_counter()
        try:
            lead_claim(Lead(pk=pk), rep=rep)
            won += 1
        except ClaimRefused:
            pass
        latencies.append(time.perf_counter() - start)
    return won


def warm_up(rep: Rep, foreign_lead_id: int) -> None:
    """Connect and claim a lead of a pool `rep` is not in: refused, nothing written, session warm."""
    with contextlib.suppress(NotAMember):
        lead_claim(Lead(pk=foreign_lead_id), rep=rep)


def foreign_lead() -> int:
    """A lead in a pool nobody belongs to, for warm_up."""
    (lead_id,) = make_pool("warmup", [], 1)
    return lead_id


@dataclass
class Run:
    """One claiming run: wins, every attempt's latency (s), wall time (s) and claimers' CPU time (s)."""

    won: int
    latencies: list[float]
    elapsed: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.won / self.elapsed

    def cpu_ms_per_attempt(self) -> float:
        return self.cpu / len(self.latencies) * 1000


def solo_run(warm_lead_id: int) -> Run:
    """Baseline: one claimer alone, as many attempts as each concurrent claimer makes."""
    (solo,) = make_reps(1, "solo")
    solo_ids = make_pool("solo", [solo], ATTEMPTS_EACH)
    warm_up(solo, warm_lead_id)
    latencies: list[float] = []
    cpu, start = time.process_time(), time.perf_counter()
    won = timed_claims(solo, solo_ids, latencies)
    return Run(won, latencies, time.perf_counter() - start, time.process_time() - cpu)


def emit_contention(name: str, run: Run, solo: Run, lead_ids: list[int]) -> None:
    """The figures every contention variant reports, and the invariants it must keep."""
    claims = Counter(
        LeadEvent.objects.filter(kind=LeadEvent.Kind.CLAIMED, lead_id__in=lead_ids).values_list("lead_id", flat=True)
    )
    double = sum(1 for n in claims.values() if n > 1)
    p50, solo_p50 = statistics.median(run.latencies) * 1000, statistics.median(solo.latencies) * 1000
    p99_ms, solo_p99 = p99(run.latencies) * 1000, p99(solo.latencies) * 1000
    cpu, solo_cpu = run.cpu_ms_per_attempt(), solo.cpu_ms_per_attempt()
    emit(name, run.rate, "claims/s", solo.rate, run.rate / solo.rate)
    emit(f"{name}_p50", p50, "ms", solo_p50, p50 / solo_p50)
    emit(f"{name}_p99", p99_ms, "ms", solo_p99, p99_ms / solo_p99)
    emit(f"{name}_cpu", cpu, "ms CPU/attempt", solo_cpu, cpu / solo_cpu)
    emit(f"{name}_double_owners", double, "leads", 0, 0)
    assert double == 0
    assert run.won == len(claims) == Lead.objects.filter(pk__in=lead_ids, owner__isnull=False).count()


@dataclass
class Contention:
    """What every contention variant starts from: the solo baseline, then 20 members of one pool of
    1,000 leads, each with its own random list of leads to try."""

    warm_lead_id: int
    solo: Run
    reps: list[Rep]
    lead_ids: list[int]
    plans: list[list[int]]


def contention(claim_limit: int | None = None) -> Contention:
    rng = random.Random(7)
    warm_lead_id = foreign_lead()
    solo = solo_run(warm_lead_id)
    reps = make_reps(CLAIMERS, "claimer")
    lead_ids = make_pool("contended", reps, LEADS, claim_limit=claim_limit)
    return Contention(warm_lead_id, solo, reps, lead_ids, [rng.sample(lead_ids, ATTEMPTS_EACH) for _ in reps])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_claim_contention():
    setup = contention()
    warm_lead_id, solo, reps, lead_ids, plans = (setup.warm_lead_id, setup.solo, setup.reps, setup.lead_ids,
                                                 setup.plans)
    latencies: list[float] = []
    wins: list[int] = []
    barrier = threading.Barrier(CLAIMERS)
    lock = threading.Lock()

    def claimer(rep: Rep, plan: list[int]) -> None:
        mine: list[float] = []
        try:
            warm_up(rep, warm_lead_id)
            barrier.wait()
            won = timed_claims(rep, plan, mine)
            with lock:
                latencies.extend(mine)
                wins.append(won)
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer, args=(r, p)) for r, p in zip(reps, plans, strict=True)]
    cpu, start = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run = Run(sum(wins), latencies, time.perf_counter() - start, time.process_time() - cpu)

    emit_contention("claim_contention", run, solo, lead_ids)


def _claimer_process(rep: Rep, plan: list[int], warm_lead_id: int, barrier, results) -> None:
    """One claimer in its own (forked) process with its own connection; sends back what it measured."""
    try:
        warm_up(rep, warm_lead_id)
        barrier.wait()
        latencies: list[float] = []
        # time.monotonic is system-wide on Linux, so the parent can span all processes' runs.
        cpu, start = time.process_time(), time.monotonic()
        won = timed_claims(rep, plan, latencies)
        results.put((won, latencies, start, time.monotonic(), time.process_time() - cpu))
    finally:
        connection.close()


def run_processes(setup: Contention, target) -> Run:
    """Run `target(rep, plan, warm_lead_id, barrier, results)` for every claimer in its own forked
    process, released together, and gather what they measured."""
    # transaction=True: the pool is committed, so the claimers' own connections see it. Each forked
    # child must open its own connection, never use (or close) a socket inherited from this process.
    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(CLAIMERS), ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(rep, plan, setup.warm_lead_id, barrier, results), daemon=True)
        for rep, plan in zip(setup.reps, setup.plans, strict=True)
    ]
    outcomes = run_forked(procs, results)
    return Run(
        won=sum(o[0] for o in outcomes),
        latencies=[t for o in outcomes for t in o[1]],
        elapsed=max(o[3] for o in outcomes) - min(o[2] for o in outcomes),
        cpu=sum(o[4] for o in outcomes),
    )


def held_per_member(lead_ids: list[int]) -> Counter:
    """How many of these leads each member ended up owning."""
    return Counter(Lead.objects.filter(pk__in=lead_ids, owner__isnull=False).values_list("owner_id", flat=True))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_claim_contention_procs():
    setup = contention(claim_limit=PROCS_CLAIM_LIMIT)
    emit_contention("claim_contention_procs", run_processes(setup, _claimer_process), setup.solo, setup.lead_ids)
    held = held_per_member(setup.lead_ids)
    over = sum(1 for n in held.values() if n > PROCS_CLAIM_LIMIT)
    emit("claim_contention_procs_over_limit", over, "members", 0, 0)
    at_limit = sum(1 for n in held.values() if n == PROCS_CLAIM_LIMIT)
    assert over == 0
    assert at_limit > 0, "no member reached the limit: the limit was not exercised"


def _sql_claimer_process(rep: Rep, plan: list[int], warm_lead_id: int, barrier, results) -> None:
    """A claimer that sends the claim's prepared statements itself, as `routing.pools._claim_postgres`
    does, on a plain psycopg connection in autocommit (as a web request's claim runs)."""
    params = connection.get_connection_params()
    with psycopg.connect(**{k: v for k, v in params.items() if k not in ("cursor_factory", "context")},
                         autocommit=True, cursor_factory=psycopg.ClientCursor) as conn, conn.cursor() as cur:
        cur.execute(";\n".join(_claim_prepare_sql().values()))

        def claim(lead_id: int) -> bool:
            cur.execute(_CLAIM_EXECUTE, {"lead": lead_id, "rep": rep.pk, "now": timezone.now(), "due": None,
                                         "actor": None, "relaxed": True})
            cur.nextset()
            row = cur.fetchone()
            return row is not None and row[-5] == 1  # the count of `won`

        claim(warm_lead_id)  # not a member: nothing written, session warm
        barrier.wait()
        latencies: list[float] = []
        won = 0
        cpu, start = time.process_time(), time.monotonic()
        for pk in plan:
            t = time.perf_counter()
            won += claim(pk)
            latencies.append(time.perf_counter() - t)
        results.put((won, latencies, start, time.monotonic(), time.process_time() - cpu))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_claim_contention_sql_floor():
    setup = contention(claim_limit=PROCS_CLAIM_LIMIT)
    emit_contention("claim_contention_sql_floor", run_processes(setup, _sql_claimer_process), setup.solo,
                    setup.lead_ids)
    assert max(held_per_member(setup.lead_ids).values()) <= PROCS_CLAIM_LIMIT


BURST_ROUNDS = 200


def _burst_process(rep: Rep, lead_ids: list[int], warm_lead_id: int, barrier, results) -> None:
    """Claim every lead of the round at the barrier's signal, like every other member."""
    try:
        warm_up(rep, warm_lead_id)
        latencies: list[float] = []
        won = timed_claims(rep, lead_ids, latencies, before_each=barrier.wait)
        results.put((won, latencies))
    finally:
        connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_claim_burst():
    warm_lead_id = foreign_lead()
    solo = solo_run(warm_lead_id)
    reps = make_reps(CLAIMERS, "burst")
    lead_ids = make_pool("burst", reps, BURST_ROUNDS)
    connections.close_all()  # forked children open their own connections
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(CLAIMERS), ctx.Queue()
    procs = [
        ctx.Process(target=_burst_process, args=(rep, lead_ids, warm_lead_id, barrier, results), daemon=True)
        for rep in reps
    ]
    outcomes = run_forked(procs, results)

    latencies = [t for _, lat in outcomes for t in lat]
    p50, p99_ms = statistics.median(latencies) * 1000, p99(latencies) * 1000
    solo_p50, solo_p99 = statistics.median(solo.latencies) * 1000, p99(solo.latencies) * 1000
    emit("claim_burst_p50", p50, "ms", solo_p50, p50 / solo_p50)
    emit("claim_burst_p99", p99_ms, "ms", solo_p99, p99_ms / solo_p99)
    winners = Counter(
        LeadEvent.objects.filter(kind=LeadEvent.Kind.CLAIMED, lead_id__in=lead_ids).values_list("lead_id", flat=True)
    )
    emit("claim_burst_double_owners", sum(1 for n in winners.values() if n > 1), "leads", 0, 0)
    assert sum(won for won, _ in outcomes) == BURST_ROUNDS
    assert set(winners) == set(lead_ids) and set(winners.values()) == {1}


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

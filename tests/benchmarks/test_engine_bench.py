"""Routing benchmarks (`make bench`; marker `bench`). Each prints one JSON line
{"name", "value", "unit", "baseline", "ratio"} with a baseline measured in the same run.

- engine_decide: decisions/s of the pure engine over 200 rules × 5 conditions and 500 reps,
  against a naive router that asks the database once per rule (and once for the candidates).
- engine_decide_p99: 99th-percentile CPU time of one decision (target < 1 ms), baseline the naive
  p99 (whose CPU time leaves out the database's own work, which only flatters the baseline).
- route_pending: leads/s of `manage.py route_pending` over BENCH_SCALE unassigned leads
  (default 5,000; the target is ≥ 5,000/s at 100,000) with a 20-rule set, against routing the same
  kind of lead one at a time with lead_route. Committed batch by batch like the real command, so a
  run of more than two batches is pipelined; notifications are queued on commit for the workers
  (the queue insert is measured, the sending is not).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import random
import time

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db.models import Count, Q

from reps.availability import schedule_for
from reps.models import Rep, Team
from routing import selectors
from routing.engine import Roster, decide
from routing.models import Lead
from routing.services import lead_route, ruleset_create_draft, ruleset_publish

pytestmark = [pytest.mark.bench, pytest.mark.django_db]

NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
COUNTRIES = ["DE", "AT", "CH", "FR", "GB", "IE", "ES", "PT", "IT", "NL", "BE", "LU", "DK", "SE", "NO", "FI",
             "PL", "CZ", "US", "CA", "MX", "BR", "AR", "JP", "SG", "AU", "NZ", "IN", "ZA", "AE"]
INDUSTRIES = [f"industry{i}" for i in range(7)]
SOURCES = ["web", "event", "ads", "referral", "list"]
STRATEGIES = ["round_robin", "weighted", "load_balanced", "first_available"]
TEAMS = 50
REPS = 500
RULES = 200
ROUTE_RULES = 20


def emit(name: str, value: float, unit: str, baseline: float, ratio: float) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, "baseline": round(baseline, 3),
                      "ratio": float(f"{ratio:.4g}")}))


def build_org() -> None:
    teams = Team.objects.bulk_create([Team(name=f"Team {i}") for i in range(TEAMS)])
    users = User.objects.bulk_create([User(username=f"bench{i:03d}", password="!") for i in range(REPS)])
    levels = ["junior", "junior", "senior", "director"]
    Rep.objects.bulk_create([
        Rep(user=u, team=teams[i % TEAMS], level=levels[i % 4], weight=1 + i % 3) for i, u in enumerate(users)
    ])


def rule_file(size: int = RULES) -> dict:
    rng = random.Random(1)
    rules = []
    for i in range(size):
        rules.append({
            "name": f"Rule {i}",
            "when": [
                {"field": "country", "op": "in", "value": rng.sample(COUNTRIES, 3)},
                {"field": "company_size", "op": "gte", "value": (i % 10) * 100},
                {"field": "score", "op": "gte", "value": i % 50},
                {"field": "industry", "op": "ne", "value": INDUSTRIES[i % 7]},
                {"field": "source", "op": "in", "value": rng.sample(SOURCES, 3)},
            ],
            "candidates": {"team": f"Team {i % TEAMS}"},
            "strategy": STRATEGIES[i % 4],
        })
    return {"name": "Bench", "rules": rules,
            "fallback": {"candidates": {"team": "Team 0"}, "strategy": "load_balanced"}}


def lead_fields(rng: random.Random) -> dict:
    return {
        "email": f"b{rng.random()}@example.com", "country": rng.choice(COUNTRIES),
        "company_size": rng.choice([5, 40, 120, 400, 900, 2000, 10000]), "score": rng.randint(0, 100),
        "industry": rng.choice(INDUSTRIES), "source": rng.choice(SOURCES), "priority": "normal", "extra": {},
    }


# -- the naive router: one query per rule -----------------------------------------------------------

NAIVE_LOOKUPS = {"eq": "exact", "in": "in", "gte": "gte", "gt": "gt", "lte": "lte", "lt": "lt"}


def _q(cond: dict) -> Q:
    if cond["op"] == "ne":
        return ~Q(**{cond["field"]: cond["value"]})
    return Q(**{f"{cond['field']}__{NAIVE_LOOKUPS[cond['op']]}": cond["value"]})


def naive_route(lead: Lead, rules: list[dict], fallback: dict, now: dt.datetime) -> Rep | None:
    for rule in [*rules, fallback]:
        cond = Q()
        for c in rule.get("when", ()):
            cond &= _q(c)
        if not Lead.objects.filter(cond, pk=lead.pk).exists():
            continue
        reps = (Rep.objects.filter(team__name=rule["candidates"]["team"], active=True)
                .prefetch_related("working_hours", "time_off")
                .annotate(open=Count("leads", filter=Q(leads__status__in=Lead.LOAD_STATUSES))))
        free = [r for r in reps if schedule_for(r).is_available(now) and (r.capacity is None or r.open < r.capacity)]
        if free:
            return min(free, key=lambda r: r.open)
    return None


def p99(samples: list[float]) -> float:
    samples = sorted(samples)
    return samples[int(len(samples) * 0.99) - 1]


def test_engine_decide_bench():
    build_org()
    data = rule_file()
    rule_set = ruleset_publish(ruleset_create_draft(data))
    loaded = selectors.ruleset_load(rule_set)
    roster = Roster(selectors.candidate_states(NOW))
    rng = random.Random(7)
    leads = [lead_fields(rng) for _ in range(5000)]
    cursors: dict = {}
    times = []
    start = time.perf_counter()
    for lead in leads:
        # CPU time of this thread: on a shared machine, wall-clock percentiles measure the neighbours.
        t0 = time.thread_time()
        d = decide(lead, loaded.compiled, roster, cursors, NOW, rng)
        times.append(time.thread_time() - t0)
        cursors.update(d.cursors)
        assert d.rep_username
    engine_rate = len(leads) / (time.perf_counter() - start)

    db_leads = Lead.objects.bulk_create([Lead(**lead_fields(rng), received_at=NOW) for _ in range(30)])
    naive_times = []
    start = time.perf_counter()
    for lead in db_leads:
        t0 = time.thread_time()
        naive_route(lead, data["rules"], data["fallback"], NOW)
        naive_times.append(time.thread_time() - t0)
    naive_rate = len(db_leads) / (time.perf_counter() - start)

    emit("engine_decide", engine_rate, "decisions/s", naive_rate, engine_rate / naive_rate)
    emit("engine_decide_p99", p99(times) * 1000, "ms", p99(naive_times) * 1000, p99(times) / p99(naive_times))
    assert engine_rate > naive_rate


@pytest.mark.django_db(transaction=True)
def test_route_pending_bench(settings):
    # As in production: every batch commits (so a large run is pipelined, see route_leads) and the
    # notifications are queued for the workers on commit, not sent inline as tests otherwise do.
    settings.TESTING = False
    scale = int(os.environ.get("BENCH_SCALE", "5000"))
    build_org()
    # A rule set of realistic size (the engine benchmark above covers 200 rules).
    ruleset_publish(ruleset_create_draft(rule_file(ROUTE_RULES)))
    rng = random.Random(11)
    received = [NOW - dt.timedelta(seconds=scale - i) for i in range(scale)]
    Lead.objects.bulk_create([Lead(**lead_fields(rng), received_at=at) for at in received], batch_size=5000)

    start = time.perf_counter()
    out = io.StringIO()
    call_command("route_pending", "--now", NOW.isoformat(), "--json", stdout=out)
    batch_rate = scale / (time.perf_counter() - start)
    counts = json.loads(out.getvalue())
    assert counts["assigned"] + counts["pooled"] + counts["unassigned"] == scale
    assert counts["assigned"] == scale

    singles = Lead.objects.bulk_create([Lead(**lead_fields(rng), received_at=NOW) for _ in range(100)])
    start = time.perf_counter()
    for lead in singles:
        lead_route(lead, now=NOW)
    single_rate = len(singles) / (time.perf_counter() - start)
    emit("route_pending", batch_rate, "leads/s", single_rate, batch_rate / single_rate)

"""Read-only queries behind the reports. Everything is derived from Lead and LeadEvent.

Each figure is aggregated in SQL (one grouped query per table); only per-rep availability and
the Gini index — a few dozen numbers — are computed in Python. A `Scope` carries the filters
(date range in the manager's time zone, team, rep, source, rule, pool) so every report and its
CSV export answer the same question.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from django.db.models import Case, Count, F, IntegerField, Min, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce, ExtractHour
from django.db.models.lookups import GreaterThan, LessThanOrEqual

from reports.stats import (
    PercentileCont,
    Seconds,
    gini,
    has_percentile_cont,
    median,
    percentile,
    rate,
    wilson_interval,
)
from reps.availability import schedule_for
from reps.models import Rep, Team
from routing.models import Lead, LeadEvent, Pool, PoolMembership, Rule

MINUTE = 60
HOUR = 3600
DAY_SECONDS = 86400
# Speed-to-lead thresholds the classic studies use: 5 minutes, an hour, a day.
THRESHOLDS = {"5m": 5 * MINUTE, "1h": HOUR, "24h": DAY_SECONDS}
QUALIFIED_STATUSES = ["qualified", "won"]


# -- scope -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What a report looks at: leads received in [start, end) matching the dimension filters."""

    start: dt.datetime
    end: dt.datetime
    now: dt.datetime
    tz: zoneinfo.ZoneInfo
    team: int | None = None
    rep: int | None = None
    source: str = ""
    rule: int | None = None
    pool: int | None = None

    @property
    def first_day(self) -> dt.date:
        return self.start.astimezone(self.tz).date()

    @property
    def last_day(self) -> dt.date:
        return (self.end - dt.timedelta(microseconds=1)).astimezone(self.tz).date()

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / DAY_SECONDS

    def previous(self) -> Scope:
        """The period of equal length just before, for trends."""
        length = self.end - self.start
        return replace(self, start=self.start - length, end=self.start)

    def filtered(self, qs: QuerySet | None = None, prefix: str = "") -> QuerySet:
        """Dimension filters only (no dates): for snapshots such as "overdue now"."""
        qs = Lead.objects.all() if qs is None else qs
        conditions: dict[str, Any] = {}
        if self.team:
            conditions[f"{prefix}owner__team_id"] = self.team
        if self.rep:
            conditions[f"{prefix}owner_id"] = self.rep
        if self.source:
            conditions[f"{prefix}source"] = self.source
        if self.rule:
            conditions[f"{prefix}rule_id"] = self.rule
        if self.pool:
            conditions[f"{prefix}pool_id"] = self.pool
        return qs.filter(**conditions).order_by()

    def leads(self) -> QuerySet:
        return self.filtered().filter(received_at__gte=self.start, received_at__lt=self.end)

    def events(self) -> QuerySet:
        return self.filtered(LeadEvent.objects.all(), prefix="lead__").filter(
            lead__received_at__gte=self.start, lead__received_at__lt=self.end
        )


def local_midnight(day: dt.date, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=tz)


def make_scope(
    *,
    now: dt.datetime,
    tz: zoneinfo.ZoneInfo,
    start_date: dt.date | None = None,
    end_date: dt.date | None = None,
    days: int = 30,
    **dims: Any,
) -> Scope:
    """Dates are whole days in `tz`, both ends included; by default the last `days` days up to today."""
    today = now.astimezone(tz).date()
    end_date = end_date or today
    start_date = start_date or end_date - dt.timedelta(days=days - 1)
    if start_date > end_date:
        start_date, end_date = end_date, start_date
    return Scope(
        start=local_midnight(start_date, tz),
        end=local_midnight(end_date + dt.timedelta(days=1), tz),
        now=now,
        tz=tz,
        **{k: v for k, v in dims.items() if v not in (None, "")},
    )


# -- measures --------------------------------------------------------------------------------

# Durations between timeline stamps on Lead, in seconds.
SPEED = Seconds(F("first_touch_at"), F("received_at"))
MEASURES = {
    "stl": SPEED,  # received → first touch (speed-to-lead)
    "route": Seconds(F("routed_at"), F("received_at")),
    "notify": Seconds(F("notified_at"), F("routed_at")),
    "claim": Seconds(F("claimed_at"), F("pooled_at")),
}

SIZE_BANDS = [(10, "1–9"), (50, "10–49"), (250, "50–249"), (1000, "250–999"), (5000, "1,000–4,999")]


def size_band() -> Case:
    whens = [When(company_size__lt=limit, then=Value(label)) for limit, label in SIZE_BANDS]
    return Case(
        When(company_size__isnull=True, then=Value("unknown")), *whens, default=Value("5,000+")
    )


@dataclass(frozen=True)
class Grouping:
    key: str
    label: str
    expression: Any  # over Lead
    event_expression: Any = None  # over LeadEvent, when events are attributed differently


def groupings(tz: zoneinfo.ZoneInfo) -> dict[str, Grouping]:
    return {
        "rep": Grouping("rep", "Rep", F("owner_id"), F("rep_id")),
        "team": Grouping("team", "Team", F("owner__team_id"), F("rep__team_id")),
        "source": Grouping("source", "Source", F("source")),
        "rule": Grouping("rule", "Rule", F("rule_id")),
        "pool": Grouping("pool", "Pool", F("pool_id")),
        "hour": Grouping("hour", "Hour received", ExtractHour("received_at", tzinfo=tz)),
        "industry": Grouping("industry", "Industry", F("industry")),
        "size": Grouping("size", "Company size", size_band()),
        "country": Grouping("country", "Country", F("country")),
    }


SPEED_GROUPS = ["rep", "team", "source", "rule", "pool", "hour"]
SLA_GROUPS = ["rule", "rep", "team"]
CONVERSION_GROUPS = ["rep", "source", "industry", "size", "country", "rule", "pool"]


def _labels(group: str, keys: Iterable[Any]) -> dict[Any, str]:
    ids = [k for k in keys if k is not None]
    if group == "rep":
        return {r.pk: r.display_name for r in Rep.objects.filter(pk__in=ids).select_related("user")}
    if group == "team":
        return dict(Team.objects.filter(pk__in=ids).values_list("pk", "name"))
    if group == "rule":
        rules = Rule.objects.filter(pk__in=ids).select_related("rule_set")
        return {r.pk: f"{r.name} (v{r.rule_set.version})" for r in rules}
    if group == "pool":
        return dict(Pool.objects.filter(pk__in=ids).values_list("pk", "name"))
    if group == "hour":
        return {k: f"{k:02d}:00" for k in ids}
    return {k: str(k) for k in ids}


def _none_label(group: str) -> str:
    return {"rep": "(no owner)", "team": "(no team)", "rule": "(no rule)", "pool": "(no pool)"}.get(group, "(blank)")


def grouped(
    qs: QuerySet,
    key: Any,
    counts: dict[str, Any],
    durations: dict[str, Any] | None = None,
    fractions: tuple[float, ...] = (0.5, 0.9),
) -> dict[Any, dict[str, Any]]:
    """One GROUP BY query: `counts` aggregates plus percentiles of each duration per group key.

    `key=None` gives a single row under the key None (totals). Percentiles are named
    `<duration>_p50`, `<duration>_p90`.
    """
    durations = durations or {}
    pg = has_percentile_cont()
    aggregates = dict(counts)
    if pg:
        for name, expr in durations.items():
            for f in fractions:
                aggregates[f"{name}_p{round(f * 100)}"] = PercentileCont(expr, f)
    if key is None:
        rows = {None: qs.aggregate(**aggregates) if aggregates else {}}
    else:
        rows = {r["_k"]: r for r in qs.annotate(_k=key).values("_k").annotate(**aggregates).order_by()}
    if durations and not pg:
        # SQLite fallback: the same interpolation as percentile_cont, over the fetched durations.
        names = list(durations)
        values: dict[Any, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        annotated = qs.annotate(**{f"_d_{n}": e for n, e in durations.items()})
        if key is not None:
            annotated = annotated.annotate(_k=key)
            fields = ["_k", *[f"_d_{n}" for n in names]]
        else:
            fields = [*[f"_d_{n}" for n in names]]
        for row in annotated.values_list(*fields):
            k = row[0] if key is not None else None
            for n, v in zip(names, row[1:] if key is not None else row, strict=True):
                if v is not None:
                    values[k][n].append(v)
        for k, row in rows.items():
            for n in names:
                for f in fractions:
                    row[f"{n}_p{round(f * 100)}"] = percentile(values[k][n], f)
    for row in rows.values():
        row.pop("_k", None)
    return rows


def _within(seconds: int, now: dt.datetime) -> tuple[Q, Q]:
    """(answered within `seconds`, outcome known): an unanswered lead younger than the threshold
    may still make it, so it is left out of the denominator."""
    within = Q(LessThanOrEqual(SPEED, seconds))
    known = Q(first_touch_at__isnull=False) | Q(received_at__lt=now - dt.timedelta(seconds=seconds))
    return within, known


def speed_counts(now: dt.datetime) -> dict[str, Any]:
    counts: dict[str, Any] = {"leads": Count("id"), "touched": Count("first_touch_at")}
    for name, seconds in THRESHOLDS.items():
        within, known = _within(seconds, now)
        counts[f"within_{name}"] = Count("id", filter=within)
        counts[f"known_{name}"] = Count("id", filter=known)
    return counts


def _finish_speed(row: dict[str, Any]) -> dict[str, Any]:
    for name in THRESHOLDS:
        row[f"share_{name}"] = rate(row.get(f"within_{name}"), row.get(f"known_{name}"))
    return row


def sla_counts(now: dt.datetime) -> dict[str, Any]:
    """A lead's SLA is hit when first touched by its due time and never escalated; missed when touched
    late, still untouched after the due time, or escalated; otherwise still running."""
    has_sla = Q(sla_due_at__isnull=False)
    hit = has_sla & Q(first_touch_at__lte=F("sla_due_at"), escalation_step=0)
    missed = has_sla & (
        Q(first_touch_at__gt=F("sla_due_at"))
        | Q(first_touch_at__isnull=True, sla_due_at__lt=now)
        | Q(escalation_step__gt=0)
    )
    return {
        "with_sla": Count("id", filter=has_sla),
        "hit": Count("id", filter=hit),
        "missed": Count("id", filter=missed),
    }


def conversion_counts() -> dict[str, Any]:
    assigned = Q(assigned_at__isnull=False)
    return {
        "assigned": Count("id", filter=assigned),
        "qualified": Count("id", filter=assigned & Q(status__in=QUALIFIED_STATUSES)),
        "won": Count("id", filter=assigned & Q(status="won")),
        "lost": Count("id", filter=assigned & Q(status="lost")),
    }


def _finish_sla(row: dict[str, Any]) -> dict[str, Any]:
    row["hit_rate"] = rate(row.get("hit"), (row.get("hit") or 0) + (row.get("missed") or 0))
    return row


def _finish_conversion(row: dict[str, Any]) -> dict[str, Any]:
    n = row.get("assigned") or 0
    for name in ("won", "qualified"):
        k = row.get(name) or 0
        row[f"{name}_rate"] = rate(k, n)
        ci = wilson_interval(k, n)
        row[f"{name}_low"], row[f"{name}_high"] = ci if ci else (None, None)
    return row


def _rows(group: str, data: dict[Any, dict[str, Any]], order: str | None = None) -> list[dict[str, Any]]:
    labels = _labels(group, data.keys())
    rows = []
    for key, row in data.items():
        rows.append({"key": key, "label": labels.get(key, _none_label(group) if key in (None, "") else str(key)),
                     **row})
    if group == "hour":
        rows.sort(key=lambda r: (r["key"] is None, r["key"] or 0))
    elif order:
        rows.sort(key=lambda r: (-(r.get(order) or 0), r["label"]))
    return rows


# -- reports ---------------------------------------------------------------------------------


def speed_by(scope: Scope, group: str) -> list[dict[str, Any]]:
    g = groupings(scope.tz)[group]
    data = grouped(scope.leads(), g.expression, speed_counts(scope.now), MEASURES)
    return _rows(group, {k: _finish_speed(v) for k, v in data.items()}, order="leads")


def speed_total(scope: Scope) -> dict[str, Any]:
    return _finish_speed(grouped(scope.leads(), None, speed_counts(scope.now), MEASURES)[None])


def sla_by(scope: Scope, group: str) -> list[dict[str, Any]]:
    g = groupings(scope.tz)[group]
    data = grouped(scope.leads(), g.expression, sla_counts(scope.now))
    # Breaches and escalations are events, attributed to the rep who held the lead at the time.
    events = scope.events().filter(kind__in=[LeadEvent.Kind.SLA_BREACHED, LeadEvent.Kind.ESCALATED])
    ev_key = g.event_expression if g.event_expression is not None else _lead_side(g.expression)
    counted = events.annotate(_k=ev_key).values("_k").annotate(
        breaches=Count("id", filter=Q(kind=LeadEvent.Kind.SLA_BREACHED)),
        escalations=Count("id", filter=Q(kind=LeadEvent.Kind.ESCALATED)),
    ).order_by()
    for row in data.values():
        row.update(breaches=0, escalations=0)
    for ev in counted:
        row = data.setdefault(ev["_k"], {"with_sla": 0, "hit": 0, "missed": 0})
        row["breaches"], row["escalations"] = ev["breaches"], ev["escalations"]
    rows = _rows(group, {k: _finish_sla(v) for k, v in data.items()}, order="with_sla")
    return [r for r in rows if r["with_sla"] or r["breaches"] or r["escalations"]]


def _lead_side(expression: Any) -> Any:
    if isinstance(expression, F):
        return F(f"lead__{expression.name}")
    raise ValueError("only plain field groupings can be read through an event's lead")


def sla_total(scope: Scope) -> dict[str, Any]:
    row = grouped(scope.leads(), None, sla_counts(scope.now))[None]
    row.update(
        scope.events().aggregate(
            breaches=Count("id", filter=Q(kind=LeadEvent.Kind.SLA_BREACHED)),
            escalations=Count("id", filter=Q(kind=LeadEvent.Kind.ESCALATED)),
        )
    )
    return _finish_sla(row)


def overdue_leads(scope: Scope, limit: int = 200) -> list[dict[str, Any]]:
    """Open, untouched leads past their SLA right now — regardless of when they arrived."""
    qs = (
        scope.filtered()
        .filter(first_touch_at__isnull=True, sla_due_at__lt=scope.now, status__in=Lead.OPEN_STATUSES)
        .select_related("owner__user", "owner__team", "rule", "pool")
        .order_by("sla_due_at")[:limit]
    )
    return [
        {
            "key": lead.pk,
            "label": str(lead),
            "lead_id": lead.pk,
            "status": lead.status,
            "owner": lead.owner.display_name if lead.owner else "",
            "team": lead.owner.team.name if lead.owner and lead.owner.team else "",
            "rule": lead.rule.name if lead.rule else "",
            "pool": lead.pool.name if lead.pool else "",
            "received_at": lead.received_at,
            "sla_due_at": lead.sla_due_at,
            "overdue_seconds": (scope.now - lead.sla_due_at).total_seconds(),
            "escalation_step": lead.escalation_step,
        }
        for lead in qs
    ]


def overdue_count(scope: Scope) -> int:
    return (
        scope.filtered()
        .filter(first_touch_at__isnull=True, sla_due_at__lt=scope.now, status__in=Lead.OPEN_STATUSES)
        .count()
    )


def conversion_by(scope: Scope, group: str) -> list[dict[str, Any]]:
    g = groupings(scope.tz)[group]
    data = grouped(scope.leads(), g.expression, conversion_counts())
    rows = _rows(group, {k: _finish_conversion(v) for k, v in data.items()}, order="assigned")
    return [r for r in rows if r["assigned"]]


def conversion_total(scope: Scope) -> dict[str, Any]:
    return _finish_conversion(grouped(scope.leads(), None, conversion_counts())[None])


# -- dashboard -------------------------------------------------------------------------------


def _trend(current: float | None, previous: float | None) -> float | None:
    if current is None or previous is None:
        return None
    return current - previous


def received_windows(scope: Scope) -> list[dict[str, Any]]:
    """Leads received today (so far, vs yesterday up to the same time), last 7 and 30 days (vs the
    7/30 days before). "Today" starts at midnight in the manager's time zone."""
    now = scope.now
    today = local_midnight(now.astimezone(scope.tz).date(), scope.tz)
    yesterday = local_midnight(today.date() - dt.timedelta(days=1), scope.tz)
    windows = {
        "today": ((today, now), (yesterday, yesterday + (now - today))),
        "7d": ((now - dt.timedelta(days=7), now), (now - dt.timedelta(days=14), now - dt.timedelta(days=7))),
        "30d": ((now - dt.timedelta(days=30), now), (now - dt.timedelta(days=60), now - dt.timedelta(days=30))),
    }
    aggregates = {}
    for name, ((a, b), (pa, pb)) in windows.items():
        aggregates[name] = Count("id", filter=Q(received_at__gte=a, received_at__lt=b))
        aggregates[f"prev_{name}"] = Count("id", filter=Q(received_at__gte=pa, received_at__lt=pb))
    earliest = min(pa for _, (pa, _) in windows.values())
    counts = scope.filtered().filter(received_at__gte=earliest, received_at__lt=now).aggregate(**aggregates)
    labels = {"today": "Received today", "7d": "Received 7 days", "30d": "Received 30 days"}
    return [
        {"key": name, "label": labels[name], "value": counts[name], "previous": counts[f"prev_{name}"],
         "trend": counts[name] - counts[f"prev_{name}"]}
        for name in windows
    ]


def period_summary(scope: Scope) -> dict[str, Any]:
    """Speed-to-lead and SLA of the period and the one before, in one pass over both."""
    prev = scope.previous()
    both = scope.filtered().filter(received_at__gte=prev.start, received_at__lt=scope.end)
    period = Case(When(received_at__gte=scope.start, then=Value(1)), default=Value(0), output_field=IntegerField())
    counts = {**speed_counts(scope.now), **sla_counts(scope.now)}
    data = grouped(both, period, counts, {"stl": SPEED}, fractions=(0.5,))
    empty = {"leads": 0, "touched": 0, "stl_p50": None, "hit": 0, "missed": 0}
    cur = _finish_sla(_finish_speed(data.get(1, dict(empty))))
    old = _finish_sla(_finish_speed(data.get(0, dict(empty))))
    return {
        "current": cur,
        "previous": old,
        "stl_trend": _trend(cur.get("stl_p50"), old.get("stl_p50")),
        "hit_trend": _trend(cur.get("hit_rate"), old.get("hit_rate")),
    }


def snapshot(scope: Scope) -> dict[str, int]:
    """Right now, whatever the date range: waiting in pools, unassigned, overdue."""
    base = scope.filtered()
    return {
        "pooled": base.filter(status=Lead.Status.POOLED, owner__isnull=True).count(),
        "unassigned": base.filter(status=Lead.Status.UNASSIGNED).count(),
        "overdue": overdue_count(scope),
    }


def arrivals_by_hour(scope: Scope) -> list[int]:
    """Arrivals per hour of the day (manager's time zone) over the period: when do leads come in?"""
    counts = [0] * 24
    qs = scope.leads().annotate(h=ExtractHour("received_at", tzinfo=scope.tz)).values("h").annotate(n=Count("id"))
    for row in qs.order_by():
        counts[row["h"]] = row["n"]
    return counts


STL_BUCKETS = [
    ("≤ 5 min", 5 * MINUTE),
    ("5–15 min", 15 * MINUTE),
    ("15–60 min", HOUR),
    ("1–4 h", 4 * HOUR),
    ("4–24 h", DAY_SECONDS),
    ("> 24 h", None),
]


def speed_distribution(scope: Scope) -> list[dict[str, Any]]:
    aggregates: dict[str, Any] = {}
    low = None
    for i, (_, high) in enumerate(STL_BUCKETS):
        cond = Q(first_touch_at__isnull=False)
        if low is not None:
            cond &= Q(GreaterThan(SPEED, low))
        if high is not None:
            cond &= Q(LessThanOrEqual(SPEED, high))
        aggregates[f"b{i}"] = Count("id", filter=cond)
        low = high
    aggregates["untouched"] = Count("id", filter=Q(first_touch_at__isnull=True, assigned_at__isnull=False))
    counts = scope.leads().aggregate(**aggregates)
    rows = [{"label": label, "count": counts[f"b{i}"]} for i, (label, _) in enumerate(STL_BUCKETS)]
    rows.append({"label": "not yet", "count": counts["untouched"]})
    return rows


def dashboard_sources(scope: Scope) -> list[dict[str, Any]]:
    """Per source: volume, speed, SLA and conversion side by side — the table managers scan first."""
    counts = {**speed_counts(scope.now), **sla_counts(scope.now), **conversion_counts()}
    data = grouped(scope.leads(), F("source"), counts, {"stl": SPEED}, fractions=(0.5,))
    rows = {k: _finish_conversion(_finish_sla(_finish_speed(v))) for k, v in data.items()}
    return _rows("source", rows, order="leads")


# -- fairness and workload -------------------------------------------------------------------


def _reps_in_scope(scope: Scope) -> list[Rep]:
    reps = Rep.objects.select_related("user", "team").prefetch_related("working_hours", "time_off")
    if scope.team:
        reps = reps.filter(team_id=scope.team)
    if scope.rep:
        reps = reps.filter(pk=scope.rep)
    return list(reps.filter(Q(active=True) | Q(leads__received_at__gte=scope.start)).distinct())


def available_hours(rep: Rep, start: dt.datetime, end: dt.datetime) -> float:
    return schedule_for(rep).working_minutes_between(start, end) / 60


def fairness(scope: Scope) -> list[dict[str, Any]]:
    """Per rep: share received vs the share expected from weight × available hours, value received,
    open load vs capacity, and how leads reached them (claimed from a pool or pushed)."""
    reps = _reps_in_scope(scope)
    data = grouped(
        scope.leads().filter(owner__isnull=False),
        F("owner_id"),
        {
            "received": Count("id"),
            "value": Sum("value"),
            "score": Sum("score"),
            "claims": Count("id", filter=Q(claimed_at__isnull=False)),
            "pushes": Count("id", filter=Q(claimed_at__isnull=True)),
        },
    )
    load = dict(
        Lead.objects.filter(owner__in=reps, status__in=Lead.LOAD_STATUSES)
        .values("owner_id").annotate(n=Count("id")).values_list("owner_id", "n").order_by()
    )
    hours = {rep.pk: available_hours(rep, scope.start, min(scope.end, scope.now)) for rep in reps}
    expected_weight = {rep.pk: rep.weight * hours[rep.pk] for rep in reps}
    total_expected = sum(expected_weight.values())
    total_received = sum(row["received"] for k, row in data.items() if k in hours)
    rows = []
    for rep in reps:
        row = data.get(rep.pk, {})
        received = row.get("received", 0)
        value = float(row.get("value") or 0)
        rows.append(
            {
                "key": rep.pk,
                "label": rep.display_name,
                "team": rep.team.name if rep.team else "",
                "weight": rep.weight,
                "available_hours": round(hours[rep.pk], 1),
                "received": received,
                "share": rate(received, total_received),
                "expected_share": rate(expected_weight[rep.pk], total_expected) if total_expected else None,
                "value": value,
                "score": row.get("score") or 0,
                "value_per_hour": value / hours[rep.pk] if hours[rep.pk] else None,
                "open_load": load.get(rep.pk, 0),
                "capacity": rep.capacity,
                "load_ratio": rate(load.get(rep.pk, 0), rep.capacity) if rep.capacity else None,
                "claims": row.get("claims", 0),
                "pushes": row.get("pushes", 0),
            }
        )
    for row in rows:
        if row["share"] is not None and row["expected_share"] is not None:
            row["share_gap"] = row["share"] - row["expected_share"]
        else:
            row["share_gap"] = None
    rows.sort(key=lambda r: r["label"])
    return rows


def fairness_index(scope: Scope, weeks: int | None = None) -> list[dict[str, Any]]:
    """Gini of lead value per available hour across reps, week by week (0 = perfectly even).
    A rep with no available hours that week is left out: they could not have received anything."""
    reps = _reps_in_scope(scope)
    if not reps:
        return []
    end = min(scope.end, scope.now)
    step = dt.timedelta(days=7)
    buckets: list[tuple[dt.datetime, dt.datetime]] = []
    cursor = scope.start
    while cursor < end:
        buckets.append((cursor, min(cursor + step, end)))
        cursor += step
    if weeks:
        buckets = buckets[-weeks:]
    week = Case(
        *[When(received_at__gte=a, received_at__lt=b, then=Value(i)) for i, (a, b) in enumerate(buckets)],
        default=Value(-1),
        output_field=IntegerField(),
    )
    totals: dict[tuple[int, int], float] = {}
    qs = (
        scope.leads().filter(owner__in=reps)
        .annotate(w=week).values("w", "owner_id")
        .annotate(v=Coalesce(Sum("value"), Value(0), output_field=Lead._meta.get_field("value")), n=Count("id"))
        .order_by()
    )
    counts: dict[tuple[int, int], int] = {}
    for row in qs:
        totals[(row["w"], row["owner_id"])] = float(row["v"])
        counts[(row["w"], row["owner_id"])] = row["n"]
    out = []
    for i, (a, b) in enumerate(buckets):
        per_hour, per_hour_count = [], []
        for rep in reps:
            h = available_hours(rep, a, b)
            if h > 0:
                per_hour.append(totals.get((i, rep.pk), 0.0) / h)
                per_hour_count.append(counts.get((i, rep.pk), 0) / h)
        index = gini(per_hour)
        if index is None:  # no lead carried a value: judge by lead counts instead
            index = gini(per_hour_count)
        out.append({"key": a.date().isoformat(), "label": f"{a.astimezone(scope.tz):%d %b}", "start": a, "end": b,
                    "gini": index, "reps": len(per_hour)})
    return out


def hoarding_flags(scope: Scope, untouched_limit: int = 3, stale_hours: int = 24) -> list[dict[str, Any]]:
    """Pool members who sit on claimed leads: at their claim limit, several claimed leads untouched,
    or a claimed lead untouched for a day; and members taking far more than their share of claims."""
    now = scope.now
    flags: list[dict[str, Any]] = []
    held = (
        scope.filtered()
        .filter(pool__isnull=False, owner__isnull=False, claimed_at__isnull=False, status__in=Lead.LOAD_STATUSES)
        .values("pool_id", "owner_id")
        .annotate(
            open=Count("id"),
            untouched=Count("id", filter=Q(first_touch_at__isnull=True)),
            oldest=Min("claimed_at", filter=Q(first_touch_at__isnull=True)),
        )
        .order_by()
    )
    pools = {p.pk: p for p in Pool.objects.all()}
    reps = {r.pk: r for r in Rep.objects.select_related("user")}
    for row in held:
        pool, rep = pools.get(row["pool_id"]), reps.get(row["owner_id"])
        if pool is None or rep is None:
            continue
        reasons = []
        if pool.claim_limit and row["open"] >= pool.claim_limit:
            where = "at" if row["open"] == pool.claim_limit else "over"
            reasons.append(f"{where} the claim limit ({row['open']}/{pool.claim_limit})")
        if row["untouched"] >= untouched_limit:
            reasons.append(f"{row['untouched']} claimed leads not yet touched")
        if row["oldest"] and now - row["oldest"] >= dt.timedelta(hours=stale_hours):
            hours = (now - row["oldest"]).total_seconds() / HOUR
            reasons.append(f"a claimed lead untouched for {hours:.0f} h")
        if reasons:
            flags.append({"key": f"{pool.pk}-{rep.pk}", "label": rep.display_name, "pool": pool.name,
                          "open": row["open"], "untouched": row["untouched"], "reason": "; ".join(reasons)})
    # Claim shares over the period: more than twice a fair share (with at least 5 claims) is a flag.
    members = defaultdict(int)
    for pool_id in PoolMembership.objects.values_list("pool_id", flat=True):
        members[pool_id] += 1
    claims = (
        scope.leads().filter(pool__isnull=False, claimed_at__isnull=False, owner__isnull=False)
        .values("pool_id", "owner_id").annotate(n=Count("id")).order_by()
    )
    per_pool: dict[int, dict[int, int]] = defaultdict(dict)
    for row in claims:
        per_pool[row["pool_id"]][row["owner_id"]] = row["n"]
    for pool_id, by_rep in per_pool.items():
        total = sum(by_rep.values())
        fair = 1 / members[pool_id] if members.get(pool_id) else None
        for rep_id, n in by_rep.items():
            share = n / total
            if fair and n >= 5 and share > 2 * fair and pool_id in pools and rep_id in reps:
                flags.append({"key": f"{pool_id}-{rep_id}-share", "label": reps[rep_id].display_name,
                              "pool": pools[pool_id].name, "open": None, "untouched": None,
                              "reason": f"took {share:.0%} of the pool's claims (fair share {fair:.0%})"})
    flags.sort(key=lambda f: (f["pool"], f["label"]))
    return flags


# -- the rep's own page ----------------------------------------------------------------------


@dataclass
class RepSummary:
    rep: Rep
    mine: dict[str, Any] = field(default_factory=dict)
    team_median: dict[str, Any] = field(default_factory=dict)
    team_size: int = 0


def rep_summary(scope: Scope, rep: Rep) -> RepSummary:
    """The rep's own figures next to the median rep of their team. Only aggregates of others."""
    team_scope = replace(scope, team=rep.team_id, rep=None) if rep.team_id else replace(scope, rep=rep.pk, team=None)
    counts = {**speed_counts(scope.now), **sla_counts(scope.now), **conversion_counts()}
    data = grouped(team_scope.leads().filter(owner__isnull=False), F("owner_id"), counts, {"stl": SPEED},
                   fractions=(0.5,))
    per_rep = {k: _finish_conversion(_finish_sla(_finish_speed(v))) for k, v in data.items()}
    fair = {row["key"]: row for row in fairness(team_scope)}
    for key, row in fair.items():
        per_rep.setdefault(key, {})
        per_rep[key].update(share=row["share"], expected_share=row["expected_share"], received=row["received"])
    mine = per_rep.get(rep.pk, {"leads": 0, "received": 0})
    metrics = ["stl_p50", "share_5m", "share_1h", "hit_rate", "won_rate", "qualified_rate", "share",
               "expected_share", "received"]
    team_median = {}
    for m in metrics:
        values = [row[m] for row in per_rep.values() if row.get(m) is not None]
        team_median[m] = median(values)
    return RepSummary(rep=rep, mine=mine, team_median=team_median, team_size=len(per_rep))

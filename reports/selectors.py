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

from django.db import connection
from django.db.models import (
    Case,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, ExtractHour
from django.db.models.lookups import LessThanOrEqual

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
from routing.pools import HELD_STATUSES, hoarding

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
        # A lead's events happen after it arrives: `at >= start` lets the (kind, at) index narrow the scan.
        return self.filtered(LeadEvent.objects.all(), prefix="lead__").filter(
            lead__received_at__gte=self.start, lead__received_at__lt=self.end, at__gte=self.start
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


def grouped(qs: QuerySet, key: Any, counts: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    """One GROUP BY query of plain aggregates; `key=None` gives the totals under the key None."""
    if key is None:
        return {None: qs.aggregate(**counts)}
    rows = {r["_k"]: r for r in qs.annotate(_k=key).values("_k").annotate(**counts).order_by()}
    for row in rows.values():
        row.pop("_k")
    return rows


def percentiles(
    qs: QuerySet,
    key: Any,
    durations: dict[str, Any],
    fractions: tuple[float, ...] = (0.5, 0.9),
) -> dict[Any, dict[str, float | None]]:
    """Percentiles of each duration per group key, named `<duration>_p50`, `<duration>_p90`.

    PostgreSQL: percentile_cont in one query. SQLite: the same interpolation over fetched durations.
    """
    if not durations:
        return {}
    if has_percentile_cont():
        aggregates = {
            f"{name}_p{round(f * 100)}": PercentileCont(_as_interval(expr), f, output_field=DurationField())
            for name, expr in durations.items()
            for f in fractions
        }
        return {
            k: {name: v.total_seconds() if v is not None else None for name, v in row.items()}
            for k, row in grouped(qs, key, aggregates).items()
        }
    names = list(durations)
    values: dict[Any, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    annotated = qs.annotate(_k=key if key is not None else Value(0), **{f"_d_{n}": e for n, e in durations.items()})
    for row in annotated.values_list("_k", *[f"_d_{n}" for n in names]):
        k = row[0] if key is not None else None
        for n, v in zip(names, row[1:], strict=True):
            if v is not None:
                values[k][n].append(v)
    return {
        k: {f"{n}_p{round(f * 100)}": percentile(per[n], f) for n in names for f in fractions}
        for k, per in values.items()
    }


def _as_interval(expr: Any) -> Any:
    """Sorting intervals is cheaper than sorting extracted epochs: percentiles order by `end - start`."""
    if isinstance(expr, Seconds):
        end, start = expr.get_source_expressions()
        return ExpressionWrapper(end - start, output_field=DurationField())
    return expr


def answered_within(seconds: float) -> Q:
    """First touched within `seconds` of arrival."""
    if connection.vendor == "postgresql":
        # Comparing timestamps with an interval is far cheaper per row than extracting epochs.
        return Q(first_touch_at__lte=F("received_at") + dt.timedelta(seconds=seconds))
    return Q(LessThanOrEqual(SPEED, seconds))


# Each lead falls in exactly one speed bucket, one SLA state and one conversion state. Counting leads
# grouped by (dimension, bucket, state, state) is one cheap scan; every count the reports show is a
# sum over those groups, so no lead is judged twice by two slightly different filters.
STL_BUCKETS = [
    ("≤ 5 min", 5 * MINUTE),
    ("5–15 min", 15 * MINUTE),
    ("15–60 min", HOUR),
    ("1–4 h", 4 * HOUR),
    ("4–24 h", DAY_SECONDS),
    ("> 24 h", None),
]
# Untouched leads by age (negative codes): an unanswered lead younger than a threshold may still make
# it, so it only counts against that threshold once it is older.
UNTOUCHED_AGES = [(-1, DAY_SECONDS), (-2, HOUR), (-3, 5 * MINUTE)]
UNTOUCHED_FRESH = -4
SLA_NONE, SLA_HIT, SLA_MISSED, SLA_RUNNING = 0, 1, 2, 3
CONV_NONE, CONV_OPEN, CONV_QUALIFIED, CONV_WON, CONV_LOST = 0, 1, 2, 3, 4


def speed_bucket(now: dt.datetime) -> Case:
    whens = [
        When(first_touch_at__isnull=True, received_at__lt=now - dt.timedelta(seconds=age), then=Value(code))
        for code, age in UNTOUCHED_AGES
    ]
    whens.append(When(first_touch_at__isnull=True, then=Value(UNTOUCHED_FRESH)))
    whens += [When(answered_within(high), then=Value(i)) for i, (_, high) in enumerate(STL_BUCKETS[:-1])]
    return Case(*whens, default=Value(len(STL_BUCKETS) - 1), output_field=IntegerField())


def sla_state(now: dt.datetime) -> Case:
    """Hit: first touched by the due time and never escalated. Missed: touched late, untouched after the
    due time, or escalated. Running: untouched and not yet due."""
    return Case(
        When(sla_due_at__isnull=True, then=Value(SLA_NONE)),
        When(escalation_step__gt=0, then=Value(SLA_MISSED)),
        When(first_touch_at__isnull=True, sla_due_at__lt=now, then=Value(SLA_MISSED)),
        When(first_touch_at__isnull=True, then=Value(SLA_RUNNING)),
        When(first_touch_at__lte=F("sla_due_at"), then=Value(SLA_HIT)),
        default=Value(SLA_MISSED),
        output_field=IntegerField(),
    )


def conversion_state() -> Case:
    """Conversion counts only leads given to a rep (assigned_at set): won ÷ assigned, qualified ÷ assigned."""
    return Case(
        When(assigned_at__isnull=True, then=Value(CONV_NONE)),
        When(status="won", then=Value(CONV_WON)),
        When(status="qualified", then=Value(CONV_QUALIFIED)),
        When(status="lost", then=Value(CONV_LOST)),
        default=Value(CONV_OPEN),
        output_field=IntegerField(),
    )


def bucket_rows(qs: QuerySet, now: dt.datetime, **dims: Any) -> list[dict[str, Any]]:
    """Lead counts grouped by the given dimensions and the three per-lead states."""
    states = {"_b": speed_bucket(now), "_s": sla_state(now), "_c": conversion_state()}
    # COUNT(*), not COUNT(id): every column used is in the lead_report_cover index (index-only scan).
    return list(qs.annotate(**dims, **states).values(*dims, *states).annotate(n=Count("*")).order_by())


SKIP = object()


def fold(rows: Iterable[dict[str, Any]], key: Any = None) -> dict[Any, dict[str, Any]]:
    """Sum bucket rows into figures per `key(row)` (None: one total; SKIP: leave the row out)."""
    out: dict[Any, dict[str, Any]] = {}
    for row in rows:
        k = key(row) if key else None
        if k is SKIP:
            continue
        m = out.setdefault(k, _empty_figures())
        n, b, s, c = row["n"], row["_b"], row["_s"], row["_c"]
        m["leads"] += n
        if b >= 0:
            m["touched"] += n
            m[f"b{b}"] += n
        elif c != CONV_NONE:
            m["untouched"] += n
        m["with_sla"] += n if s != SLA_NONE else 0
        m["hit"] += n if s == SLA_HIT else 0
        m["missed"] += n if s == SLA_MISSED else 0
        if c != CONV_NONE:
            m["assigned"] += n
            m["qualified"] += n if c in (CONV_QUALIFIED, CONV_WON) else 0
            m["won"] += n if c == CONV_WON else 0
            m["lost"] += n if c == CONV_LOST else 0
        if b < 0:  # untouched, by age: decides which thresholds it already missed
            m["_untouched_older"][b] = m["_untouched_older"].get(b, 0) + n
    return {k: _finish(m) for k, m in out.items()}


def _empty_figures() -> dict[str, Any]:
    m: dict[str, Any] = dict.fromkeys(
        ["leads", "touched", "untouched", "with_sla", "hit", "missed", "assigned", "qualified", "won", "lost"], 0
    )
    m.update({f"b{i}": 0 for i in range(len(STL_BUCKETS))})
    m["_untouched_older"] = {}
    return m


def _finish(m: dict[str, Any]) -> dict[str, Any]:
    older = m.pop("_untouched_older")
    # Untouched codes: -1 older than a day, -2 older than an hour, -3 older than 5 minutes.
    cumulative = {"24h": [-1], "1h": [-1, -2], "5m": [-1, -2, -3]}
    within = {"5m": 1, "1h": 3, "24h": 5}  # buckets 0..k-1 are within the threshold
    for name in THRESHOLDS:
        m[f"within_{name}"] = sum(m[f"b{i}"] for i in range(within[name]))
        m[f"known_{name}"] = m["touched"] + sum(older.get(code, 0) for code in cumulative[name])
        m[f"share_{name}"] = rate(m[f"within_{name}"], m[f"known_{name}"])
    m["hit_rate"] = rate(m["hit"], m["hit"] + m["missed"])
    for name in ("won", "qualified"):
        m[f"{name}_rate"] = rate(m[name], m["assigned"])
        ci = wilson_interval(m[name], m["assigned"])
        m[f"{name}_low"], m[f"{name}_high"] = ci if ci else (None, None)
    return m


def figures(
    qs: QuerySet,
    now: dt.datetime,
    key: Any = None,
    durations: dict[str, Any] | None = None,
    fractions: tuple[float, ...] = (0.5, 0.9),
) -> dict[Any, dict[str, Any]]:
    """Every count and rate per group key (one scan), plus percentiles of the durations (one more)."""
    rows = bucket_rows(qs, now, **({"_k": key} if key is not None else {}))
    data = fold(rows, (lambda r: r["_k"]) if key is not None else None)
    if durations:
        for k, values in percentiles(qs, key, durations, fractions).items():
            if k in data:
                data[k].update(values)
        for row in data.values():
            for name in durations:
                for f in fractions:
                    row.setdefault(f"{name}_p{round(f * 100)}", None)
    return data


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
    return _rows(group, figures(scope.leads(), scope.now, g.expression, MEASURES), order="leads")


def speed_total(scope: Scope) -> dict[str, Any]:
    return figures(scope.leads(), scope.now, None, MEASURES).get(None) or _finish(_empty_figures())


def _breaches(scope: Scope, key: Any = None) -> dict[Any, dict[str, int]]:
    events = scope.events().filter(kind__in=[LeadEvent.Kind.SLA_BREACHED, LeadEvent.Kind.ESCALATED])
    return grouped(
        events,
        key,
        {
            "breaches": Count("id", filter=Q(kind=LeadEvent.Kind.SLA_BREACHED)),
            "escalations": Count("id", filter=Q(kind=LeadEvent.Kind.ESCALATED)),
        },
    )


def sla_by(scope: Scope, group: str) -> list[dict[str, Any]]:
    g = groupings(scope.tz)[group]
    data = figures(scope.leads(), scope.now, g.expression)
    for row in data.values():
        row.update(breaches=0, escalations=0)
    # Breaches and escalations are events, attributed to the rep who held the lead at the time.
    ev_key = g.event_expression if g.event_expression is not None else _lead_side(g.expression)
    for k, ev in _breaches(scope, ev_key).items():
        row = data.setdefault(k, _finish(_empty_figures()))
        row.update(ev)
    rows = _rows(group, data, order="with_sla")
    return [r for r in rows if r["with_sla"] or r["breaches"] or r["escalations"]]


def _lead_side(expression: Any) -> Any:
    if isinstance(expression, F):
        return F(f"lead__{expression.name}")
    raise ValueError("only plain field groupings can be read through an event's lead")


def sla_total(scope: Scope) -> dict[str, Any]:
    row = figures(scope.leads(), scope.now).get(None) or _finish(_empty_figures())
    row.update(_breaches(scope)[None])
    return row


def overdue_leads(scope: Scope, limit: int = 200) -> list[dict[str, Any]]:
    """Untouched leads past their SLA right now — regardless of when they arrived."""
    qs = (
        scope.filtered()
        .filter(first_touch_at__isnull=True, sla_due_at__lt=scope.now, status=Lead.Status.ASSIGNED)
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
    # An untouched lead with a deadline is "assigned" (a touch moves it on): this matches the sweeper's
    # partial index lead_sla_due_open, so the count reads a handful of index entries, not the table.
    return (
        scope.filtered()
        .filter(first_touch_at__isnull=True, sla_due_at__lt=scope.now, status=Lead.Status.ASSIGNED)
        .count()
    )


def conversion_by(scope: Scope, group: str) -> list[dict[str, Any]]:
    g = groupings(scope.tz)[group]
    rows = _rows(group, figures(scope.leads(), scope.now, g.expression), order="assigned")
    return [r for r in rows if r["assigned"]]


def conversion_total(scope: Scope) -> dict[str, Any]:
    return figures(scope.leads(), scope.now).get(None) or _finish(_empty_figures())


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
        # COUNT(received_at) rather than COUNT(id): the received_at index alone answers it.
        aggregates[name] = Count("received_at", filter=Q(received_at__gte=a, received_at__lt=b))
        aggregates[f"prev_{name}"] = Count("received_at", filter=Q(received_at__gte=pa, received_at__lt=pb))
    earliest = min(pa for _, (pa, _) in windows.values())
    counts = scope.filtered().filter(received_at__gte=earliest, received_at__lt=now).aggregate(**aggregates)
    labels = {"today": "Received today", "7d": "Received 7 days", "30d": "Received 30 days"}
    return [
        {"key": name, "label": labels[name], "value": counts[name], "previous": counts[f"prev_{name}"],
         "trend": counts[name] - counts[f"prev_{name}"]}
        for name in windows
    ]


@dataclass
class Dashboard:
    summary: dict[str, Any]
    sources: list[dict[str, Any]]
    arrivals: list[int]
    distribution: list[dict[str, Any]]


def dashboard(scope: Scope) -> Dashboard:
    """The period and the one before in one counting scan (by period, source and local hour of arrival),
    plus the median speed of each period. (Medians per source are on the speed report.)"""
    prev = scope.previous()
    both = scope.filtered().filter(received_at__gte=prev.start, received_at__lt=scope.end)
    period = Case(When(received_at__gte=scope.start, then=Value(1)), default=Value(0), output_field=IntegerField())
    rows = bucket_rows(both, scope.now, _p=period, _src=F("source"), _h=ExtractHour("received_at", tzinfo=scope.tz))
    by_period = fold(rows, lambda r: r["_p"])
    current_rows = [r for r in rows if r["_p"] == 1]
    by_source = fold(current_rows, lambda r: r["_src"])
    arrivals = [0] * 24
    for r in current_rows:
        arrivals[r["_h"]] += r["n"]
    medians = percentiles(both.filter(first_touch_at__isnull=False), period, {"stl": SPEED}, (0.5,))
    empty = _finish(_empty_figures())
    cur = {**empty, **by_period.get(1, {}), "stl_p50": medians.get(1, {}).get("stl_p50")}
    old = {**empty, **by_period.get(0, {}), "stl_p50": medians.get(0, {}).get("stl_p50")}
    summary = {
        "current": cur,
        "previous": old,
        "stl_trend": _trend(cur["stl_p50"], old["stl_p50"]),
        "hit_trend": _trend(cur["hit_rate"], old["hit_rate"]),
    }
    distribution = [{"label": label, "count": cur[f"b{i}"]} for i, (label, _) in enumerate(STL_BUCKETS)]
    distribution.append({"label": "not yet", "count": cur["untouched"]})
    return Dashboard(summary=summary, sources=_rows("source", by_source, order="leads"), arrivals=arrivals,
                     distribution=distribution)


def period_summary(scope: Scope) -> dict[str, Any]:
    return dashboard(scope).summary


def arrivals_by_hour(scope: Scope) -> list[int]:
    """Arrivals per hour of the day (manager's time zone) over the period: when do leads come in?"""
    return dashboard(scope).arrivals


def speed_distribution(scope: Scope) -> list[dict[str, Any]]:
    return dashboard(scope).distribution


def dashboard_sources(scope: Scope) -> list[dict[str, Any]]:
    """Per source: volume, speed, SLA and conversion side by side — the table managers scan first."""
    return dashboard(scope).sources


def snapshot(scope: Scope) -> dict[str, int]:
    """Right now, whatever the date range: waiting in pools, unassigned, overdue."""
    base = scope.filtered()
    return {
        "pooled": base.filter(status=Lead.Status.POOLED, owner__isnull=True).count(),
        "unassigned": base.filter(status=Lead.Status.UNASSIGNED).count(),
        "overdue": overdue_count(scope),
    }


# -- fairness and workload -------------------------------------------------------------------


def _reps_in_scope(scope: Scope) -> list[Rep]:
    reps = Rep.objects.select_related("user", "team").prefetch_related("working_hours", "time_off")
    if scope.team:
        reps = reps.filter(team_id=scope.team)
    if scope.rep:
        reps = reps.filter(pk=scope.rep)
    # Active reps, plus any inactive rep who still received leads in the period (few; probed one by one).
    had_leads = Exists(Lead.objects.filter(owner=OuterRef("pk"), received_at__gte=scope.start,
                                           received_at__lt=scope.end))
    return list(reps.filter(Q(active=True) | Q(had_leads)))


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
    # COUNT(*) so the (owner, status) index answers alone.
    load = dict(
        Lead.objects.filter(owner__in=reps, status__in=Lead.LOAD_STATUSES)
        .values("owner_id").annotate(n=Count("*")).values_list("owner_id", "n").order_by()
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
    """Pool members who sit on claimed leads: hoarding proper (claimed leads not touched within their
    SLA — `hoarded`, counted exactly as the pool pages count it), and the early signs: at their claim
    limit, several claimed leads untouched, a claimed lead untouched for a day; and members taking
    far more than their share of claims."""
    now = scope.now
    flags: list[dict[str, Any]] = []
    held = (
        scope.filtered()
        # What the claim limit counts (qualified too), so "at the limit" here is the limit a claim meets.
        .filter(pool__isnull=False, owner__isnull=False, claimed_at__isnull=False, status__in=HELD_STATUSES)
        .values("pool_id", "owner_id")
        .annotate(
            open=Count("id"),
            untouched=Count("id", filter=Q(first_touch_at__isnull=True)),
            oldest=Min("claimed_at", filter=Q(first_touch_at__isnull=True)),
            hoarded=Count("id", filter=hoarding(now)),
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
        if n := row["hoarded"]:
            reasons.append(f"{n} claimed lead{'s' if n != 1 else ''} not touched within the SLA")
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
                          "open": row["open"], "untouched": row["untouched"], "hoarded": row["hoarded"],
                          "reason": "; ".join(reasons)})
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
                              "pool": pools[pool_id].name, "open": None, "untouched": None, "hoarded": None,
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
    per_rep = figures(team_scope.leads().filter(owner__isnull=False), scope.now, F("owner_id"), {"stl": SPEED},
                      fractions=(0.5,))
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

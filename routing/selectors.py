"""Reads the routing engine needs, in a few queries: the roster, the rotation state, the rules.

Everything returned is plain data for routing.engine; nothing here writes.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection

from leadops import sqlrows
from reps.availability import Schedule
from reps.models import Rep, Territory, TimeOff, WorkingHours
from routing.engine import (
    CandidateState,
    CompiledRuleSet,
    CursorState,
    Roster,
    TerritoryData,
    compile_ruleset,
    expand_tried,
)
from routing.models import Lead, LeadEvent, Pool, Rule, RuleCursor, RuleSet
from routing.rulefile import ruleset_validate

DAY = dt.timedelta(hours=24)


def load_counts(now: dt.datetime, rep_ids: Iterable[int] | None = None) -> tuple[dict[int, int], dict[int, int]]:
    """Open leads per rep (capacity) and leads given in the 24 h before `now` (daily cap).

    Both counts in one round trip of plain SQL: every routed API lead pays this, and compiling two
    ORM aggregates cost more than running them. Each half keeps its own WHERE, so each uses its index.
    """
    ids = None if rep_ids is None else list(rep_ids)
    if ids is not None and not ids:
        return {}, {}
    lead = connection.ops.quote_name(Lead._meta.db_table)
    mine = f" AND owner_id IN ({', '.join(['%s'] * len(ids))})" if ids else ""
    statuses = ", ".join(["%s"] * len(Lead.LOAD_STATUSES))
    sql = (
        f"SELECT 0, owner_id, COUNT(*) FROM {lead} WHERE owner_id IS NOT NULL AND status IN ({statuses}){mine}"
        " GROUP BY owner_id UNION ALL "
        f"SELECT 1, owner_id, COUNT(*) FROM {lead} WHERE owner_id IS NOT NULL AND assigned_at > %s"
        f" AND assigned_at <= %s{mine} GROUP BY owner_id"
    )
    # Adapted as the ORM would: SQLite compares datetimes as naive UTC text, so an aware `now` in
    # another zone (route_pending --now ...+01:00) would shift the window by its offset.
    since, until = (connection.ops.adapt_datetimefield_value(t) for t in (now - DAY, now))
    params = [*Lead.LOAD_STATUSES, *(ids or ()), since, until, *(ids or ())]
    out: tuple[dict[int, int], dict[int, int]] = ({}, {})
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for which, owner, n in cursor.fetchall():
            out[which][owner] = n
    return out


def candidate_states(
    now: dt.datetime, *, since: dt.datetime | None = None, with_counts: bool = True
) -> list[CandidateState]:
    """Every rep with schedule, skills, territories, open leads and leads given in the 24 h before `now`.

    The reps come from `_roster_states` (cached per process on PostgreSQL); each call gets its own
    copies, since the engine advances counts as it assigns. `since` widens the time-off window for
    replays that look back (previews).
    """
    open_counts, given = load_counts(now) if with_counts else ({}, {})
    return [
        replace(c, open_count=open_counts.get(c.rep_id, 0), given_24h=given.get(c.rep_id, 0))
        for c in _roster_states(now, since)
    ]


# -- the reps, kept per process on PostgreSQL ------------------------------------------------------
#
# Building the roster takes six queries (reps, skills, territories and their links, hours, time off),
# and every routed API lead and SLA reassignment needs it. On PostgreSQL one query fingerprints every
# row the roster is built from: the count and a hash of each visible row version's (xmin, ctid). Any
# INSERT, UPDATE or DELETE makes a new row version or removes one, however it was made (the admin,
# load_org's bulk writes, raw SQL, another process), so the roster is rebuilt exactly when one of
# those rows changed. The fingerprint is taken before the rows are read: data read after it can
# only be newer, never older, than what the fingerprint describes.

# Time off is read from a day before the building `now`; a later `now` needs no earlier rows (past
# intervals never make a rep unavailable now), so a cached roster serves later instants. It is
# rebuilt after this long anyway, so time off that ended long ago drops out.
ROSTER_CACHE_MAX_AGE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class _CachedRoster:
    stamp: tuple
    built_for: dt.datetime
    states: list[CandidateState]


_roster_cache: dict[tuple[str, str], _CachedRoster] = {}


def _roster_tables() -> list[tuple[str, str]]:
    # Every table _load_states reads (auth_user only for the reps' own users: logins touch the rest).
    return [
        (Rep._meta.db_table, ""),
        (Rep.user.field.related_model._meta.db_table, f"WHERE t.id IN (SELECT user_id FROM {Rep._meta.db_table})"),
        (Rep.team.field.related_model._meta.db_table, ""),
        (Rep.skills.field.related_model._meta.db_table, ""),
        (Rep.skills.through._meta.db_table, ""),
        (Territory._meta.db_table, ""),
        (Rep.territories.through._meta.db_table, ""),
        (WorkingHours._meta.db_table, ""),
        # Only the time off a roster for `now` reads: years of past leave would otherwise be hashed on
        # every routed lead. A row edited into or out of the window changes the set either way; the
        # window moving past a row's end changes it too, which only costs a rebuild.
        (TimeOff._meta.db_table, f"WHERE t.{connection.ops.quote_name(TimeOff._meta.get_field('end').column)} > %s"),
    ]


def roster_stamp(now: dt.datetime) -> tuple:
    """The fingerprint of every row a roster for `now` is built from (PostgreSQL only)."""
    tables = _roster_tables()
    parts = [
        f"(SELECT count(*) || ':' || COALESCE(sum(hashtextextended(t.xmin::text || t.ctid::text, 0)), 0) "
        f"FROM {connection.ops.quote_name(table)} t {where})"
        for table, where in tables
    ]
    params = [now - DAY for _, where in tables if "%s" in where]
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(parts), params)
        return tuple(cursor.fetchone())


def _roster_states(now: dt.datetime, since: dt.datetime | None = None) -> list[CandidateState]:
    """The reps without counts, shared: callers copy before changing one."""
    if connection.vendor != "postgresql" or since is not None:
        return _load_states(now, since)
    key = (connection.alias, connection.settings_dict["NAME"])
    stamp = roster_stamp(now)
    cached = _roster_cache.get(key)
    if cached and cached.stamp == stamp and cached.built_for <= now < cached.built_for + ROSTER_CACHE_MAX_AGE:
        return cached.states
    states = _load_states(now, None)
    _roster_cache[key] = _CachedRoster(stamp, now, states)
    return states


def _load_states(now: dt.datetime, since: dt.datetime | None) -> list[CandidateState]:
    """The reps read afresh, in six flat queries and no model instances (500 reps must stay cheap)."""
    horizon = min(now, since or now) - DAY
    reps = list(
        Rep.objects.values(
            "id", "user__username", "user__is_active", "team__name", "level", "weight", "capacity", "daily_cap",
            "timezone", "holidays", "active",
        ).order_by("user__username")
    )
    skills: dict[int, set[str]] = {}
    for rep_id, name in Rep.skills.through.objects.values_list("rep_id", "skill__name"):
        skills.setdefault(rep_id, set()).add(name)
    territory_data = {
        t.pk: TerritoryData(t.name, tuple(t.countries), tuple(t.regions), tuple(t.postcodes))
        for t in Territory.objects.all()
    }
    territories: dict[int, list[TerritoryData]] = {}
    for rep_id, territory_id in Rep.territories.through.objects.values_list("rep_id", "territory_id"):
        territories.setdefault(rep_id, []).append(territory_data[territory_id])
    shifts: dict[int, dict[int, list]] = {}
    for rep_id, weekday, start, end in WorkingHours.objects.values_list("rep_id", "weekday", "start", "end"):
        shifts.setdefault(rep_id, {}).setdefault(weekday, []).append((start, end))
    time_off: dict[int, list] = {}
    for rep_id, start, end in TimeOff.objects.filter(end__gt=horizon).values_list("rep_id", "start", "end"):
        time_off.setdefault(rep_id, []).append((start, end))
    out = []
    for r in reps:
        pk = r["id"]
        active = r["active"] and r["user__is_active"]
        out.append(
            CandidateState(
                username=r["user__username"],
                team=r["team__name"] or "",
                level=r["level"],
                skills=frozenset(skills.get(pk, ())),
                territories=tuple(territories.get(pk, ())),
                weight=r["weight"],
                capacity=r["capacity"],
                daily_cap=r["daily_cap"],
                # Same shape as reps.availability.schedule_for, built from flat rows.
                schedule=Schedule(
                    timezone=r["timezone"],
                    shifts={k: tuple(sorted(v)) for k, v in shifts.get(pk, {}).items()},
                    time_off=tuple(sorted(time_off.get(pk, ()))),
                    holidays=r["holidays"],
                    active=r["active"],
                ),
                active=active,
                rep_id=pk,
            )
        )
    return out


def roster_load(now: dt.datetime, *, since: dt.datetime | None = None) -> Roster:
    return Roster(candidate_states(now, since=since))


# Up to this many leads, counting only the reps their matching rules could pick beats counting
# every rep's open leads (a scan of all open leads, slow once there are 100,000 of them).
FEW_LEADS = 20


def roster_for_leads(
    leads: list[dict],
    compiled: CompiledRuleSet,
    now: dt.datetime,
    *,
    states: list[CandidateState] | None = None,
    counts: tuple[dict[int, int], dict[int, int]] | None = None,
) -> Roster:
    """The roster for routing `leads`, with counts read afresh.

    `states` are the reps without counts (`candidate_states(..., with_counts=False)`) when the caller
    already holds them — route_pending loads them once for all its batches, since teams, hours and
    time off do not change between batches of one run; counts do, and are read for every batch.
    For a few leads, counts are loaded only for reps that a rule matching one of them (or the
    fallback) could consider — the only counts the engine will read. `counts` (open, given in 24 h,
    by rep id) are used instead of reading them when the caller has just counted.
    """
    base = states if states is not None else _roster_states(now)
    roster = Roster([replace(c) for c in base])
    wanted: set[int] | None = None
    if counts is None and len(leads) <= FEW_LEADS:
        wanted = set()
        for spec in compiled.all_rules():
            if spec.pool or spec.candidates is None:
                continue
            if spec.index is not None and spec.when and all(spec.first_failure(lead) is not None for lead in leads):
                continue
            members = roster.scope(spec.candidates).members
            wanted.update(c.rep_id for c in members if c.rep_id is not None)
    open_counts, given = counts if counts is not None else load_counts(now, wanted)
    for c in roster.candidates:
        c.open_count = open_counts.get(c.rep_id, 0)
        c.given_24h = given.get(c.rep_id, 0)
    return roster


def cursors_load(keys: Iterable[str]) -> dict[str, CursorState]:
    return {c.key: CursorState.from_json(c.state) for c in RuleCursor.objects.filter(key__in=list(keys))}


@dataclass(frozen=True)
class LoadedRuleSet:
    rule_set: RuleSet
    compiled: CompiledRuleSet
    rules: dict[str, Rule]  # cursor key -> Rule row

    def rule_for(self, key: str | None) -> Rule | None:
        return self.rules.get(key) if key else None


# A published version never changes, so its compiled form can be kept for the life of the process.
# Keyed by id and creation time: ids can come back after a rolled-back transaction (tests).
_compiled: dict[tuple[int, object], LoadedRuleSet] = {}


def ruleset_load(rule_set: RuleSet) -> LoadedRuleSet:
    cache_key = (rule_set.pk, rule_set.created_at)
    if rule_set.status != RuleSet.Status.DRAFT and cache_key in _compiled:
        return _compiled[cache_key]
    rows = list(rule_set.rules.select_related("pool").order_by("position"))
    data = ruleset_data(rule_set, rows)
    loaded = LoadedRuleSet(rule_set, compile_ruleset(data, version=rule_set.version),
                           {r.cursor_key: r for r in rows})
    if rule_set.status != RuleSet.Status.DRAFT:
        _compiled[cache_key] = loaded
    return loaded


def previous_published(current: RuleSet | None) -> RuleSet | None:
    """The version in force before `current`: what a rollback restores (and its page names)."""
    return (
        RuleSet.objects.filter(status=RuleSet.Status.ARCHIVED, published_at__isnull=False)
        .exclude(pk=getattr(current, "pk", None))
        .order_by("-published_at", "-version")
        .first()
    )


def published_ruleset() -> LoadedRuleSet | None:
    """The rule set in force (compiled once per version, see ruleset_load). Every lead routed reads it
    first, the API's included: one plain SQL query (leadops.sqlrows), the ORM's cost more CPU to
    compile than to run."""
    with connection.cursor() as cursor:
        cursor.execute(_published_sql(connection.vendor), [RuleSet.Status.PUBLISHED.value])
        row = cursor.fetchone()
    return ruleset_load(sqlrows.instance(RuleSet, row)) if row else None


@functools.cache
def _published_sql(vendor: str) -> str:
    # At most one is published (the one_published_ruleset constraint).
    table = connection.ops.quote_name(RuleSet._meta.db_table)
    return f"SELECT {sqlrows.columns(RuleSet, 'r')} FROM {table} r WHERE r.{sqlrows.column(RuleSet, 'status')} = %s"


def ruleset_data(rule_set: RuleSet, rows: list[Rule] | None = None) -> dict:
    """The rule set in the file format (canonical, as export_rules prints it)."""
    if rows is None:
        rows = list(rule_set.rules.select_related("pool").order_by("position"))
    fallback = next((r for r in rows if r.is_fallback), None)
    data = {
        "name": rule_set.name,
        "rules": [r.to_data() for r in rows if not r.is_fallback],
        "fallback": fallback.to_data() if fallback else None,
    }
    # Stored rules were validated when loaded; re-running the validator only fixes key order.
    return ruleset_validate(data)


def lead_standing(lead_id: int, explaining: Sequence[str]) -> dict[str, Any]:
    """A lead's status, owner's username, pool and rule names, and the detail of its latest event of
    the `explaining` kinds ("explained"): one narrow read in plain SQL. Every API POST answers with it,
    and compiling the ORM's version (a subquery and three joins) cost more CPU than running it."""
    with connection.cursor() as cursor:
        cursor.execute(_standing_sql(connection.vendor, len(explaining)), [*explaining, lead_id])
        row = cursor.fetchone()
    if row is None:
        raise Lead.DoesNotExist(lead_id)
    status, owner, pool, rule, detail = row
    detail = LeadEvent._meta.get_field("detail").from_db_value(detail, None, connection)
    return {"status": status, "owner": owner, "pool": pool, "rule": rule, "explained": detail}


@functools.cache
def _standing_sql(vendor: str, kinds: int) -> str:
    q, col = connection.ops.quote_name, sqlrows.column
    user_model = get_user_model()
    lead, event, rep = q(Lead._meta.db_table), q(LeadEvent._meta.db_table), q(Rep._meta.db_table)
    pool, rule, user = q(Pool._meta.db_table), q(Rule._meta.db_table), q(user_model._meta.db_table)
    pk = q(Lead._meta.pk.column)
    return (
        f"SELECT l.{col(Lead, 'status')}, u.{col(user_model, 'username')}, p.{col(Pool, 'name')}, "
        f"r.{col(Rule, 'name')}, (SELECT e.{col(LeadEvent, 'detail')} FROM {event} e "
        f"WHERE e.{col(LeadEvent, 'lead')} = l.{pk} AND e.{col(LeadEvent, 'kind')} IN ({', '.join(['%s'] * kinds)}) "
        f"ORDER BY e.{col(LeadEvent, 'at')} DESC, e.{q(LeadEvent._meta.pk.column)} DESC LIMIT 1) "
        f"FROM {lead} l "
        f"LEFT JOIN {rep} o ON o.{q(Rep._meta.pk.column)} = l.{col(Lead, 'owner')} "
        f"LEFT JOIN {user} u ON u.{q(user_model._meta.pk.column)} = o.{col(Rep, 'user')} "
        f"LEFT JOIN {pool} p ON p.{q(Pool._meta.pk.column)} = l.{col(Lead, 'pool')} "
        f"LEFT JOIN {rule} r ON r.{q(Rule._meta.pk.column)} = l.{col(Lead, 'rule')} "
        f"WHERE l.{pk} = %s"
    )


def explanation_expand(detail: Any) -> Any:
    """A stored explanation in the full shape of `Decision.explanation()` ("tried", rule by rule and
    candidate by candidate, in words). Batch routing stores a compact "trace" instead (see
    `Decision.compact_explanation`); anything else is returned as it is."""
    if not isinstance(detail, dict) or "trace" not in detail or "tried" in detail:
        return detail
    rules: dict[int | str, Any] = {}
    version = detail.get("ruleset_version")
    rule_set = RuleSet.objects.filter(version=version).first() if version is not None else None
    if rule_set is not None:
        rules = {spec.label: spec for spec in ruleset_load(rule_set).compiled.all_rules()}
    out = {k: v for k, v in detail.items() if k != "trace"}
    out["tried"] = expand_tried(detail["trace"], rules)
    return out

"""Reads the routing engine needs, in a few queries: the roster, the rotation state, the rules.

Everything returned is plain data for routing.engine; nothing here writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Count, Prefetch

from reps.availability import schedule_for
from reps.models import Rep, TimeOff
from routing.engine import CandidateState, CompiledRuleSet, CursorState, Roster, TerritoryData, compile_ruleset
from routing.models import Lead, Rule, RuleCursor, RuleSet
from routing.rulefile import ruleset_validate

DAY = dt.timedelta(hours=24)


def candidate_states(now: dt.datetime, *, since: dt.datetime | None = None) -> list[CandidateState]:
    """Every rep with schedule, skills, territories, open leads and leads given in the 24 h before `now`.

    `since` widens the time-off window for replays that look back (previews).
    """
    horizon = min(now, since or now) - DAY
    reps = (
        Rep.objects.select_related("user", "team")
        .prefetch_related(
            "skills",
            "territories",
            "working_hours",
            Prefetch("time_off", queryset=TimeOff.objects.filter(end__gt=horizon).order_by("start")),
        )
        .order_by("user__username")
    )
    open_counts = dict(
        Lead.objects.filter(status__in=Lead.LOAD_STATUSES, owner__isnull=False)
        .values_list("owner")
        .annotate(n=Count("id"))
        .values_list("owner", "n")
    )
    given = dict(
        Lead.objects.filter(owner__isnull=False, assigned_at__gt=now - DAY, assigned_at__lte=now)
        .values_list("owner")
        .annotate(n=Count("id"))
        .values_list("owner", "n")
    )
    out = []
    for rep in reps:
        out.append(
            CandidateState(
                username=rep.user.username,
                team=rep.team.name if rep.team else "",
                level=rep.level,
                skills=frozenset(s.name for s in rep.skills.all()),
                territories=tuple(
                    TerritoryData(t.name, tuple(t.countries), tuple(t.regions), tuple(t.postcodes))
                    for t in rep.territories.all()
                ),
                weight=rep.weight,
                capacity=rep.capacity,
                open_count=open_counts.get(rep.pk, 0),
                daily_cap=rep.daily_cap,
                given_24h=given.get(rep.pk, 0),
                schedule=schedule_for(rep),
                active=rep.active and rep.user.is_active,
                rep_id=rep.pk,
            )
        )
    return out


def roster_load(now: dt.datetime, *, since: dt.datetime | None = None) -> Roster:
    return Roster(candidate_states(now, since=since))


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


def published_ruleset() -> LoadedRuleSet | None:
    rule_set = RuleSet.objects.filter(status=RuleSet.Status.PUBLISHED).first()
    return ruleset_load(rule_set) if rule_set else None


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

"""Workflows over leads: anything touching more than one row lives here (STYLE §1).

Every change of hands writes a LeadEvent in the same transaction as the change.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.core.serializers.json import DjangoJSONEncoder
from django.db import OperationalError, connection, transaction
from django.db.models import Max
from django.utils import timezone
from psycopg.errors import DeadlockDetected

from leadops.threads import fewer_collections, responsive_threads
from reps.availability import schedule_for
from reps.models import Rep
from routing import selectors
from routing.engine import (
    CandidateState,
    CursorState,
    Decision,
    Roster,
    decide,
    iso_text,
    lead_data,
)
from routing.models import Lead, LeadEvent, Pool, Rule, RuleCursor, RuleSet
from routing.models.lead import LEAD_FIELDS
from routing.pgcopy import copy_json, copy_value
from routing.rulefile import RuleFileError, known_names_from_db, ruleset_validate

log = logging.getLogger(__name__)


class LeadError(Exception):
    """A domain error the views and the API turn into a message / status code."""


class TransitionRefused(LeadError):
    pass


def record_event(
    lead: Lead,
    kind: str,
    *,
    at: dt.datetime | None = None,
    actor=None,
    rep=None,
    rule=None,
    pool=None,
    **detail: Any,
) -> LeadEvent:
    return LeadEvent.objects.create(
        lead=lead, kind=kind, at=at or timezone.now(), actor=actor, rep=rep, rule=rule, pool=pool, detail=detail
    )


def lead_set_status(lead: Lead, status: str, *, actor=None, now: dt.datetime | None = None) -> Lead:
    """The owner records progress (contacted/qualified/won/lost). The first touch stops the SLA clock."""
    now = now or timezone.now()
    with transaction.atomic():
        lead = Lead.objects.select_for_update().get(pk=lead.pk)
        if status == lead.status:
            return lead
        if not lead.can_become(status) or status in ("unassigned", "pooled", "assigned"):
            raise TransitionRefused(f"cannot go from {lead.status} to {status}")
        previous = lead.status
        lead.status = status
        fields = ["status", "updated_at"]
        if lead.first_touch_at is None:
            lead.first_touch_at = now
            fields.append("first_touch_at")
        if status in ("won", "lost"):
            lead.closed_at = now
            fields.append("closed_at")
        lead.save(update_fields=fields)
        record_event(lead, LeadEvent.Kind.STATUS_CHANGED, at=now, actor=actor, rep=lead.owner,
                     **{"from": previous, "to": status})
    return lead



# -- rule sets ---------------------------------------------------------------------------------


class RuleSetRefused(LeadError):
    """A rule-set change that is not allowed (publishing an archived version, nothing to roll back to)."""


def ruleset_create_draft(data: Any, *, actor=None, note: str = "", check_names: bool = True) -> RuleSet:
    """Validate a rule-set dict and store it as a new draft version (version = latest + 1).

    Raises RuleFileError listing every fault; nothing is written then.
    """
    canonical = ruleset_validate(data, known_names_from_db() if check_names else None)
    with transaction.atomic():
        # Lock the newest version so two loads cannot both take the same next number.
        latest = RuleSet.objects.select_for_update().order_by("-version").first()
        version = (latest.version if latest else 0) + 1
        rule_set = RuleSet.objects.create(
            name=canonical["name"], version=version, status=RuleSet.Status.DRAFT,
            fallback=canonical["fallback"], created_by=actor, note=note[:300],
        )
        wanted = {r["pool"] for r in [*canonical["rules"], canonical["fallback"] or {}] if r.get("pool")}
        pools = {p.name: p for p in Pool.objects.filter(name__in=wanted)}
        rows = [_rule_row(rule_set, r, i, pools) for i, r in enumerate(canonical["rules"])]
        if canonical["fallback"]:
            rows.append(_rule_row(rule_set, canonical["fallback"], len(rows), pools, fallback=True))
        Rule.objects.bulk_create(rows)
    return rule_set


def _rule_row(rule_set: RuleSet, r: dict, position: int, pools: dict[str, Pool], *, fallback: bool = False) -> Rule:
    return Rule(
        rule_set=rule_set,
        position=position,
        name="fallback" if fallback else r["name"],
        is_fallback=fallback,
        conditions=r.get("when_any") or r.get("when") or [],
        match_any="when_any" in r,
        candidates=r.get("candidates") or {},
        strategy=r.get("strategy", ""),
        pool=pools.get(r["pool"]) if r.get("pool") else None,
        sla_minutes=r.get("sla_minutes"),
        escalate_to=r.get("escalate_to") or [],
        ladder=r.get("ladder") or [],
        max_reassignments=r.get("max_reassignments"),
    )


def ruleset_publish(rule_set: RuleSet, *, actor=None, now: dt.datetime | None = None) -> RuleSet:
    """Put a draft in force; the version in force until now is archived (history keeps who and when)."""
    now = now or timezone.now()
    with transaction.atomic():
        rule_set = RuleSet.objects.select_for_update().get(pk=rule_set.pk)
        if rule_set.status == RuleSet.Status.PUBLISHED:
            return rule_set
        if rule_set.status != RuleSet.Status.DRAFT:
            raise RuleSetRefused(
                f"v{rule_set.version} is archived: roll back to bring an earlier version back as a new one"
            )
        list(RuleSet.objects.select_for_update().filter(status=RuleSet.Status.PUBLISHED))
        RuleSet.objects.filter(status=RuleSet.Status.PUBLISHED).update(status=RuleSet.Status.ARCHIVED)
        rule_set.status = RuleSet.Status.PUBLISHED
        rule_set.published_at = now
        rule_set.published_by = actor
        rule_set.save(update_fields=["status", "published_at", "published_by"])
    return rule_set


def ruleset_rollback(*, actor=None, now: dt.datetime | None = None) -> RuleSet:
    """Bring back the version that was in force before the current one, as a new published version.

    Copying (rather than re-activating the old row) keeps the history linear: every publish is a
    version with its own who/when, and the note says which version it restores.
    """
    previous = selectors.previous_published(RuleSet.objects.filter(status=RuleSet.Status.PUBLISHED).first())
    if previous is None:
        raise RuleSetRefused("no earlier published version to roll back to")
    with transaction.atomic():
        copy = ruleset_create_draft(
            ruleset_to_dict(previous), actor=actor, note=f"Rollback to v{previous.version}", check_names=False
        )
        return ruleset_publish(copy, actor=actor, now=now)


def ruleset_to_dict(rule_set: RuleSet) -> dict:
    """The rule set in the rule-file format (what export_rules prints)."""
    return selectors.ruleset_data(rule_set)


def ruleset_preview(
    draft: RuleSet, *, days: int = 30, now: dt.datetime | None = None, limit: int = 2000, sample: int = 50
) -> dict[str, Any]:
    """What would change if `draft` were in force: the leads received in the last `days` days
    replayed through the published version and through the draft, per rep, plus a sample of
    leads that would go elsewhere, with the draft's reason.

    Each lead is judged at its own arrival time against today's team and load; rotation pointers
    are copied into memory, so a preview never moves a real pointer.
    """
    now = now or timezone.now()
    since = now - dt.timedelta(days=days)
    leads = list(
        Lead.objects.filter(received_at__gte=since, received_at__lte=now).order_by("-received_at")[:limit]
    )
    leads.reverse()
    states = selectors.candidate_states(now, since=since)
    published = selectors.published_ruleset()
    drafted = selectors.ruleset_load(draft)
    sides: dict[str, Any] = {}
    for side, loaded in (("published", published), ("draft", drafted)):
        if loaded is None:
            sides[side] = [None] * len(leads)
            continue
        roster = Roster([_copy_state(c) for c in states])
        keys = [r.key for r in loaded.compiled.all_rules()]
        cursors = {k: c.copy() for k, c in selectors.cursors_load(keys).items()}
        rng = random.Random(0)
        out = []
        for lead in leads:
            d = decide(lead_data(lead, LEAD_FIELDS), loaded.compiled, roster, cursors, lead.received_at, rng)
            cursors.update(d.cursors)
            out.append(d)
        sides[side] = out
    per: dict[tuple[str, str], Counter] = {}
    changed = []
    for i, lead in enumerate(leads):
        keys = {}
        for side in ("published", "draft"):
            d = sides[side][i]
            key = _preview_key(d)
            keys[side] = key
            per.setdefault(key, Counter())[side] += 1
        if keys["published"] != keys["draft"]:
            changed.append((lead, sides["published"][i], sides["draft"][i]))
    rows = [
        {"kind": kind, "name": name, "published": c["published"], "draft": c["draft"],
         "change": c["draft"] - c["published"]}
        for (kind, name), c in sorted(per.items())
    ]
    return {
        "leads": len(leads),
        "days": days,
        "published_version": published.rule_set.version if published else None,
        "draft_version": draft.version,
        "per_rep": rows,
        "changed": len(changed),
        "sample": [
            {"lead": lead.pk, "label": str(lead), "received_at": lead.received_at.isoformat(),
             "published": _preview_side(p), "draft": _preview_side(d), "reason": _chosen_reason(d)}
            for lead, p, d in changed[:sample]
        ],
    }


def _copy_state(c: CandidateState) -> CandidateState:
    return CandidateState(**{f: getattr(c, f) for f in c.__dataclass_fields__})


def _preview_key(d: Decision | None) -> tuple[str, str]:
    if d is None or d.outcome == "unassigned":
        return ("unassigned", "(unassigned)")
    if d.rep_username:
        return ("rep", d.rep_username)
    return ("pool", d.pool_name or "")


def _preview_side(d: Decision | None) -> dict[str, Any]:
    if d is None:
        return {"outcome": "unassigned", "rep": None, "pool": None, "rule": None}
    return {"outcome": d.outcome, "rep": d.rep_username, "pool": d.pool_name, "rule": d.rule.name if d.rule else None}


def _chosen_reason(d: Decision | None) -> str:
    if d is None:
        return "no published rule set"
    if d.rule is None:
        return d.summary()
    last = d.trace[-1]
    for c in last.candidates:
        if c.chosen:
            return f"rule {d.rule.name!r}: {c.username} {c.reason}"
    return f"rule {d.rule.name!r}: {last.outcome}"


# -- routing -----------------------------------------------------------------------------------

# Leads per transaction in route_leads: long enough to amortise loading the roster, short
# enough that concurrent routers and claimers do not wait long on the cursor locks.
ROUTE_BATCH = 1000


def route_leads(
    lead_ids: Iterable[int], *, now: dt.datetime | None = None, actor=None, notify: bool = True
) -> dict[str, int]:
    """Route the given unassigned leads with the published rule set, oldest first.

    Returns counts {"assigned", "pooled", "unassigned"} (leads that are no longer unassigned are
    left alone and not counted). Each batch is one transaction holding the rule set's cursor rows,
    so concurrent routers take turns and round robin stays exact.

    Large runs on PostgreSQL outside a transaction are pipelined (`_route_pipelined`): the next
    batch is decided while the database writes the previous one.
    """
    ids = list(dict.fromkeys(lead_ids))
    counts = {"assigned": 0, "pooled": 0, "unassigned": 0}
    with fewer_collections():
        if _can_pipeline(len(ids)):
            counts, ids = _route_pipelined(ids, now=now, actor=actor, notify=notify)
        # The reps (teams, hours, time off) are read once for all batches of a run.
        states = (
            selectors.candidate_states(now or timezone.now(), with_counts=False) if len(ids) > ROUTE_BATCH else None
        )
        loads = _Loads()
        for start in range(0, len(ids), ROUTE_BATCH):
            batch = ids[start:start + ROUTE_BATCH]
            for key, n in _route_batch(batch, now=now, actor=actor, notify=notify, states=states,
                                       loads=loads).items():
                counts[key] += n
    return counts


# How long route_leads trusts the open/24 h counts it carried over from its previous batch.
LOADS_MAX_AGE = 5.0  # seconds


class _Loads:
    """Open leads and leads given in 24 h per rep, carried from one batch of a run to the next.

    Counting every rep's open leads again for each batch costs more than routing the batch once
    there are 100,000 open leads (the count is a scan of them all). Carried counts include the
    run's own assignments exactly; what they miss is other workers' claims and manual assignments
    since the last count, so they are recounted every LOADS_MAX_AGE seconds — a window of the
    same kind as the one between counting and assigning inside a batch.
    """

    def __init__(self) -> None:
        self.counts: tuple[dict[int, int], dict[int, int]] | None = None
        self.at = 0.0

    def fresh(self) -> tuple[dict[int, int], dict[int, int]] | None:
        return self.counts if self.counts is not None and time.monotonic() - self.at < LOADS_MAX_AGE else None

    def keep(self, roster: Roster, *, counted_now: bool, few: bool) -> None:
        """Carry the roster's counts, which include the batch just decided. A batch of a few leads
        (`selectors.FEW_LEADS`) counted only the reps its rules could use: nothing is carried
        then, and what was carried before is dropped too, since it misses this batch's leads."""
        if few:
            self.counts = None
            return
        self.counts = (
            {c.rep_id: c.open_count for c in roster.candidates if c.rep_id is not None},
            {c.rep_id: c.given_24h for c in roster.candidates if c.rep_id is not None},
        )
        if counted_now:
            self.at = time.monotonic()


def routing_locked() -> tuple[selectors.LoadedRuleSet | None, dict[str, RuleCursor]]:
    """The published rule set, with its cursor rows locked for the rest of the transaction.

    Routing's lock order is cursors, then leads, then reps. Anything that locks a lead and may then
    route it takes this first: an import chunk holds the cursors while it locks the open leads its
    duplicates merge into, so the other order would wait on it in a circle (a deadlock)."""
    loaded = selectors.published_ruleset()
    return loaded, _lock_cursors(loaded)


def _lock_cursors(loaded: selectors.LoadedRuleSet | None) -> dict[str, RuleCursor]:
    """Lock all of the rule set's cursor rows in one stable order (by key), so two routers never
    deadlock and never both take the same turn; rows missing yet (a new rule) are created first."""
    if loaded is None:
        return {}
    keys = sorted({r.key for r in loaded.compiled.all_rules() if not r.pool})
    if not keys:
        return {}
    locking = RuleCursor.objects.select_for_update().filter(key__in=keys).order_by("key")
    rows = {c.key: c for c in locking}
    if len(rows) < len(keys):
        RuleCursor.objects.bulk_create([RuleCursor(key=k) for k in keys if k not in rows], ignore_conflicts=True)
        rows = {c.key: c for c in locking.all()}
    return rows


def _save_cursors(rows: dict[str, RuleCursor], cursors: dict[str, CursorState], changed: set[str],
                  roster: Roster, now: dt.datetime) -> None:
    dirty = []
    for key in changed:
        row = rows[key]
        state = cursors[key]
        row.state = state.to_json()
        cand = roster.by_name.get(state.last or "")
        row.last_rep_id = cand.rep_id if cand else None
        row.updated_at = now
        dirty.append(row)
    if not dirty:
        return
    if connection.vendor != "postgresql":
        RuleCursor.objects.bulk_update(dirty, ["state", "last_rep", "updated_at"])
        return
    # One UPDATE … FROM unnest: bulk_update's CASE over JSON values took longer than a batch's writes.
    table = connection.ops.quote_name(RuleCursor._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS c SET state = v.state::jsonb, last_rep_id = v.last_rep_id, updated_at = %s "
            "FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS v(id, state, last_rep_id) WHERE c.id = v.id",
            [now, [r.pk for r in dirty], [json.dumps(r.state) for r in dirty], [r.last_rep_id for r in dirty]],
        )


def _assign_fields(lead: Lead, cand: CandidateState, rule: Rule | None, sla: int | None, now: dt.datetime) -> None:
    lead.owner_id = cand.rep_id
    if lead.status in (Lead.Status.UNASSIGNED, Lead.Status.POOLED, Lead.Status.ASSIGNED):
        lead.status = Lead.Status.ASSIGNED
    lead.assigned_at = now
    lead.routed_at = lead.routed_at or now
    lead.rule = rule
    lead.pool_due_at = None
    lead.sla_due_at = cand.schedule.add_working_minutes(now, sla) if sla and lead.first_touch_at is None else None
    lead.updated_at = now


ASSIGN_FIELDS = ["owner", "status", "assigned_at", "routed_at", "rule", "pool_due_at", "sla_due_at", "updated_at"]


# One timeline row as batch routing writes it: (lead_id, kind, at, actor_id, rep_id, rule_id, pool_id, detail).
EventRow = tuple[int, str, dt.datetime, int | None, int | None, int | None, int | None, dict[str, Any]]


def _json(detail: dict[str, Any]) -> str:
    """JSON text of an event's detail. orjson writes an explanation in ~1.5 µs where the standard
    library's C encoder takes ~19 µs — a tenth of routing a lead. Anything orjson would write
    differently from Django's encoder (dates, decimals, odd keys) goes to Django's encoder instead."""
    try:
        return orjson.dumps(detail, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(detail, cls=DjangoJSONEncoder)


def _write_events(rows: list[EventRow], *, copy_text: str = "") -> None:
    """Insert many timeline events; on PostgreSQL with one COPY, which (unlike a multi-row INSERT
    with client-side parameters) stays fast with an explanation on every row. `copy_text` holds
    more rows already in COPY form (`_events_copy_text`, PostgreSQL only)."""
    if not rows and not copy_text:
        return
    if connection.vendor != "postgresql":
        LeadEvent.objects.bulk_create([
            LeadEvent(lead_id=r[0], kind=r[1], at=r[2], actor_id=r[3], rep_id=r[4], rule_id=r[5], pool_id=r[6],
                      detail=r[7])
            for r in rows
        ])
        return
    table = connection.ops.quote_name(LeadEvent._meta.db_table)
    columns = "lead_id, kind, at, actor_id, rep_id, rule_id, pool_id, detail"
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        copy.write(copy_text + _events_copy_text(rows))


def _events_copy_text(rows: list[EventRow]) -> str:
    """Events as COPY text, formatted by hand: psycopg adapting eight values per row took longer
    than PostgreSQL took to store them. Kinds are fixed words; `detail` is JSON, which escapes its
    own control characters, so only its backslashes need doubling (the translate covers all)."""
    lines = []
    for lead_id, kind, at, actor_id, rep_id, rule_id, pool_id, detail in rows:
        lines.append(f"{lead_id}\t{kind}\t{iso_text(at)}\t{copy_value(actor_id)}\t{copy_value(rep_id)}\t{copy_value(rule_id)}\t"
                     f"{copy_value(pool_id)}\t{copy_json(_json(detail))}\n")
    return "".join(lines)


# One routed lead: (id, owner_id, routed_at, rule_id, sla_due_at); status becomes assigned, assigned_at now.
AssignRow = tuple[int, int, dt.datetime, int | None, dt.datetime | None]


def _write_assignments(
    rows: list[AssignRow], now: dt.datetime, *, read_at: dict[int, dt.datetime | str] | None = None,
    arrays: list[str] | None = None,
) -> int:
    """Save the owners of many unassigned leads in one statement; returns how many were saved.

    Django's bulk_update writes a CASE per field and row, which costs more than routing itself;
    on PostgreSQL one UPDATE … FROM unnest(arrays) does the same work in a single pass. With
    `read_at` (lead id → updated_at when it was decided; PostgreSQL only) a lead is saved only if it
    is still unassigned and unchanged since — the UPDATE is then its own check, and its lock.
    `arrays` are `_assignment_arrays(rows, read_at)` when the caller has them already.
    """
    if connection.vendor != "postgresql":
        Lead.objects.bulk_update(
            [Lead(pk=pk, owner_id=owner, status=Lead.Status.ASSIGNED, assigned_at=now, routed_at=routed,
                  rule_id=rule, pool_due_at=None, sla_due_at=sla, updated_at=now)
             for pk, owner, routed, rule, sla in rows],
            ASSIGN_FIELDS,
        )
        return len(rows)
    table = connection.ops.quote_name(Lead._meta.db_table)
    arrays = arrays or _assignment_arrays(rows, read_at)
    checked = " AND l.status = 'unassigned' AND l.updated_at = v.read_at" if read_at is not None else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS l SET owner_id = v.owner_id, status = %s, assigned_at = %s, "
            "routed_at = v.routed_at, rule_id = v.rule_id, pool_due_at = NULL, sla_due_at = v.sla_due_at, "
            "updated_at = %s "
            "FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::bigint[], %s::timestamptz[]"
            + (", %s::timestamptz[]) AS v(id, owner_id, routed_at, rule_id, sla_due_at, read_at) " if checked
               else ") AS v(id, owner_id, routed_at, rule_id, sla_due_at) ")
            # The id list again as = ANY: the planner then looks the rows up by primary key instead of
            # hashing the whole table whenever its statistics trail a large import (seen at 100k leads).
            + "WHERE l.id = v.id AND l.id = ANY(%s::bigint[])" + checked,
            [Lead.Status.ASSIGNED, now, now, *arrays, arrays[0]],
        )
        return cursor.rowcount


def _array_literal(values: Iterable[Any]) -> str:
    """A PostgreSQL array literal of ids, aware datetimes or timestamps as PostgreSQL wrote them
    (NULL for None)."""
    def text(v: Any) -> str:
        if v is None:
            return "NULL"
        if isinstance(v, dt.datetime):
            return f'"{iso_text(v)}"'
        return f'"{v}"' if isinstance(v, str) else str(v)

    return "{" + ",".join(map(text, values)) + "}"


def _assignment_arrays(rows: list[AssignRow], read_at: dict[int, dt.datetime | str] | None = None) -> list[str]:
    """The columns of `_write_assignments`' UPDATE as array literals: one string per column for
    psycopg to quote, where adapting 5,000 values one by one cost the writing thread ~19 µs a lead."""
    columns: list[Iterable[Any]] = [list(col) for col in zip(*rows, strict=True)]
    if read_at is not None:
        columns.append([read_at[row[0]] for row in rows])
    return [_array_literal(col) for col in columns]


def _signature(explanation: dict[str, Any]) -> dict[str, Any]:
    """An unassigned explanation without its timestamp: the same reasons twice are not news."""
    return {k: v for k, v in explanation.items() if k != "at"}


def _unassigned_rows(
    decisions: list[tuple[int, Decision]], now: dt.datetime, actor, *, new: bool = False
) -> list[EventRow]:
    """One `unassigned` event per lead and distinct reason: route_pending runs every minute and
    must not grow the timeline while nothing changes. `new` leads have no reason recorded yet."""
    if not decisions:
        return []
    last: dict[int, LeadEvent] = {}
    if not new:
        ids = [pk for pk, _ in decisions]
        last_ids = (
            LeadEvent.objects.filter(lead_id__in=ids).values("lead_id").annotate(m=Max("id"))
            .values_list("m", flat=True)
        )
        last = {e.lead_id: e for e in LeadEvent.objects.filter(pk__in=list(last_ids)).only("lead_id", "kind", "detail")}
    rows: list[EventRow] = []
    actor_id = actor.pk if actor is not None else None
    for pk, d in decisions:
        detail = d.compact_explanation()
        prev = last.get(pk)
        same = prev is not None and prev.kind == LeadEvent.Kind.UNASSIGNED
        if same and _signature(prev.detail) == _signature(detail):
            continue
        rows.append((pk, LeadEvent.Kind.UNASSIGNED, now, actor_id, None, None, None, detail))
    return rows


def _unassigned_events(decisions: list[tuple[Lead, Decision]], now: dt.datetime, actor) -> list[LeadEvent]:
    return [
        LeadEvent(lead_id=r[0], kind=r[1], at=r[2], actor_id=r[3], detail=r[7])
        for r in _unassigned_rows([(lead.pk, d) for lead, d in decisions], now, actor)
    ]


def _no_rules(lead: Lead | None, now: dt.datetime) -> Decision:
    return Decision(None, None, None, [], now=now, note="no published rule set")


def _enter_pool(lead: Lead, pool: Pool, rule: Rule | None, d: Decision, now: dt.datetime, actor) -> None:
    from routing.pools import lead_enter_pool

    lead_enter_pool(lead, pool, rule=rule, now=now, actor=actor)
    # The pooled event is the pools module's; the explanation of why this pool rides along on it.
    event = LeadEvent.objects.filter(lead=lead, kind=LeadEvent.Kind.POOLED).order_by("-id").first()
    if event is not None:
        event.detail = {**event.detail, **d.explanation()}
        event.save(update_fields=["detail"])


def leads_notify(lead_ids: list[int], kind: str) -> None:
    """Task body: the notifications of a routed batch (ids only, per STYLE §5)."""
    from routing.notify import lead_notify

    for pk in lead_ids:
        lead_notify(pk, kind)


def _notify_owners(lead_ids: list[int], kind: str) -> None:
    """Tell the new owners; a rolled-back assignment tells nobody.

    One lead: its notification rows are written now, in the caller's transaction, so they commit or
    roll back with the assignment, and a crash after the commit cannot lose them (delivery is queued
    on commit; the sweep delivers rows whose task never ran). A batch becomes one background task,
    queued on commit, so route_pending is not held up writing messages."""
    if not lead_ids:
        return
    if len(lead_ids) == 1:
        leads_notify(lead_ids, kind)
        return

    def queue() -> None:
        from routing.tasks import enqueue

        try:
            enqueue("routing.services.leads_notify", lead_ids, kind)
        except Exception:
            # A broken broker must not undo routing that committed; tell them inline instead.
            leads_notify(lead_ids, kind)

    transaction.on_commit(queue)


# What batch routing reads of each lead: its routing fields and what the assignment depends on.
_BATCH_FIELDS = ["id", "routed_at", "first_touch_at", "updated_at", *LEAD_FIELDS]
# Of those, what every batch reads whatever the rules say: ids and times, and where the lead is
# (territories are checked on every candidate list).
_BATCH_ALWAYS = ["id", "routed_at", "first_touch_at", "updated_at", "country", "region", "postcode"]


def _batch_fields(loaded: selectors.LoadedRuleSet | None) -> list[str]:
    """The lead columns a batch needs: `_BATCH_ALWAYS` plus the fields the rules' conditions test.
    The engine reads nothing else of a lead, and reading 22 columns of 1,000 rows per batch was a
    sixth of the deciding thread's time."""
    if loaded is None:
        return _BATCH_FIELDS
    wanted = set(_BATCH_ALWAYS)
    for spec in loaded.compiled.all_rules():
        for cond in spec.when:
            wanted.add("extra" if cond.field.startswith("extra.") else cond.field)
    return [name for name in _BATCH_FIELDS if name in wanted]


@dataclass
class _Plan:
    """The decisions for one batch of leads, ready to write: what `_apply_plan` needs and nothing
    it would have to read again."""

    ids: list[int]
    read_at: list[dt.datetime | str | None]  # each lead's updated_at when read (_unassigned_data); None: new
    now: dt.datetime
    roster: Roster
    cursors: dict[str, CursorState]
    changed: set[str] = field(default_factory=set)
    assigned: list[AssignRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    pooled: list[tuple[int, str, Rule | None, Decision]] = field(default_factory=list)
    nobody: list[tuple[int, Decision]] = field(default_factory=list)
    # Pipelined runs only: each changed cursor's state the decisions started from, and `events` and
    # the assignments' arrays already formatted (while the writer thread waits on the database).
    before: dict[str, dict[str, Any]] = field(default_factory=dict)
    events_copy: str = ""
    assign_arrays: list[str] | None = None


def _decide_batch(
    data: list[dict[str, Any]],
    loaded: selectors.LoadedRuleSet,
    roster: Roster,
    cursors: dict[str, CursorState],
    now: dt.datetime,
    actor,
) -> _Plan:
    """Decide every lead of a batch in memory. `roster` counts are advanced as leads are given
    out; `cursors` are not touched (the plan holds their new states)."""
    plan = _Plan([fields["id"] for fields in data], [fields["updated_at"] for fields in data], now, roster,
                 dict(cursors))
    cursors = plan.cursors
    rng = random.Random()
    actor_id = actor.pk if actor is not None else None
    # Every lead of a batch shares `now`, so a rep's SLA deadline for a rule is the same for all.
    due: dict[tuple[str, int], dt.datetime] = {}
    for fields in data:
        d = decide(fields, loaded.compiled, roster, cursors, now, rng)
        pk = fields["id"]
        if d.rep_username:
            cand = roster.by_name[d.rep_username]
            # Later leads of this batch must see this one in the rep's load and daily count.
            cand.open_count += 1
            cand.given_24h += 1
            cursors.update(d.cursors)
            plan.changed.update(d.cursors)
            rule = loaded.rule_for(d.rule.key)
            rule_id = rule.pk if rule is not None else None
            sla = d.rule.sla_minutes
            sla_due = None
            if sla and fields["first_touch_at"] is None:
                sla_due = due.get((cand.username, sla))
                if sla_due is None:
                    sla_due = due[(cand.username, sla)] = cand.schedule.add_working_minutes(now, sla)
            plan.assigned.append((pk, cand.rep_id, fields["routed_at"] or now, rule_id, sla_due))
            plan.events.append((pk, LeadEvent.Kind.ROUTED, now, actor_id, cand.rep_id, rule_id, None,
                                d.compact_explanation()))
        elif d.pool_name:
            plan.pooled.append((pk, d.pool_name, loaded.rule_for(d.rule.key), d))
        else:
            plan.nobody.append((pk, d))
    return plan


def _apply_plan(
    plan: _Plan, rows: dict[str, RuleCursor], *, actor, notify: bool, check_leads: bool = False,
    stored: bool = False, new: bool = False,
) -> dict[str, int]:
    """Write a batch's decisions inside the caller's transaction, which holds the cursor rows
    (`rows`) and — unless `check_leads` — the leads' rows. With `check_leads` (a plan decided
    ahead, `_apply_checked`) the assigned leads are checked and locked by their own UPDATE. With
    `stored` the assigned leads were written with their owners already; `new` leads were created in
    this transaction (both `NewLeadRouter`)."""
    counts = {"assigned": len(plan.assigned), "pooled": 0, "unassigned": 0}
    nobody = list(plan.nobody)
    if plan.assigned:
        # Lock the owners' rows too: anything else that changes a rep's load takes the same lock.
        list(Rep.objects.select_for_update().filter(pk__in={row[1] for row in plan.assigned}).order_by("pk")
             .values_list("pk", flat=True))
        if not stored:
            read_at = dict(zip(plan.ids, plan.read_at, strict=True)) if check_leads else None
            saved = _write_assignments(plan.assigned, plan.now, read_at=read_at, arrays=plan.assign_arrays)
            if saved != len(plan.assigned):
                raise _Conflict("a lead of the batch changed or is no longer unassigned")
    if plan.pooled:
        pools = {p.name: p for p in Pool.objects.filter(name__in={name for _, name, _, _ in plan.pooled})}
        instances = Lead.objects.in_bulk([pk for pk, _, _, _ in plan.pooled])
        for pk, name, rule, d in plan.pooled:
            if name in pools:
                _enter_pool(instances[pk], pools[name], rule, d, plan.now, actor)
                counts["pooled"] += 1
            else:  # deleted since the rule set was loaded (Rule.pool protects against that)
                nobody.append((pk, d))
    _write_events([*plan.events, *_unassigned_rows(nobody, plan.now, actor, new=new)], copy_text=plan.events_copy)
    _save_cursors(rows, plan.cursors, plan.changed, plan.roster, plan.now)
    counts["unassigned"] = len(nobody)
    if notify:
        _notify_owners([row[0] for row in plan.assigned], "assigned")
    return counts


def _unassigned_data(
    ids: list[int], *, lock: bool, fields: list[str] = _BATCH_FIELDS
) -> list[dict[str, Any]]:
    """`fields` of the batch's leads still unassigned, oldest first, as plain dicts (building 1,000
    Lead objects per batch cost as much as deciding)."""
    if connection.vendor != "postgresql":
        leads = Lead.objects.select_for_update() if lock else Lead.objects.all()
        return list(leads.filter(pk__in=ids, status=Lead.Status.UNASSIGNED).order_by("received_at", "id")
                    .values(*fields))
    # The same rows read as tuples, with the ids as one array: compiling values() with 1,000 ids and
    # converting each row cost 30 µs a lead. The only column psycopg does not already give as Django
    # would is jsonb, which Django reads as text. `updated_at` stays text: it only goes back to the
    # database, to check that the lead did not change (`_write_assignments`), and parsing it into a
    # datetime and formatting it again cost the deciding thread a tenth of its time.
    columns = ", ".join("updated_at::text" if name == "updated_at" else name for name in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM {connection.ops.quote_name(Lead._meta.db_table)} "
            "WHERE id = ANY(%s::bigint[]) AND status = %s ORDER BY received_at, id" + (" FOR UPDATE" if lock else ""),
            [ids, Lead.Status.UNASSIGNED],
        )
        data = [dict(zip(fields, row, strict=True)) for row in cursor.fetchall()]
    for d in data if "extra" in fields else ():
        if isinstance(d["extra"], str):
            d["extra"] = json.loads(d["extra"])  # as JSONField does (orjson would turn huge ints into floats)
    return data


def _route_batch(
    ids: list[int],
    *,
    now: dt.datetime | None,
    actor,
    notify: bool,
    states: list[CandidateState] | None = None,
    loads: _Loads | None = None,
) -> dict[str, int]:
    with transaction.atomic():
        loaded, rows = routing_locked()
        # The clock is read after the locks: assignment times then follow the order of the turns.
        now = now or timezone.now()
        data = _unassigned_data(ids, lock=True, fields=_batch_fields(loaded))
        if not data:
            return {"assigned": 0, "pooled": 0, "unassigned": 0}
        if loaded is None:
            _write_events(_unassigned_rows([(lead["id"], _no_rules(None, now)) for lead in data], now, actor))
            return {"assigned": 0, "pooled": 0, "unassigned": len(data)}
        few = len(data) <= selectors.FEW_LEADS
        carried = loads.fresh() if loads is not None and not few else None
        roster = selectors.roster_for_leads(data, loaded.compiled, now, states=states, counts=carried)
        cursors = {k: CursorState.from_json(r.state) for k, r in rows.items()}
        plan = _decide_batch(data, loaded, roster, cursors, now, actor)
        counts = _apply_plan(plan, rows, actor=actor, notify=notify)
        if loads is not None:
            # A failed batch raises out of route_leads, taking these counts with it.
            loads.keep(roster, counted_now=carried is None, few=few)
    return counts


class NewLeadRouter:
    """Routes new leads as they are written (an import's chunks), in the transaction that writes
    them: a chunk commits with its leads routed or not at all, no lead of a running import waits
    unassigned, and leads stored with their owners need no second pass that reads them back and
    rewrites every row (an UPDATE touching 14 indexes, a third of what routing cost an import).

    Per chunk, inside its transaction: `lock()` before any lead row is locked (batch routing's
    order: cursors, then leads, then reps); `decide(leads)` once the new leads have ids, which
    returns the assigned ones' owner columns; write the leads (or have written them unassigned);
    then `finish(stored=...)` writes the rest of the decisions and returns the counts.

    Deciding takes as long as writing, so a pipelined import decides ahead: another thread calls
    `plan_ahead` for the next chunk while this one is written, from the cursors and counts the plans
    before it left (as `_plan_batches` does), and the writer `take`s the plan under the locks if
    nothing it was decided on has changed. When a plan is refused (another router moved a cursor,
    the dedupe found other new leads), the writer decides that chunk itself and the deciding thread
    starts again from the database once the writer has caught up (`ready_ahead`).
    """

    def __init__(self, *, now: dt.datetime, actor=None, notify: bool = True) -> None:
        self.now = now
        self.actor = actor
        self.notify = notify
        self._states: list[CandidateState] | None = None  # the reps without counts, read once per run
        self._loads = _Loads()
        self._loaded: selectors.LoadedRuleSet | None = None
        self._rows: dict[str, RuleCursor] = {}
        self._plan: _Plan | None = None
        self._kept: tuple[Roster, bool, bool] | None = None
        # Deciding ahead: the deciding thread's rule set, cursors and counts (None: read them again
        # before the next plan), and whether the writer refused a plan since they were read.
        self._ahead: tuple[selectors.LoadedRuleSet, dict[str, CursorState], _Loads] | None = None
        self._refused = False
        self._prepared = False  # `_loaded` was read by `prepare`, for `lock`

    def lock(self) -> None:
        if self._prepared:
            self._rows = _lock_cursors(self._loaded)
            self._prepared = False
        else:
            self._loaded, self._rows = routing_locked()
        self._plan, self._kept = None, None

    def prepare(self) -> None:
        """Read what need not be read under the cursors, before `lock`: the published rule set and, if
        there is one, the reps (teams, hours, time off; not their counts). Whoever holds the cursors
        makes every other router wait. As with `routing_locked`, which also reads the rule set before
        waiting for its cursors, a version published meanwhile routes the next leads, not these; with
        no rules read, these are left unassigned for route_pending."""
        self._loaded, self._prepared = selectors.published_ruleset(), True
        if self._loaded is not None:
            self._reps()

    def decide(self, leads: list[tuple[int, dict[str, Any]]]) -> dict[int, AssignRow]:
        """Decide new leads, given as (id, cleaned fields), oldest first as batch routing does."""
        if not leads:
            return {}
        if self._ahead is not None:
            # The deciding thread's counts and cursors do not include these: it must read them again.
            self._refuse("the chunk had new leads nobody planned")
        if self._loaded is None:
            ids = [pk for pk, _ in leads]
            self._plan = _Plan(ids, [None] * len(ids), self.now, Roster([]), {},
                               nobody=[(pk, _no_rules(None, self.now)) for pk in ids])
            return {}
        cursors = {k: CursorState.from_json(r.state) for k, r in self._rows.items()}
        self._plan, roster, counted_now, few = self._decided(leads, self._loaded, cursors, self._loads)
        self._kept = (roster, counted_now, few)
        return {row[0]: row for row in self._plan.assigned}

    def _decided(
        self, leads: list[tuple[int, dict[str, Any]]], loaded: selectors.LoadedRuleSet,
        cursors: dict[str, CursorState], loads: _Loads, settled: Callable[[], None] | None = None,
    ) -> tuple[_Plan, Roster, bool, bool]:
        """The plan for new leads, with what `_Loads.keep` needs afterwards: (plan, roster, counted
        now, few). Counts come from `loads` while fresh; read afresh otherwise, once `settled()`."""
        data = self._batch(leads)
        few = len(data) <= selectors.FEW_LEADS
        carried = None if few else loads.fresh()
        if carried is None and settled is not None:
            settled()
        roster = selectors.roster_for_leads(data, loaded.compiled, self.now, states=self._reps(), counts=carried)
        return _decide_batch(data, loaded, roster, cursors, self.now, self.actor), roster, carried is None, few

    def _reps(self) -> list[CandidateState]:
        # Both threads may ask; either answer is the same, and neither changes it (rosters copy).
        if self._states is None:
            self._states = selectors.candidate_states(self.now, with_counts=False)
        return self._states

    @staticmethod
    def _batch(leads: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
        return sorted(
            ({**fields, "id": pk, "routed_at": None, "first_touch_at": None, "updated_at": None}
             for pk, fields in leads),
            key=lambda lead: (lead["received_at"], lead["id"]),
        )

    def _refuse(self, reason: str) -> None:
        if not self._refused:
            log.info("an import's chunk is decided under the locks: %s", reason)
            self._refused = True

    def ready_ahead(self, settled: Callable[[], None]) -> bool:
        """In the deciding thread, before it predicts a chunk: whether a plan can be made ahead (there
        are rules). `settled()` returns once every chunk handed to the writer before is committed.
        After a refusal the rule set, cursors and counts are read again, once the writer is done with
        the chunks before (so they include its own decisions): a lead routed elsewhere during a long
        import costs one chunk decided under the locks, not the rest of the import."""
        if self._refused:
            settled()
            self._ahead, self._refused = None, False
        if self._ahead is None:
            loaded = selectors.published_ruleset()
            if loaded is None:
                return False
            keys = sorted({r.key for r in loaded.compiled.all_rules() if not r.pool})
            self._ahead = (loaded, selectors.cursors_load(keys), _Loads())
        return True

    def fields_read(self) -> frozenset[str]:
        """The lead fields `plan_ahead` reads under the rule set `ready_ahead` loaded: where the lead is,
        when it came, and what the rules' conditions test."""
        assert self._ahead is not None
        return frozenset(_batch_fields(self._ahead[0])) | {"received_at"}

    def plan_ahead(self, leads: list[tuple[int, dict[str, Any]]], settled: Callable[[], None]) -> AheadPlan:
        """Decide new leads in the calling thread (on its own connection), outside any lock, for
        `take` to check and use later; `ready_ahead` said yes. Counts are read afresh only once
        `settled()`, so they never miss an assignment in flight."""
        assert self._ahead is not None
        loaded, cursors, loads = self._ahead
        plan, roster, counted_now, few = self._decided(leads, loaded, cursors, loads, settled)
        plan.before = {k: (cursors.get(k) or CursorState()).to_json() for k in plan.changed}
        plan.events_copy, plan.events = _events_copy_text(plan.events), []
        self._ahead = (loaded, plan.cursors, loads)
        loads.keep(roster, counted_now=counted_now, few=few)
        return loaded.rule_set.pk, plan

    def take(self, ahead: AheadPlan, *, fits: bool) -> dict[int, AssignRow] | None:
        """Under the locks: the owners of a plan made ahead if it still holds — it `fits` the leads
        the chunk really creates (the caller compares), the same rule set is published, and every
        cursor it moved is where it found it. Otherwise None: the caller decides the chunk itself."""
        rule_set_pk, plan = ahead
        if not fits:
            self._refuse("its new leads are not the ones planned")
        elif self._loaded is None or self._loaded.rule_set.pk != rule_set_pk:
            self._refuse("other rules were published")
        elif not all(key in self._rows and CursorState.from_json(self._rows[key].state).to_json() == state
                     for key, state in plan.before.items()):
            self._refuse("another router moved a rule's turn")
        if self._refused:
            return None
        # The writer's own carried counts miss this plan's assignments: recounted when next needed.
        self._plan, self._kept, self._loads = plan, None, _Loads()
        return {row[0]: row for row in plan.assigned}

    def finish(self, *, stored: bool) -> dict[str, int]:
        """Write the decisions: the assignments too unless the leads were `stored` with them."""
        if self._plan is None:
            return {"assigned": 0, "pooled": 0, "unassigned": 0}
        counts = _apply_plan(self._plan, self._rows, actor=self.actor, notify=self.notify, stored=stored, new=True)
        if self._kept is not None:
            # Carried to the next chunk; a chunk that fails stops the import, taking them with it.
            roster, counted_now, few = self._kept
            self._loads.keep(roster, counted_now=counted_now, few=few)
        return counts


# A plan NewLeadRouter.plan_ahead made: (the published rule set's id, the plan).
AheadPlan = tuple[int, _Plan]


# -- pipelined batch routing -------------------------------------------------------------------------

# Pipelining pays off once there is a batch to decide while another is written; tests switch it off
# to compare with the plain path.
ROUTE_PIPELINE = True
# Pipelined batches are larger: each costs the writer a fixed ~20 ms (locks, cursors, commit) and
# holds the cursors only while it writes; the plain path holds them while it decides as well.
PIPELINE_BATCH_FACTOR = 2


def _can_pipeline(count: int) -> bool:
    # A second connection cannot see an open transaction's leads, so only outside one.
    return (ROUTE_PIPELINE and count > 2 * PIPELINE_BATCH_FACTOR * ROUTE_BATCH and connection.vendor == "postgresql"
            and not connection.in_atomic_block and connection.get_autocommit())


class _Conflict(Exception):
    """Someone else moved a cursor, took a lead or published rules after a batch was decided."""


def _apply_checked(plan: _Plan, rule_set_pk: int, *, actor, notify: bool) -> dict[str, int]:
    """Write a plan decided ahead of time, in its own transaction, only if everything it was decided
    on still holds: the same published rule set, every cursor it moved still where it found it, and
    every lead still unassigned. Otherwise raise _Conflict and write nothing."""
    with transaction.atomic():
        loaded = selectors.published_ruleset()
        if loaded is None or loaded.rule_set.pk != rule_set_pk:
            raise _Conflict("the published rule set changed")
        rows = _lock_cursors(loaded)
        for key, state in plan.before.items():
            row = rows.get(key)
            if row is None or CursorState.from_json(row.state).to_json() != state:
                raise _Conflict(f"cursor {key} moved")
        # The leads must be as they were read: still unassigned and not changed since (an import
        # that merged a duplicate may have filled a blank country the decision did not see). The
        # assigned ones — nearly all — are checked by the UPDATE that assigns them; the others here.
        assigned = {row[0] for row in plan.assigned}
        others = [(pk, at) for pk, at in zip(plan.ids, plan.read_at, strict=True) if pk not in assigned]
        if others:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT count(*) FROM (SELECT 1 FROM {connection.ops.quote_name(Lead._meta.db_table)} AS l "
                    "JOIN unnest(%s::bigint[], %s::timestamptz[]) AS v(id, updated_at) "
                    "ON l.id = v.id AND l.updated_at = v.updated_at "
                    "WHERE l.status = %s ORDER BY l.id FOR UPDATE OF l) AS locked",
                    [[pk for pk, _ in others], [at for _, at in others], Lead.Status.UNASSIGNED],
                )
                if cursor.fetchone()[0] != len(others):
                    raise _Conflict("a lead of the batch changed or is no longer unassigned")
        return _apply_plan(plan, rows, actor=actor, notify=notify, check_leads=True)


class _Writer(threading.Thread):
    """Writes planned batches in order on its own connection. After a conflict or an error it
    writes nothing more; `failed_at` is the position (in the run's id list) of the first batch not
    written."""

    def __init__(self, rule_set_pk: int, *, actor, notify: bool) -> None:
        super().__init__(name="route-writer", daemon=True)
        self.plans: queue.Queue[tuple[int, _Plan] | None] = queue.Queue(maxsize=2)
        self.rule_set_pk = rule_set_pk
        self.actor = actor
        self.notify = notify
        self.counts = {"assigned": 0, "pooled": 0, "unassigned": 0}
        self.failed_at: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while (item := self.plans.get()) is not None:
                position, plan = item
                try:
                    if self.failed_at is None:
                        for key, n in _apply_checked(plan, self.rule_set_pk, actor=self.actor,
                                                     notify=self.notify).items():
                            self.counts[key] += n
                except (_Conflict, OperationalError) as conflict:
                    # Two routers locking the same leads in different orders: PostgreSQL kills one of
                    # them; here that is one more conflict — the plain path takes over.
                    if isinstance(conflict, OperationalError) and not isinstance(conflict.__cause__, DeadlockDetected):
                        raise
                    self.failed_at = position
                    log.info("pipelined routing stops at lead %d of the run: %s", position, conflict)
                except BaseException as exc:
                    self.failed_at, self.error = position, exc
                finally:
                    self.plans.task_done()
            self.plans.task_done()
        finally:
            connection.close()


def _route_pipelined(
    ids: list[int], *, now: dt.datetime | None, actor, notify: bool
) -> tuple[dict[str, int], list[int]]:
    """Route a long run in batches, deciding batch n+1 in this thread while a writer thread commits
    batch n on its own connection — the database's work and Python's overlap on two cores.

    Decisions are optimistic: each batch is decided from the cursors as the previous batch left
    them, and the writer commits it only if nobody else moved those cursors, took one of its leads
    or published other rules meanwhile (`_apply_checked`). At the first conflict the writer stops
    and the rest of the run goes through the plain batch path, which decides under the locks — so
    round robin stays exact while a single lead is routed at the same time. Counts are carried
    from batch to batch like the plain path's; they are recounted only after the writer has caught
    up, so a recount never misses an assignment still in flight.

    Returns the counts written and the ids the plain path still has to route.
    """
    loaded = selectors.published_ruleset()
    if loaded is None:
        return {"assigned": 0, "pooled": 0, "unassigned": 0}, ids
    states = selectors.candidate_states(now or timezone.now(), with_counts=False)
    keys = sorted({r.key for r in loaded.compiled.all_rules() if not r.pool})
    cursors = selectors.cursors_load(keys)
    writer = _Writer(loaded.rule_set.pk, actor=actor, notify=notify)
    with responsive_threads():
        writer.start()
        _plan_batches(ids, writer, loaded, states, cursors, now=now, actor=actor)
    if writer.error is not None:
        raise writer.error
    return writer.counts, ids[writer.failed_at if writer.failed_at is not None else len(ids):]


def _plan_batches(
    ids: list[int],
    writer: _Writer,
    loaded: selectors.LoadedRuleSet,
    states: list[CandidateState],
    cursors: dict[str, CursorState],
    *,
    now: dt.datetime | None,
    actor,
) -> None:
    """The deciding half of `_route_pipelined`: hand every batch to the writer, stopping early
    once it has stopped; always ends the writer's queue and waits for it."""
    loads = _Loads()
    fields = _batch_fields(loaded)
    try:
        size = PIPELINE_BATCH_FACTOR * ROUTE_BATCH
        for start in range(0, len(ids), size):
            if writer.failed_at is not None:
                break
            batch_now = now or timezone.now()
            data = _unassigned_data(ids[start:start + size], lock=False, fields=fields)
            if not data:
                continue
            few = len(data) <= selectors.FEW_LEADS
            carried = None if few else loads.fresh()
            if carried is None:
                writer.plans.join()  # every planned batch committed: the counts will include them
            roster = selectors.roster_for_leads(data, loaded.compiled, batch_now, states=states, counts=carried)
            plan = _decide_batch(data, loaded, roster, cursors, batch_now, actor)
            plan.before = {k: (cursors.get(k) or CursorState()).to_json() for k in plan.changed}
            plan.events_copy, plan.events = _events_copy_text(plan.events), []
            if plan.assigned:
                plan.assign_arrays = _assignment_arrays(
                    plan.assigned, dict(zip(plan.ids, plan.read_at, strict=True)))
            cursors = plan.cursors
            loads.keep(roster, counted_now=carried is None, few=few)
            writer.plans.put((start, plan))
    finally:
        writer.plans.put(None)
        writer.join()


def _usernames(reps: Iterable[Any]) -> set[str]:
    """Usernames from Rep instances, rep ids or usernames (callers have whichever is handy)."""
    names: set[str] = set()
    ids: list[int] = []
    for r in reps:
        if isinstance(r, Rep):
            names.add(r.user.username)
        elif isinstance(r, int):
            ids.append(r)
        elif r:
            names.add(str(r))
    if ids:
        names.update(Rep.objects.filter(pk__in=ids).values_list("user__username", flat=True))
    return names


def lead_route(
    lead: Lead,
    *,
    now: dt.datetime | None = None,
    actor=None,
    exclude_reps: Iterable[Any] = (),
    apply: bool = True,
    notify: bool = True,
) -> Decision:
    """Route one lead with the published rules, leaving out `exclude_reps` (e.g. its current owner).

    Returns the Decision with `owner` (Rep) / `pool` (Pool) filled in. With apply=False nothing is
    written and no pointer moves. Applied to a lead that already has an owner, the event is
    `reassigned` (detail: `from`, `to` and the explanation) and the notification "reassigned";
    when nobody is available an owned lead keeps its owner. Escalation bookkeeping
    (escalation_step, reassign_count) stays with the caller. With notify=False the new owner is not
    told: the notification is written now, so a caller that changes the lead afterwards (escalation
    sets the deadline) writes it itself, once the lead is final.
    """
    excluded = _usernames(exclude_reps)
    with transaction.atomic():
        loaded = selectors.published_ruleset()
        rows = _lock_cursors(loaded) if apply else {}
        now = now or timezone.now()
        if apply:
            lead = Lead.objects.select_for_update(of=("self",)).select_related("owner__user").get(pk=lead.pk)
        if loaded is None:
            d = _no_rules(lead, now)
            if apply and lead.owner_id is None:
                LeadEvent.objects.bulk_create(_unassigned_events([(lead, d)], now, actor))
            return d
        fields = lead_data(lead, LEAD_FIELDS)
        roster = selectors.roster_for_leads([fields], loaded.compiled, now)
        if rows:
            cursors = {k: CursorState.from_json(r.state) for k, r in rows.items()}
        else:
            cursors = selectors.cursors_load(r.key for r in loaded.compiled.all_rules())
        d = decide(fields, loaded.compiled, roster, cursors, now, random.Random(), exclude=excluded)
        rule = loaded.rule_for(d.rule.key) if d.rule else None
        if d.rep_username:
            d.owner = Rep.objects.select_related("user", "team").get(pk=roster.by_name[d.rep_username].rep_id)
        if d.pool_name:
            d.pool = Pool.objects.filter(name=d.pool_name).first()
        if not apply or lead.status in (Lead.Status.WON, Lead.Status.LOST):
            return d
        if d.owner is not None:
            Rep.objects.select_for_update().filter(pk=d.owner.pk).exists()
            previous = lead.owner
            _assign_fields(lead, roster.by_name[d.rep_username], rule, d.rule.sla_minutes, now)
            lead.save(update_fields=ASSIGN_FIELDS)
            lead.owner = d.owner
            detail = d.explanation()
            if previous is not None and previous.pk != d.owner.pk:
                detail = {"from": previous.user.username, "to": d.owner.user.username, **detail}
                kind = LeadEvent.Kind.REASSIGNED
            else:
                kind = LeadEvent.Kind.ROUTED
            LeadEvent.objects.create(lead=lead, kind=kind, at=now, actor=actor, rep=d.owner, rule=rule, detail=detail)
            _save_cursors(rows, {**cursors, **d.cursors}, set(d.cursors), roster, now)
            if notify:
                _notify_owners([lead.pk], "reassigned" if kind == LeadEvent.Kind.REASSIGNED else "assigned")
        elif d.pool is not None:
            _enter_pool(lead, d.pool, rule, d, now, actor)
        elif lead.owner_id is None:
            LeadEvent.objects.bulk_create(_unassigned_events([(lead, d)], now, actor))
    return d


def lead_route_by_hand(lead_id: int, *, actor=None) -> dict[str, int]:
    """A manager's "Route now": end the lead's hold, if it had one, and route it — in one transaction,
    so a routing that fails leaves the hold in place. Returns route_leads' counts."""
    with transaction.atomic():
        routing_locked()  # before the lead's row (see routing_locked)
        Lead.objects.filter(pk=lead_id, routing_held=True).update(routing_held=False, updated_at=timezone.now())
        return route_leads([lead_id], actor=actor)


def leads_release_held(*, actor=None) -> int:
    """Hand every lead imported with "do not route" to routing: the route_pending task is queued when
    this commits (and, for leads nobody can take yet, runs every minute after). Returns how many."""
    from routing.tasks import enqueue

    with transaction.atomic():
        released = Lead.objects.filter(status=Lead.Status.UNASSIGNED, routing_held=True).update(
            routing_held=False, updated_at=timezone.now())
        if released:
            transaction.on_commit(lambda: enqueue("routing.tasks.route_pending"))
    log.info("%s released %d held lead(s) to routing", getattr(actor, "username", "someone"), released)
    return released


def lead_assign_manual(lead: Lead, rep: Rep, *, actor, reason: str = "", now: dt.datetime | None = None) -> Lead:
    """A manager gives the lead to `rep` — always possible (capacity and hours do not apply), always
    logged as `manual_assigned` with the manager as actor."""
    now = now or timezone.now()
    with transaction.atomic():
        lead = Lead.objects.select_for_update(of=("self",)).select_related("owner__user", "rule").get(pk=lead.pk)
        if lead.status in (Lead.Status.WON, Lead.Status.LOST):
            raise TransitionRefused(f"lead is closed ({lead.status})")
        if lead.owner_id == rep.pk:
            raise LeadError(f"{rep.user.username} already owns this lead")
        rep = Rep.objects.select_for_update(of=("self",)).select_related("user").get(pk=rep.pk)
        previous = lead.owner
        lead.owner = rep
        if lead.status in (Lead.Status.UNASSIGNED, Lead.Status.POOLED, Lead.Status.ASSIGNED):
            lead.status = Lead.Status.ASSIGNED
        lead.assigned_at = now
        lead.routed_at = lead.routed_at or now
        lead.pool_due_at = None
        lead.routing_held = False  # a manager decided: a held lead is held no more
        if lead.rule and lead.rule.sla_minutes and lead.first_touch_at is None:
            rep_full = Rep.objects.prefetch_related("working_hours", "time_off").get(pk=rep.pk)
            lead.sla_due_at = schedule_for(rep_full).add_working_minutes(now, lead.rule.sla_minutes)
        lead.save(update_fields=["owner", "status", "assigned_at", "routed_at", "pool_due_at", "sla_due_at",
                                 "routing_held", "updated_at"])
        record_event(lead, LeadEvent.Kind.MANUAL_ASSIGNED, at=now, actor=actor, rep=rep,
                     **{"from": previous.user.username if previous else None, "to": rep.user.username,
                        "reason": reason})
        _notify_owners([lead.pk], "assigned")
    return lead


def lead_explain(lead: Lead, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Why the lead is where it is: the recorded explanation of its last routing, or — when it was
    never routed — what the published rules would decide now (nothing is written)."""
    kinds = [LeadEvent.Kind.ROUTED, LeadEvent.Kind.REASSIGNED, LeadEvent.Kind.UNASSIGNED, LeadEvent.Kind.POOLED]
    head: dict[str, Any] = {"lead": lead.pk, "status": lead.status,
                            "owner": lead.owner.user.username if lead.owner_id else None,
                            "pool": lead.pool.name if lead.pool_id else None}
    # A change of hands after the routing decision (a manager, a claim) is what explains the owner now.
    later = (
        LeadEvent.objects.filter(lead=lead, kind__in=[LeadEvent.Kind.MANUAL_ASSIGNED, LeadEvent.Kind.CLAIMED])
        .select_related("actor", "rep__user").order_by("-at", "-id").first()
    )
    for event in LeadEvent.objects.filter(lead=lead, kind__in=kinds).order_by("-at", "-id"):
        detail = event.detail or {}
        if "tried" in detail or "trace" in detail:
            out = {**head, "source": "recorded", "event": event.kind, **selectors.explanation_expand(detail)}
            if later is not None and (later.at, later.pk) > (event.at, event.pk):
                out["since"] = {
                    "kind": later.kind, "at": later.at.isoformat(),
                    "rep": later.rep.user.username if later.rep else None,
                    "by": later.actor.username if later.actor else None,
                    "reason": (later.detail or {}).get("reason", ""),
                }
            return out
    now = now or timezone.now()
    loaded = selectors.published_ruleset()
    if loaded is None:
        return {**head, "source": "computed", **_no_rules(lead, now).explanation()}
    fields = lead_data(lead, LEAD_FIELDS)
    roster = selectors.roster_for_leads([fields], loaded.compiled, now)
    cursors = selectors.cursors_load(r.key for r in loaded.compiled.all_rules())
    d = decide(fields, loaded.compiled, roster, cursors, now, random.Random())
    return {**head, "source": "computed", **d.explanation()}


def ruleset_check(data: Any) -> dict:
    """Validate a rule-set dict against the organisation without saving (for the rule editor)."""
    return ruleset_validate(data, known_names_from_db())


__all__ = [
    "LeadError",
    "RuleFileError",
    "RuleSetRefused",
    "TransitionRefused",
    "lead_assign_manual",
    "lead_explain",
    "lead_route",
    "lead_set_status",
    "leads_notify",
    "record_event",
    "route_leads",
    "ruleset_check",
    "ruleset_create_draft",
    "ruleset_preview",
    "ruleset_publish",
    "ruleset_rollback",
    "ruleset_to_dict",
]

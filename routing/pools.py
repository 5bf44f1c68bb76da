"""Shared pools: entering, announcing, claiming, releasing and pool timeouts.

Exactly-once claims rest on two database guarantees, not on application locks:
- the claim itself is one conditional UPDATE (`WHERE id = … AND owner IS NULL AND status = 'pooled'`):
  of two concurrent claimers the second re-checks the WHERE after the first commits and matches 0 rows;
- the claim limit is counted while holding a row lock on the claimer's PoolMembership, so two claims
  by the same rep are serialised and cannot both see "4 of 5".
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import random
import re
from dataclasses import dataclass

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from reps.availability import schedule_for
from reps.models import Rep
from routing.models import Lead, LeadEvent, Pool, PoolMembership
from routing.models.pools import PoolAnnouncement
from routing.notify import lead_notify
from routing.services import LeadError, record_event
from routing.sla import sla_due_at, sla_minutes_for

# Statuses of a lead a member still "holds" once claimed: it counts against the pool's claim_limit.
HELD_STATUSES = ["assigned", "contacted", "qualified"]
# A claimed lead with no SLA is treated as hoarded when untouched this long.
HOARD_AFTER_WITHOUT_SLA = dt.timedelta(hours=4)


class NotAMember(LeadError):
    """The rep is not in the lead's pool (HTTP 403)."""


class ClaimRefused(LeadError):
    """Refused politely: taken already, at the limit, or no longer waiting (HTTP 409)."""

    def __init__(self, message: str, *, reason: str, **detail) -> None:
        super().__init__(message)
        self.reason = reason
        self.detail = detail


class ReleaseRefused(LeadError):
    pass


# -- who can be told / can claim ------------------------------------------------------------------


def held_counts(pool: Pool, rep_ids: list[int] | None = None) -> dict[int, int]:
    """Open leads each member holds that were claimed from `pool`."""
    qs = Lead.objects.filter(pool=pool, claimed_at__isnull=False, status__in=HELD_STATUSES, owner__isnull=False)
    if rep_ids is not None:
        qs = qs.filter(owner_id__in=rep_ids)
    return dict(qs.values_list("owner_id").annotate(n=Count("id")))


def claims_since(pool: Pool, since: dt.datetime, rep_ids: list[int] | None = None) -> dict[int, int]:
    qs = LeadEvent.objects.filter(pool=pool, kind=LeadEvent.Kind.CLAIMED, at__gte=since, rep__isnull=False)
    if rep_ids is not None:
        qs = qs.filter(rep_id__in=rep_ids)
    return dict(qs.values_list("rep_id").annotate(n=Count("id")))


@dataclass
class MemberState:
    rep: Rep
    held: int
    claimed_24h: int
    reason: str | None  # why the member cannot take a lead now; None = available


def member_states(pool: Pool, now: dt.datetime) -> list[MemberState]:
    reps = list(
        Rep.objects.filter(pool_memberships__pool=pool)
        .select_related("user")
        .prefetch_related("working_hours", "time_off")
    )
    ids = [r.pk for r in reps]
    held = held_counts(pool, ids)
    daily = claims_since(pool, now - dt.timedelta(hours=24), ids) if pool.daily_claim_cap else {}
    out = []
    for rep in reps:
        reason = schedule_for(rep).unavailable_reason(now)
        h, d = held.get(rep.pk, 0), daily.get(rep.pk, 0)
        if reason is None and pool.claim_limit is not None and h >= pool.claim_limit:
            reason = f"at the claim limit ({h} of {pool.claim_limit})"
        if reason is None and pool.daily_claim_cap is not None and d >= pool.daily_claim_cap:
            reason = f"at the daily claim cap ({d} of {pool.daily_claim_cap})"
        out.append(MemberState(rep=rep, held=h, claimed_24h=d, reason=reason))
    return out


def available_members(pool: Pool, now: dt.datetime) -> list[Rep]:
    return [m.rep for m in member_states(pool, now) if m.reason is None]


# -- entering and announcing ----------------------------------------------------------------------


def lead_enter_pool(lead: Lead, pool: Pool, *, rule=None, now: dt.datetime | None = None, actor=None) -> Lead:
    """Put an unowned lead into `pool` (inside the caller's transaction) and write the `pooled` event.

    A shotgun pool announces the lead at once to every member who could take it.
    """
    now = now or timezone.now()
    lead.status = Lead.Status.POOLED
    lead.pool = pool
    lead.owner = None
    lead.rule = rule
    lead.pooled_at = lead.pooled_at or now
    lead.routed_at = lead.routed_at or now
    lead.pool_due_at = now + dt.timedelta(minutes=pool.window_minutes) if pool.window_minutes else None
    lead.pool_stage = ""
    lead.save(
        update_fields=[
            "status", "pool", "owner", "rule", "pooled_at", "routed_at", "pool_due_at", "pool_stage", "updated_at"
        ]
    )
    record_event(lead, LeadEvent.Kind.POOLED, at=now, actor=actor, pool=pool, rule=rule, mode=pool.mode)
    if pool.mode == Pool.Mode.SHOTGUN:
        lead_announce(lead, pool, now=now, actor=actor)
    return lead


def lead_announce(lead: Lead, pool: Pool, *, now: dt.datetime, actor=None, reason: str = "entered") -> list[Rep]:
    """Tell every available member of `pool` about `lead` at once (inside the caller's transaction).

    Writes the `announced` event naming who was told, the board's announcement rows, and queues the
    notification for after commit so a rolled-back announcement tells no one.
    """
    states = member_states(pool, now)
    told = [m.rep for m in states if m.reason is None]
    skipped = {m.rep.username: m.reason for m in states if m.reason is not None}
    # A re-announcement (after a release or a timeout) replaces the earlier one.
    PoolAnnouncement.objects.filter(lead=lead).delete()
    PoolAnnouncement.objects.bulk_create([PoolAnnouncement(lead=lead, rep=r, pool=pool, at=now) for r in told])
    rep_ids = [r.pk for r in told]
    record_event(
        lead, LeadEvent.Kind.ANNOUNCED, at=now, actor=actor, pool=pool,
        rep_ids=rep_ids, reps=[r.username for r in told], skipped=skipped, reason=reason,
    )
    if rep_ids:
        lead_id = lead.pk
        transaction.on_commit(lambda: lead_notify(lead_id, "announced", rep_ids=rep_ids))
    return told


# -- claiming -------------------------------------------------------------------------------------


def _sla_due(lead: Lead, rep: Rep, now: dt.datetime) -> dt.datetime | None:
    minutes = sla_minutes_for(lead)
    return sla_due_at(rep, now, minutes) if minutes else None


def _refuse(lead: Lead, pool: Pool, rep: Rep, actor, now: dt.datetime, message: str, reason: str, **detail):
    record_event(
        lead, LeadEvent.Kind.CLAIM_REFUSED, at=now, actor=actor, rep=rep, pool=pool,
        reason=reason, message=message, **detail,
    )
    return ClaimRefused(message, reason=reason, **detail)


def lead_for_claim(rep: Rep, pk: int) -> Lead:
    """The lead a rep tries to claim, scoped by permission: Lead.DoesNotExist unless it is (or was)
    in one of their pools, NotAMember for a waiting lead of someone else's pool. A lead pushed to
    another rep is never revealed."""
    lead = Lead.objects.select_related("pool", "owner__user").get(pk=pk, pool__isnull=False)
    if lead.owner_id == rep.pk:
        return lead
    if not PoolMembership.objects.filter(pool_id=lead.pool_id, rep=rep).exists():
        if lead.status == Lead.Status.POOLED and lead.owner_id is None:
            raise NotAMember("You are not a member of this lead's pool.")
        raise Lead.DoesNotExist
    return lead


# What a member at the claim limit can do about it: a lead counts until it is won or lost, and only
# one not worked yet (still `assigned`) can go back to the pool.
LIMIT_WAY_OUT = "Mark one won or lost, or release one you have not contacted yet, before claiming another."


def lead_claim(lead: Lead, *, rep: Rep, actor=None, now: dt.datetime | None = None) -> Lead:
    """Claim a waiting pool lead for `rep`. Exactly one concurrent claimer wins.

    Raises NotAMember (the rep is not in the lead's pool; nothing is written) or ClaimRefused
    (taken, at the limit, not waiting; a `claim_refused` event says why). A repeat claim by the
    current owner (a double click) returns the lead without a second claim.
    """
    now = now or timezone.now()
    if connection.vendor == "postgresql":
        return _claim_postgres(lead.pk, rep, actor, now)
    with transaction.atomic():
        if connection.vendor == "sqlite":
            # SQLite ignores FOR UPDATE. Writing first takes its database-wide write lock, which
            # serialises claims just as the member row lock does on PostgreSQL.
            PoolMembership.objects.filter(rep=rep).update(joined_at=F("joined_at"))
        current = Lead.objects.select_related("pool", "rule", "owner__user").get(pk=lead.pk)
        pool = current.pool
        # Serialise this member's claims: the limit check below and the UPDATE commit together.
        membership = (
            PoolMembership.objects.select_for_update().filter(pool_id=current.pool_id, rep=rep).first()
            if current.pool_id else None
        )
        if membership is None:
            raise NotAMember("You are not a member of the pool this lead is in.")
        if current.owner_id == rep.pk:
            return current
        if current.owner_id is not None or current.status != Lead.Status.POOLED:
            # "Taken by X" tells the rep more than their own limit would.
            refusal = _refuse_taken(current.pk, pool, rep, actor, now)
        else:
            claimed = _claim_within_limits(current, pool, rep, actor, now)
            if isinstance(claimed, Lead):
                return claimed
            refusal = claimed
    # The refusal event is committed; the caller gets the reason.
    raise refusal


# -- the PostgreSQL claim: one round trip instead of eight -----------------------------------------
#
# 20 reps hammering one pool wait mostly for round trips and for the ORM's Python (one process's
# claimers share one interpreter). So on PostgreSQL a claim is ONE round trip carrying two
# statements, run as one implicit transaction (autocommit; or inside the caller's transaction):
#   1. lock the member's row of the lead's pool (serialises this member's claims);
#   2. read the lead, count what the member holds (and claimed today), make the conditional UPDATE,
#      delete the lead's announcements and write the `claimed` event.
# They must stay two statements: a statement reads with the snapshot taken when it *started*, so a
# count in the locking statement could miss a claim by the same member that committed while we
# waited for the lock — and let a 6th claim through a limit of 5. The second statement starts after
# the lock is ours and sees every claim committed before it.
# Refusals write their event with a second, single INSERT.
#
# Both statements are server-side prepared once per connection (PREPARE … then EXECUTE …): parsing
# and planning the big statement cost the backend more CPU than running it, and its 6 kB of text
# was re-scanned by psycopg on every call. PREPARE/EXECUTE in SQL rather than psycopg's
# `prepare=True`, because Django opens connections with prepare_threshold=None (psycopg then never
# prepares) and because the extended protocol allows one statement per message — the two
# statements could no longer share one round trip and one implicit transaction.


def _lead_columns() -> list[str]:
    return [f.column for f in Lead._meta.concrete_fields]


@functools.cache
def _lead_decoding() -> tuple[list[str], list]:
    """Lead's attnames, and per column the field's from_db_value (or None), looked up once."""
    fields = Lead._meta.concrete_fields
    return [f.attname for f in fields], [getattr(f, "from_db_value", None) for f in fields]


def _lead_from_row(values) -> Lead:
    """A Lead from a raw row of `_lead_columns()`, with the fields' own decoding (the JSON `extra`)."""
    attnames, decoders = _lead_decoding()
    decoded = [v if dec is None else dec(v, None, connection) for dec, v in zip(decoders, values, strict=True)]
    return Lead.from_db(connection.alias, attnames, decoded)


@functools.cache
def _claim_statements() -> tuple[str, str]:
    """The lock and the claim statement, with %(name)s placeholders (see _CLAIM_PARAMS)."""
    from django.contrib.auth import get_user_model

    from reps.models import Rep as RepModel
    from routing.models import Rule

    lead, events = Lead._meta.db_table, LeadEvent._meta.db_table
    members = PoolMembership._meta.db_table
    columns = ", ".join(f"l.{c}" for c in _lead_columns())
    lock = f"""
        SELECT 1 FROM {members}
        WHERE rep_id = %(rep)s AND pool_id = (SELECT pool_id FROM {lead} WHERE id = %(lead)s)
        FOR UPDATE"""
    claim = f"""
        WITH cur AS (
            SELECT {columns},
                   p.name AS p_name, p.mode AS p_mode, p.claim_limit AS p_limit, p.daily_claim_cap AS p_cap,
                   p.window_minutes AS p_window, p.on_timeout AS p_on_timeout, p.sla_minutes AS p_sla,
                   COALESCE(NULLIF(r.sla_minutes, 0), NULLIF(p.sla_minutes, 0)) AS sla,
                   ou.username AS o_username, ou.first_name AS o_first, ou.last_name AS o_last,
                   EXISTS (SELECT 1 FROM {members} m WHERE m.pool_id = l.pool_id AND m.rep_id = %(rep)s) AS member
            FROM {lead} l
            LEFT JOIN {Pool._meta.db_table} p ON p.id = l.pool_id
            LEFT JOIN {Rule._meta.db_table} r ON r.id = l.rule_id
            LEFT JOIN {RepModel._meta.db_table} o ON o.id = l.owner_id
            LEFT JOIN {get_user_model()._meta.db_table} ou ON ou.id = o.user_id
            WHERE l.id = %(lead)s
        ), held AS (
            SELECT count(*) AS n FROM {lead}
            WHERE pool_id = (SELECT pool_id FROM cur) AND owner_id = %(rep)s AND claimed_at IS NOT NULL
              AND status IN ('assigned', 'contacted', 'qualified')
        ), daily AS (
            SELECT count(*) AS n FROM {events}
            WHERE pool_id = (SELECT pool_id FROM cur) AND kind = 'claimed' AND rep_id = %(rep)s
              AND at >= %(now)s - interval '24 hours' AND (SELECT p_cap FROM cur) IS NOT NULL
        ), won AS (
            UPDATE {lead} SET owner_id = %(rep)s, status = 'assigned', claimed_at = %(now)s, assigned_at = %(now)s,
                sla_due_at = %(due)s, escalation_step = 0, pool_due_at = NULL, updated_at = %(now)s
            WHERE id = %(lead)s AND owner_id IS NULL AND status = 'pooled'
              AND pool_id = (SELECT pool_id FROM cur WHERE member)
              AND (SELECT p_limit IS NULL OR (SELECT n FROM held) < p_limit FROM cur)
              AND (SELECT p_cap IS NULL OR (SELECT n FROM daily) < p_cap FROM cur)
              -- A lead with an SLA needs its deadline in the member's working minutes: computed in Python.
              AND (%(due)s::timestamptz IS NOT NULL OR (SELECT sla FROM cur) IS NULL)
            RETURNING id, pool_stage
        ), gone AS (
            DELETE FROM {PoolAnnouncement._meta.db_table} WHERE lead_id IN (SELECT id FROM won)
        ), event AS (
            INSERT INTO {events} (lead_id, kind, at, actor_id, rep_id, rule_id, pool_id, detail)
            SELECT won.id, 'claimed', %(now)s, %(actor)s, %(rep)s, NULL, cur.pool_id,
                   jsonb_build_object('held', (SELECT n FROM held) + 1, 'limit', cur.p_limit)
            FROM won, cur
        ), taken AS (
            -- Already someone else's when this statement started: the refusal is written right here.
            SELECT cur.id, cur.pool_id, cur.o_username,
                   COALESCE(NULLIF(btrim(cur.o_first || ' ' || cur.o_last), ''), cur.o_username) AS who,
                   COALESCE(cur.claimed_at, cur.assigned_at, %(now)s) AS since
            FROM cur WHERE cur.member AND cur.owner_id IS NOT NULL AND cur.owner_id <> %(rep)s
        ), refused AS (
            INSERT INTO {events} (lead_id, kind, at, actor_id, rep_id, rule_id, pool_id, detail)
            SELECT id, 'claim_refused', %(now)s, %(actor)s, %(rep)s, NULL, pool_id, jsonb_build_object(
                'reason', 'taken', 'owner', o_username, 'owner_name', who, 'claimed_at', to_jsonb(since),
                'message', 'Already claimed by ' || who || ' at '
                           || to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC.')
            FROM taken
            RETURNING detail
        )
        SELECT cur.*, (SELECT count(*) FROM won), (SELECT n FROM held), (SELECT n FROM daily),
               (SELECT detail::text FROM refused),
               -- Outside a caller's transaction, when nothing changed hands (a refusal, a double
               -- click): commit without waiting for the WAL flush — see _refuse_fast. A claim
               -- always waits.
               (SELECT set_config('synchronous_commit', 'off', true)
                WHERE %(relaxed)s AND NOT EXISTS (SELECT 1 FROM won))
        FROM cur"""
    return lock, claim


# Parameters of the two prepared statements, in order, with their types. Ids as bigint: comparing an
# integer column with a bigint parameter still uses the column's index.
_CLAIM_LOCK_PARAMS = {"lead": "bigint", "rep": "bigint"}
_CLAIM_PARAMS = {"lead": "bigint", "rep": "bigint", "now": "timestamptz", "due": "timestamptz", "actor": "bigint",
                 "relaxed": "boolean"}
_CLAIM_EXECUTE = "; ".join(
    f"EXECUTE {name}(" + ", ".join(f"%({p})s" for p in params) + ")"
    for name, params in (("leadops_claim_lock", _CLAIM_LOCK_PARAMS), ("leadops_claim", _CLAIM_PARAMS))
)


@functools.cache
def _claim_prepare_sql() -> dict[str, str]:
    """The PREPARE statement of each claim statement, by name."""
    def prepare(name: str, params: dict[str, str], sql: str) -> str:
        numbers = {p: f"${i}" for i, p in enumerate(params, 1)}
        return f"PREPARE {name} ({', '.join(params.values())}) AS " + re.sub(
            r"%\((\w+)\)s", lambda m: numbers[m[1]], sql
        )

    lock, claim = _claim_statements()
    return {"leadops_claim_lock": prepare("leadops_claim_lock", _CLAIM_LOCK_PARAMS, lock),
            "leadops_claim": prepare("leadops_claim", _CLAIM_PARAMS, claim)}


def _prepare_claim(cursor) -> None:
    """PREPARE the claim statements once per database session. Prepared statements live as long as
    the session (a rolled-back transaction keeps them), so marking the raw connection is enough;
    a new connection (CONN_MAX_AGE, a reconnect) prepares again. The session is asked which ones it
    already has: a PREPARE that half-succeeded (the first statement prepared, the second cancelled)
    would otherwise make every later claim fail with "already exists". A pooler in transaction
    mode, or DISCARD ALL, would drop them behind our back: connect to PostgreSQL directly."""
    raw = connection.connection
    if getattr(connection, "_claim_prepared_on", None) is not raw:
        statements = _claim_prepare_sql()
        cursor.execute("SELECT name FROM pg_prepared_statements WHERE name = ANY(%s)", [list(statements)])
        have = {name for (name,) in cursor.fetchall()}
        missing = [sql for name, sql in statements.items() if name not in have]
        if missing:
            cursor.execute(";\n".join(missing))
        connection._claim_prepared_on = raw


def _claim_postgres(lead_id: int, rep: Rep, actor, now: dt.datetime, due: dt.datetime | None = None) -> Lead:
    params = {"lead": lead_id, "rep": rep.pk, "now": now, "due": due, "actor": getattr(actor, "pk", None),
              "relaxed": not connection.in_atomic_block}
    with connection.cursor() as cursor:
        _prepare_claim(cursor)
        cursor.execute(_CLAIM_EXECUTE, params)
        cursor.nextset()
        row = cursor.fetchone()
        if row is None:
            raise Lead.DoesNotExist("No such lead.")
        n = len(_lead_columns())
        lead = _lead_from_row(row[:n])
        (name, mode, limit, cap, window, on_timeout, pool_sla, sla, _owner, _first, _last,
         member, won, held, claimed_today, refused, _relaxed) = row[n:]
        if lead.pool_id is None or not member:
            raise NotAMember("You are not a member of the pool this lead is in.")
        pool = Pool(id=lead.pool_id, name=name, mode=mode, claim_limit=limit, daily_claim_cap=cap,
                    window_minutes=window, on_timeout=on_timeout, sla_minutes=pool_sla)
        lead.pool = pool
        if won:
            lead.owner = rep
            lead.status = Lead.Status.ASSIGNED
            lead.claimed_at = lead.assigned_at = lead.updated_at = now
            lead.sla_due_at, lead.escalation_step, lead.pool_due_at = due, 0, None
            return lead
        if lead.owner_id == rep.pk:
            lead.owner = rep  # a double click: already theirs
            return lead
        if refused is not None:
            # "Taken by X" tells the rep more than their own limit would; the statement wrote the event.
            detail = json.loads(refused)
            raise ClaimRefused(detail.pop("message"), **detail)
        if lead.status != Lead.Status.POOLED:
            raise _refuse_fast(cursor, lead.pk, pool, rep, actor, now, "This lead is no longer waiting in the pool.",
                               "not_waiting", status=lead.status)
        if limit is not None and held >= limit:
            raise _refuse_fast(
                cursor, lead.pk, pool, rep, actor, now,
                f"You hold {held} of {limit} leads from the {name} pool. {LIMIT_WAY_OUT}",
                "claim_limit", held=held, limit=limit,
            )
        if cap is not None and claimed_today >= cap:
            raise _refuse_fast(
                cursor, lead.pk, pool, rep, actor, now,
                f"You claimed {claimed_today} of {cap} leads allowed from the {name} pool in 24 hours.",
                "daily_cap", claimed=claimed_today, cap=cap,
            )
    if sla is not None and due is None:
        # Waiting, within limits, with an SLA: again, with the deadline in the member's working minutes.
        return _claim_postgres(lead_id, rep, actor, now, due=sla_due_at(rep, now, sla))
    # Lost the race: the winner committed after our read. Say who it was.
    raise _refuse_taken(lead_id, pool, rep, actor, now)


def _refuse_fast(cursor, lead_id: int, pool: Pool, rep: Rep, actor, now: dt.datetime, message: str, reason: str,
                 **detail) -> ClaimRefused:
    """`_refuse` in one INSERT, without building model instances (refusals are half the traffic of a busy pool).

    Outside a caller's transaction the INSERT commits without waiting for the WAL flush
    (synchronous_commit off, for this one transaction only). That is safe here and only here: a
    refusal changes no lead, so a crash in the next fraction of a second can lose at most this
    audit line — never a claim, which always waits for its flush. A caller's transaction may hold
    other writes, so inside one the setting is left alone."""
    relaxed = "" if connection.in_atomic_block else "SET LOCAL synchronous_commit = off; "
    cursor.execute(
        f"{relaxed}INSERT INTO {LeadEvent._meta.db_table} "
        "(lead_id, kind, at, actor_id, rep_id, rule_id, pool_id, detail) "
        "VALUES (%s, 'claim_refused', %s, %s, %s, NULL, %s, %s::jsonb)",
        [lead_id, now, getattr(actor, "pk", None), rep.pk, pool.pk,
         json.dumps({"reason": reason, "message": message, **detail}, cls=DjangoJSONEncoder)],
    )
    return ClaimRefused(message, reason=reason, **detail)


def _claim_within_limits(lead: Lead, pool: Pool, rep: Rep, actor, now: dt.datetime) -> Lead | ClaimRefused:
    """Inside lead_claim's transaction, with the member row locked: check the limits, then the
    conditional UPDATE. Returns the claimed lead, or the (recorded) refusal."""
    held = held_counts(pool, [rep.pk]).get(rep.pk, 0)
    if pool.claim_limit is not None and held >= pool.claim_limit:
        return _refuse(
            lead, pool, rep, actor, now,
            f"You hold {held} of {pool.claim_limit} leads from the {pool.name} pool. {LIMIT_WAY_OUT}",
            "claim_limit", held=held, limit=pool.claim_limit,
        )
    if pool.daily_claim_cap is not None:
        claimed_today = claims_since(pool, now - dt.timedelta(hours=24), [rep.pk]).get(rep.pk, 0)
        if claimed_today >= pool.daily_claim_cap:
            return _refuse(
                lead, pool, rep, actor, now,
                f"You claimed {claimed_today} of {pool.daily_claim_cap} leads allowed from the {pool.name} pool "
                "in 24 hours.",
                "daily_cap", claimed=claimed_today, cap=pool.daily_claim_cap,
            )
    changes = {
        "owner": rep, "status": Lead.Status.ASSIGNED, "claimed_at": now, "assigned_at": now,
        "sla_due_at": _sla_due(lead, rep, now), "escalation_step": 0, "pool_due_at": None, "updated_at": now,
    }
    won = Lead.objects.filter(pk=lead.pk, owner__isnull=True, status=Lead.Status.POOLED, pool=pool).update(**changes)
    if won != 1:
        return _refuse_taken(lead.pk, pool, rep, actor, now)
    for field, value in changes.items():
        setattr(lead, field, value)
    # Only shotgun pools (or a shotgun timeout) leave announcements behind.
    if pool.mode == Pool.Mode.SHOTGUN or lead.pool_stage == Pool.OnTimeout.SHOTGUN:
        PoolAnnouncement.objects.filter(lead=lead).delete()
    record_event(lead, LeadEvent.Kind.CLAIMED, at=now, actor=actor, rep=rep, pool=pool,
                 held=held + 1, limit=pool.claim_limit)
    return lead


def _refuse_taken(lead_id: int, pool: Pool, rep: Rep, actor, now: dt.datetime) -> ClaimRefused:
    lead = Lead.objects.select_related("owner__user").get(pk=lead_id)
    if lead.owner_id is None:
        return _refuse(lead, pool, rep, actor, now, "This lead is no longer waiting in the pool.", "not_waiting",
                       status=lead.status)
    when = lead.claimed_at or lead.assigned_at or now
    who = lead.owner.display_name
    return _refuse(
        lead, pool, rep, actor, now,
        f"Already claimed by {who} at {when:%Y-%m-%d %H:%M} UTC.",
        "taken", owner=lead.owner.username, owner_name=who, claimed_at=when.isoformat(),
    )


# -- giving back ----------------------------------------------------------------------------------


def _back_to_pool(lead: Lead, pool: Pool, *, expected_owner_id: int, now: dt.datetime) -> bool:
    return (
        Lead.objects.filter(pk=lead.pk, owner_id=expected_owner_id, pool=pool, status=Lead.Status.ASSIGNED).update(
            owner=None, status=Lead.Status.POOLED, claimed_at=None, assigned_at=None, sla_due_at=None,
            escalation_step=0, pool_stage="", updated_at=now,
            pool_due_at=now + dt.timedelta(minutes=pool.window_minutes) if pool.window_minutes else None,
        )
        == 1
    )


def lead_release(
    lead: Lead, *, rep: Rep, reason: str = "", actor=None, now: dt.datetime | None = None, taken_back: bool = False
) -> Lead:
    """Give a claimed lead back to its pool (only before it was worked: status `assigned`).

    Writes `released` with the reason; a shotgun pool announces it again.
    """
    now = now or timezone.now()
    with transaction.atomic():
        current = Lead.objects.select_related("pool").get(pk=lead.pk)
        if current.owner_id != rep.pk:
            raise ReleaseRefused("You do not hold this lead.")
        if current.pool is None:
            raise ReleaseRefused("This lead was not taken from a pool, so there is no pool to give it back to.")
        if current.status != Lead.Status.ASSIGNED:
            raise ReleaseRefused(f"A {current.get_status_display().lower()} lead cannot go back to the pool.")
        pool = current.pool
        if not _back_to_pool(current, pool, expected_owner_id=rep.pk, now=now):
            raise ReleaseRefused("This lead changed hands meanwhile; reload and try again.")
        current.refresh_from_db()
        record_event(current, LeadEvent.Kind.RELEASED, at=now, actor=actor, rep=rep, pool=pool,
                     reason=reason or "no reason given", taken_back=taken_back)
        if pool.mode == Pool.Mode.SHOTGUN:
            lead_announce(current, pool, now=now, actor=actor, reason="released")
    return current


def lead_take_back(lead: Lead, *, actor, reason: str = "", now: dt.datetime | None = None) -> Lead:
    """A manager returns a claimed lead to its pool (e.g. a hoarded lead)."""
    current = Lead.objects.select_related("owner").get(pk=lead.pk)
    if current.owner is None:
        raise ReleaseRefused("Nobody holds this lead.")
    return lead_release(current, rep=current.owner, reason=reason or "taken back by a manager", actor=actor,
                        now=now, taken_back=True)


# -- timeouts -------------------------------------------------------------------------------------


def _load_balanced(reps: list[Rep], now: dt.datetime) -> Rep | None:
    """Lowest open leads ÷ capacity, ties at random — the engine's rule (routing/engine.py keeps its
    version private to its pure data types, so this is the same rule over model instances)."""
    if not reps:
        return None
    load = dict(
        Lead.objects.filter(owner__in=reps, status__in=Lead.LOAD_STATUSES)
        .values_list("owner_id")
        .annotate(n=Count("id"))
    )
    day = dict(
        Lead.objects.filter(owner__in=reps, assigned_at__gte=now - dt.timedelta(hours=24))
        .values_list("owner_id")
        .annotate(n=Count("id"))
    )
    free = [
        r for r in reps
        if (r.capacity is None or load.get(r.pk, 0) < r.capacity)
        and (r.daily_cap is None or day.get(r.pk, 0) < r.daily_cap)
    ]
    # Unlimited capacity counts as the largest capacity present, so unlimited reps share by open count.
    default_cap = max([r.capacity for r in free if r.capacity] or [1])
    scored = [(load.get(r.pk, 0) / (r.capacity or default_cap), r) for r in free]
    if not scored:
        return None
    best = min(s for s, _ in scored)
    return random.choice([r for s, r in scored if s == best])


def _push(lead: Lead, pool: Pool, now: dt.datetime) -> bool:
    states = member_states(pool, now)
    rep = _load_balanced([m.rep for m in states if m.reason is None], now)
    if rep is None:
        # Nobody can take it now: try again when the first member starts work (or after another
        # window), so a night-time timeout is pushed in the morning rather than never.
        starts = [t for m in states if (t := schedule_for(m.rep).next_available(now)) is not None and t > now]
        retry_at = min([*starts, now + dt.timedelta(minutes=pool.window_minutes or 15)])
        Lead.objects.filter(pk=lead.pk).update(pool_stage="", pool_due_at=retry_at)
        record_event(lead, LeadEvent.Kind.UNASSIGNED, at=now, pool=pool, reason="pool timeout: no member available",
                     action="push", retry_at=retry_at.isoformat())
        return False
    done = Lead.objects.filter(pk=lead.pk, owner__isnull=True, status=Lead.Status.POOLED).update(
        owner=rep, status=Lead.Status.ASSIGNED, assigned_at=now, sla_due_at=_sla_due(lead, rep, now), escalation_step=0,
        updated_at=now,
    )
    if done != 1:
        return False
    PoolAnnouncement.objects.filter(lead=lead).delete()
    record_event(lead, LeadEvent.Kind.ROUTED, at=now, rep=rep, pool=pool, strategy="load_balanced",
                 reason=f"unclaimed for {pool.window_minutes} minutes in the {pool.name} pool")
    lead_id = lead.pk
    transaction.on_commit(lambda: lead_notify(lead_id, "assigned"))
    return True


def pool_timeout_sweep(now: dt.datetime | None = None) -> dict[str, int]:
    """Apply each overdue pool lead's `on_timeout` action once.

    `Lead.pool_stage` records the action taken, and the stage is claimed with a conditional UPDATE
    before acting, so a second sweep at the same `now` (or a concurrent worker) does nothing.
    Returns counts per action.
    """
    now = now or timezone.now()
    counts = {"shotgun": 0, "push": 0, "escalate": 0, "stay": 0, "push_failed": 0}
    due = list(
        Lead.objects.filter(status=Lead.Status.POOLED, owner__isnull=True, pool__isnull=False, pool_stage="",
                            pool_due_at__lte=now)
        .order_by("pool_due_at")
        .values_list("pk", flat=True)
    )
    for lead_id in due:
        with transaction.atomic():
            lead = Lead.objects.select_related("pool", "rule").filter(pk=lead_id).first()
            if lead is None or lead.pool is None:
                continue
            pool = lead.pool
            action = pool.on_timeout
            taken = Lead.objects.filter(
                pk=lead_id, status=Lead.Status.POOLED, owner__isnull=True, pool_stage=""
            ).update(pool_stage=action)
            if taken != 1:
                continue
            lead.pool_stage = action
            if action == Pool.OnTimeout.SHOTGUN:
                lead_announce(lead, pool, now=now, reason="pool timeout")
            elif action == Pool.OnTimeout.PUSH:
                if not _push(lead, pool, now):
                    counts["push_failed"] += 1
                    continue
            elif action == Pool.OnTimeout.ESCALATE:
                manager_ids = list(pool.managers.values_list("pk", flat=True))
                record_event(lead, LeadEvent.Kind.ESCALATED, at=now, pool=pool, reason="pool timeout",
                             rep_ids=manager_ids, window_minutes=pool.window_minutes)
                transaction.on_commit(
                    lambda lead_id=lead_id, ids=manager_ids: lead_notify(lead_id, "pool_timeout", rep_ids=ids)
                )
            counts[action] += 1
    return counts


# -- read side for the manager's pages ------------------------------------------------------------


def hoarding(now: dt.datetime) -> Q:
    """A hoarded lead: claimed from a pool and not touched within its SLA (or HOARD_AFTER_WITHOUT_SLA
    without one). The one definition behind every page that counts hoarding."""
    return (
        (Q(sla_due_at__lt=now) | Q(sla_due_at__isnull=True, claimed_at__lt=now - HOARD_AFTER_WITHOUT_SLA))
        & Q(claimed_at__isnull=False, first_touch_at__isnull=True, status=Lead.Status.ASSIGNED)
    )


def _hoarded(now: dt.datetime):
    return Lead.objects.filter(hoarding(now))


def hoarded_leads(pool: Pool, now: dt.datetime):
    """Leads claimed from `pool` and not touched within their SLA (or a default window without one)."""
    return _hoarded(now).filter(pool=pool)


def hoarded_counts(now: dt.datetime) -> dict[int, int]:
    """Hoarded leads per pool id, in one grouped query (for the managers' pools overview)."""
    return dict(_hoarded(now).filter(pool__isnull=False).values_list("pool_id").annotate(n=Count("id")))

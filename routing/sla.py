"""SLA clocks and the escalation ladder.

A lead's first-touch deadline (`Lead.sla_due_at`) is counted in the owner's *working* minutes.
When a deadline passes with no touch, the sweep climbs one rung of the rule's ladder:

    step 1  remind    — tell the owner again
    step 2  reassign  — give the lead to the next available candidate of the same rule
    step 3  notify    — tell `escalate_to` (usernames or {"levels": [...]})

The first missed deadline writes `sla_breached`; every rung writes one `escalated` event with
`detail.step`. `Lead.escalation_step` records the rung taken, and each rung sets the next
deadline (the SLA again, in working minutes from the step time), so a step is taken once even
when sweeps overlap, repeat at the same `--now`, or run late after a clock jump.

A sweep takes the common rungs a batch of leads at a time (one claiming statement, bulk writes, one
commit per batch); a crash mid-sweep keeps the committed batches and the next sweep does the rest.
Reassignments go through the engine one lead per transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from reps.availability import Schedule, schedule_for
from reps.models import Rep
from routing.models import Lead, LeadEvent, Rule
from routing.services import record_event

log = logging.getLogger(__name__)

REMIND = "remind"
REASSIGN = "reassign"
NOTIFY = "notify"
LADDER_ACTIONS = (REMIND, REASSIGN, NOTIFY)
DEFAULT_LADDER = (REMIND, REASSIGN, NOTIFY)
# Used for the next rung when neither the rule nor the pool says how long an SLA is.
DEFAULT_SLA_MINUTES = 60


class LadderError(ValueError):
    pass


# -- deadlines ---------------------------------------------------------------------------------


def sla_due_at(
    rep: Rep | None, start: dt.datetime, minutes: float, *, schedules: dict[int, Schedule] | None = None
) -> dt.datetime:
    """The moment `minutes` of `rep`'s working time have passed since `start` (UTC).

    Skips nights, weekends, time off and the rep's public holidays. A rep who will never work
    again (inactive, no shifts within the horizon) falls back to wall-clock minutes, so that the
    lead is still escalated rather than forgotten. `schedules` caches Schedules by rep id across
    many calls (a sweep asks for the same reps again and again).
    """
    if rep is not None:
        if schedules is None:
            schedule = schedule_for(rep)
        else:
            schedule = schedules.get(rep.pk) or schedules.setdefault(rep.pk, schedule_for(rep))
        due = schedule.add_working_minutes(start, minutes)
        if due is not None:
            return due
    return start + dt.timedelta(minutes=minutes)


def sla_minutes_for(lead: Lead) -> int | None:
    """The SLA length that applies to the lead: its rule's, else its pool's."""
    if lead.rule and lead.rule.sla_minutes:
        return lead.rule.sla_minutes
    if lead.pool_id and lead.pool.sla_minutes:
        return lead.pool.sla_minutes
    return None


# -- the ladder -------------------------------------------------------------------------------


def validate_ladder(value: Any) -> list[str]:
    """Check a Rule.ladder value (a list of action names); return it normalised."""
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LadderError("ladder must be a list of steps, e.g. [\"remind\", \"reassign\", \"notify\"]")
    unknown = [v for v in value if v not in LADDER_ACTIONS]
    if unknown:
        raise LadderError(f"unknown ladder step {unknown[0]!r} (use {', '.join(LADDER_ACTIONS)})")
    return list(value)


def ladder_for(rule: Rule | None) -> tuple[str, ...]:
    if rule is not None and rule.ladder:
        try:
            return tuple(validate_ladder(rule.ladder))
        except LadderError:
            # A bad ladder in the database must not stop escalation: the default ladder is safer.
            log.warning("rule %s has an invalid ladder %r; using the default", rule.pk, rule.ladder)
    return DEFAULT_LADDER


def escalation_recipients(rule: Rule | None, *, exclude: Iterable[int] = ()) -> dict[str, list]:
    """Who `notify` tells: {"rep_ids": [...], "emails": [...]}.

    `escalate_to` is a list of usernames (reps, or plain users such as a sales manager without a
    rep profile, reached by email) or {"levels": [...]} (every active rep at those levels).
    Without `escalate_to`, the Managers group is told so that a missed SLA never goes unheard.
    """
    from leadops.roles import MANAGERS

    spec = rule.escalate_to if rule is not None else None
    excluded = set(exclude)
    rep_ids: list[int] = []
    emails: list[str] = []
    if isinstance(spec, dict) and spec.get("levels"):
        reps = Rep.objects.filter(level__in=spec["levels"], active=True).exclude(pk__in=excluded)
        rep_ids = list(reps.values_list("pk", flat=True))
    elif isinstance(spec, list) and spec:
        users = get_user_model().objects.filter(username__in=spec, is_active=True).select_related("rep")
        for user in users:
            rep = getattr(user, "rep", None)
            if rep is not None:
                if rep.pk not in excluded:
                    rep_ids.append(rep.pk)
            elif user.email:
                emails.append(user.email)
    else:
        users = get_user_model().objects.filter(Q(groups__name=MANAGERS) | Q(is_superuser=True), is_active=True)
        emails = sorted({u.email for u in users if u.email})
    return {"rep_ids": rep_ids, "emails": emails}


# -- reassignment -----------------------------------------------------------------------------


def _reassign(lead: Lead, *, now: dt.datetime, actor, old_owner: Rep | None) -> Lead | None:
    """Hand the lead to the next available candidate of the published rules, leaving out its owner.

    The engine moves the rotation pointer and writes the `reassigned` event; the new owner is told by
    `lead_escalate` once it has set the deadline. Returns the reloaded lead, or None when nobody can take it.
    """
    from routing.services import lead_route

    decision = lead_route(lead, now=now, actor=actor, exclude_reps=(old_owner,) if old_owner else (), notify=False)
    if decision.owner is None and decision.pool is None:
        return None
    return Lead.objects.select_related("rule", "pool", "owner__user").get(pk=lead.pk)


# -- one rung ---------------------------------------------------------------------------------


def overdue_leads(now: dt.datetime):
    """Leads whose first-touch deadline has passed, oldest deadline first (matches the partial index)."""
    return Lead.objects.filter(
        status=Lead.Status.ASSIGNED, first_touch_at__isnull=True, sla_due_at__lte=now
    ).order_by("sla_due_at", "id")


def lead_escalate(
    lead_id: int, *, now: dt.datetime, actor=None, schedules: dict[int, Schedule] | None = None
) -> dict[str, Any] | None:
    """Take the next rung of the ladder for one overdue lead, in its own transaction.

    Returns what was done, or None when the lead is no longer due (already stepped by another
    sweeper, touched, or locked by a sweeper working on it right now).
    """
    from routing.notify import lead_notify
    from routing.services import routing_locked

    with transaction.atomic():
        # A reassignment routes the lead: routing's locks come before the lead's (services.routing_locked).
        peek = overdue_leads(now).select_related("rule").filter(pk=lead_id).first()
        routing = peek is not None and _rung(peek) == REASSIGN
        if routing:
            routing_locked()
        # skip_locked: a concurrent sweeper holding this lead is already taking this very step.
        lead = (
            overdue_leads(now)
            .select_for_update(skip_locked=True, of=("self",))
            .select_related("rule", "pool", "owner__user")
            .filter(pk=lead_id)
            .first()
        )
        if lead is None:
            return None
        ladder = ladder_for(lead.rule)
        step = lead.escalation_step + 1
        if not routing and step <= len(ladder) and ladder[step - 1] == REASSIGN:
            return None  # its rung changed since the peek; the next sweep takes it, locks in order
        old_owner = lead.owner
        if step == 1:
            record_event(
                lead, LeadEvent.Kind.SLA_BREACHED, at=now, actor=actor, rep=old_owner, rule=lead.rule,
                due_at=lead.sla_due_at.isoformat(),
            )
        if step > len(ladder):
            # Ladder exhausted (it may have been shortened since): stop the clock, nothing to send.
            lead.escalation_step = step
            lead.sla_due_at = None
            lead.save(update_fields=["escalation_step", "sla_due_at", "updated_at"])
            return {"lead": lead.pk, "step": step, "action": None}

        action = ladder[step - 1]
        detail: dict[str, Any] = {"step": step, "action": action, "due_at": lead.sla_due_at.isoformat()}
        fields = ["escalation_step", "sla_due_at", "updated_at"]
        notify: list[tuple[str, dict[str, Any]]] = []
        escalated = None
        if action == REASSIGN:
            # Written first so the timeline reads "escalated (step 2) → reassigned"; completed below.
            escalated = record_event(lead, LeadEvent.Kind.ESCALATED, at=now, actor=actor, rep=old_owner,
                                     rule=lead.rule, **detail)

        if action == REASSIGN:
            limit = lead.rule.max_reassignments if lead.rule else None
            moved = None
            if limit is not None and lead.reassign_count >= limit:
                detail["reason"] = f"reassignment limit ({limit}) reached"
            else:
                moved = _reassign(lead, now=now, actor=actor, old_owner=old_owner)
                if moved is None:
                    detail["reason"] = "no other available candidate"
            if moved is not None:
                moved.escalation_step, moved.reassign_count = lead.escalation_step, lead.reassign_count + 1
                lead = moved
                fields.append("reassign_count")
                detail["from"] = old_owner.username if old_owner else None
                if lead.owner_id:
                    detail["to"] = lead.owner.username
                    # Told below, after the new deadline is set: the message names it.
                    notify.append(("reassigned", {}))
                else:
                    detail["to_pool"] = lead.pool.name if lead.pool_id else None
                reassigned = lead.events.filter(kind=LeadEvent.Kind.REASSIGNED, at=now).order_by("-id").first()
                if reassigned is not None:
                    # Say why on the engine's event: the timeline must explain the change of hands.
                    reassigned.detail = {**reassigned.detail, "step": step,
                                         "reason": f"first-touch SLA missed (due {detail['due_at']})"}
                    reassigned.save(update_fields=["detail"])
            else:
                # Nobody to hand it to: tell the escalation contacts instead, so the rung is not wasted.
                detail["instead"] = NOTIFY
                action = NOTIFY
        if action == REMIND:
            notify.append(("sla_reminder", {"rep_ids": [old_owner.pk] if old_owner else [], "step": step}))
        elif action == NOTIFY:
            who = escalation_recipients(lead.rule, exclude=[old_owner.pk] if old_owner else [])
            detail["to_reps"] = list(Rep.objects.filter(pk__in=who["rep_ids"]).values_list("user__username", flat=True))
            detail["to_emails"] = who["emails"]
            notify.append(("escalated", {**who, "step": step}))

        lead.escalation_step = step
        if step < len(ladder) and lead.status == Lead.Status.ASSIGNED:
            minutes = sla_minutes_for(lead) or getattr(settings, "LEADOPS_DEFAULT_SLA_MINUTES", DEFAULT_SLA_MINUTES)
            lead.sla_due_at = sla_due_at(lead.owner, now, minutes, schedules=schedules)
        else:
            lead.sla_due_at = None
        detail["next_due_at"] = lead.sla_due_at.isoformat() if lead.sla_due_at else None
        lead.save(update_fields=fields)

        # "action" stays the rung's; "instead" says what was done when it could not be.
        if escalated is None:
            record_event(lead, LeadEvent.Kind.ESCALATED, at=now, actor=actor, rep=old_owner, rule=lead.rule, **detail)
        else:
            escalated.detail = detail
            escalated.save(update_fields=["detail"])
        # Rows are written in this transaction (a rollback leaves none); delivery is queued on commit.
        for kind, context in notify:
            lead_notify(lead.pk, kind, now=now, **context)
    return {"lead": lead.pk, "step": step, "action": action}


# How many due leads one sweep transaction claims. Big enough that 1,000 due leads cost a handful of
# statements, small enough that a batch commits (and a crash loses) well under a second of work.
SWEEP_BATCH = 500


def _rung(lead: Lead) -> str | None:
    """The action the lead's next step takes (None: its ladder is exhausted)."""
    ladder = ladder_for(lead.rule)
    step = lead.escalation_step + 1
    return ladder[step - 1] if step <= len(ladder) else None


def sla_sweep(now: dt.datetime, *, batch: int | None = None, actor=None) -> dict[str, int]:
    """Escalate every overdue lead by one rung, in order of due time.

    The common rungs (remind, notify, an exhausted ladder) are taken a batch at a time: one
    statement claims up to `batch` due leads (FOR UPDATE SKIP LOCKED: a concurrent sweeper takes
    the others), then the new deadlines, the events and the notifications are written in bulk and
    the batch commits as one. A crash keeps the committed batches; the next sweep does the rest.
    A reassignment goes through the engine and stays a transaction of its own per lead: the batch
    stops in front of it, so the steps are still taken in order of due time.
    """
    batch = batch or SWEEP_BATCH
    escalated = 0
    cache = _SweepCache()
    last: tuple[dt.datetime, int] | None = None
    limit = batch
    while True:
        reassign: Lead | None = None
        with transaction.atomic():
            qs = overdue_leads(now)
            if last is not None:
                # Keyset pagination: a stepped lead gets a future deadline and drops out anyway, but one
                # that was skipped (locked by another sweeper) must not be fetched again forever.
                qs = qs.filter(Q(sla_due_at__gt=last[0]) | Q(sla_due_at=last[0], id__gt=last[1]))
            # skip_locked: a lead another sweeper holds is having this very step taken right now.
            leads = list(qs.select_for_update(skip_locked=True)[:limit])
            if not leads:
                break
            cache.attach(leads)
            cut = next((i for i, lead in enumerate(leads) if _rung(lead) == REASSIGN), len(leads))
            if cut < len(leads):
                reassign = leads[cut]
                last = (reassign.sla_due_at, reassign.pk)
            else:
                last = (leads[-1].sla_due_at, leads[-1].pk)
            escalated += _escalate_batch(leads[:cut], now=now, actor=actor, cache=cache)
        if reassign is None:
            limit = batch
            continue
        # Committed the rungs before it (and let go of the leads after it, which are claimed again).
        if lead_escalate(reassign.pk, now=now, actor=actor, schedules=cache.schedules) is not None:
            escalated += 1
        # Runs of reassignments claim small batches, so they do not lock hundreds of rows each time.
        limit = min(batch, max(8, 2 * (cut + 1)))
    return {"escalated": escalated}


class _SweepCache:
    """What one sweep asks for again and again: reps' schedules and each rule's escalation contacts."""

    def __init__(self) -> None:
        self.schedules: dict[int, Schedule] = {}
        self._recipients: dict[int | None, tuple[list[tuple[int, str]], list[str]]] = {}
        self._dues: dict[tuple[int | None, float], dt.datetime] = {}
        self._reps: dict[int, Rep] = {}
        self._rules: dict[int, Rule] = {}
        self._pools: dict[int, Any] = {}

    def attach(self, leads: list[Lead]) -> None:
        """Give the leads their owner (with user and team), rule and pool from a few queries per sweep
        instead of six model instances per row: a thousand due leads share a few dozen of each."""
        from routing.models import Pool

        for attr, store, query in (
            ("owner_id", self._reps, Rep.objects.select_related("user", "team")),
            ("rule_id", self._rules, Rule.objects.all()),
            ("pool_id", self._pools, Pool.objects.all()),
        ):
            missing = {getattr(lead, attr) for lead in leads} - set(store) - {None}
            if missing:
                store.update(query.in_bulk(missing))
        for lead in leads:
            lead.owner = self._reps.get(lead.owner_id) if lead.owner_id else None
            lead.rule = self._rules.get(lead.rule_id) if lead.rule_id else None
            lead.pool = self._pools.get(lead.pool_id) if lead.pool_id else None

    def due(self, rep: Rep | None, now: dt.datetime, minutes: float) -> dt.datetime:
        """The next deadline: the same for every lead of one owner stepped at one `now`."""
        key = (rep.pk if rep is not None else None, minutes)
        if key not in self._dues:
            self._dues[key] = sla_due_at(rep, now, minutes, schedules=self.schedules)
        return self._dues[key]

    def recipients(self, rule: Rule | None) -> tuple[list[tuple[int, str]], list[str]]:
        key = rule.pk if rule is not None else None
        if key not in self._recipients:
            who = escalation_recipients(rule)
            names = dict(Rep.objects.filter(pk__in=who["rep_ids"]).values_list("pk", "user__username"))
            self._recipients[key] = ([(pk, names[pk]) for pk in who["rep_ids"] if pk in names], who["emails"])
        return self._recipients[key]


def _escalate_batch(leads: list[Lead], *, now: dt.datetime, actor, cache: _SweepCache) -> int:
    """One rung for each of `leads` (locked, none of them a reassignment), written in bulk."""
    from routing.notify import Notice, events_insert, notices_write

    if not leads:
        return 0
    default_minutes = getattr(settings, "LEADOPS_DEFAULT_SLA_MINUTES", DEFAULT_SLA_MINUTES)
    events: list[LeadEvent] = []
    notices: list[Notice] = []
    for lead in leads:
        ladder = ladder_for(lead.rule)
        step = lead.escalation_step + 1
        owner = lead.owner
        due_at = lead.sla_due_at.isoformat()
        if step == 1:
            events.append(LeadEvent(lead=lead, kind=LeadEvent.Kind.SLA_BREACHED, at=now, actor=actor, rep=owner,
                                    rule=lead.rule, detail={"due_at": due_at}))
        lead.escalation_step = step
        if step > len(ladder):
            # Ladder exhausted (it may have been shortened since): stop the clock, nothing to send.
            lead.sla_due_at = None
            continue
        action = ladder[step - 1]
        detail: dict[str, Any] = {"step": step, "action": action, "due_at": due_at}
        if action == REMIND:
            notices.append(Notice(lead, "sla_reminder", {"rep_ids": [owner.pk] if owner else [], "step": step}))
        else:  # NOTIFY (reassignments never reach a batch)
            reps, emails = cache.recipients(lead.rule)
            reps = [(pk, name) for pk, name in reps if owner is None or pk != owner.pk]
            detail["to_reps"] = [name for _pk, name in reps]
            detail["to_emails"] = emails
            notices.append(Notice(lead, "escalated", {"rep_ids": [pk for pk, _ in reps], "emails": emails,
                                                      "step": step}))
        if step < len(ladder) and lead.status == Lead.Status.ASSIGNED:
            minutes = sla_minutes_for(lead) or default_minutes
            lead.sla_due_at = cache.due(owner, now, minutes)
        else:
            lead.sla_due_at = None
        detail["next_due_at"] = lead.sla_due_at.isoformat() if lead.sla_due_at else None
        events.append(LeadEvent(lead=lead, kind=LeadEvent.Kind.ESCALATED, at=now, actor=actor, rep=owner,
                                rule=lead.rule, detail=detail))
    # In due order, so the escalated events' ids follow the deadlines; each lead's breach comes first.
    events_insert(events)
    notified: set[int] = set()
    notices_write(notices, now=now, notified_leads=notified)
    _set_clocks(leads, now, notified)
    return len(leads)


def _set_clocks(leads: list[Lead], now: dt.datetime, notified: set[int]) -> None:
    """Store each lead's new step and deadline (and first notification time) in one statement."""
    if connection.vendor == "postgresql":
        values = ", ".join(["(%s::bigint, %s::int, %s::timestamptz, %s::boolean)"] * len(leads))
        params: list[Any] = [now, now]
        for lead in leads:
            params += [lead.pk, lead.escalation_step, lead.sla_due_at, lead.pk in notified]
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Lead._meta.db_table} AS l SET escalation_step = v.step, sla_due_at = v.due, "
                "notified_at = CASE WHEN v.notified THEN COALESCE(l.notified_at, %s) ELSE l.notified_at END, "
                f"updated_at = %s FROM (VALUES {values}) AS v(id, step, due, notified) WHERE l.id = v.id",
                params,
            )
        return
    for lead in leads:
        lead.updated_at = now
    Lead.objects.bulk_update(leads, ["escalation_step", "sla_due_at", "updated_at"])
    Lead.objects.filter(pk__in=notified, notified_at__isnull=True).update(notified_at=now)


def sweep_overdue(now: dt.datetime | None = None) -> dict[str, int]:
    """Everything due at `now`: pool timeouts, SLA escalations, and notifications left behind.

    This is what `manage.py sweep_overdue` and the django-q2 schedule both run.
    """
    from routing.notify import deliver_pending
    from routing.pools import pool_timeout_sweep

    now = now or timezone.now()
    result: dict[str, int] = {"pool_timeouts": _count(pool_timeout_sweep(now))}
    result.update(sla_sweep(now))
    result.update(deliver_pending(now))
    return result


def _count(value: Any) -> int:
    if isinstance(value, dict):
        # Actions taken; failures ("push_failed") are retried by the pools code, not counted as done.
        return sum(v for k, v in value.items() if isinstance(v, int) and not k.endswith("_failed"))
    try:
        return len(value)
    except TypeError:
        return 0

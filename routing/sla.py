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

Each lead's step is its own short transaction: a crash mid-sweep keeps the committed steps and
the next sweep does the rest.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from reps.availability import schedule_for
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


def sla_due_at(rep: Rep | None, start: dt.datetime, minutes: float) -> dt.datetime:
    """The moment `minutes` of `rep`'s working time have passed since `start` (UTC).

    Skips nights, weekends, time off and the rep's public holidays. A rep who will never work
    again (inactive, no shifts within the horizon) falls back to wall-clock minutes, so that the
    lead is still escalated rather than forgotten.
    """
    if rep is not None:
        due = schedule_for(rep).add_working_minutes(start, minutes)
        if due is not None:
            return due
    return start + dt.timedelta(minutes=minutes)


def sla_minutes_for(lead: Lead) -> int | None:
    """The SLA length that applies to the lead: its rule's, else its pool's."""
    if lead.rule_id and lead.rule.sla_minutes:
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


def _candidate_reps(lead: Lead, exclude: Iterable[int]):
    """Reps the lead's rule (or pool) would consider — a small stand-in for the engine's filter."""
    qs = Rep.objects.filter(active=True).exclude(pk__in=list(exclude))
    spec = (lead.rule.candidates if lead.rule_id else None) or {}
    if spec:
        if spec.get("reps"):
            qs = qs.filter(user__username__in=spec["reps"])
        if spec.get("team"):
            qs = qs.filter(team__name=spec["team"])
        if spec.get("levels"):
            qs = qs.filter(level__in=spec["levels"])
        for skill in spec.get("skills") or ():
            qs = qs.filter(skills__name=skill)
        if spec.get("territory"):
            matching = [
                r.pk for r in qs.prefetch_related("territories")
                if any(t.covers(lead.country, lead.region, lead.postcode) for t in r.territories.all())
            ]
            qs = qs.filter(pk__in=matching)
    elif lead.pool_id:
        qs = qs.filter(pool_memberships__pool_id=lead.pool_id)
    elif lead.owner_id and lead.owner.team_id:
        qs = qs.filter(team_id=lead.owner.team_id)
    return qs.distinct()


def pick_replacement(lead: Lead, *, now: dt.datetime, exclude: Iterable[int]) -> Rep | None:
    """The next available candidate with the most room, or None.

    Used when the engine's `routing.services.lead_route` is not available. Ties break at random.
    """
    day_ago = now - dt.timedelta(hours=24)
    reps = (
        _candidate_reps(lead, exclude)
        .prefetch_related("working_hours", "time_off")
        .annotate(
            open_count=Count("leads", filter=Q(leads__status__in=Lead.LOAD_STATUSES), distinct=True),
            day_count=Count("leads", filter=Q(leads__assigned_at__gte=day_ago), distinct=True),
        )
    )
    best: list[tuple[float, Rep]] = []
    for rep in reps:
        if rep.capacity is not None and rep.open_count >= rep.capacity:
            continue
        if rep.daily_cap is not None and rep.day_count >= rep.daily_cap:
            continue
        if not schedule_for(rep).is_available(now):
            continue
        load = rep.open_count / rep.capacity if rep.capacity else rep.open_count / 1_000_000
        best.append((load, rep))
    if not best:
        return None
    low = min(load for load, _ in best)
    return random.choice([rep for load, rep in best if load == low])


def _engine_reassign(lead: Lead, *, now: dt.datetime, exclude: tuple[Rep, ...]) -> Rep | None:
    """Ask the engine for the next candidate of the same rule, if the engine offers it."""
    from routing import services

    route = getattr(services, "lead_route", None)
    if route is None:
        return None
    result = route(lead, now=now, exclude_reps=exclude, apply=False)
    rep = getattr(result, "rep", None) or getattr(result, "owner", None)
    return rep if isinstance(rep, Rep) else None


# Swappable in one place once the engine exposes a preview-style lead_route.
ReplacementFinder = Callable[..., Rep | None]


def _find_replacement(lead: Lead, *, now: dt.datetime, old_owner: Rep | None) -> Rep | None:
    exclude = (old_owner,) if old_owner else ()
    try:
        rep = _engine_reassign(lead, now=now, exclude=exclude)
    except TypeError:
        # The engine's lead_route has a different signature; fall back to our own picker.
        rep = None
    if rep is not None:
        return rep
    return pick_replacement(lead, now=now, exclude=[r.pk for r in exclude])


# -- one rung ---------------------------------------------------------------------------------


def overdue_leads(now: dt.datetime):
    """Leads whose first-touch deadline has passed, oldest deadline first (matches the partial index)."""
    return Lead.objects.filter(
        status=Lead.Status.ASSIGNED, first_touch_at__isnull=True, sla_due_at__lte=now
    ).order_by("sla_due_at", "id")


def lead_escalate(lead_id: int, *, now: dt.datetime, actor=None) -> dict[str, Any] | None:
    """Take the next rung of the ladder for one overdue lead, in its own transaction.

    Returns what was done, or None when the lead is no longer due (already stepped by another
    sweeper, touched, or locked by a sweeper working on it right now).
    """
    from routing.notify import lead_notify

    with transaction.atomic():
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

        if action == REASSIGN:
            limit = lead.rule.max_reassignments if lead.rule_id else None
            new_owner = None
            if limit is not None and lead.reassign_count >= limit:
                detail["reason"] = f"reassignment limit ({limit}) reached"
            else:
                new_owner = _find_replacement(lead, now=now, old_owner=old_owner)
                if new_owner is None:
                    detail["reason"] = "no other available candidate"
            if new_owner is not None:
                lead.owner = new_owner
                lead.assigned_at = now
                lead.reassign_count += 1
                fields += ["owner", "assigned_at", "reassign_count"]
                detail["to"] = new_owner.username
                detail["from"] = old_owner.username if old_owner else None
                notify.append(("reassigned", {"rep_ids": [new_owner.pk], "step": step,
                                              "previous_owner": detail["from"]}))
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
        if step < len(ladder):
            minutes = sla_minutes_for(lead) or getattr(settings, "LEADOPS_DEFAULT_SLA_MINUTES", DEFAULT_SLA_MINUTES)
            lead.sla_due_at = sla_due_at(lead.owner, now, minutes)
        else:
            lead.sla_due_at = None
        detail["next_due_at"] = lead.sla_due_at.isoformat() if lead.sla_due_at else None
        lead.save(update_fields=fields)

        record_event(lead, LeadEvent.Kind.ESCALATED, at=now, actor=actor, rep=old_owner, rule=lead.rule, **detail)
        if "to" in detail:
            record_event(
                lead, LeadEvent.Kind.REASSIGNED, at=now, actor=actor, rep=lead.owner, rule=lead.rule,
                **{"from": detail["from"], "to": detail["to"], "step": step,
                   "reason": f"first-touch SLA missed (due {detail['due_at']})"},
            )
        # Rows are written in this transaction (a rollback leaves none); delivery is queued on commit.
        for kind, context in notify:
            lead_notify(lead.pk, kind, now=now, **context)
    return {"lead": lead.pk, "step": step, "action": action}


def sla_sweep(now: dt.datetime, *, batch: int = 500, actor=None) -> dict[str, int]:
    """Escalate every overdue lead by one rung, in order of due time."""
    escalated = 0
    last: tuple[dt.datetime, int] | None = None
    while True:
        qs = overdue_leads(now)
        if last is not None:
            # Keyset pagination: leads stepped in this sweep get a future deadline and drop out,
            # but one that could not be stepped (locked) must not be fetched again forever.
            qs = qs.filter(Q(sla_due_at__gt=last[0]) | Q(sla_due_at=last[0], id__gt=last[1]))
        rows = list(qs.values_list("sla_due_at", "id")[:batch])
        if not rows:
            break
        for _due, lead_id in rows:
            if lead_escalate(lead_id, now=now, actor=actor) is not None:
                escalated += 1
        last = rows[-1]
    return {"escalated": escalated}


def sweep_overdue(now: dt.datetime | None = None) -> dict[str, int]:
    """Everything due at `now`: pool timeouts, SLA escalations, and notifications left behind.

    This is what `manage.py sweep_overdue` and the django-q2 schedule both run.
    """
    from routing import pools
    from routing.notify import deliver_pending

    now = now or timezone.now()
    result: dict[str, int] = {}
    pool_sweep = getattr(pools, "pool_timeout_sweep", None)
    if pool_sweep is not None:
        pool_result = pool_sweep(now)
        result["pool_timeouts"] = pool_result if isinstance(pool_result, int) else _count(pool_result)
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

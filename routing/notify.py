"""Notifications (email, Slack-compatible webhook, in-app).

One `Notification` row per message and channel, so nothing is sent twice or lost in a crash:

- `lead_notify` (one lead) and `notices_write` (many, for sweeps) write the rows (inside the caller's
  transaction when there is one, so a rolled-back change leaves none) and queue ONE django-q2 task
  for the rows to send now, on commit. Routing calls `lead_notify` inside its transaction (the rows
  commit with the assignment); other callers queue it with
  `transaction.on_commit(lambda: lead_notify(lead.pk, "assigned"))`.
- `notification_deliver` claims a row with a conditional UPDATE (pending/failed → sending), sends it
  outside any transaction, then marks it sent (and writes the lead's `notified` event) or schedules
  a retry with exponential backoff; after `NOTIFY_MAX_ATTEMPTS` it becomes a dead letter.
- `deliver_pending` (part of every sweep) picks up rows whose task never ran — a worker killed
  between commit and delivery — or whose retry time has come.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from reps.models import Rep
from routing.models import Lead, LeadEvent, Notification

log = logging.getLogger(__name__)

# A claimed row whose worker died mid-send is picked up again after this lease.
SENDING_LEASE = dt.timedelta(minutes=5)
BACKOFF_BASE = dt.timedelta(seconds=30)
BACKOFF_MAX = dt.timedelta(hours=1)
# Kinds for which the lead's owner is the default recipient.
OWNER_KINDS = {"assigned", "reassigned", "sla_reminder", "manual_assigned", "claimed"}


class DeliveryError(Exception):
    pass


def _max_attempts() -> int:
    return int(getattr(settings, "NOTIFY_MAX_ATTEMPTS", 5))


def _webhook_timeout() -> float:
    return float(getattr(settings, "NOTIFY_WEBHOOK_TIMEOUT", 5))


def lead_url(lead_id: int) -> str:
    return f"{settings.SITE_URL}/board/leads/{lead_id}/"


# -- composing ----------------------------------------------------------------------------------


def _message(lead: Lead, kind: str, context: dict[str, Any]) -> tuple[str, str]:
    """(subject, one-line text) for a notification about `lead`."""
    name = str(lead)
    due = f" First touch due {lead.sla_due_at:%Y-%m-%d %H:%M} UTC." if lead.sla_due_at else ""
    step = context.get("step")
    owner = lead.owner.display_name if lead.owner_id else "nobody"
    pool = lead.pool.name if lead.pool_id else ""
    texts = {
        "assigned": ("New lead", f"New lead for you: {name}.{due}"),
        "manual_assigned": ("Lead assigned to you", f"A manager gave you {name}.{due}"),
        "claimed": ("Lead claimed", f"You claimed {name}.{due}"),
        "announced": (f"New lead in {pool}", f"New lead in pool {pool}: {name}. First to claim gets it."),
        "reassigned": ("Lead reassigned to you",
                       f"{name} was reassigned to you because the previous owner missed the SLA.{due}"),
        "sla_reminder": ("SLA missed", f"Reminder: {name} is still waiting for your first touch (SLA missed)."),
        "escalated": ("SLA escalation",
                      f"Escalation (step {step}): {name}, owned by {owner}, missed its first-touch SLA."),
        "pool_timeout": (f"Unclaimed lead in {pool}", f"{name} is waiting unclaimed in pool {pool}."),
    }
    subject, text = texts.get(kind, (kind.replace("_", " ").capitalize(), f"{kind.replace('_', ' ')}: {name}"))
    if context.get("message"):
        text = str(context["message"])
    return subject, text


def in_quiet_hours_until(rep: Rep, at: dt.datetime) -> dt.datetime | None:
    """When the rep's quiet hours (own time zone) end, if `at` falls inside them; else None."""
    start, end = rep.quiet_start, rep.quiet_end
    if start is None or end is None or start == end:
        return None
    local = at.astimezone(rep.tz)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        quiet = start <= clock < end
        end_day = local.date()
    else:  # past midnight, e.g. 20:00–07:00
        quiet = clock >= start or clock < end
        end_day = local.date() + dt.timedelta(days=1) if clock >= start else local.date()
    if not quiet:
        return None
    return dt.datetime.combine(end_day, end, tzinfo=rep.tz).astimezone(dt.UTC)


def _rows_for_rep(rep: Rep, lead: Lead, kind: str, payload: dict[str, Any], now: dt.datetime) -> list[Notification]:
    rows = [Notification(recipient=rep, lead=lead, channel=Notification.Channel.IN_APP, kind=kind,
                         payload=payload, status=Notification.Status.SENT, sent_at=now,
                         created_at=now, next_attempt_at=now)]
    # Quiet hours hold back email and webhooks; the in-app row is always there.
    later = in_quiet_hours_until(rep, now) or now
    if rep.notify_email and rep.user.email:
        rows.append(Notification(recipient=rep, lead=lead, channel=Notification.Channel.EMAIL, kind=kind,
                                 payload={**payload, "to": rep.user.email}, created_at=now, next_attempt_at=later))
    hook = rep.slack_webhook_url or (rep.team.slack_webhook_url if rep.team_id else "")
    if rep.notify_webhook and hook:
        rows.append(Notification(recipient=rep, lead=lead, channel=Notification.Channel.WEBHOOK, kind=kind,
                                 payload={**payload, "webhook_url": hook}, created_at=now, next_attempt_at=later))
    return rows


@dataclass
class Notice:
    """Something to tell about one lead: `lead` with `owner__user` and `pool` loaded (its current state,
    e.g. the new deadline), `kind` and `context` as for `lead_notify`. With `owner__team` loaded too,
    an owner who is the only recipient is not read again (the loaded owner must be current)."""

    lead: Lead
    kind: str
    context: dict[str, Any] = field(default_factory=dict)


def lead_notify(lead_id: int, kind: str, **context) -> list[int]:
    """Queue the notifications for something that happened to a lead.

    kind: "assigned", "announced", "reassigned", "sla_reminder", "escalated", "pool_timeout".
    context: rep_ids=[...] (recipients; default: the owner for owner kinds), emails=[...] (people
    without a rep profile, email only), step=N for escalations, message="..." to override the
    text, now=datetime. Returns the ids of the rows written.
    """
    now = context.pop("now", None) or timezone.now()
    lead = Lead.objects.select_related("owner__user", "owner__team", "pool").filter(pk=lead_id).first()
    if lead is None:
        return []
    return [n.pk for n in notices_write([Notice(lead, kind, context)], now=now)]


def notices_write(
    notices: list[Notice], *, now: dt.datetime, notified_leads: set[int] | None = None
) -> list[Notification]:
    """Write the rows for many notices in a few statements (a sweep tells hundreds of reps at once):
    one query for the recipients, one INSERT for the rows, one for the in-app `notified` events,
    and ONE delivery task for everything that must go out now, queued on commit.

    With `notified_leads`, the ids of the leads notified right now are added to it and setting their
    `notified_at` is left to the caller (a sweep folds it into the UPDATE it makes anyway)."""
    wanted: list[list[int]] = []
    for notice in notices:
        rep_ids = notice.context.get("rep_ids")
        if rep_ids is None:
            lead = notice.lead
            rep_ids = [lead.owner_id] if notice.kind in OWNER_KINDS and lead.owner_id else []
        wanted.append(list(rep_ids))
    all_ids = {pk for ids in wanted for pk in ids}
    # The usual notice goes to the lead's owner alone, who came with the lead (lead_notify reads them
    # together): not read again. Otherwise in one query, in Rep.Meta.ordering (username), the order
    # recipients were always written in.
    owner = notices[0].lead.owner if len(all_ids) == 1 and _owner_read(notices[0].lead) else None
    if owner is not None and owner.pk in all_ids:
        reps = [owner]
    else:
        reps = list(Rep.objects.filter(pk__in=all_ids).select_related("user", "team")) if all_ids else []

    rows: list[Notification] = []
    in_app_only: list[Notification] = []
    for notice, rep_ids in zip(notices, wanted, strict=True):
        lead, kind, context = notice.lead, notice.kind, notice.context
        subject, text = _message(lead, kind, context)
        payload = {"subject": subject, "text": text, "url": lead_url(lead.pk), "lead_id": lead.pk, "kind": kind}
        payload.update({k: v for k, v in context.items() if k in ("step", "previous_owner", "pool")})
        chosen = set(rep_ids)
        for rep in reps:
            if rep.pk not in chosen:
                continue
            rep_rows = _rows_for_rep(rep, lead, kind, payload, now)
            if len(rep_rows) == 1:
                in_app_only.append(rep_rows[0])
            rows.extend(rep_rows)
        for email in dict.fromkeys(context.get("emails") or ()):
            rows.append(Notification(recipient=None, lead=lead, channel=Notification.Channel.EMAIL, kind=kind,
                                     payload={**payload, "to": email}, created_at=now, next_attempt_at=now))
    if not rows:
        return []
    # Inside a caller's transaction the rows simply join it; no savepoint needed.
    with transaction.atomic(savepoint=False):
        created = Notification.objects.bulk_create(rows)
        # A rep with no email and no webhook is reached in-app only: that row is the delivery.
        _record_delivered_many(in_app_only, now, notified_leads=notified_leads)
        to_send = [n.pk for n in created if n.status == Notification.Status.PENDING and n.next_attempt_at <= now]
        if to_send:
            transaction.on_commit(lambda: _enqueue_all(to_send))
    return created


def _owner_read(lead: Lead) -> bool:
    """Whether the lead's owner was read with it, with the user and team the notices need."""
    return (lead.owner_id is not None and Lead.owner.is_cached(lead) and Rep.user.is_cached(lead.owner)
            and Rep.team.is_cached(lead.owner))


def _enqueue_all(ids: list[int]) -> None:
    from routing.tasks import enqueue

    try:
        # One task for the lot: a sweep's hundreds of rows must not become hundreds of queue round trips.
        enqueue("routing.tasks.deliver_notifications", ids)
    except Exception:
        # A broken broker must not break the request that committed: the sweep delivers them.
        log.exception("could not queue notifications %s; the next sweep will deliver them", ids[:20])


# -- delivering ---------------------------------------------------------------------------------


def _backoff(attempts: int) -> dt.timedelta:
    return min(BACKOFF_BASE * (2 ** max(attempts - 1, 0)), BACKOFF_MAX)


def _claim(notification_id: int, now: dt.datetime) -> bool:
    """pending/failed (or an expired `sending` lease) → sending, exactly once per attempt."""
    claimable = Q(status__in=[Notification.Status.PENDING, Notification.Status.FAILED]) | Q(
        status=Notification.Status.SENDING
    )
    return (
        Notification.objects.filter(claimable, pk=notification_id, next_attempt_at__lte=now).update(
            status=Notification.Status.SENDING, attempts=F("attempts") + 1, next_attempt_at=now + SENDING_LEASE
        )
        == 1
    )


def send_email(n: Notification) -> None:
    send_mail(
        n.payload.get("subject", "LeadOps"),
        f"{n.payload.get('text', '')}\n\n{n.payload.get('url', '')}\n",
        None,
        [n.payload["to"]],
    )


def send_webhook(n: Notification) -> None:
    url = n.payload["webhook_url"]
    if not url.startswith(("http://", "https://")):
        raise DeliveryError(f"not an http(s) URL: {url}")
    body = json.dumps({"text": f"{n.payload.get('text', '')} {n.payload.get('url', '')}".strip()}).encode()
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=_webhook_timeout()) as response:  # noqa: S310
            response.read(1024)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"HTTP {exc.code} from webhook") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DeliveryError(f"webhook unreachable: {getattr(exc, 'reason', exc)}") from exc


SENDERS = {Notification.Channel.EMAIL: send_email, Notification.Channel.WEBHOOK: send_webhook}


def notification_deliver(notification_id: int, *, now: dt.datetime | None = None) -> str:
    """Send one notification if it is due and nobody else is sending it. Returns its new status
    (or "skipped"). Never raises for a delivery failure: it is recorded and retried."""
    now = now or timezone.now()
    if not _claim(notification_id, now):
        return "skipped"
    n = Notification.objects.select_related("lead").get(pk=notification_id)
    try:
        # Slow I/O happens here, outside any transaction.
        SENDERS[n.channel](n)
    except Exception as exc:
        dead = n.attempts >= _max_attempts()
        status = Notification.Status.DEAD if dead else Notification.Status.FAILED
        Notification.objects.filter(pk=n.pk, status=Notification.Status.SENDING).update(
            status=status, last_error=str(exc)[:2000], next_attempt_at=now + _backoff(n.attempts)
        )
        log.warning("notification %s attempt %s failed: %s%s", n.pk, n.attempts, exc, " (dead letter)" if dead else "")
        return status
    with transaction.atomic():
        updated = Notification.objects.filter(pk=n.pk, status=Notification.Status.SENDING).update(
            status=Notification.Status.SENT, sent_at=now, last_error=""
        )
        if updated:
            _record_delivered(n, now)
    return Notification.Status.SENT


def _record_delivered(n: Notification, now: dt.datetime) -> None:
    _record_delivered_many([n], now)


def _record_delivered_many(
    rows: list[Notification], now: dt.datetime, *, notified_leads: set[int] | None = None
) -> None:
    """The `notified` events of delivered rows, and each lead's first notification time."""
    rows = [n for n in rows if n.lead_id is not None]
    if not rows:
        return
    events_insert([
        LeadEvent(
            lead_id=n.lead_id, kind=LeadEvent.Kind.NOTIFIED, at=now, rep_id=n.recipient_id,
            detail={"channel": n.channel, "notification": n.pk, "about": n.kind,
                    **({"to": n.payload["to"]} if not n.recipient_id else {})},
        )
        for n in rows
    ])
    lead_ids = {n.lead_id for n in rows}
    if notified_leads is not None:
        notified_leads.update(lead_ids)
    else:
        Lead.objects.filter(pk__in=lead_ids, notified_at__isnull=True).update(notified_at=now)


_EVENT_COLUMNS = ("lead_id", "kind", "at", "actor_id", "rep_id", "rule_id", "pool_id", "detail")


def events_insert(events: list[LeadEvent]) -> None:
    """Insert timeline events in the order given (their ids follow it), without reading ids back.

    On PostgreSQL this is one COPY: a sweep writes thousands of events, and adapting them as
    statement parameters cost more than the database's own work."""
    if not events:
        return
    if connection.vendor != "postgresql":
        LeadEvent.objects.bulk_create(events)
        return
    with connection.cursor() as cursor, cursor.cursor.copy(
        f"COPY {LeadEvent._meta.db_table} ({', '.join(_EVENT_COLUMNS)}) FROM STDIN"
    ) as copy:
        for e in events:
            copy.write_row((e.lead_id, e.kind, e.at, e.actor_id, e.rep_id, e.rule_id, e.pool_id,
                            json.dumps(e.detail, cls=DjangoJSONEncoder)))


def deliver_pending(now: dt.datetime | None = None, *, limit: int = 1000) -> dict[str, int]:
    """Deliver notifications that are due but were never (or not successfully) sent."""
    now = now or timezone.now()
    ids = list(
        Notification.objects.filter(
            status__in=[Notification.Status.PENDING, Notification.Status.FAILED, Notification.Status.SENDING],
            next_attempt_at__lte=now,
        )
        .order_by("next_attempt_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    delivered = 0
    for pk in ids:
        if notification_deliver(pk, now=now) == Notification.Status.SENT:
            delivered += 1
    return {"delivered": delivered}


def notifications_retry(ids: list[int], *, now: dt.datetime | None = None) -> int:
    """Give dead letters (or failed rows) a fresh set of attempts, and send them now."""
    now = now or timezone.now()
    qs = Notification.objects.filter(
        pk__in=ids, status__in=[Notification.Status.DEAD, Notification.Status.FAILED]
    )
    retry_ids = list(qs.values_list("pk", flat=True))
    qs.update(status=Notification.Status.PENDING, attempts=0, next_attempt_at=now, last_error="")
    transaction.on_commit(lambda: _enqueue_all(retry_ids))
    return len(retry_ids)


def inbox(rep: Rep, *, limit: int = 20):
    """The rep's in-app notifications, newest first (for the board)."""
    return (
        Notification.objects.filter(recipient=rep, channel=Notification.Channel.IN_APP)
        .exclude(status=Notification.Status.READ)
        .select_related("lead")[:limit]
    )


def notifications_mark_read(rep: Rep, ids: list[int] | None = None) -> int:
    qs = Notification.objects.filter(recipient=rep, channel=Notification.Channel.IN_APP,
                                     status=Notification.Status.SENT)
    if ids is not None:
        qs = qs.filter(pk__in=ids)
    return qs.update(status=Notification.Status.READ)

"""django-q2 tasks. They take ids (never model instances) and call the same functions the
management commands call, so a schedule, a worker and `manage.py ...` all do the same work."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.utils import timezone

log = logging.getLogger(__name__)

# How long finished work is kept before the daily housekeeping removes it.
KEEP_SUCCESSFUL_TASKS = dt.timedelta(days=7)
KEEP_SENT_NOTIFICATIONS = dt.timedelta(days=30)


def run_inline() -> bool:
    """Tests run tasks synchronously; so does a deployment that sets Q_SYNC."""
    return bool(settings.Q_CLUSTER.get("sync")) or getattr(settings, "TESTING", False)


def enqueue(func: str, *args, **kwargs) -> str:
    from django_q.tasks import async_task

    return async_task(func, *args, sync=run_inline(), **kwargs)


def deliver_notification(notification_id: int) -> str:
    from routing.notify import notification_deliver

    return notification_deliver(notification_id)


def deliver_notifications(notification_ids: list[int]) -> dict[str, int]:
    """Send a batch (a sweep's or one event's rows) in one task. Each row is still claimed on its
    own, so a row another worker or the sweep already sent is skipped, and one failing webhook only
    schedules that row's retry."""
    from routing.notify import notification_deliver

    outcomes: dict[str, int] = {}
    for pk in notification_ids:
        status = notification_deliver(pk)
        outcomes[status] = outcomes.get(status, 0) + 1
    return outcomes


def sweep_overdue() -> dict[str, int]:
    from routing.sla import sweep_overdue as sweep

    return sweep(timezone.now())


def route_pending() -> None:
    from django.core.management import call_command

    # The command is the contract (CONTRACT §6); calling it keeps the schedule and the command identical.
    call_command("route_pending")


def housekeeping(now: dt.datetime | None = None) -> dict[str, int]:
    """Daily: forget old successful django-q2 task rows and old sent/read notifications.

    Failed tasks and dead letters are kept: somebody may still need to look at them.
    """
    from django_q.models import Success

    from routing.models import Notification

    now = now or timezone.now()
    tasks, _ = Success.objects.filter(stopped__lt=now - KEEP_SUCCESSFUL_TASKS).delete()
    notes, _ = Notification.objects.filter(
        status__in=[Notification.Status.SENT, Notification.Status.READ],
        created_at__lt=now - KEEP_SENT_NOTIFICATIONS,
    ).delete()
    return {"tasks": tasks, "notifications": notes}

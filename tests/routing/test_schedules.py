"""`setup_schedules` and the scheduled tasks: idempotent schedules that run the commands' functions."""

from __future__ import annotations

import datetime as dt
import io
import pydoc

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule, Success
from django_q.tasks import async_task

from routing.models import Lead, LeadEvent, Notification
from routing.tasks import housekeeping
from tests.factories import LeadFactory


def setup_schedules() -> str:
    out = io.StringIO()
    call_command("setup_schedules", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_creates_the_minute_schedules_and_the_daily_housekeeping():
    setup_schedules()

    schedules = {s.name: s for s in Schedule.objects.all()}
    assert set(schedules) == {"route_pending", "sweep_overdue", "housekeeping"}
    assert (schedules["sweep_overdue"].schedule_type, schedules["sweep_overdue"].minutes) == (Schedule.MINUTES, 1)
    assert (schedules["route_pending"].schedule_type, schedules["route_pending"].minutes) == (Schedule.MINUTES, 1)
    assert schedules["housekeeping"].schedule_type == Schedule.DAILY
    assert all(s.repeats == -1 for s in schedules.values())


@pytest.mark.django_db
def test_running_it_twice_keeps_one_schedule_each_and_their_rhythm():
    setup_schedules()
    Schedule.objects.filter(name="sweep_overdue").update(func="old.path", minutes=5)
    next_run = Schedule.objects.get(name="housekeeping").next_run

    output = setup_schedules()

    assert Schedule.objects.count() == 3
    sweep = Schedule.objects.get(name="sweep_overdue")
    assert (sweep.func, sweep.minutes) == ("routing.tasks.sweep_overdue", 1)
    assert Schedule.objects.get(name="housekeeping").next_run == next_run
    assert "updated schedule sweep_overdue" in output


@pytest.mark.django_db
def test_every_scheduled_function_can_be_found_by_the_worker():
    setup_schedules()

    for schedule in Schedule.objects.all():
        assert callable(pydoc.locate(schedule.func)), schedule.func


@pytest.mark.django_db
def test_the_scheduled_sweep_escalates_what_the_command_would(rep):
    lead = LeadFactory(owner=rep, status=Lead.Status.ASSIGNED, sla_due_at=timezone.now() - dt.timedelta(minutes=1))

    async_task("routing.tasks.sweep_overdue", sync=True)

    assert lead.events.filter(kind=LeadEvent.Kind.SLA_BREACHED).count() == 1
    assert Success.objects.filter(func="routing.tasks.sweep_overdue").count() == 1


@pytest.mark.django_db
def test_housekeeping_forgets_old_sent_notifications_and_keeps_dead_letters(rep):
    now = timezone.now()
    old = now - dt.timedelta(days=31)
    Notification.objects.create(recipient=rep, channel="email", kind="assigned", status="sent", created_at=old)
    Notification.objects.create(recipient=rep, channel="in_app", kind="assigned", status="read", created_at=old)
    dead = Notification.objects.create(recipient=rep, channel="email", kind="assigned", status="dead", created_at=old)
    recent = Notification.objects.create(recipient=rep, channel="email", kind="assigned", status="sent")

    result = housekeeping(now)

    assert result["notifications"] == 2
    assert set(Notification.objects.values_list("pk", flat=True)) == {dead.pk, recent.pk}


@pytest.mark.django_db
def test_housekeeping_forgets_old_successful_task_rows():
    async_task("routing.tasks.housekeeping", sync=True)
    Success.objects.update(stopped=timezone.now() - dt.timedelta(days=8))
    async_task("routing.tasks.housekeeping", sync=True)

    # The first run's row is gone; the second run's own row remains.
    assert Success.objects.count() == 1

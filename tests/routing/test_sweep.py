"""`sweep_overdue`: idempotent at a given --now, survives crashes and clock jumps, and is safe
to run from two workers at once."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError

from routing import sla
from routing.models import Lead, LeadEvent, Notification, Pool
from routing.pools import lead_enter_pool
from routing.sla import sweep_overdue
from tests.concurrency import run_at_once
from tests.factories import LeadFactory, PoolFactory, RepFactory
from tests.routing.test_sla import MONDAY_0905, assigned_lead, at, make_rule

MINUTE = dt.timedelta(minutes=1)


def escalated_ids_in_order() -> list[int]:
    return list(LeadEvent.objects.filter(kind=LeadEvent.Kind.ESCALATED).order_by("id").values_list("lead", flat=True))


@pytest.mark.django_db
def test_a_second_sweep_at_the_same_now_does_nothing(rep):
    lead = assigned_lead(rep, due=MONDAY_0905, rule=make_rule(sla_minutes=15))
    sweep_overdue(MONDAY_0905)
    events = lead.events.count()
    notifications = Notification.objects.count()

    again = sweep_overdue(MONDAY_0905)

    assert again["escalated"] == 0
    assert lead.events.count() == events
    assert Notification.objects.count() == notifications


@pytest.mark.django_db
def test_the_command_sweeps_at_the_given_now_and_prints_what_it_did(rep):
    lead = assigned_lead(rep, due=MONDAY_0905)
    out = io.StringIO()

    call_command("sweep_overdue", "--now", "2026-11-23T09:04:00Z", stdout=out)
    assert lead.events.count() == 0
    call_command("sweep_overdue", "--now", "2026-11-23T09:05:00Z", "--json", stdout=out)

    assert json.loads(out.getvalue().splitlines()[-1])["escalated"] == 1
    assert lead.events.filter(kind=LeadEvent.Kind.SLA_BREACHED, at=MONDAY_0905).exists()


@pytest.mark.django_db
def test_the_command_treats_a_now_without_offset_as_utc(rep):
    lead = assigned_lead(rep, due=MONDAY_0905)

    call_command("sweep_overdue", "--now", "2026-11-23T09:05:00", stdout=io.StringIO())

    assert lead.events.filter(kind=LeadEvent.Kind.SLA_BREACHED).count() == 1


@pytest.mark.django_db
def test_the_command_refuses_a_malformed_now():
    with pytest.raises(CommandError, match="--now"):
        call_command("sweep_overdue", "--now", "next tuesday", stdout=io.StringIO())


@pytest.mark.django_db
def test_after_a_clock_jump_every_overdue_lead_is_escalated_once_in_order_of_due_time(rep):
    rule = make_rule(sla_minutes=15)
    late = assigned_lead(rep, due=at("2026-11-23T08:40:00+00:00"), rule=rule)
    early = assigned_lead(rep, due=at("2026-11-23T08:00:00+00:00"), rule=rule)
    middle = assigned_lead(rep, due=at("2026-11-23T08:20:00+00:00"), rule=rule)
    not_yet = assigned_lead(rep, due=at("2026-11-23T10:00:00+00:00"), rule=rule)

    # The sweeper was down from 08:00 to 09:30.
    result = sweep_overdue(at("2026-11-23T09:30:00+00:00"))

    assert result["escalated"] == 3
    assert escalated_ids_in_order() == [early.pk, middle.pk, late.pk]
    assert not_yet.events.count() == 0
    for lead in (early, middle, late):
        lead.refresh_from_db()
        assert lead.escalation_step == 1
        assert lead.sla_due_at == at("2026-11-23T09:45:00+00:00")


@pytest.mark.django_db
def test_a_crash_mid_sweep_keeps_the_committed_batches_and_the_next_sweep_does_the_rest(monkeypatch):
    # One owner each: a sweep works out one deadline per owner, so each lead makes one call below.
    leads = [assigned_lead(RepFactory(), due=MONDAY_0905 - i * MINUTE) for i in range(4, 0, -1)]
    monkeypatch.setattr(sla, "SWEEP_BATCH", 2)
    real_due = sla.sla_due_at
    calls = {"n": 0}

    def database_goes_away(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the first lead of the second batch
            raise OperationalError("server closed the connection unexpectedly")
        return real_due(*args, **kwargs)

    monkeypatch.setattr(sla, "sla_due_at", database_goes_away)
    with pytest.raises(OperationalError):
        sweep_overdue(MONDAY_0905)

    steps = [Lead.objects.get(pk=lead.pk).escalation_step for lead in leads]
    assert steps == [1, 1, 0, 0]
    assert LeadEvent.objects.filter(kind=LeadEvent.Kind.SLA_BREACHED).count() == 2
    assert Notification.objects.filter(kind="sla_reminder", channel="in_app").count() == 2

    monkeypatch.setattr(sla, "sla_due_at", real_due)
    result = sweep_overdue(MONDAY_0905)

    assert result["escalated"] == 2
    assert [Lead.objects.get(pk=lead.pk).escalation_step for lead in leads] == [1, 1, 1, 1]
    assert LeadEvent.objects.filter(kind=LeadEvent.Kind.SLA_BREACHED).count() == 4
    assert escalated_ids_in_order() == [lead.pk for lead in leads]


@pytest.mark.django_db
def test_it_ignores_leads_that_are_not_waiting_for_a_first_touch(rep):
    LeadFactory(owner=rep, status=Lead.Status.CONTACTED, sla_due_at=MONDAY_0905, first_touch_at=MONDAY_0905)
    LeadFactory(owner=None, status=Lead.Status.UNASSIGNED, sla_due_at=MONDAY_0905)
    LeadFactory(owner=rep, status=Lead.Status.ASSIGNED, sla_due_at=None)

    assert sweep_overdue(MONDAY_0905 + dt.timedelta(days=1))["escalated"] == 0
    assert LeadEvent.objects.count() == 0


@pytest.mark.django_db
def test_the_same_sweep_applies_pool_timeouts(rep):
    pool = PoolFactory(members=[rep], window_minutes=10, on_timeout=Pool.OnTimeout.PUSH)
    lead = LeadFactory()
    lead_enter_pool(lead, pool, now=MONDAY_0905)

    result = sweep_overdue(MONDAY_0905 + dt.timedelta(minutes=10))

    lead.refresh_from_db()
    assert result["pool_timeouts"] == 1
    assert lead.owner == rep


# -- two sweepers at once (real row locks) --------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_sweepers_at_once_take_each_step_exactly_once():
    reps = [RepFactory() for _ in range(3)]
    rule = make_rule(sla_minutes=15)
    leads = [assigned_lead(reps[i % 3], due=MONDAY_0905 - i * MINUTE, rule=rule) for i in range(40)]
    run_at_once(lambda: sweep_overdue(MONDAY_0905), threads=4)

    for lead in leads:
        assert Lead.objects.get(pk=lead.pk).escalation_step == 1
        assert list(lead.events.filter(kind__in=["sla_breached", "escalated"]).values_list("kind", flat=True)) == [
            "sla_breached", "escalated",
        ]
        reminders = Notification.objects.filter(lead=lead, kind="sla_reminder", channel="email")
        assert reminders.count() == 1
        assert reminders.get().status == Notification.Status.SENT


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_sweepers_at_once_reassign_each_lead_exactly_once():
    alice, bob, carol = (RepFactory(user__username=name) for name in ("alice", "bob", "carol"))
    rule = make_rule(sla_minutes=15, candidates={"reps": ["alice", "bob", "carol"]})
    leads = [assigned_lead(alice, due=MONDAY_0905 - i * MINUTE, rule=rule, escalation_step=1) for i in range(20)]
    run_at_once(lambda: sweep_overdue(MONDAY_0905), threads=3)

    owners = []
    for lead in leads:
        lead = Lead.objects.get(pk=lead.pk)
        assert (lead.escalation_step, lead.reassign_count) == (2, 1)
        assert lead.events.filter(kind=LeadEvent.Kind.REASSIGNED).count() == 1
        assert lead.events.filter(kind=LeadEvent.Kind.ESCALATED).count() == 1
        owners.append(lead.owner_id)
    # Round robin over the two who remain: the shared pointer moved once per lead.
    assert sorted(owners.count(r.pk) for r in (bob, carol)) == [10, 10]


@pytest.mark.django_db
def test_a_reassignment_between_batched_reminders_keeps_the_order_of_due_time(rep):
    RepFactory(user__username="bob")
    rule = make_rule(sla_minutes=15, candidates={"reps": ["alice", "bob"]})
    first = assigned_lead(rep, due=MONDAY_0905 - 3 * MINUTE, rule=rule)
    moved = assigned_lead(rep, due=MONDAY_0905 - 2 * MINUTE, rule=rule, escalation_step=1)
    last = assigned_lead(rep, due=MONDAY_0905 - MINUTE, rule=rule)

    result = sweep_overdue(MONDAY_0905)

    assert result["escalated"] == 3
    assert escalated_ids_in_order() == [first.pk, moved.pk, last.pk]
    assert Lead.objects.get(pk=moved.pk).owner.username == "bob"


@pytest.mark.django_db(transaction=True)
def test_a_sweep_queues_one_delivery_task_for_all_its_emails(monkeypatch, mailoutbox):
    from routing import tasks

    queued: list[tuple] = []
    real_enqueue = tasks.enqueue

    def enqueue(func, *args, **kwargs):
        queued.append((func, args))
        return real_enqueue(func, *args, **kwargs)

    monkeypatch.setattr(tasks, "enqueue", enqueue)
    reps = [RepFactory() for _ in range(3)]
    for i in range(6):
        assigned_lead(reps[i % 3], due=MONDAY_0905 - i * MINUTE)

    sweep_overdue(MONDAY_0905)

    assert [func for func, _ in queued] == ["routing.tasks.deliver_notifications"]
    assert len(queued[0][1][0]) == 6
    assert len(mailoutbox) == 6


@pytest.mark.django_db
def test_an_in_app_reminder_marks_the_lead_notified_with_its_event():
    owner = RepFactory(user__email="")
    lead = assigned_lead(owner, due=MONDAY_0905)

    sweep_overdue(MONDAY_0905)

    lead.refresh_from_db()
    assert lead.notified_at == MONDAY_0905
    notified = lead.events.get(kind=LeadEvent.Kind.NOTIFIED)
    assert (notified.rep, notified.detail["about"], notified.detail["channel"]) == (owner, "sla_reminder", "in_app")
    assert list(lead.events.values_list("kind", flat=True)) == ["sla_breached", "escalated", "notified"]

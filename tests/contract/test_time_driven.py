"""CONTRACT §6: route_pending, sweep_overdue and explain_lead, run by hand with --now."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import call_command

from reps.models import Rep
from routing.models import Lead, LeadEvent, Notification
from tests.factories import LeadFactory, RepFactory, TeamFactory, weekday_hours

pytestmark = pytest.mark.django_db

FRIDAY_1650 = dt.datetime(2026, 11, 20, 16, 50, tzinfo=dt.UTC)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def publish(tmp_path, rules: list[dict]) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"name": "clock", "rules": rules}))
    run("load_rules", str(path), "--publish")


@pytest.fixture
def office(db):
    """alice and bob work Monday to Friday 09:00–17:00 UTC; dora is the escalation contact."""
    team = TeamFactory(name="EMEA")
    RepFactory(user__username="alice", team=team, hours=weekday_hours())
    RepFactory(user__username="bob", team=team, hours=weekday_hours())
    return RepFactory(user__username="dora")


def test_route_pending_routes_oldest_received_first_as_of_now(office, tmp_path):
    publish(tmp_path, [{"name": "RR", "candidates": {"reps": ["alice", "bob"]}, "strategy": "round_robin"}])
    newer = LeadFactory(received_at=FRIDAY_1650 - dt.timedelta(minutes=1))
    older = LeadFactory(received_at=FRIDAY_1650 - dt.timedelta(minutes=30))

    run("route_pending", "--now", FRIDAY_1650.isoformat())

    older.refresh_from_db()
    newer.refresh_from_db()
    assert (older.owner.user.username, newer.owner.user.username) == ("alice", "bob")
    assert older.assigned_at == FRIDAY_1650


def test_route_pending_leaves_leads_nobody_can_take_at_that_time(office, tmp_path):
    publish(tmp_path, [{"name": "RR", "candidates": {"team": "EMEA"}, "strategy": "round_robin"}])
    lead = LeadFactory(received_at=FRIDAY_1650)

    run("route_pending", "--now", "2026-11-21T12:00:00+00:00")  # Saturday: nobody works

    lead.refresh_from_db()
    assert (lead.status, lead.owner_id) == ("unassigned", None)
    run("route_pending", "--now", "2026-11-23T09:30:00+00:00")  # Monday
    lead.refresh_from_db()
    assert lead.status == "assigned"


@pytest.fixture
def sla_lead(office, tmp_path) -> Lead:
    publish(tmp_path, [{"name": "Fast", "candidates": {"reps": ["alice"]}, "strategy": "round_robin",
                        "sla_minutes": 15, "escalate_to": ["dora"]}])
    lead = LeadFactory(received_at=FRIDAY_1650)
    run("route_pending", "--now", FRIDAY_1650.isoformat())
    lead.refresh_from_db()
    return lead


def test_the_sla_counts_only_the_owners_working_minutes(sla_lead):
    # Friday 16:50 + 15 working minutes with 09–17 hours: 10 on Friday, 5 on Monday.
    assert sla_lead.sla_due_at == dt.datetime(2026, 11, 23, 9, 5, tzinfo=dt.UTC)


def test_a_missed_sla_writes_sla_breached_once_then_escalated_step_1(sla_lead):
    run("sweep_overdue", "--now", "2026-11-23T09:04:00+00:00")
    assert not sla_lead.events.filter(kind__in=["sla_breached", "escalated"]).exists()

    run("sweep_overdue", "--now", "2026-11-23T09:06:00+00:00")

    assert sla_lead.events.filter(kind="sla_breached").count() == 1
    escalated = list(sla_lead.events.filter(kind="escalated"))
    assert [e.detail["step"] for e in escalated] == [1]


def test_sweep_overdue_twice_at_the_same_now_does_nothing_the_second_time(sla_lead):
    run("sweep_overdue", "--now", "2026-11-23T09:06:00+00:00")
    before = list(LeadEvent.objects.order_by("pk").values_list("pk", "kind"))
    lead_state = Lead.objects.filter(pk=sla_lead.pk).values().get()

    run("sweep_overdue", "--now", "2026-11-23T09:06:00+00:00")

    assert list(LeadEvent.objects.order_by("pk").values_list("pk", "kind")) == before
    assert Lead.objects.filter(pk=sla_lead.pk).values().get() == lead_state


def test_explain_lead_prints_json_naming_the_rule_and_each_candidate(office, tmp_path):
    publish(tmp_path, [{"name": "RR", "candidates": {"team": "EMEA"}, "strategy": "round_robin"}])
    lead = LeadFactory(received_at=FRIDAY_1650)
    run("route_pending", "--now", FRIDAY_1650.isoformat())

    explained = json.loads(run("explain_lead", str(lead.pk)))

    assert explained["rule"] == "RR"
    candidates = {c["rep"]: c["reason"] for c in explained["tried"][0]["candidates"]}
    assert set(candidates) == {"alice", "bob"} and all(candidates.values())


def test_the_schedules_call_the_same_commands(db):
    from django_q.models import Schedule

    run("setup_schedules")
    run("setup_schedules")  # idempotent

    funcs = set(Schedule.objects.values_list("func", flat=True))
    assert Schedule.objects.count() == len(funcs)
    assert any("route_pending" in f for f in funcs) and any("sweep_overdue" in f for f in funcs)


def test_each_ladder_step_writes_one_escalated_event_numbered_in_order(
    office, tmp_path, django_capture_on_commit_callbacks
):

    Rep.objects.filter(user__username="dora").update(level="director")
    publish(tmp_path, [{"name": "Fast", "candidates": {"reps": ["alice", "bob"]}, "strategy": "round_robin",
                        "sla_minutes": 15, "escalate_to": {"levels": ["director"]}}])
    lead = LeadFactory(received_at=FRIDAY_1650)
    run("route_pending", "--now", FRIDAY_1650.isoformat())

    with django_capture_on_commit_callbacks(execute=True):
        for at in ("2026-11-23T09:06:00+00:00", "2026-11-23T10:00:00+00:00", "2026-11-23T11:00:00+00:00",
                   "2026-11-23T11:00:00+00:00", "2026-11-23T14:00:00+00:00"):
            run("sweep_overdue", "--now", at)

    assert lead.events.filter(kind="sla_breached").count() == 1
    assert [e.detail["step"] for e in lead.events.filter(kind="escalated").order_by("at", "id")] == [1, 2, 3]
    assert Notification.objects.filter(lead=lead, recipient__user__username="dora").exists()

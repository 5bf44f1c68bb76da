"""The escalation ladder: remind, reassign, notify — one rung per missed deadline, each rung once."""

from __future__ import annotations

import datetime as dt

import pytest

from reps.models import Rep
from routing.models import Lead, LeadEvent, Notification
from routing.services import lead_set_status
from routing.sla import sla_due_at, sweep_overdue
from tests.factories import RepFactory, UserFactory, weekday_hours
from tests.routing.test_sla import FRIDAY_1650, MONDAY_0905, assigned_lead, at, make_rule

MINUTE = dt.timedelta(minutes=1)


def kinds(lead: Lead) -> list[str]:
    return list(lead.events.values_list("kind", flat=True))


def escalations(lead: Lead) -> list[dict]:
    return [e.detail for e in lead.events.filter(kind=LeadEvent.Kind.ESCALATED)]


@pytest.fixture
def alice():
    return RepFactory(user__username="alice", hours=weekday_hours("09:00", "17:00"))


@pytest.fixture
def bob():
    return RepFactory(user__username="bob", hours=weekday_hours("09:00", "17:00"))


@pytest.fixture
def dora():
    return RepFactory(user__username="dora", level=Rep.Level.MANAGER)


@pytest.fixture
def rule(dora):
    return make_rule(sla_minutes=15, candidates={"reps": ["alice", "bob"]}, escalate_to=["dora"])


@pytest.mark.django_db
def test_it_escalates_scenario_8_at_the_right_working_minute(alice, rule):
    lead = assigned_lead(alice, due=sla_due_at(alice, FRIDAY_1650, rule.sla_minutes), rule=rule,
                         assigned_at=FRIDAY_1650)
    assert lead.sla_due_at == MONDAY_0905

    before = sweep_overdue(MONDAY_0905 - MINUTE)
    assert before["escalated"] == 0
    assert kinds(lead) == []

    after = sweep_overdue(MONDAY_0905)
    assert after["escalated"] == 1
    assert kinds(lead)[:2] == ["sla_breached", "escalated"]


@pytest.mark.django_db
def test_it_writes_sla_breached_once_and_one_escalated_event_per_step(alice, bob, rule):
    lead = assigned_lead(alice, due=MONDAY_0905, rule=rule)

    now = MONDAY_0905
    for _ in range(3):
        sweep_overdue(now)
        lead.refresh_from_db()
        now = lead.sla_due_at or now

    assert kinds(lead).count("sla_breached") == 1
    assert [d["step"] for d in escalations(lead)] == [1, 2, 3]
    assert [d["action"] for d in escalations(lead)] == ["remind", "reassign", "notify"]


@pytest.mark.django_db
def test_step_one_reminds_the_owner_and_restarts_the_clock_in_working_minutes(alice, rule):
    lead = assigned_lead(alice, due=at("2026-11-23T16:55:00+00:00"), rule=rule)

    sweep_overdue(at("2026-11-23T16:55:00+00:00"))

    lead.refresh_from_db()
    assert lead.escalation_step == 1
    assert lead.owner == alice
    # 5 minutes left on Monday, 10 more on Tuesday morning.
    assert lead.sla_due_at == at("2026-11-24T09:10:00+00:00")
    assert Notification.objects.filter(lead=lead, recipient=alice, kind="sla_reminder").exists()


@pytest.mark.django_db
def test_step_two_reassigns_to_the_next_candidate_and_says_why(alice, bob, rule, django_capture_on_commit_callbacks):
    lead = assigned_lead(alice, due=MONDAY_0905, rule=rule, escalation_step=1)

    with django_capture_on_commit_callbacks(execute=True):
        sweep_overdue(MONDAY_0905)

    lead.refresh_from_db()
    assert lead.owner == bob
    assert lead.reassign_count == 1
    assert lead.assigned_at == MONDAY_0905
    assert lead.sla_due_at == MONDAY_0905 + dt.timedelta(minutes=15)
    event = lead.events.get(kind=LeadEvent.Kind.REASSIGNED)
    assert event.rep == bob
    assert event.detail["from"] == "alice"
    assert event.detail["to"] == "bob"
    assert "SLA missed" in event.detail["reason"]
    assert Notification.objects.filter(lead=lead, recipient=bob, kind="reassigned").exists()


@pytest.mark.django_db
def test_a_reassignment_on_the_last_rung_does_not_tell_the_new_owner_of_a_deadline(alice, bob, dora):
    rule = make_rule(sla_minutes=15, candidates={"reps": ["alice", "bob"]}, ladder=["remind", "reassign"])
    lead = assigned_lead(alice, due=MONDAY_0905, rule=rule, escalation_step=1)

    sweep_overdue(MONDAY_0905)

    lead.refresh_from_db()
    assert (lead.owner, lead.sla_due_at) == (bob, None)
    texts = {n.payload["text"] for n in Notification.objects.filter(lead=lead, recipient=bob, kind="reassigned")}
    assert texts and not [t for t in texts if "First touch due" in t]


@pytest.mark.django_db
def test_step_two_never_hands_the_lead_to_a_candidate_who_is_off_work(alice, rule):
    RepFactory(user__username="bob", hours={5: ("09:00", "17:00")})  # Saturdays only
    lead = assigned_lead(alice, due=MONDAY_0905, rule=rule, escalation_step=1)

    sweep_overdue(MONDAY_0905)

    lead.refresh_from_db()
    assert lead.owner == alice
    detail = escalations(lead)[0]
    assert detail["reason"] == "no other available candidate"
    assert detail["instead"] == "notify"
    assert Notification.objects.filter(lead=lead, recipient__user__username="dora", kind="escalated").exists()


@pytest.mark.django_db
def test_step_two_stops_reassigning_at_the_rules_limit(alice, bob, dora):
    rule = make_rule(sla_minutes=15, candidates={"reps": ["alice", "bob"]}, escalate_to=["dora"],
                     max_reassignments=1)
    lead = assigned_lead(alice, due=MONDAY_0905, rule=rule, escalation_step=1, reassign_count=1)

    sweep_overdue(MONDAY_0905)

    lead.refresh_from_db()
    assert lead.owner == alice
    assert escalations(lead)[0]["reason"] == "reassignment limit (1) reached"


@pytest.mark.django_db
def test_step_three_tells_the_escalation_contacts_and_stops_the_clock(alice, dora, rule):
    lead = assigned_lead(alice, due=MONDAY_0905, rule=rule, escalation_step=2)

    sweep_overdue(MONDAY_0905)

    lead.refresh_from_db()
    assert lead.escalation_step == 3
    assert lead.sla_due_at is None
    assert escalations(lead)[0]["to_reps"] == ["dora"]
    assert set(Notification.objects.filter(lead=lead, kind="escalated").values_list("recipient", flat=True)) == {
        dora.pk
    }


@pytest.mark.django_db
def test_escalate_to_levels_tells_every_active_rep_at_those_levels(alice):
    director = RepFactory(user__username="dir", level=Rep.Level.DIRECTOR)
    RepFactory(user__username="gone", level=Rep.Level.DIRECTOR, active=False)
    rule = make_rule(sla_minutes=5, ladder=["notify"], escalate_to={"levels": ["director"]})
    lead = assigned_lead(alice, due=MONDAY_0905, rule=rule)

    sweep_overdue(MONDAY_0905)

    assert set(Notification.objects.filter(lead=lead).values_list("recipient", flat=True)) == {director.pk}


@pytest.mark.django_db
def test_escalate_to_a_manager_without_a_rep_profile_sends_them_an_email(alice, mailoutbox):
    UserFactory(username="sam", email="sam@example.com")
    rule = make_rule(sla_minutes=5, ladder=["notify"], escalate_to=["sam"])
    lead = assigned_lead(alice, due=MONDAY_0905, rule=rule)

    sweep_overdue(MONDAY_0905)

    assert [m.to for m in mailoutbox] == [["sam@example.com"]]
    assert f"/board/leads/{lead.pk}/" in mailoutbox[0].body


@pytest.mark.django_db
def test_without_escalate_to_the_managers_are_told(alice, manager, mailoutbox):
    rule = make_rule(sla_minutes=5, ladder=["notify"])
    assigned_lead(alice, due=MONDAY_0905, rule=rule)

    sweep_overdue(MONDAY_0905)

    assert [m.to for m in mailoutbox] == [[manager.email]]


@pytest.mark.django_db
def test_a_custom_ladder_is_followed_step_by_step(alice, dora):
    rule = make_rule(sla_minutes=10, ladder=["notify", "remind"], escalate_to=["dora"])
    lead = assigned_lead(alice, due=MONDAY_0905, rule=rule)

    sweep_overdue(MONDAY_0905)
    lead.refresh_from_db()
    sweep_overdue(lead.sla_due_at)

    assert [d["action"] for d in escalations(lead)] == ["notify", "remind"]


@pytest.mark.django_db
def test_a_lead_without_a_rule_climbs_the_default_ladder(alice):
    lead = assigned_lead(alice, due=MONDAY_0905)

    sweep_overdue(MONDAY_0905)

    assert escalations(lead)[0]["action"] == "remind"


@pytest.mark.django_db
def test_a_touched_lead_is_never_escalated(alice, rule):
    lead = assigned_lead(alice, due=MONDAY_0905, rule=rule)
    lead_set_status(lead, "contacted", now=MONDAY_0905 - MINUTE)

    result = sweep_overdue(MONDAY_0905 + dt.timedelta(hours=1))

    assert result["escalated"] == 0
    assert kinds(lead) == ["status_changed"]

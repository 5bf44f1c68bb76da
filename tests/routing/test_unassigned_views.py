"""/unassigned/: leads no rule could place, oldest first, with the reason, route-now and manual assignment."""

from __future__ import annotations

import datetime as dt
import html

import pytest
from django.urls import reverse
from django.utils import timezone

from routing.models import Lead, LeadEvent
from routing.services import route_leads, ruleset_create_draft, ruleset_publish
from tests.factories import LeadFactory, RepFactory, TeamFactory, TimeOffFactory

pytestmark = pytest.mark.django_db

RULES = {"name": "Only EMEA", "rules": [{"name": "EMEA", "candidates": {"team": "EMEA"}, "strategy": "round_robin"}],
         "fallback": None}


@pytest.fixture
def stuck(db, manager):
    """Two leads left unassigned because the only EMEA rep is on time off."""
    emea = TeamFactory(name="EMEA")
    away = RepFactory(user__username="erin", team=emea)
    TimeOffFactory(rep=away)
    ruleset_publish(ruleset_create_draft(RULES, actor=manager), actor=manager)
    now = timezone.now()
    older = LeadFactory(company="Older Co", received_at=now - dt.timedelta(hours=5))
    newer = LeadFactory(company="Newer Co", received_at=now - dt.timedelta(hours=1))
    route_leads([older.pk, newer.pk])
    return {"older": older, "newer": newer, "away": away, "team": emea}


def test_it_forbids_reps_the_queue(rep_client):
    assert rep_client.get(reverse("unassigned")).status_code == 403


def test_it_sends_anonymous_visitors_to_the_login(client):
    response = client.get(reverse("unassigned"))
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_it_lists_unassigned_leads_oldest_first_with_the_reason(manager_client, stuck):
    response = manager_client.get(reverse("unassigned"))
    body = response.content.decode()
    assert [lead.pk for lead in response.context["leads"]] == [stuck["older"].pk, stuck["newer"].pk]
    assert body.index("Older Co") < body.index("Newer Co")
    reason = LeadEvent.objects.filter(lead=stuck["older"], kind="unassigned").latest("at").detail["summary"]
    assert reason and reason in body


def test_manual_assignment_is_logged_with_the_manager_as_actor(manager_client, manager, stuck, rep):
    lead = stuck["older"]
    response = manager_client.post(reverse("unassigned_assign", args=[lead.pk]),
                                   {"rep": rep.pk, "reason": "knows the customer"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "Assigned to" in response.content.decode() and "<html" not in response.content.decode()
    lead.refresh_from_db()
    assert lead.owner == rep and lead.status == "assigned"
    event = LeadEvent.objects.get(lead=lead, kind="manual_assigned")
    assert event.actor == manager and event.rep == rep and event.detail["reason"] == "knows the customer"


def test_manual_assignment_without_a_rep_is_refused_and_changes_nothing(manager_client, stuck):
    lead = stuck["older"]
    response = manager_client.post(reverse("unassigned_assign", args=[lead.pk]), {"rep": ""}, HTTP_HX_REQUEST="true")
    assert response.status_code == 422 and "Choose a rep" in response.content.decode()
    assert Lead.objects.get(pk=lead.pk).owner is None


def test_route_now_assigns_once_someone_is_available(manager_client, stuck):
    RepFactory(user__username="fred", team=stuck["team"])
    lead = stuck["newer"]
    response = manager_client.post(reverse("unassigned_route", args=[lead.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "Routed to" in response.content.decode()
    lead.refresh_from_db()
    assert lead.owner.user.username == "fred"
    assert LeadEvent.objects.filter(lead=lead, kind="routed").exists()


def test_route_now_with_still_nobody_available_keeps_the_lead_in_the_queue(manager_client, stuck):
    lead = stuck["newer"]
    response = manager_client.post(reverse("unassigned_route", args=[lead.pk]), HTTP_HX_REQUEST="true")
    assert "Still nobody available" in response.content.decode()
    assert Lead.objects.get(pk=lead.pk).status == "unassigned"


def test_without_htmx_the_actions_come_back_to_the_queue_with_a_message(manager_client, stuck, rep):
    response = manager_client.post(reverse("unassigned_assign", args=[stuck["older"].pk]), {"rep": rep.pk},
                                   follow=True)
    assert response.redirect_chain[-1][0] == reverse("unassigned")
    assert "Assigned to" in response.content.decode()


def test_each_rows_controls_name_their_lead_for_screen_readers(manager_client, stuck):
    body = manager_client.get(reverse("unassigned")).content.decode()

    older = html.escape(str(stuck["older"]))
    assert f'aria-label="Route {older} now"' in body
    assert f'aria-label="Assign {older} to"' in body


@pytest.fixture
def held(db, manager):
    """Two leads imported with "do not route", with a rule set that could place them."""
    RepFactory(user__username="ann")
    ruleset_publish(ruleset_create_draft(
        {"name": "All", "rules": [{"name": "All", "candidates": {"reps": ["ann"]}, "strategy": "round_robin"}]},
        actor=manager), actor=manager)
    return [LeadFactory(company=f"Held {i}", routing_held=True) for i in range(2)]


def test_held_leads_say_why_and_can_all_be_released_to_routing(manager_client, held,
                                                                django_capture_on_commit_callbacks):
    body = manager_client.get(reverse("unassigned")).content.decode()
    assert "2 leads held" in body and "held: imported without routing" in body

    with django_capture_on_commit_callbacks(execute=True):  # the routing task is queued on commit
        response = manager_client.post(reverse("unassigned_release_held"), follow=True)

    assert "2 held leads released to routing" in response.content.decode()
    assert {(lead.status, lead.routing_held) for lead in Lead.objects.filter(pk__in=[h.pk for h in held])} == {
        ("assigned", False)}


def test_routing_one_held_lead_by_hand_ends_its_hold(manager_client, held):
    lead = held[0]
    response = manager_client.post(reverse("unassigned_route", args=[lead.pk]), HTTP_HX_REQUEST="true")

    assert "Routed to" in response.content.decode()
    lead.refresh_from_db()
    assert lead.status == "assigned" and not lead.routing_held
    assert Lead.objects.get(pk=held[1].pk).routing_held  # the other one still waits


def test_reps_cannot_release_held_leads(rep_client, held):
    assert rep_client.post(reverse("unassigned_release_held")).status_code == 403
    assert all(Lead.objects.filter(pk=h.pk, routing_held=True).exists() for h in held)


def test_assigning_a_held_lead_by_hand_ends_its_hold(manager_client, held, rep):
    lead = held[0]
    manager_client.post(reverse("unassigned_assign", args=[lead.pk]), {"rep": rep.pk}, HTTP_HX_REQUEST="true")

    lead.refresh_from_db()
    assert (lead.owner, lead.routing_held) == (rep, False)

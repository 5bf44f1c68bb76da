"""/leads/<id>/explain/: the decision trace, for managers on any lead and for reps on their own."""

from __future__ import annotations

import pytest
from django.urls import reverse

from routing.models import LeadEvent
from routing.services import route_leads, ruleset_create_draft, ruleset_publish
from tests.factories import LeadFactory, RepFactory, TeamFactory

pytestmark = pytest.mark.django_db

RULES = {
    "name": "Explained",
    "rules": [
        {"name": "Urgent to directors", "when": [{"field": "priority", "op": "eq", "value": "urgent"}],
         "candidates": {"levels": ["director"]}, "strategy": "round_robin"},
        {"name": "EMEA", "candidates": {"team": "EMEA"}, "strategy": "first_available"},
    ],
    "fallback": None,
}


@pytest.fixture
def routed(db, manager, rep, other_rep):
    emea = TeamFactory(name="EMEA")
    for r in (rep, other_rep):
        r.team = emea
        r.save(update_fields=["team"])
    ruleset_publish(ruleset_create_draft(RULES, actor=manager), actor=manager)
    lead = LeadFactory(company="Acme GmbH")
    route_leads([lead.pk])
    lead.refresh_from_db()
    return lead


def test_it_shows_each_rule_tried_and_each_candidate_to_a_manager(manager_client, routed):
    body = manager_client.get(reverse("lead_explain", args=[routed.pk])).content.decode()
    assert "Urgent to directors" in body and "did not match" in body
    assert "priority" in body  # the condition that failed
    assert "EMEA" in body and "matched" in body
    assert "chosen" in body and "skipped" in body
    assert "alice" in body and "bob" in body


def test_a_rep_sees_the_explanation_of_their_own_lead(client, routed):
    client.force_login(routed.owner.user)
    response = client.get(reverse("lead_explain", args=[routed.pk]))
    assert response.status_code == 200
    assert "EMEA" in response.content.decode()


def test_a_rep_gets_404_explaining_another_reps_lead(client, routed, rep, other_rep):
    someone_else = other_rep if routed.owner == rep else rep
    client.force_login(someone_else.user)
    assert client.get(reverse("lead_explain", args=[routed.pk])).status_code == 404


def test_it_sends_anonymous_visitors_to_the_login(client, routed):
    response = client.get(reverse("lead_explain", args=[routed.pk]))
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_it_explains_a_lead_that_was_never_routed_with_what_the_rules_would_do_now(manager_client, routed):
    lead = LeadFactory(priority="urgent")
    body = manager_client.get(reverse("lead_explain", args=[lead.pk])).content.decode()
    assert "never routed" in body
    assert "Urgent to directors" in body
    assert not LeadEvent.objects.filter(lead=lead).exists()


def test_an_unknown_lead_is_404_for_a_manager(manager_client, db):
    assert manager_client.get(reverse("lead_explain", args=[999999])).status_code == 404


def test_a_rep_without_a_lead_cannot_probe_ids(client, routed):
    client.force_login(RepFactory(user__username="carol").user)
    assert client.get(reverse("lead_explain", args=[routed.pk])).status_code == 404

"""Pools and claims in the JSON API (CONTRACT §5), with the rep's own token."""

from __future__ import annotations

import pytest

from routing.models import ApiToken, Lead, LeadEvent
from routing.pools import lead_claim
from tests.factories import LeadFactory, PoolFactory
from tests.routing.test_pools_support import pooled

pytestmark = pytest.mark.django_db


def bearer(user, scope: str = "full") -> dict[str, str]:
    _, raw = ApiToken.issue(user, scope=scope)
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def test_it_lists_the_callers_pools_with_waiting_counts(client, rep, other_rep):
    pool = PoolFactory(name="smb", members=[rep], mode="cherry_pick")
    PoolFactory(name="ent", members=[other_rep])
    pooled(pool)
    pooled(pool)

    response = client.get("/api/pools/", **bearer(rep.user))

    assert response.status_code == 200
    assert response.json() == [{"name": "smb", "mode": "cherry_pick", "waiting": 2}]


def test_pool_leads_are_paginated_like_the_lead_list(client, rep):
    pool = PoolFactory(name="smb", members=[rep])
    for _ in range(3):
        pooled(pool)

    first = client.get("/api/pools/smb/leads/", {"limit": 2}, **bearer(rep.user)).json()
    second = client.get(first["next"], **bearer(rep.user)).json()

    assert first["count"] == 3 and len(first["items"]) == 2
    assert len(second["items"]) == 1 and second["next"] is None
    assert set(first["items"][0]) >= {"id", "company", "company_size", "country", "score", "pool"}


def test_pool_leads_of_someone_elses_pool_are_forbidden(client, rep, other_rep):
    PoolFactory(name="ent", members=[other_rep])

    assert client.get("/api/pools/ent/leads/", **bearer(rep.user)).status_code == 403
    assert client.get("/api/pools/nope/leads/", **bearer(rep.user)).status_code == 404


def test_claim_returns_the_owner(client, rep):
    lead = pooled(PoolFactory(members=[rep]))

    response = client.post(f"/api/leads/{lead.pk}/claim/", **bearer(rep.user))

    assert response.status_code == 200
    assert response.json()["owner"] == rep.user.username


def test_claim_of_a_taken_lead_is_409_with_who_and_when(client, rep, other_rep):
    lead = pooled(PoolFactory(members=[rep, other_rep]))
    lead_claim(lead, rep=other_rep)

    response = client.post(f"/api/leads/{lead.pk}/claim/", **bearer(rep.user))

    assert response.status_code == 409
    assert "Already claimed by" in response.json()["detail"]


def test_claim_at_the_limit_is_409(client, rep):
    pool = PoolFactory(name="SMB", members=[rep], claim_limit=1)
    lead_claim(pooled(pool), rep=rep)

    response = client.post(f"/api/leads/{pooled(pool).pk}/claim/", **bearer(rep.user))

    assert response.status_code == 409
    assert response.json()["detail"].startswith("You hold 1 of 1 leads from the SMB pool")


def test_claim_by_a_non_member_is_403_and_changes_nothing(client, rep, other_rep):
    lead = pooled(PoolFactory(members=[other_rep]))

    response = client.post(f"/api/leads/{lead.pk}/claim/", **bearer(rep.user))

    assert response.status_code == 403
    lead.refresh_from_db()
    assert lead.owner is None and not lead.events.exists()


def test_an_intake_token_cannot_claim(client, rep):
    lead = pooled(PoolFactory(members=[rep]))

    response = client.post(f"/api/leads/{lead.pk}/claim/", **bearer(rep.user, scope="intake"))

    assert response.status_code == 403
    lead.refresh_from_db()
    assert lead.owner is None


def test_claim_without_a_token_is_401(client, rep):
    lead = pooled(PoolFactory(members=[rep]))

    assert client.post(f"/api/leads/{lead.pk}/claim/").status_code == 401


def test_guessing_another_reps_pushed_lead_is_404(client, rep, other_rep):
    lead = LeadFactory(owner=other_rep, status=Lead.Status.ASSIGNED)
    headers = bearer(rep.user)

    assert client.post(f"/api/leads/{lead.pk}/claim/", **headers).status_code == 404
    assert client.post(f"/api/leads/{lead.pk}/release/", **headers).status_code == 404


def test_release_gives_the_lead_back(client, rep):
    lead = lead_claim(pooled(PoolFactory(members=[rep])), rep=rep)

    response = client.post(
        f"/api/leads/{lead.pk}/release/", {"reason": "no time"}, content_type="application/json", **bearer(rep.user)
    )

    assert response.status_code == 200
    assert response.json()["status"] == "pooled"
    assert lead.events.get(kind=LeadEvent.Kind.RELEASED).detail["reason"] == "no time"


def test_release_of_a_lead_i_do_not_hold_is_409(client, rep):
    lead = pooled(PoolFactory(members=[rep]))

    response = client.post(f"/api/leads/{lead.pk}/release/", **bearer(rep.user))

    assert response.status_code == 409


def test_the_pool_endpoints_are_in_the_openapi_schema(client):
    paths = client.get("/api/openapi.json").json()["paths"]

    assert {"/api/pools/", "/api/pools/{name}/leads/", "/api/leads/{lead_id}/claim/",
            "/api/leads/{lead_id}/release/"} <= set(paths)

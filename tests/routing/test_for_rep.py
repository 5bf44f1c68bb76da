"""What a rep may see (Lead.objects.for_rep): their own leads and the waiting leads of their pools.

Every rep-facing lookup by id — board and API — uses that one rule, so guessing another rep's lead
id or a lead of someone else's pool is a 404 everywhere; a token whose user left the Reps group is
refused like the web board refuses them.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from leadops import roles
from routing.models import Lead
from routing.pools import lead_claim
from tests.factories import LeadFactory, PoolFactory, RepFactory
from tests.routing.test_claims_api import bearer
from tests.routing.test_pools_support import pooled

pytestmark = pytest.mark.django_db

BOARD = [
    ("get", "/board/leads/{}/"),
    ("post", "/board/leads/{}/claim/"),
    ("post", "/board/leads/{}/release/"),
    ("post", "/board/leads/{}/status/"),
]
API = [
    ("get", "/api/leads/{}/"),
    ("post", "/api/leads/{}/status/"),
    ("post", "/api/leads/{}/claim/"),
    ("post", "/api/leads/{}/release/"),
]
# Claiming answers 409 "taken" to a member of the lead's pool and 403 for a waiting lead of a pool
# the caller is not in (CONTRACT §5); every other lookup hides such leads behind a 404.
NOT_CLAIM = [(m, p) for m, p in BOARD + API if not p.endswith("/claim/")]


def assigned(rep, **fields) -> Lead:
    return LeadFactory(owner=rep, status=Lead.Status.ASSIGNED, **fields)


def board_call(client, method: str, path: str, lead: Lead):
    url = path.format(lead.pk)
    return client.get(url) if method == "get" else client.post(url, {"status": "contacted"})


def api_call(client, method: str, path: str, lead: Lead, user):
    url, auth = path.format(lead.pk), bearer(user)
    if method == "get":
        return client.get(url, **auth)
    return client.post(url, {"status": "contacted"}, content_type="application/json", **auth)


def run(client, method: str, path: str, lead: Lead, user):
    if path.startswith("/api/"):
        return api_call(client, method, path, lead, user)
    client.force_login(user)
    return board_call(client, method, path, lead)


# -- the queryset ---------------------------------------------------------------------------------


def test_for_rep_is_my_leads_and_the_waiting_leads_of_my_pools(rep, other_rep):
    mine, theirs = PoolFactory(members=[rep, other_rep]), PoolFactory(members=[other_rep])
    own = assigned(rep)
    closed = LeadFactory(owner=rep, status=Lead.Status.WON)
    waiting = pooled(mine)
    assigned(other_rep)
    pooled(theirs)
    lead_claim(pooled(mine), rep=other_rep)
    LeadFactory(status=Lead.Status.UNASSIGNED)

    assert set(Lead.objects.for_rep(rep)) == {own, closed, waiting}


def test_for_rep_lists_a_lead_once_however_many_members_its_pool_has(rep):
    pool = PoolFactory(members=[rep, RepFactory(), RepFactory()])
    lead_claim(pooled(pool), rep=rep)
    pooled(pool)

    assert Lead.objects.for_rep(rep).count() == len(list(Lead.objects.for_rep(rep))) == 2


# -- another rep's lead ---------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), BOARD + API)
def test_guessing_another_reps_lead_id_is_a_404(client, rep, other_rep, method, path):
    lead = assigned(other_rep, company="Secret GmbH")

    response = run(client, method, path, lead, rep.user)

    assert response.status_code == 404
    assert b"Secret GmbH" not in response.content
    lead.refresh_from_db()
    assert lead.owner == other_rep and lead.status == Lead.Status.ASSIGNED


@pytest.mark.parametrize(("method", "path"), BOARD + API)
def test_a_lead_another_rep_claimed_from_a_pool_i_am_not_in_is_a_404(client, rep, other_rep, method, path):
    lead = pooled(PoolFactory(members=[other_rep]))
    lead_claim(lead, rep=other_rep)

    assert run(client, method, path, lead, rep.user).status_code == 404


@pytest.mark.parametrize(("method", "path"), NOT_CLAIM)
def test_a_lead_another_rep_claimed_from_my_pool_is_hidden_outside_claiming(client, rep, other_rep, method, path):
    lead = pooled(PoolFactory(members=[rep, other_rep]))
    lead_claim(lead, rep=other_rep)

    assert run(client, method, path, lead, rep.user).status_code == 404


# -- a pool I am not in ---------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), NOT_CLAIM)
def test_a_waiting_lead_of_a_pool_i_am_not_in_is_a_404(client, rep, other_rep, method, path):
    PoolFactory(members=[rep])
    lead = pooled(PoolFactory(members=[other_rep]), company="Other Pool AG")

    response = run(client, method, path, lead, rep.user)

    assert response.status_code == 404
    assert b"Other Pool AG" not in response.content


# -- own leads ------------------------------------------------------------------------------------


def test_my_own_lead_is_visible_on_the_board_and_in_the_api(client, rep):
    lead = assigned(rep, company="Mine Ltd")

    api = client.get(f"/api/leads/{lead.pk}/", **bearer(rep.user))
    client.force_login(rep.user)
    page = client.get(f"/board/leads/{lead.pk}/")

    assert api.status_code == 200 and api.json()["owner"] == rep.user.username
    assert page.status_code == 200 and b"Mine Ltd" in page.content


def test_a_waiting_lead_of_my_pool_is_visible_on_the_board_and_in_the_api(client, rep):
    lead = pooled(PoolFactory(members=[rep]), company="Waiting Co")

    api = client.get(f"/api/leads/{lead.pk}/", **bearer(rep.user))
    client.force_login(rep.user)
    page = client.get(f"/board/leads/{lead.pk}/")

    assert api.status_code == 200 and api.json()["status"] == Lead.Status.POOLED
    assert page.status_code == 200 and b"Waiting Co" in page.content


# -- a rep who left the Reps group ----------------------------------------------------------------


@pytest.fixture
def former_rep(rep):
    """Still has a Rep row and a live token, but is no longer in the Reps group."""
    rep.user.groups.remove(Group.objects.get(name=roles.REPS))
    return rep


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/api/pools/"), ("get", "/api/pools/smb/leads/"),
     ("post", "/api/leads/{}/claim/"), ("post", "/api/leads/{}/release/")],
)
def test_a_token_of_a_user_who_left_the_reps_group_is_refused_by_the_rep_endpoints(
    client, former_rep, method, path
):
    pool = PoolFactory(name="smb", members=[former_rep])
    lead = pooled(pool) if path.endswith("/claim/") else assigned(former_rep, pool=pool, claimed_at=timezone.now())

    response = api_call(client, method, path, lead, former_rep.user)

    assert response.status_code == 403
    lead.refresh_from_db()
    assert lead.status == (Lead.Status.POOLED if path.endswith("/claim/") else Lead.Status.ASSIGNED)


def test_a_user_who_left_the_reps_group_no_longer_reads_their_old_leads(client, former_rep):
    lead = assigned(former_rep)

    assert client.get(f"/api/leads/{lead.pk}/", **bearer(former_rep.user)).status_code == 404
    assert client.get("/api/leads/", **bearer(former_rep.user)).json()["count"] == 0


def test_the_board_refuses_a_user_who_left_the_reps_group_too(client, former_rep):
    client.force_login(former_rep.user)

    assert client.get("/board/").status_code == 403

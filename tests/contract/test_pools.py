"""CONTRACT §5: pools and claiming — the API shapes and codes, limits, timeouts, exactly-once claims."""

from __future__ import annotations

import datetime as dt
import io
import json
import threading

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from reps.models import Rep
from routing.models import Lead, LeadEvent, Notification, Pool
from tests.factories import PoolFactory, RepFactory

pytestmark = pytest.mark.django_db


def token_for(username: str) -> dict[str, str]:
    out = io.StringIO()
    call_command("create_api_token", username, stdout=out)
    return {"Authorization": f"Bearer {out.getvalue().strip()}"}


def post(client, path: str, headers: dict[str, str]):
    return client.post(path, data="{}", content_type="application/json", headers=headers)


def pool_leads(tmp_path, pool: str, count: int, **lead) -> list[Lead]:
    """Leads sent to the pool the way production does it: a published rule with `pool`, then routing."""
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"name": "to pool", "rules": [{"name": "All to pool", "pool": pool}]}))
    call_command("load_rules", str(path), "--publish", stdout=io.StringIO())
    from tests.factories import LeadFactory

    leads = [LeadFactory(**lead) for _ in range(count)]
    call_command("route_pending", stdout=io.StringIO())
    for lead in leads:
        lead.refresh_from_db()
    return leads


@pytest.fixture
def members(db):
    alice, bob = RepFactory(user__username="alice"), RepFactory(user__username="bob")
    RepFactory(user__username="carl")  # not a member
    PoolFactory(name="smb", members=[alice, bob], claim_limit=2)
    return alice, bob


def test_get_pools_lists_the_callers_pools_with_mode_and_waiting_count(client, members, tmp_path):
    pool_leads(tmp_path, "smb", 3)
    PoolFactory(name="enterprise", members=[])

    resp = client.get("/api/pools/", headers=token_for("alice"))

    assert resp.status_code == 200
    assert resp.json() == [{"name": "smb", "mode": "cherry_pick", "waiting": 3}]


def test_get_pool_leads_is_paginated_like_the_leads_list(client, members, tmp_path):
    leads = pool_leads(tmp_path, "smb", 3)
    auth = token_for("alice")

    first = client.get("/api/pools/smb/leads/?limit=2", headers=auth).json()
    second = client.get(first["next"], headers=auth).json()

    assert set(first) == {"items", "count", "next"} and first["count"] == 3
    assert {i["id"] for i in first["items"] + second["items"]} == {lead.pk for lead in leads}


def test_a_non_member_gets_403_for_the_pools_leads_and_a_claim(client, members, tmp_path):
    lead = pool_leads(tmp_path, "smb", 1)[0]
    auth = token_for("carl")

    assert client.get("/api/pools/smb/leads/", headers=auth).status_code == 403
    assert post(client, f"/api/leads/{lead.pk}/claim/", auth).status_code == 403


def test_a_claim_answers_200_with_the_owner(client, members, tmp_path):
    lead = pool_leads(tmp_path, "smb", 1)[0]

    resp = post(client, f"/api/leads/{lead.pk}/claim/", token_for("alice"))

    lead.refresh_from_db()
    assert resp.status_code == 200 and resp.json()["owner"] == "alice"
    assert (lead.owner.user.username, lead.status) == ("alice", "assigned")
    assert lead.events.filter(kind="claimed").count() == 1


def test_a_claim_on_a_taken_lead_answers_409_with_a_detail(client, members, tmp_path):
    lead = pool_leads(tmp_path, "smb", 1)[0]
    post(client, f"/api/leads/{lead.pk}/claim/", token_for("alice"))

    resp = post(client, f"/api/leads/{lead.pk}/claim/", token_for("bob"))

    assert resp.status_code == 409 and resp.json()["detail"]
    lead.refresh_from_db()
    assert lead.owner.user.username == "alice"


def test_a_claim_beyond_the_claim_limit_answers_409(client, members, tmp_path):
    leads = pool_leads(tmp_path, "smb", 3)
    auth = token_for("alice")

    codes = [post(client, f"/api/leads/{lead.pk}/claim/", auth).status_code for lead in leads]

    assert codes == [200, 200, 409]
    assert "2 of 2" in post(client, f"/api/leads/{leads[2].pk}/claim/", auth).json()["detail"]


def test_release_gives_the_lead_back_to_the_pool(client, members, tmp_path):
    lead = pool_leads(tmp_path, "smb", 1)[0]
    auth = token_for("alice")
    post(client, f"/api/leads/{lead.pk}/claim/", auth)

    resp = post(client, f"/api/leads/{lead.pk}/release/", auth)

    lead.refresh_from_db()
    assert resp.status_code == 200
    assert (lead.status, lead.owner_id, lead.pool.name) == ("pooled", None, "smb")
    assert lead.events.filter(kind="released").count() == 1
    assert post(client, f"/api/leads/{lead.pk}/claim/", token_for("bob")).status_code == 200


def test_a_shotgun_lead_is_announced_to_every_member_at_once(members, tmp_path):
    Pool.objects.filter(name="smb").update(mode="shotgun")

    lead = pool_leads(tmp_path, "smb", 1)[0]

    announced = LeadEvent.objects.filter(lead=lead, kind="announced")
    assert announced.exists()
    assert set(lead.announcements.values_list("rep__user__username", flat=True)) == {"alice", "bob"}


def test_the_board_claims_with_htmx_without_a_full_page(members, tmp_path):
    lead = pool_leads(tmp_path, "smb", 1)[0]
    client = Client()
    client.force_login(Rep.objects.get(user__username="alice").user)

    resp = client.post(f"/board/leads/{lead.pk}/claim/", headers={"HX-Request": "true"})

    lead.refresh_from_db()
    assert resp.status_code == 200 and lead.owner.user.username == "alice"
    assert b"<html" not in resp.content


# -- on_timeout after window_minutes ------------------------------------------------------------------------


def sweep_after(lead: Lead, minutes: int) -> None:
    at = (lead.pooled_at + dt.timedelta(minutes=minutes)).isoformat()
    call_command("sweep_overdue", "--now", at, stdout=io.StringIO())


@pytest.fixture
def timed(members):
    Pool.objects.filter(name="smb").update(window_minutes=10)
    return Pool.objects.get(name="smb")


def test_timeout_push_assigns_to_an_available_member(timed, tmp_path):
    Pool.objects.filter(pk=timed.pk).update(on_timeout="push")
    lead = pool_leads(tmp_path, "smb", 1)[0]

    sweep_after(lead, 5)
    lead.refresh_from_db()
    assert lead.owner_id is None

    sweep_after(lead, 11)
    lead.refresh_from_db()
    assert lead.owner.user.username in {"alice", "bob"} and lead.status == "assigned"


def test_timeout_shotgun_announces_to_every_member(timed, tmp_path):
    Pool.objects.filter(pk=timed.pk).update(on_timeout="shotgun")
    lead = pool_leads(tmp_path, "smb", 1)[0]

    sweep_after(lead, 11)

    assert set(lead.announcements.values_list("rep__user__username", flat=True)) == {"alice", "bob"}


def test_timeout_escalate_tells_the_pools_managers(timed, tmp_path, django_capture_on_commit_callbacks):
    dora = RepFactory(user__username="dora")
    timed.managers.add(dora)
    Pool.objects.filter(pk=timed.pk).update(on_timeout="escalate")
    lead = pool_leads(tmp_path, "smb", 1)[0]

    with django_capture_on_commit_callbacks(execute=True):
        sweep_after(lead, 11)

    assert LeadEvent.objects.filter(lead=lead, kind="escalated").count() == 1
    assert Notification.objects.filter(lead=lead, recipient=dora).exists()


def test_timeout_stay_leaves_the_lead_waiting(timed, tmp_path):
    Pool.objects.filter(pk=timed.pk).update(on_timeout="stay")
    lead = pool_leads(tmp_path, "smb", 1)[0]

    sweep_after(lead, 60)

    lead.refresh_from_db()
    assert (lead.status, lead.owner_id) == ("pooled", None)


# -- exactly one winner under concurrency (PostgreSQL) -------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_claims_through_the_api_have_exactly_one_winner(tmp_path):
    reps = [RepFactory(user__username=f"rep{i:02d}") for i in range(20)]
    PoolFactory(name="rush", members=reps, mode="shotgun")
    lead = pool_leads(tmp_path, "rush", 1)[0]
    auths = [token_for(rep.user.username) for rep in reps]
    barrier = threading.Barrier(20)
    codes: list[int] = []

    def claim(auth):
        try:
            barrier.wait()
            codes.append(post(Client(), f"/api/leads/{lead.pk}/claim/", auth).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(auth,)) for auth in auths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(codes) == [200] + [409] * 19
    assert LeadEvent.objects.filter(lead=lead, kind="claimed").count() == 1
    assert timezone.now() >= Lead.objects.get(pk=lead.pk).assigned_at


def test_a_worked_lead_no_longer_counts_against_the_claim_limit(client, members, tmp_path):
    leads = pool_leads(tmp_path, "smb", 3)
    auth = token_for("alice")
    for lead in leads[:2]:
        post(client, f"/api/leads/{lead.pk}/claim/", auth)

    client.post(f"/api/leads/{leads[0].pk}/status/", data=json.dumps({"status": "won"}),
                content_type="application/json", headers=auth)

    assert post(client, f"/api/leads/{leads[2].pk}/claim/", auth).status_code == 200


def test_a_pool_timeout_swept_twice_at_the_same_now_is_taken_once(timed, tmp_path):
    Pool.objects.filter(pk=timed.pk).update(on_timeout="shotgun")
    lead = pool_leads(tmp_path, "smb", 1)[0]
    sweep_after(lead, 11)
    before = list(LeadEvent.objects.order_by("pk").values_list("pk", "kind"))

    sweep_after(lead, 11)

    assert list(LeadEvent.objects.order_by("pk").values_list("pk", "kind")) == before

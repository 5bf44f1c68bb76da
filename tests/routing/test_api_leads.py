"""The leads API (CONTRACT §4): create, idempotency, read, list, status, auth and scopes."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from leadops import roles
from routing.api_auth import token_auth
from routing.models import ApiToken, IdempotencyRecord, Lead, LeadEvent
from tests.concurrency import run_at_once
from tests.factories import LeadFactory, PoolFactory, RepFactory, UserFactory

pytestmark = pytest.mark.django_db


def bearer(user, scope: str = "full", name: str = "webform") -> dict[str, str]:
    _, raw = ApiToken.issue(user, name=name, scope=scope)
    return {"Authorization": f"Bearer {raw}"}


def post(client: Client, path: str, body, headers: dict[str, str]):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", headers=headers)


@pytest.fixture
def ops_auth(ops_user):
    return bearer(ops_user)


def test_it_creates_a_lead_and_answers_with_the_routing_result(client, ops_auth):
    resp = post(client, "/api/leads/", {"email": "New@Lead.example", "country": "Germany", "score": 90}, ops_auth)

    assert resp.status_code == 201
    body = resp.json()
    assert {"id", "status", "owner", "pool", "rule", "explanation"} <= set(body)
    lead = Lead.objects.get(pk=body["id"])
    assert (lead.email, lead.country, lead.score, lead.source) == ("new@lead.example", "DE", 90, "webform")
    assert body["status"] == lead.status


def test_a_created_lead_has_its_received_event_with_the_token_name(client, ops_auth):
    resp = post(client, "/api/leads/", {"email": "ev@lead.example"}, ops_auth)

    event = LeadEvent.objects.get(lead_id=resp.json()["id"], kind="received")
    assert event.detail["source"] == "webform"


def test_a_duplicate_email_merges_and_answers_200_with_duplicate_of(client, ops_auth):
    existing = LeadFactory(email="dup@lead.example")

    resp = post(client, "/api/leads/", {"email": "DUP@lead.example", "phone": "+4930123456"}, ops_auth)

    assert resp.status_code == 200 and resp.json()["duplicate_of"] == existing.pk
    existing.refresh_from_db()
    assert existing.merged_count == 1 and existing.phone == "+4930123456"
    assert Lead.objects.count() == 1
    assert existing.events.get(kind="merged").detail["source"] == "webform"


def test_unknown_keys_are_kept_in_extra(client, ops_auth):
    resp = post(client, "/api/leads/", {"email": "x@lead.example", "utm_campaign": "q4", "extra": {"a": 1}}, ops_auth)

    assert Lead.objects.get(pk=resp.json()["id"]).extra == {"utm_campaign": "q4", "a": 1}


def test_malformed_json_is_a_400(client, ops_auth):
    resp = post(client, "/api/leads/", b"{not json", ops_auth)

    assert resp.status_code == 400


def test_missing_email_and_phone_is_a_422_naming_both(client, ops_auth):
    resp = post(client, "/api/leads/", {"first_name": "Nobody"}, ops_auth)

    assert resp.status_code == 422
    fields = {d["loc"][-1] for d in resp.json()["detail"]}
    assert fields == {"email", "phone"}


def test_bad_values_are_a_422_naming_the_fields(client, ops_auth):
    resp = post(client, "/api/leads/", {"email": "bad@", "score": "high", "priority": "asap"}, ops_auth)

    assert resp.status_code == 422
    assert {d["loc"][-1] for d in resp.json()["detail"]} == {"email", "score", "priority"}
    assert Lead.objects.count() == 0


def test_no_token_is_a_401(client):
    assert post(client, "/api/leads/", {"email": "a@b.example"}, {}).status_code == 401


def test_a_wrong_token_is_a_401(client, ops_user):
    assert post(client, "/api/leads/", {"email": "a@b.example"}, {"Authorization": "Bearer lo_nope"}).status_code == 401


def test_a_revoked_token_is_a_401(client, ops_user):
    headers = bearer(ops_user)
    ApiToken.objects.update(revoked_at="2026-01-01T00:00:00Z")

    assert client.get("/api/leads/", headers=headers).status_code == 401


def test_a_rep_cannot_create_leads(client, rep):
    assert post(client, "/api/leads/", {"email": "a@b.example"}, bearer(rep.user)).status_code == 403


def test_an_idempotent_repeat_returns_the_same_lead_with_200(client, ops_auth):
    headers = {**ops_auth, "Idempotency-Key": "form-123"}
    first = post(client, "/api/leads/", {"email": "idem@lead.example"}, headers)

    again = post(client, "/api/leads/", {"email": "idem@lead.example"}, headers)

    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Lead.objects.count() == 1


def test_the_same_key_with_a_different_body_is_a_409(client, ops_auth):
    headers = {**ops_auth, "Idempotency-Key": "form-9"}
    post(client, "/api/leads/", {"email": "one@lead.example"}, headers)

    resp = post(client, "/api/leads/", {"email": "two@lead.example"}, headers)

    assert resp.status_code == 409 and Lead.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_repeats_of_one_key_create_exactly_one_lead(ops_user):
    headers = {**bearer(ops_user), "Idempotency-Key": "burst-1"}

    def send():
        resp = post(Client(), "/api/leads/", {"email": "burst@lead.example"}, headers)
        return resp.status_code, resp.json()["id"]

    results = run_at_once(send, threads=10)
    statuses = [status for status, _ in results]
    ids = [lead_id for _, lead_id in results]

    assert Lead.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1
    assert sorted(statuses) == [200] * 9 + [201]
    assert len(set(ids)) == 1


def test_get_shows_owner_pool_status_sla_and_the_timeline(client, manager):
    owner = RepFactory(user__username="carol")
    lead = LeadFactory(owner=owner, status="assigned", sla_due_at="2026-11-23T10:00:00Z")
    LeadEvent.objects.create(lead=lead, kind="routed", rep=owner, detail={"why": "round robin"})

    resp = client.get(f"/api/leads/{lead.pk}/", headers=bearer(manager))

    body = resp.json()
    assert resp.status_code == 200
    assert (body["owner"], body["status"], body["pool"]) == ("carol", "assigned", None)
    assert body["sla_due_at"].startswith("2026-11-23T10:00")
    assert body["events"] == [
        {"kind": "routed", "at": body["events"][0]["at"], "rep": "carol", "rule": None,
         "detail": {"why": "round robin"}}
    ]


def test_a_rep_sees_their_own_lead_and_their_pools_waiting_leads(client, rep, other_rep):
    pool = PoolFactory(members=[rep])
    mine = LeadFactory(owner=rep, status="assigned")
    waiting = LeadFactory(pool=pool, status="pooled")
    theirs = LeadFactory(owner=other_rep, status="assigned")
    headers = bearer(rep.user)

    assert client.get(f"/api/leads/{mine.pk}/", headers=headers).status_code == 200
    assert client.get(f"/api/leads/{waiting.pk}/", headers=headers).status_code == 200
    assert client.get(f"/api/leads/{theirs.pk}/", headers=headers).status_code == 404


def test_an_intake_token_cannot_read_or_list_other_leads(client, ops_user):
    other = LeadFactory()
    headers = bearer(ops_user, scope="intake")

    assert client.get(f"/api/leads/{other.pk}/", headers=headers).status_code == 404
    assert client.get("/api/leads/", headers=headers).status_code == 403


def test_an_intake_token_reads_back_the_lead_it_created(client, ops_user):
    headers = bearer(ops_user, scope="intake")
    created = post(client, "/api/leads/", {"email": "mine@lead.example"}, headers).json()

    assert client.get(f"/api/leads/{created['id']}/", headers=headers).status_code == 200


def test_the_list_filters_and_paginates(client, manager):
    owner = RepFactory(user__username="dave")
    for i in range(5):
        LeadFactory(email=f"l{i}@x.example", owner=owner, status="assigned", source="fair")
    LeadFactory(source="web")
    headers = bearer(manager)

    first = client.get("/api/leads/?source=fair&owner=dave&status=assigned&limit=2", headers=headers).json()
    second = client.get(first["next"], headers=headers).json()

    assert first["count"] == 5 and len(first["items"]) == 2
    assert "offset=2" in first["next"] and "source=fair" in first["next"]
    assert len(second["items"]) == 2
    assert client.get("/api/leads/?email=L3@x.example", headers=headers).json()["count"] == 1


def test_a_rep_lists_only_leads_they_may_see(client, rep, other_rep):
    LeadFactory(owner=rep, status="assigned")
    LeadFactory(owner=other_rep, status="assigned")

    assert client.get("/api/leads/", headers=bearer(rep.user)).json()["count"] == 1


def test_the_owner_records_a_touch(client, rep):
    lead = LeadFactory(owner=rep, status="assigned")

    resp = post(client, f"/api/leads/{lead.pk}/status/", {"status": "contacted"}, bearer(rep.user))

    lead.refresh_from_db()
    assert resp.status_code == 200 and resp.json()["status"] == "contacted"
    assert lead.first_touch_at is not None
    assert lead.events.filter(kind="status_changed").count() == 1


def test_a_bad_transition_is_a_409_with_detail(client, rep):
    lead = LeadFactory(owner=rep, status="won")

    resp = post(client, f"/api/leads/{lead.pk}/status/", {"status": "contacted"}, bearer(rep.user))

    assert resp.status_code == 409 and "won" in resp.json()["detail"]


def test_an_unknown_status_is_a_422(client, rep):
    lead = LeadFactory(owner=rep, status="assigned")

    assert post(client, f"/api/leads/{lead.pk}/status/", {"status": "bored"}, bearer(rep.user)).status_code == 422


def test_a_pool_member_who_is_not_the_owner_cannot_set_status(client, rep):
    pool = PoolFactory(members=[rep])
    lead = LeadFactory(pool=pool, status="pooled")

    assert post(client, f"/api/leads/{lead.pk}/status/", {"status": "contacted"}, bearer(rep.user)).status_code == 403


def test_someone_elses_lead_is_a_404_for_status(client, rep, other_rep):
    lead = LeadFactory(owner=other_rep, status="assigned")

    assert post(client, f"/api/leads/{lead.pk}/status/", {"status": "contacted"}, bearer(rep.user)).status_code == 404


def test_an_intake_token_on_claim_is_a_403(client, rep):
    pool = PoolFactory(members=[rep])
    lead = LeadFactory(pool=pool, status="pooled")

    resp = client.post(f"/api/leads/{lead.pk}/claim/", headers=bearer(rep.user, scope="intake"))

    assert resp.status_code == 403


def test_the_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/openapi.json").json()

    assert "/api/leads/" in schema["paths"] and "/api/leads/{lead_id}/status/" in schema["paths"]
    docs = client.get("/api/docs")
    assert docs.status_code == 200
    # Swagger UI from our own static files: the page works without the internet.
    page = docs.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in page and "cdn." not in page
    assert finders.find("ninja/swagger-ui-bundle.js")  # collected with the rest (collectstatic)


def test_create_api_token_prints_a_token_that_works(client, ops_user):
    out = io.StringIO()
    call_command("create_api_token", "ops", "--name", "crm", "--scope", "intake", stdout=out)
    raw = out.getvalue().strip()

    token = ApiToken.lookup(raw)
    assert token is not None and (token.name, token.scope, token.user) == ("crm", "intake", ops_user)
    assert token.token_hash != raw
    assert post(client, "/api/leads/", {"email": "t@x.example"}, {"Authorization": f"Bearer {raw}"}).status_code == 201


def test_a_call_reads_its_token_user_and_roles_in_one_query(rf, django_assert_num_queries):
    """Every API call starts with the token and the role checks: one query, however many groups."""
    user = UserFactory(username="both", groups=["Ops", "Managers"])
    token, raw = ApiToken.issue(user, name="crm")
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())  # recently used: no write
    request = rf.get("/api/leads/")

    with django_assert_num_queries(1):
        assert token_auth.authenticate(request, raw) is not None
        assert roles.is_ops(request.user) and roles.is_manager(request.user)
    assert request.user == user


def test_a_routed_lead_comes_back_with_its_owner_rule_and_explanation(client, ops_auth):
    from routing.services import ruleset_create_draft, ruleset_publish

    RepFactory(user__username="erin")
    ruleset_publish(ruleset_create_draft({
        "name": "API test",
        "rules": [{"name": "Everyone to Erin", "when": [{"field": "country", "op": "eq", "value": "DE"}],
                   "candidates": {"reps": ["erin"]}, "strategy": "round_robin"}],
    }))

    body = post(client, "/api/leads/", {"email": "routed@lead.example", "country": "DE"}, ops_auth).json()

    assert (body["status"], body["owner"], body["rule"]) == ("assigned", "erin", "Everyone to Erin")
    # The answer's explanation is the one the lead's timeline keeps (what GET shows).
    shown = client.get(f"/api/leads/{body['id']}/", headers=ops_auth).json()
    routed = [e for e in shown["events"] if e["kind"] == "routed"]
    assert len(routed) == 1 and body["explanation"] == routed[0]["detail"]
    assert body["explanation"]["tried"][0]["rule"] == "Everyone to Erin"
    assert shown["owner"] == "erin" and shown["sla_due_at"] is None


def test_a_lead_the_rules_send_to_a_pool_answers_with_the_pool(client, ops_auth):
    from routing.services import ruleset_create_draft, ruleset_publish

    PoolFactory(name="Inbound")
    ruleset_publish(ruleset_create_draft({
        "name": "Pool test",
        "rules": [{"name": "To the pool", "pool": "Inbound"}],
    }))

    body = post(client, "/api/leads/", {"email": "pooled@lead.example"}, ops_auth).json()

    assert (body["status"], body["owner"], body["pool"], body["rule"]) == ("pooled", None, "Inbound", "To the pool")
    assert body["explanation"]["pool"] == "Inbound"


@pytest.fixture
def erins_rules():
    from routing.services import ruleset_create_draft, ruleset_publish

    RepFactory(user__username="erin")
    ruleset_publish(ruleset_create_draft({
        "name": "API test",
        "rules": [{"name": "Everyone to Erin", "candidates": {"reps": ["erin"]}, "strategy": "round_robin"}],
    }))


@pytest.fixture
def broken_routing(monkeypatch):
    """Routing that fails at its very end: owner, turn and message written, then an error."""
    from routing import services

    real_notify = services._notify_owners

    def broken(*args, **kwargs):
        real_notify(*args, **kwargs)
        raise RuntimeError("routing broke")

    monkeypatch.setattr(services, "_notify_owners", broken)


def test_a_lead_is_kept_unassigned_when_routing_it_fails(client, ops_auth, erins_rules, broken_routing, caplog,
                                                         django_capture_on_commit_callbacks):
    """A lead is never lost to a routing error: it is stored and answered as unassigned, with nothing of
    the failed routing left behind (no owner, no turn taken, no message, nothing queued to send)."""
    from routing.models import Notification, RuleCursor

    with django_capture_on_commit_callbacks() as queued:
        resp = post(client, "/api/leads/", {"email": "kept@lead.example"}, ops_auth)

    assert resp.status_code == 201
    body = resp.json()
    assert (body["status"], body["owner"]) == ("unassigned", None)
    lead = Lead.objects.get(pk=body["id"])
    assert (lead.status, lead.owner_id, lead.email) == ("unassigned", None, "kept@lead.example")
    assert list(lead.events.values_list("kind", flat=True)) == ["received"]
    assert not RuleCursor.objects.exclude(state={}).exists()  # nobody's turn was taken
    assert not Notification.objects.exists() and queued == []
    assert "not routed" in caplog.text


def test_a_lead_kept_after_a_routing_error_is_routed_by_route_pending(client, ops_auth, erins_rules, broken_routing,
                                                                      monkeypatch):
    lead_id = post(client, "/api/leads/", {"email": "kept@lead.example"}, ops_auth).json()["id"]
    monkeypatch.undo()  # routing works again

    call_command("route_pending", stdout=io.StringIO())

    lead = Lead.objects.select_related("owner__user").get(pk=lead_id)
    assert (lead.status, lead.owner.user.username) == ("assigned", "erin")


def test_a_merge_is_kept_when_routing_the_lead_it_merged_into_fails(client, ops_auth, erins_rules, broken_routing):
    held = LeadFactory(email="held@x.example", routing_held=True, phone="")

    resp = post(client, "/api/leads/", {"email": "held@x.example", "phone": "+4930123456"}, ops_auth)

    assert resp.status_code == 200 and resp.json()["duplicate_of"] == held.pk
    held.refresh_from_db()
    assert (held.status, held.phone, held.merged_count, held.routing_held) == ("unassigned", "+4930123456", 1, False)


def test_a_duplicate_of_an_owned_lead_keeps_its_owner_and_is_not_routed_again(client, ops_auth, erins_rules):
    owner = RepFactory(user__username="olga")
    lead = LeadFactory(email="own@x.example", owner=owner, status="assigned")

    resp = post(client, "/api/leads/", {"email": "own@x.example"}, ops_auth)

    assert resp.status_code == 200 and (resp.json()["owner"], resp.json()["status"]) == ("olga", "assigned")
    assert list(lead.events.values_list("kind", flat=True)) == ["merged"]


def test_leads_without_an_email_are_never_merged_and_each_is_routed(client, ops_auth, erins_rules):
    first = post(client, "/api/leads/", {"phone": "+4930123456"}, ops_auth).json()
    second = post(client, "/api/leads/", {"phone": "+4930123456"}, ops_auth).json()

    assert first["id"] != second["id"]
    assert [(b["status"], b["owner"], b["duplicate_of"]) for b in (first, second)] == [("assigned", "erin", None)] * 2


def test_a_token_records_when_it_was_last_used_to_the_minute(client, ops_user):
    """Managers revoke tokens nobody uses: the first use is recorded, and a token used again is
    brought up to date once a minute has passed (not rewritten on every request)."""
    headers = bearer(ops_user)
    token = ApiToken.objects.get()
    assert token.last_used_at is None

    post(client, "/api/leads/", {"email": "a@lead.example"}, headers)
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    post(client, "/api/leads/", {"email": "b@lead.example"}, headers)
    token.refresh_from_db()
    assert token.last_used_at == first

    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - dt.timedelta(minutes=2))
    post(client, "/api/leads/", {"email": "c@lead.example"}, headers)
    token.refresh_from_db()
    assert token.last_used_at > first


def test_a_duplicate_posted_to_the_api_ends_the_hold_of_an_imported_lead_and_routes_it(client, ops_auth):
    """A web-form repeat of someone an import held: the person is asking now, so the lead is routed."""
    from routing.services import ruleset_create_draft, ruleset_publish

    RepFactory(user__username="ann")
    ruleset_publish(ruleset_create_draft(
        {"name": "All", "rules": [{"name": "All", "candidates": {"reps": ["ann"]}, "strategy": "round_robin"}]}))
    held = LeadFactory(email="held@x.example", routing_held=True)

    resp = post(client, "/api/leads/", {"email": "HELD@x.example"}, ops_auth)

    assert resp.status_code == 200 and resp.json()["duplicate_of"] == held.pk
    assert (resp.json()["status"], resp.json()["owner"]) == ("assigned", "ann")
    held.refresh_from_db()
    assert not held.routing_held

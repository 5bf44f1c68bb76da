"""CONTRACT §4: lead fields and statuses, duplicates, `import_leads`, and the leads API."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from routing.models import ApiToken, Lead, LeadEvent
from tests.factories import LeadFactory, PoolFactory, RepFactory, UserFactory

pytestmark = pytest.mark.django_db

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
EVENT_KINDS = [
    "received", "merged", "routed", "unassigned", "pooled", "announced", "claimed", "claim_refused",
    "released", "status_changed", "sla_breached", "escalated", "reassigned", "notified", "manual_assigned",
]
STATUSES = ["unassigned", "pooled", "assigned", "contacted", "qualified", "won", "lost"]
SUMMARY_KEYS = {"rows", "created", "merged", "failed", "assigned", "pooled", "unassigned", "errors"}


def token_for(user) -> dict[str, str]:
    out = io.StringIO()
    call_command("create_api_token", user.username, stdout=out)
    return {"Authorization": f"Bearer {out.getvalue().strip()}"}


def post(client, path: str, body: dict, headers: dict[str, str]):
    return client.post(path, data=json.dumps(body), content_type="application/json", headers=headers)


@pytest.fixture
def ops_auth(ops_user):
    return token_for(ops_user)


@pytest.fixture
def manager_auth(manager):
    return token_for(manager)


# -- fixed names -------------------------------------------------------------------------------------


def test_the_event_kinds_are_exactly_the_contract_list():
    assert [kind.value for kind in LeadEvent.Kind] == EVENT_KINDS


def test_the_statuses_are_exactly_the_contract_list():
    assert [status.value for status in Lead.Status] == STATUSES


# -- import_leads --------------------------------------------------------------------------------------


def import_json(path: Path, *args: str) -> dict:
    out = io.StringIO()
    call_command("import_leads", str(path), "--json", *args, stdout=out, stderr=io.StringIO())
    return json.loads(out.getvalue())


def write_csv(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "leads.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_import_json_prints_exactly_the_contract_keys(tmp_path):
    summary = import_json(EXAMPLES / "leads.csv")

    assert set(summary) == SUMMARY_KEYS
    assert summary["rows"] == summary["created"] + summary["merged"] + summary["failed"] > 0


def test_import_numbers_rejected_rows_as_in_a_spreadsheet_and_imports_the_rest(tmp_path):
    path = write_csv(tmp_path, "email,company,score\na@x.example,A,10\nbroken,B,10\nc@x.example,C,500\n")

    summary = import_json(path)

    assert (summary["rows"], summary["created"], summary["failed"]) == (3, 1, 2)
    assert [(e["row"], e["column"]) for e in summary["errors"]] == [(3, "email"), (4, "score")]
    assert all(set(e) == {"row", "column", "message"} and e["message"] for e in summary["errors"])


def test_import_exits_0_when_rows_were_rejected(tmp_path):
    path = write_csv(tmp_path, "email\nnot-an-email\n")
    call_command("import_leads", str(path), stdout=io.StringIO())  # no CommandError: exit 0


def test_import_exits_2_when_the_file_cannot_be_read(tmp_path):
    with pytest.raises(CommandError) as excinfo:
        call_command("import_leads", str(tmp_path / "missing.csv"), stdout=io.StringIO())
    assert excinfo.value.returncode == 2


def test_import_source_flag_names_the_source_of_leads_without_one(tmp_path):
    path = write_csv(tmp_path, "email\na@x.example\n")
    import_json(path, "--source", "fair-2026")
    assert Lead.objects.get().source == "fair-2026"


def test_import_dry_run_reports_and_writes_nothing(tmp_path):
    summary = import_json(EXAMPLES / "leads.csv", "--dry-run")
    assert summary["created"] > 0 and not Lead.objects.exists()


def test_import_no_route_leaves_new_leads_unassigned(tmp_path):
    RepFactory()
    summary = import_json(EXAMPLES / "leads.csv", "--no-route")
    assert summary["assigned"] == summary["pooled"] == 0
    assert set(Lead.objects.values_list("status", flat=True)) == {"unassigned"}
    assert not LeadEvent.objects.filter(kind__in=["routed", "unassigned"]).exists()


def test_import_reads_salesforce_headers(tmp_path):
    summary = import_json(EXAMPLES / "salesforce.csv", "--no-route")
    lead = Lead.objects.get(email="marie.dupont@example.fr")
    assert summary["failed"] == 0
    assert (lead.first_name, lead.last_name, lead.company, lead.country, lead.postcode, lead.source) == (
        "Marie", "Dupont", "Acme SA", "FR", "75001", "Trade Show")


def test_import_reads_hubspot_headers(tmp_path):
    summary = import_json(EXAMPLES / "hubspot.csv", "--no-route")
    lead = Lead.objects.get(email="sam.lee@example.com")
    assert summary["failed"] == 0
    assert (lead.first_name, lead.company, lead.country) == ("Sam", "Bay Labs", "US")


def test_import_reads_cp1252_with_semicolons(tmp_path):
    path = write_csv(tmp_path, "First Name;Last Name;Email;Company\nJosé;Müller;jm@x.example;Café “Süd”\n", "cp1252")
    summary = import_json(path)
    lead = Lead.objects.get()
    assert summary["created"] == 1
    assert (lead.first_name, lead.last_name, lead.company) == ("José", "Müller", "Café “Süd”")


def test_import_reads_utf8_with_a_bom(tmp_path):
    path = write_csv(tmp_path, "\ufeffemail,first_name\nz@x.example,Zoë\n")
    assert import_json(path)["created"] == 1 and Lead.objects.get().first_name == "Zoë"


def test_an_imported_duplicate_merges_into_the_open_lead_which_keeps_its_owner(tmp_path):
    alice = RepFactory(user__username="alice")
    existing = LeadFactory(email="dup@x.example", owner=alice, status="assigned")
    path = write_csv(tmp_path, "email,phone\nDUP@x.example,+4930123456\n")

    summary = import_json(path)

    existing.refresh_from_db()
    assert (summary["created"], summary["merged"]) == (0, 1)
    assert (Lead.objects.count(), existing.owner, existing.status) == (1, alice, "assigned")
    assert existing.events.filter(kind="merged").count() == 1


def test_the_web_import_runs_as_a_background_job_with_progress(
    ops_client, settings, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from routing.models import ImportJob

    settings.MEDIA_ROOT = tmp_path / "media"
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)  # the worker's job, run in-process
    upload = SimpleUploadedFile("leads.csv", (EXAMPLES / "leads.csv").read_bytes(), content_type="text/csv")
    ops_client.post("/intake/", {"file": upload, "no_route": "on"})
    job = ImportJob.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        ops_client.post(f"/intake/{job.pk}/start/", {})

    job.refresh_from_db()
    progress = ops_client.get(f"/intake/{job.pk}/?part=progress", headers={"HX-Request": "true"})
    assert job.status == "done" and job.rows_done > 0
    assert progress.status_code == 200 and f"{job.rows_done}" in progress.content.decode()
    assert Lead.objects.count() > 0


# -- the API: create --------------------------------------------------------------------------------------

ALL_FIELDS = {
    "email": "cfo@big.example", "first_name": "Carla", "last_name": "Fo", "phone": "+49 30 1234567",
    "company": "Big AG", "title": "CFO", "country": "DE", "region": "Berlin", "postcode": "10115",
    "industry": "Finance", "company_size": 5000, "product": "payments", "source": "webform", "score": 90,
    "priority": "urgent", "value": "25000.50", "received_at": "2026-11-02T09:15:00Z", "extra": {"campaign": "q4"},
}


def test_post_creates_a_lead_with_every_contract_field_and_answers_201(client, ops_auth):
    resp = post(client, "/api/leads/", ALL_FIELDS, ops_auth)

    assert resp.status_code == 201
    assert {"id", "status", "owner", "pool", "rule", "explanation"} <= set(resp.json())
    lead = Lead.objects.get(pk=resp.json()["id"])
    assert (lead.email, lead.country, lead.company_size, lead.score, lead.priority, str(lead.value)) == (
        "cfo@big.example", "DE", 5000, 90, "urgent", "25000.50")
    assert (lead.received_at.isoformat(), lead.extra) == ("2026-11-02T09:15:00+00:00", {"campaign": "q4"})


def test_a_repeat_with_the_same_idempotency_key_returns_the_same_lead_with_200(client, ops_auth):
    headers = {**ops_auth, "Idempotency-Key": "form-42"}
    first = post(client, "/api/leads/", {"email": "once@x.example"}, headers)
    again = post(client, "/api/leads/", {"email": "once@x.example"}, headers)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and Lead.objects.count() == 1


def test_a_duplicate_email_answers_200_with_duplicate_of_and_keeps_the_owner(client, ops_auth):
    alice = RepFactory(user__username="alice")
    existing = LeadFactory(email="dup@x.example", owner=alice, status="assigned")

    resp = post(client, "/api/leads/", {"email": "Dup@X.example"}, ops_auth)

    assert resp.status_code == 200 and resp.json()["duplicate_of"] == existing.pk
    assert Lead.objects.count() == 1 and Lead.objects.get().owner == alice
    assert existing.events.filter(kind="merged").exists()


def test_an_email_matching_only_a_closed_lead_creates_a_new_one(client, ops_auth):
    LeadFactory(email="again@x.example", status="lost")

    resp = post(client, "/api/leads/", {"email": "again@x.example"}, ops_auth)

    assert resp.status_code == 201 and Lead.objects.filter(email="again@x.example").count() == 2


def test_invalid_input_answers_422_naming_the_fields(client, ops_auth):
    resp = post(client, "/api/leads/", {"email": "not-an-email", "score": 300, "country": "Atlantis"}, ops_auth)

    assert resp.status_code == 422
    text = json.dumps(resp.json())
    assert all(name in text for name in ("email", "score", "country"))
    assert not Lead.objects.exists()


def test_a_request_without_a_valid_token_answers_401(client):
    assert client.get("/api/leads/").status_code == 401
    assert client.get("/api/leads/", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_the_openapi_schema_is_served():
    from django.test import Client

    resp = Client().get("/api/openapi.json")
    assert resp.status_code == 200 and "/api/leads/" in resp.json()["paths"]


# -- the API: read and list ----------------------------------------------------------------------------------


def test_get_a_lead_shows_owner_pool_status_sla_and_its_timeline(client, manager_auth, ops_auth):
    created = post(client, "/api/leads/", {"email": "tl@x.example"}, ops_auth).json()

    body = client.get(f"/api/leads/{created['id']}/", headers=manager_auth).json()

    assert {"id", "owner", "pool", "status", "sla_due_at", "events", "email", "extra"} <= set(body)
    assert body["events"][0]["kind"] == "received"
    assert all(set(e) == {"kind", "at", "rep", "rule", "detail"} for e in body["events"])


def test_list_answers_items_count_next_and_pages(client, manager_auth):
    LeadFactory.create_batch(3)

    first = client.get("/api/leads/?limit=2", headers=manager_auth).json()
    second = client.get(first["next"], headers=manager_auth).json()

    assert set(first) == {"items", "count", "next"} and first["count"] == 3 and len(first["items"]) == 2
    assert len(second["items"]) == 1 and second["next"] is None


@pytest.mark.parametrize("name", ["status", "owner", "pool", "source", "email"])
def test_list_filters_by_each_contract_parameter(client, manager_auth, name):
    alice = RepFactory(user__username="alice")
    pool = PoolFactory(name="smb")
    wanted = LeadFactory(email="want@x.example", source="fair", owner=alice, status="assigned")
    LeadFactory(email="other@x.example", source="web", status="pooled", pool=pool)
    if name == "pool":
        wanted = Lead.objects.get(email="other@x.example")
    values = {"status": wanted.status, "owner": "alice", "pool": "smb", "source": "fair", "email": "want@x.example"}
    value = values[name]

    body = client.get("/api/leads/", {name: value}, headers=manager_auth).json()

    assert [item["id"] for item in body["items"]] == [wanted.pk] and body["count"] == 1


# -- the API: who sees what ----------------------------------------------------------------------------------


@pytest.fixture
def scene(db):
    alice, bob = RepFactory(user__username="alice"), RepFactory(user__username="bob")
    pool = PoolFactory(name="smb", members=[alice])
    other_pool = PoolFactory(name="ent", members=[bob])
    return {
        "alice": alice,
        "own": LeadFactory(owner=alice, status="assigned"),
        "waiting": LeadFactory(pool=pool, status="pooled"),
        "bobs": LeadFactory(owner=bob, status="assigned"),
        "other_pool": LeadFactory(pool=other_pool, status="pooled"),
        "unassigned": LeadFactory(status="unassigned"),
    }


def test_a_manager_token_sees_every_lead(client, manager_auth, scene):
    assert client.get("/api/leads/", headers=manager_auth).json()["count"] == 5


def test_an_ops_token_creates_and_lists_leads(client, ops_auth, scene):
    assert post(client, "/api/leads/", {"email": "new@x.example"}, ops_auth).status_code == 201
    assert client.get("/api/leads/", headers=ops_auth).json()["count"] == 6


def test_a_rep_token_sees_own_leads_and_waiting_leads_of_own_pools_only(client, scene):
    auth = token_for(scene["alice"].user)

    listed = {item["id"] for item in client.get("/api/leads/", headers=auth).json()["items"]}

    assert listed == {scene["own"].pk, scene["waiting"].pk}
    for name in ("own", "waiting"):
        assert client.get(f"/api/leads/{scene[name].pk}/", headers=auth).status_code == 200
    for name in ("bobs", "other_pool", "unassigned"):
        assert client.get(f"/api/leads/{scene[name].pk}/", headers=auth).status_code == 404


def test_a_rep_token_cannot_create_leads(client, scene):
    resp = post(client, "/api/leads/", {"email": "sneaky@x.example"}, token_for(scene["alice"].user))
    assert resp.status_code == 403


def test_the_owner_records_a_touch_through_the_status_endpoint(client, scene):
    auth = token_for(scene["alice"].user)
    lead = scene["own"]

    resp = post(client, f"/api/leads/{lead.pk}/status/", {"status": "contacted"}, auth)

    lead.refresh_from_db()
    assert resp.status_code == 200 and lead.status == "contacted"
    assert lead.events.filter(kind="status_changed").exists()


def test_the_status_endpoint_is_404_for_someone_elses_lead(client, scene):
    auth = token_for(scene["alice"].user)
    resp = post(client, f"/api/leads/{scene['bobs'].pk}/status/", {"status": "contacted"}, auth)
    assert resp.status_code == 404


# -- tokens ------------------------------------------------------------------------------------------------------


def test_create_api_token_prints_a_token_that_authenticates_as_the_user(client, scene):
    out = io.StringIO()
    call_command("create_api_token", "alice", stdout=out)
    raw = out.getvalue().strip()

    resp = client.get("/api/pools/", headers={"Authorization": f"Bearer {raw}"})

    assert resp.status_code == 200 and [p["name"] for p in resp.json()] == ["smb"]


def test_tokens_are_stored_hashed_never_in_the_clear(db):
    user = UserFactory(username="hooks")
    out = io.StringIO()
    call_command("create_api_token", "hooks", stdout=out)
    raw = out.getvalue().strip()

    table = ApiToken._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")
        stored = json.dumps(cursor.fetchall(), default=str)
    assert raw not in stored and raw[12:] not in stored
    assert ApiToken.objects.get().user == user


def test_create_api_token_for_an_unknown_user_exits_2(db):
    with pytest.raises(CommandError) as excinfo:
        call_command("create_api_token", "ghost", stdout=io.StringIO())
    assert excinfo.value.returncode == 2


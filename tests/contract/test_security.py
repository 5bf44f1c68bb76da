"""Security: every non-public URL needs login and the right role, POSTs need a CSRF token, and CSV
downloads cannot smuggle spreadsheet formulas. The URL list is walked from the URLconf, so a new
page is checked the day it is added."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from leadops import roles
from routing.models import ImportJob, RuleSet
from tests.factories import LeadFactory, PoolFactory, RepFactory, UserFactory

pytestmark = pytest.mark.django_db

PUBLIC = {"login", "logout", "healthz", "openapi-json", "openapi-view", "api-root"}
REP_PAGES = {"home", "policy", "lead_explain", "board", "board_poll", "board_lead", "board_claim", "board_release",
             "board_status", "me"}
OPS_PAGES = {"home", "policy", "lead_explain", "intake", "intake_job", "intake_mapping", "intake_start",
             "intake_rejected"}


def walk(patterns, prefix: str = ""):
    for p in patterns:
        if isinstance(p, URLResolver):
            if str(p.pattern).startswith("admin/"):
                continue  # the Django admin has its own staff check, tested below
            yield from walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield p.name, prefix + str(p.pattern)


@pytest.fixture
def objects(db, tmp_path, settings):
    """One real object behind every <int:pk> so a role check cannot hide behind a 404."""
    settings.MEDIA_ROOT = tmp_path / "media"
    alice = RepFactory(user__username="alice")
    pool = PoolFactory(name="smb", members=[alice])
    lead = LeadFactory(owner=alice, status="assigned")
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"name": "x", "rules": [{"name": "r", "candidates": {"reps": ["alice"]},
                                                          "strategy": "round_robin"}]}))
    call_command("load_rules", str(rules), stdout=io.StringIO())
    rule_set = RuleSet.objects.get()
    job = ImportJob.objects.create(file=SimpleUploadedFile("a.csv", b"email\na@x.example\n"), original_name="a.csv")
    return {"lead": lead, "pool": pool, "rule_set": rule_set, "rule": rule_set.rules.first(), "job": job,
            "alice": alice}


def concrete(name: str, route: str, objects) -> str:
    pk = {"pool_detail": objects["pool"].pk, "intake_job": objects["job"].pk, "intake_mapping": objects["job"].pk,
          "intake_start": objects["job"].pk, "intake_rejected": objects["job"].pk}.get(name)
    if pk is None and name.startswith("rules"):
        pk = objects["rule_set"].pk
    if pk is None:
        pk = objects["lead"].pk
    url = "/" + route
    url = url.replace("<int:rule_pk>", str(objects["rule"].pk)).replace("<slug:name>", "sources")
    url = re.sub(r"<(int:)?(pk|lead_id)>", str(pk), url)
    return url.replace("<name>", "smb")


def site_urls(objects) -> list[tuple[str, str]]:
    return [(name, concrete(name, route, objects)) for name, route in walk(get_resolver().url_patterns)
            if name not in PUBLIC]


def test_the_walk_finds_the_pages_we_know():
    names = {name for name, _ in walk(get_resolver().url_patterns)}
    assert {"board", "intake", "rules_list", "unassigned", "dashboard", "export", "create_lead"} <= names


def test_anonymous_visitors_are_sent_to_login_and_api_callers_get_401(objects):
    client = Client()
    for name, url in site_urls(objects):
        for method in ("get", "post"):
            resp = getattr(client, method)(url)
            if url.startswith("/api/"):
                assert resp.status_code in (401, 405), (name, method, url, resp.status_code)
            else:
                assert resp.status_code in (302, 405), (name, method, url, resp.status_code)
                if resp.status_code == 302:
                    assert resp["Location"].startswith("/login/"), (name, url, resp["Location"])


def _refused(client: Client, url: str) -> list[str]:
    bad = []
    for method in ("get", "post"):
        resp = getattr(client, method)(url)
        if resp.status_code not in (403, 404, 405):
            bad.append(f"{method.upper()} {url} -> {resp.status_code}")
    return bad


def test_a_rep_is_refused_every_manager_and_ops_page(objects):
    client = Client()
    client.force_login(objects["alice"].user)
    bad = []
    for name, url in site_urls(objects):
        if name in REP_PAGES or url.startswith("/api/"):
            continue
        bad += _refused(client, url)
    assert bad == []


def test_ops_staff_are_refused_every_manager_and_rep_page(objects):
    client = Client()
    client.force_login(UserFactory(username="ops", groups=[roles.OPS]))
    bad = []
    for name, url in site_urls(objects):
        if name in OPS_PAGES or url.startswith("/api/"):
            continue
        bad += _refused(client, url)
    assert bad == []


def test_a_rep_cannot_open_another_reps_lead(objects):
    bob = RepFactory(user__username="bob")
    client = Client()
    client.force_login(bob.user)
    lead = objects["lead"]  # alice's

    for url in (f"/leads/{lead.pk}/explain/", f"/board/leads/{lead.pk}/"):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/board/leads/{lead.pk}/status/", {"status": "won"}).status_code == 404


def test_the_admin_is_for_staff_only(objects):
    client = Client()
    client.force_login(objects["alice"].user)
    resp = client.get("/admin/")
    assert resp.status_code == 302 and "/admin/login/" in resp["Location"]


def test_every_post_view_needs_a_csrf_token(objects):
    boss = UserFactory(username="boss", is_superuser=True, is_staff=True, groups=[roles.MANAGERS, roles.OPS])
    RepFactory(user=boss)  # a superuser who is also a rep reaches every view
    client = Client(enforce_csrf_checks=True)
    client.force_login(boss)
    bad = []
    for name, url in site_urls(objects):
        if url.startswith("/api/"):
            continue  # bearer tokens, no cookies: nothing for a forged form to ride on
        resp = client.post(url, {"status": "won"})
        if resp.status_code != 403:
            bad.append(f"{name} {url} -> {resp.status_code}")
    assert bad == []


def test_the_api_ignores_a_logged_in_browser_session(objects, manager_client):
    resp = manager_client.post("/api/leads/", data=json.dumps({"email": "x@x.example"}),
                               content_type="application/json")
    assert resp.status_code == 401


# -- CSV formula injection -------------------------------------------------------------------------------

FORMULAS = ["=1+2", "+cmd", "-2+3", "@SUM(A1)"]


@pytest.mark.parametrize("formula", FORMULAS)
def test_the_report_export_neutralises_formulas(manager_client, formula):
    LeadFactory(source=formula)

    resp = manager_client.get("/reports/export/sources.csv")

    rows = list(csv.reader(io.StringIO(b"".join(resp.streaming_content).decode("utf-8-sig"))))
    cells = [cell for row in rows[1:] for cell in row]
    assert "'" + formula in cells
    assert formula not in cells


def test_the_rejected_rows_download_neutralises_formulas(ops_client, settings, tmp_path, monkeypatch,
                                                         django_capture_on_commit_callbacks):
    settings.MEDIA_ROOT = tmp_path / "media"
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)
    text = "Email,Company,Title,Notes\r\n" + "".join(f"bad-{i},{f},{f},{f}\r\n" for i, f in enumerate(FORMULAS))
    ops_client.post("/intake/", {"file": SimpleUploadedFile("f.csv", text.encode(), content_type="text/csv"),
                                 "no_route": "on"})
    job = ImportJob.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        ops_client.post(f"/intake/{job.pk}/start/", {})

    resp = ops_client.get(f"/intake/{job.pk}/rejected.csv")

    rows = list(csv.reader(io.StringIO(b"".join(resp.streaming_content).decode("utf-8-sig"))))
    assert len(rows) == 1 + len(FORMULAS)
    for row, formula in zip(rows[1:], FORMULAS, strict=True):
        assert row[1:4] == ["'" + formula] * 3

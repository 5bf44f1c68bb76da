"""load_rules, export_rules, route_pending and explain_lead as people and scripts use them."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from reps.models import Skill
from routing.models import Lead, RuleSet
from tests.factories import LeadFactory, PoolFactory, RepFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db

EXAMPLE = Path(__file__).resolve().parents[2] / "docs/examples/rules.json"


@pytest.fixture
def org(db):
    emea = TeamFactory(name="EMEA")
    Skill.objects.create(name="payments")
    RepFactory(user__username="alice", team=emea)
    RepFactory(user__username="bob", team=emea)
    UserFactory(username="dora")
    PoolFactory(name="smb")


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def write(tmp_path, data, name="rules.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def test_load_rules_creates_a_draft_and_publish_puts_it_in_force(org):
    assert "v1" in run("load_rules", str(EXAMPLE))
    assert RuleSet.objects.get().status == "draft"
    assert "published" in run("load_rules", str(EXAMPLE), "--publish")
    assert list(RuleSet.objects.order_by("version").values_list("status", flat=True)) == ["draft", "published"]


def test_load_export_load_export_is_a_fixed_point(org, tmp_path):
    run("load_rules", str(EXAMPLE), "--publish")
    first = run("export_rules")
    run("load_rules", write(tmp_path, first), "--publish")
    second = run("export_rules")
    assert first == second
    assert json.loads(first)["rules"][1]["candidates"] == {"team": "EMEA", "skills": ["payments"], "territory": True}


def test_a_bad_file_exits_2_naming_the_fault_and_saves_nothing(org, tmp_path):
    data = json.loads(EXAMPLE.read_text())
    data["rules"][2]["when"][0]["op"] = "like"
    data["rules"][1]["pool"] = "nowhere"
    with pytest.raises(CommandError) as exc:
        run("load_rules", write(tmp_path, data))
    assert exc.value.returncode == 2
    assert "rules[2].when[0].op: unknown op 'like'" in str(exc.value)
    assert "rules[1].pool" in str(exc.value)
    assert not RuleSet.objects.exists()


def test_a_file_that_is_not_json_exits_2(org, tmp_path):
    with pytest.raises(CommandError) as exc:
        run("load_rules", write(tmp_path, "{nope"))
    assert exc.value.returncode == 2


def test_export_without_a_published_version_exits_2(db):
    with pytest.raises(CommandError) as exc:
        run("export_rules")
    assert exc.value.returncode == 2


def test_route_pending_routes_oldest_first_at_the_given_time(org, tmp_path):
    run("load_rules", write(tmp_path, {"name": "T", "rules": [
        {"name": "RR", "candidates": {"team": "EMEA"}, "strategy": "round_robin"}]}), "--publish")
    now = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
    newer = LeadFactory(received_at=now - dt.timedelta(minutes=1))
    older = LeadFactory(received_at=now - dt.timedelta(minutes=5))
    out = run("route_pending", "--now", "2026-11-25T10:00:00Z", "--json")
    assert json.loads(out) == {"assigned": 2, "pooled": 0, "unassigned": 0}
    older.refresh_from_db()
    newer.refresh_from_db()
    assert (older.owner.user.username, newer.owner.user.username) == ("alice", "bob")
    assert older.assigned_at == now


def test_explain_lead_prints_each_candidate_and_why(org, tmp_path):
    run("load_rules", write(tmp_path, {"name": "T", "rules": [
        {"name": "RR", "candidates": {"team": "EMEA"}, "strategy": "round_robin"}]}), "--publish")
    lead = LeadFactory()
    run("route_pending")
    explained = json.loads(run("explain_lead", str(lead.pk)))
    assert explained["rule"] == "RR"
    assert [c["rep"] for c in explained["tried"][0]["candidates"]] == ["alice", "bob"]
    assert explained["tried"][0]["candidates"][1]["reason"] == "not next in turn"
    assert Lead.objects.get(pk=lead.pk).owner.user.username == explained["rep"] == "alice"


def test_explain_lead_for_a_missing_lead_exits_2(db):
    with pytest.raises(CommandError) as exc:
        run("explain_lead", "999999")
    assert exc.value.returncode == 2

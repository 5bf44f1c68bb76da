"""CONTRACT §3: rule set files (`load_rules`, `export_rules`), conditions, candidates and strategies,
driven through the commands people run (`load_rules`, `route_pending`, `explain_lead`)."""

from __future__ import annotations

import collections
import datetime as dt
import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from reps.models import Rep, Skill, Territory
from routing.models import Lead, RuleCursor, RuleSet
from tests.factories import LeadFactory, PoolFactory, RepFactory, TeamFactory, TimeOffFactory, UserFactory

pytestmark = pytest.mark.django_db

CONTRACT_EXAMPLE = {
    "name": "Q4 routing",
    "rules": [
        {"name": "Urgent to directors",
         "when": [{"field": "priority", "op": "eq", "value": "urgent"}],
         "candidates": {"levels": ["director"]},
         "strategy": "round_robin", "sla_minutes": 5, "escalate_to": ["dora"]},
        {"name": "DACH enterprise",
         "when": [{"field": "country", "op": "in", "value": ["DE", "AT", "CH"]},
                  {"field": "company_size", "op": "gte", "value": 1000}],
         "candidates": {"team": "EMEA", "territory": True, "skills": ["payments"]},
         "strategy": "weighted"},
        {"name": "Small business pool",
         "when": [{"field": "company_size", "op": "lt", "value": 50}],
         "pool": "smb"},
    ],
    "fallback": {"candidates": {"team": "EMEA"}, "strategy": "load_balanced"},
}


@pytest.fixture
def org(db):
    """What the contract example names: team EMEA, skill payments, director/seniors, pool smb, dora."""
    emea = TeamFactory(name="EMEA")
    payments = Skill.objects.create(name="payments")
    spanish = Skill.objects.create(name="spanish")
    dach = Territory.objects.create(name="DACH", countries=["DE", "AT", "CH"])
    alice = RepFactory(user__username="alice", team=emea, level=Rep.Level.SENIOR)
    alice.skills.add(payments, spanish)
    alice.territories.add(dach)
    bob = RepFactory(user__username="bob", team=emea)
    bob.skills.add(payments)
    RepFactory(user__username="dora", team=emea, level=Rep.Level.DIRECTOR)
    PoolFactory(name="smb", members=[alice, bob])
    return emea


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def publish(tmp_path, data: dict, name: str = "rules.json") -> None:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    run("load_rules", str(path), "--publish")


def route() -> None:
    run("route_pending")


def owner(lead: Lead) -> str | None:
    lead.refresh_from_db()
    return lead.owner.user.username if lead.owner_id else None


def hit_or_fallback(when: list[dict], key: str = "when") -> dict:
    """Rule 'hit' gives the lead to alice; anything else falls back to bob."""
    return {
        "name": "ops",
        "rules": [{"name": "hit", key: when, "candidates": {"reps": ["alice"]}, "strategy": "first_available"}],
        "fallback": {"candidates": {"reps": ["bob"]}, "strategy": "first_available"},
    }


# -- the file ------------------------------------------------------------------------------------


def test_the_contract_example_loads_and_routes_each_kind_of_lead(org, tmp_path):
    publish(tmp_path, CONTRACT_EXAMPLE)
    urgent = LeadFactory(priority="urgent")
    dach = LeadFactory(country="DE", company_size=5000)
    small = LeadFactory(country="FR", company_size=10)

    route()

    assert owner(urgent) == "dora"
    assert owner(dach) == "alice"  # the only EMEA rep with payments whose territory covers DE
    small.refresh_from_db()
    assert (small.status, small.pool.name) == ("pooled", "smb")


def test_load_creates_a_draft_and_publish_puts_it_in_force(org, tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(CONTRACT_EXAMPLE))

    run("load_rules", str(path))
    assert RuleSet.objects.get().status == "draft"
    run("load_rules", str(path), "--publish")
    assert RuleSet.objects.filter(status="published").count() == 1


def test_load_export_load_export_is_a_fixed_point(org, tmp_path):
    publish(tmp_path, CONTRACT_EXAMPLE)
    first = run("export_rules")
    (tmp_path / "exported.json").write_text(first)
    run("load_rules", str(tmp_path / "exported.json"), "--publish")

    assert run("export_rules") == first
    assert json.loads(first)["rules"][0]["name"] == "Urgent to directors"


def test_an_invalid_file_exits_2_with_the_path_of_the_fault_and_saves_nothing(org, tmp_path):
    bad = json.loads(json.dumps(CONTRACT_EXAMPLE))
    bad["rules"][1]["when"][0]["op"] = "between"
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(bad))
    err = io.StringIO()

    with pytest.raises(CommandError) as excinfo:
        call_command("load_rules", str(path), stdout=io.StringIO(), stderr=err)

    assert excinfo.value.returncode == 2
    assert "rules[1].when[0].op" in err.getvalue()
    assert not RuleSet.objects.exists()


# -- conditions ----------------------------------------------------------------------------------

OPS = [
    # op, field, value, a lead that matches, a lead that does not
    ("eq", "country", "DE", {"country": "DE"}, {"country": "FR"}),
    ("ne", "country", "DE", {"country": "FR"}, {"country": "DE"}),
    ("in", "country", ["AT", "CH"], {"country": "CH"}, {"country": "DE"}),
    ("not_in", "country", ["AT", "CH"], {"country": "DE"}, {"country": "AT"}),
    ("contains", "company", "Bank", {"company": "Big Bank AG"}, {"company": "Big Shop AG"}),
    ("icontains", "company", "bank", {"company": "BIG BANK AG"}, {"company": "Big Shop AG"}),
    ("startswith", "email", "ceo@", {"email": "ceo@big.example"}, {"email": "intern@big.example"}),
    ("endswith", "email", ".gov", {"email": "x@agency.gov"}, {"email": "x@agency.com"}),
    ("gt", "company_size", 1000, {"company_size": 1001}, {"company_size": 1000}),
    ("gte", "company_size", 1000, {"company_size": 1000}, {"company_size": 999}),
    ("lt", "score", 50, {"score": 49}, {"score": 50}),
    ("lte", "score", 50, {"score": 50}, {"score": 51}),
    ("regex", "postcode", r"^80\d{3}$", {"postcode": "80331"}, {"postcode": "10115"}),
    ("is_empty", "phone", None, {"phone": ""}, {"phone": "+4930123456"}),
    ("is_not_empty", "phone", None, {"phone": "+4930123456"}, {"phone": ""}),
    ("eq", "extra.campaign", "spring", {"extra": {"campaign": "spring"}}, {"extra": {"campaign": "fall"}}),
]


@pytest.mark.parametrize(("op", "field", "value", "matching", "other"), OPS, ids=[f"{o[0]}-{o[1]}" for o in OPS])
def test_each_condition_op_decides_whether_a_rule_matches(org, tmp_path, op, field, value, matching, other):
    condition = {"field": field, "op": op}
    if value is not None:
        condition["value"] = value
    publish(tmp_path, hit_or_fallback([condition]))
    yes, no = LeadFactory(**matching), LeadFactory(**other)

    route()

    assert (owner(yes), owner(no)) == ("alice", "bob")


def test_when_needs_every_condition_and_when_any_needs_one(org, tmp_path):
    conditions = [{"field": "country", "op": "eq", "value": "DE"}, {"field": "score", "op": "gte", "value": 80}]
    publish(tmp_path, {"name": "both", "rules": [
        {"name": "all", "when": conditions, "candidates": {"reps": ["alice"]}, "strategy": "first_available"},
        {"name": "any", "when_any": conditions, "candidates": {"reps": ["dora"]}, "strategy": "first_available"},
    ], "fallback": {"candidates": {"reps": ["bob"]}, "strategy": "first_available"}})
    both, one, neither = LeadFactory(country="DE", score=90), LeadFactory(country="DE", score=10), \
        LeadFactory(country="FR", score=10)

    route()

    assert (owner(both), owner(one), owner(neither)) == ("alice", "dora", "bob")


# -- candidates ------------------------------------------------------------------------------------

CANDIDATES = [
    ({"reps": ["bob"]}, "bob"),
    ({"levels": ["director"]}, "dora"),
    ({"skills": ["payments", "spanish"]}, "alice"),  # has all of them
    ({"territory": True}, "alice"),
]


@pytest.mark.parametrize(("candidates", "expected"), CANDIDATES, ids=["reps", "levels", "skills", "territory"])
def test_each_candidates_filter_narrows_the_reps(org, tmp_path, candidates, expected):
    publish(tmp_path, {"name": "c", "rules": [{"name": "r", "candidates": candidates, "strategy": "load_balanced"}]})
    leads = [LeadFactory(country="DE") for _ in range(3)]

    route()

    assert {owner(lead) for lead in leads} == {expected}


def test_the_team_filter_keeps_other_teams_out(org, tmp_path):
    RepFactory(user__username="carl", team=TeamFactory(name="US"))
    publish(tmp_path, {"name": "c", "rules": [{"name": "r", "candidates": {"team": "US"}, "strategy": "round_robin"}]})
    leads = [LeadFactory() for _ in range(3)]

    route()

    assert {owner(lead) for lead in leads} == {"carl"}


# -- strategies -------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["round_robin", "weighted", "load_balanced", "first_available", "predictive"])
def test_every_strategy_name_loads_and_assigns_a_candidate(org, tmp_path, strategy):
    publish(tmp_path, {"name": "s", "rules": [
        {"name": "r", "candidates": {"reps": ["alice", "bob"]}, "strategy": strategy}]})
    lead = LeadFactory()

    route()

    assert owner(lead) in {"alice", "bob"}


def test_round_robin_starts_at_the_first_rep_listed(org, tmp_path):
    publish(tmp_path, {"name": "s", "rules": [
        {"name": "r", "candidates": {"reps": ["bob", "alice"]}, "strategy": "round_robin"}]})
    start = timezone.now() - dt.timedelta(hours=1)
    leads = [LeadFactory(received_at=start + dt.timedelta(seconds=i)) for i in range(3)]

    route()

    assert [owner(lead) for lead in leads] == ["bob", "alice", "bob"]


def test_round_robin_without_a_list_starts_at_the_first_username_not_the_first_id(db, tmp_path):
    team = TeamFactory(name="Inside")
    RepFactory(user__username="zed", team=team)  # created first: the lower id
    RepFactory(user__username="amy", team=team)
    publish(tmp_path, {"name": "s", "rules": [
        {"name": "r", "candidates": {"team": "Inside"}, "strategy": "round_robin"}]})
    lead = LeadFactory()

    route()

    assert owner(lead) == "amy"


def test_first_available_takes_the_first_listed_rep_who_is_available(org, tmp_path):
    TimeOffFactory(rep=Rep.objects.get(user__username="bob"))
    publish(tmp_path, {"name": "s", "rules": [
        {"name": "r", "candidates": {"reps": ["bob", "alice", "dora"]}, "strategy": "first_available"}]})
    leads = [LeadFactory() for _ in range(2)]

    route()

    assert [owner(lead) for lead in leads] == ["alice", "alice"]


def test_weighted_shares_follow_the_weights(org, tmp_path):
    Rep.objects.filter(user__username="alice").update(weight=2)
    publish(tmp_path, {"name": "s", "rules": [
        {"name": "r", "candidates": {"reps": ["alice", "bob"]}, "strategy": "weighted"}]})
    leads = [LeadFactory() for _ in range(30)]

    route()

    shares = collections.Counter(owner(lead) for lead in leads)
    assert 18 <= shares["alice"] <= 22 and shares["alice"] + shares["bob"] == 30


def test_load_balanced_gives_the_lead_to_the_lowest_open_leads_over_capacity(org, tmp_path):
    alice, bob = Rep.objects.get(user__username="alice"), Rep.objects.get(user__username="bob")
    Rep.objects.filter(pk__in=[alice.pk, bob.pk]).update(capacity=10)
    LeadFactory.create_batch(3, owner=alice, status="assigned")
    LeadFactory.create_batch(1, owner=bob, status="contacted")
    publish(tmp_path, {"name": "s", "rules": [
        {"name": "r", "candidates": {"reps": ["alice", "bob"]}, "strategy": "load_balanced"}]})
    lead = LeadFactory()

    route()

    assert owner(lead) == "bob"


def test_reps_at_capacity_or_daily_cap_are_not_candidates(org, tmp_path):
    alice, bob = Rep.objects.get(user__username="alice"), Rep.objects.get(user__username="bob")
    Rep.objects.filter(pk=alice.pk).update(capacity=1)
    Rep.objects.filter(pk=bob.pk).update(daily_cap=1)
    LeadFactory(owner=alice, status="assigned")
    publish(tmp_path, {"name": "s", "rules": [
        {"name": "r", "candidates": {"reps": ["alice", "bob"]}, "strategy": "round_robin"}]})
    first, second = LeadFactory(), LeadFactory()

    route()

    # bob takes one lead and then has had his daily cap; alice is full all along.
    assert sorted([str(owner(first)), str(owner(second))]) == ["None", "bob"]


def test_ties_break_at_random_not_by_id(org, tmp_path):
    publish(tmp_path, {"name": "s", "rules": [
        {"name": "r", "candidates": {"reps": ["alice", "bob"]}, "strategy": "load_balanced"}]})
    winners = set()
    for _ in range(20):  # each time both have no open lead: a tie
        lead = LeadFactory()
        route()
        winners.add(owner(lead))
        lead.delete()

    assert winners == {"alice", "bob"}


def test_a_preview_never_moves_the_round_robin_pointer(org, tmp_path, client):
    publish(tmp_path, {"name": "s", "rules": [
        {"name": "r", "candidates": {"reps": ["alice", "bob"]}, "strategy": "round_robin"}]})
    first = LeadFactory()
    route()
    pointers = list(RuleCursor.objects.order_by("key").values("key", "last_rep", "state"))
    unrouted = LeadFactory(status="unassigned")
    manager = UserFactory(username="boss", is_staff=True, groups=["Managers"])
    client.force_login(manager)

    run("explain_lead", str(unrouted.pk))
    response = client.get(f"/rules/{RuleSet.objects.get(status='published').pk}/preview/")

    assert response.status_code == 200
    assert list(RuleCursor.objects.order_by("key").values("key", "last_rep", "state")) == pointers
    route()
    assert (owner(first), owner(unrouted)) == ("alice", "bob")


# -- skipping and falling through -----------------------------------------------------------------


def test_a_matching_rule_with_nobody_available_is_skipped_and_the_skip_explained(org, tmp_path):
    TimeOffFactory(rep=Rep.objects.get(user__username="dora"))
    publish(tmp_path, {"name": "s", "rules": [
        {"name": "Directors", "candidates": {"levels": ["director"]}, "strategy": "round_robin"},
        {"name": "Anyone", "candidates": {"reps": ["bob"]}, "strategy": "round_robin"}]})
    lead = LeadFactory()

    route()

    assert owner(lead) == "bob"
    explained = json.loads(run("explain_lead", str(lead.pk)))
    assert explained["rule"] == "Anyone"
    assert explained["tried"][0]["rule"] == "Directors" and "dora" in json.dumps(explained["tried"][0])


def test_no_match_and_no_fallback_leaves_the_lead_unassigned_in_the_managers_queue(org, tmp_path, client):
    publish(tmp_path, {"name": "s", "rules": [
        {"name": "Urgent", "when": [{"field": "priority", "op": "eq", "value": "urgent"}],
         "candidates": {"reps": ["dora"]}, "strategy": "round_robin"}]})
    lead = LeadFactory(priority="normal", company="Nobody Wants Me Ltd")

    route()

    lead.refresh_from_db()
    assert lead.status == "unassigned" and lead.owner_id is None
    client.force_login(UserFactory(username="boss", is_staff=True, groups=["Managers"]))
    assert f"/leads/{lead.pk}/explain/" in client.get("/unassigned/").content.decode()

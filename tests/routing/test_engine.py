"""The engine as a pure function: strategies, caps, availability, rule order and explanations."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter

import pytest

from reps.availability import Schedule
from routing.engine import CursorState, Roster, TerritoryData, compile_condition, decide
from tests.routing.engine_helpers import NINE_TO_FIVE, NOW, Router, rep, rr_rule, rules


def reasons(decision, rule_index=-1):
    return {c.username: c.reason for c in decision.trace[rule_index].candidates}


# -- round robin ---------------------------------------------------------------------------------


def test_it_rotates_round_robin_in_username_order():
    router = Router(rules(rr_rule()), [rep("carol"), rep("alice"), rep("bob")])
    assert router.names(4) == ["alice", "bob", "carol", "alice"]


def test_it_follows_the_rules_own_rep_order():
    router = Router(rules(rr_rule(reps=["carol", "alice", "bob"])), [rep("alice"), rep("bob"), rep("carol")])
    assert router.names(4) == ["carol", "alice", "bob", "carol"]


def test_it_continues_round_robin_from_a_persisted_pointer():
    router = Router(rules(rr_rule()), [rep("alice"), rep("bob"), rep("carol")])
    router.names(4)
    saved = {k: CursorState.from_json(v.to_json()) for k, v in router.cursors.items()}
    restarted = Router(rules(rr_rule()), [rep("alice"), rep("bob"), rep("carol")])
    restarted.cursors = saved
    assert restarted.names(1) == ["bob"]


def test_it_passes_an_unavailable_rep_and_serves_them_next_lap():
    away = rep("bob", schedule=Schedule(time_off=((NOW - dt.timedelta(hours=1), NOW + dt.timedelta(minutes=30)),)))
    router = Router(rules(rr_rule()), [rep("alice"), away, rep("carol")])
    first = router.names(2)
    later = [router.route(now=NOW + dt.timedelta(hours=1)).rep_username for _ in range(3)]
    assert first == ["alice", "carol"]
    assert later == ["alice", "bob", "carol"]


def test_it_carries_on_after_a_rep_who_left_the_rule():
    router = Router(rules(rr_rule()), [rep("alice"), rep("carol"), rep("dave")])
    router.cursors = {"RR": CursorState(last="bob")}
    assert router.names(1) == ["carol"]


# -- weighted ------------------------------------------------------------------------------------


def test_weighted_shares_converge_to_the_weights():
    router = Router(rules(rr_rule(strategy="weighted")),
                    [rep("a", weight=1), rep("b", weight=2), rep("c", weight=3)])
    counts = Counter(router.names(1800))
    for name, weight in (("a", 1), ("b", 2), ("c", 3)):
        assert abs(counts[name] / 1800 - weight / 6) < 0.03


def test_weighted_rotation_is_smooth_not_bursty():
    router = Router(rules(rr_rule(strategy="weighted")), [rep("a", weight=1), rep("b", weight=2)])
    names = router.names(6)
    assert Counter(names) == {"b": 4, "a": 2}
    assert "a" in names[:3] and "a" in names[3:]


def test_weighted_leaves_out_reps_with_weight_zero():
    router = Router(rules(rr_rule(strategy="weighted")), [rep("a", weight=0), rep("b", weight=1)])
    d = router.route()
    assert d.rep_username == "b"
    assert reasons(d)["a"] == "weight 0"


def test_deciding_leaves_the_cursor_it_read_unchanged():
    # The caller keeps the cursors it passed until the plan is written (and compares them to refuse a
    # stale plan): a weighted turn must pay its credits into a copy.
    read = {"W": CursorState("a", {"a": 1, "b": -1})}
    d = decide({"country": "DE"}, rules(rr_rule("W", strategy="weighted")), Roster([rep("a"), rep("b")]), read,
               NOW, random.Random(1))
    assert read["W"].to_json() == {"last": "a", "credits": {"a": 1, "b": -1}}
    assert d.cursors["W"].credits != read["W"].credits


# -- load balanced, first available, predictive ------------------------------------------------------


def test_load_balanced_picks_the_lowest_open_to_capacity_ratio():
    router = Router(rules(rr_rule(strategy="load_balanced")),
                    [rep("a", capacity=10, open_count=5), rep("b", capacity=40, open_count=10),
                     rep("c", capacity=20, open_count=8)])
    d = router.route()
    assert d.rep_username == "b"
    assert reasons(d)["a"] == "higher load 5/10"


def test_load_balanced_breaks_ties_at_random_not_by_order():
    winners = set()
    for seed in range(20):
        router = Router(rules(rr_rule(strategy="load_balanced")), [rep("a"), rep("b"), rep("c")], seed=seed)
        d = router.route()
        winners.add(d.rep_username)
        assert sorted(r for r in reasons(d).values() if r == "lost the tie") == ["lost the tie"] * 2
    assert winners == {"a", "b", "c"}


def test_first_available_takes_the_first_listed_who_can_work():
    router = Router(rules(rr_rule(strategy="first_available", reps=["zed", "amy"])),
                    [rep("amy"), rep("zed", active=False)])
    assert router.names(2) == ["amy", "amy"]


def test_predictive_falls_back_to_load_balanced_and_says_so():
    router = Router(rules(rr_rule(strategy="predictive")), [rep("a", open_count=3), rep("b", open_count=1)])
    d = router.route()
    assert d.rep_username == "b"
    assert "load_balanced" in d.trace[0].note


# -- who gets nothing (scenario 4) ----------------------------------------------------------------


def test_nobody_outside_hours_on_time_off_inactive_or_full_gets_a_lead():
    saturday = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
    off = Schedule(time_off=((saturday - dt.timedelta(days=1), saturday + dt.timedelta(days=2)),))
    cands = [
        rep("hours", schedule=NINE_TO_FIVE),
        rep("off", schedule=off),
        rep("gone", active=False),
        rep("full", capacity=40, open_count=40),
        rep("capped", daily_cap=15, given_24h=15),
        rep("free"),
    ]
    d = Router(rules(rr_rule()), cands, now=saturday).route()
    why = reasons(d)
    assert d.rep_username == "free"
    assert why["hours"] == "outside working hours until Mon 09:00 UTC"
    assert why["off"].startswith("time off until 2026-11-30")
    assert why["gone"] == "inactive"
    assert why["full"] == "at capacity 40/40"
    assert why["capped"] == "daily cap 15 reached"


def test_a_rep_reaching_capacity_during_a_batch_stops_getting_leads():
    router = Router(rules(rr_rule()), [rep("a", capacity=2), rep("b")])
    assert router.names(5) == ["a", "b", "a", "b", "b"]


def test_candidate_filters_give_their_reasons():
    dach = TerritoryData("DACH", ("DE", "AT", "CH"))
    cands = [
        rep("a", skills=frozenset({"payments"}), territories=(dach,)),
        rep("b", skills=frozenset(), territories=(dach,)),
        rep("c", skills=frozenset({"payments"}), territories=(TerritoryData("Nordics", ("SE",)),)),
    ]
    rs = rules({"name": "R", "candidates": {"skills": ["payments"], "territory": True}, "strategy": "round_robin"})
    d = Router(rs, cands).route({"country": "DE", "postcode": "80331"})
    why = reasons(d)
    assert d.rep_username == "a"
    assert why["b"] == "lacks skill payments"
    assert why["c"].startswith("not in territory for DE 80331")


def test_team_and_level_narrow_the_candidates_and_are_counted():
    cands = [rep("a", team="EMEA"), rep("b", team="APAC"), rep("c", team="EMEA", level="senior")]
    rs = rules({"name": "R", "candidates": {"team": "EMEA", "levels": ["junior"]}, "strategy": "round_robin"})
    d = Router(rs, cands).route()
    assert d.rep_username == "a"
    assert d.trace[0].excluded == {"not in team EMEA": 1, "level not junior": 1}


def test_an_excluded_rep_is_named_and_passed_over():
    router = Router(rules(rr_rule()), [rep("a"), rep("b")])
    d = router.route(exclude=["a"])
    assert d.rep_username == "b"
    assert reasons(d)["a"] == "excluded (current owner)"


# -- rules in order (scenario 5) ------------------------------------------------------------------------


SCENARIO_5 = rules(
    {"name": "Urgent", "when": [{"field": "priority", "op": "eq", "value": "urgent"}],
     "candidates": {"levels": ["director"]}, "strategy": "round_robin"},
    {"name": "Big and hot", "when": [{"field": "score", "op": "gte", "value": 80},
                                     {"field": "company_size", "op": "gte", "value": 1000}],
     "candidates": {"levels": ["senior"]}, "strategy": "round_robin"},
    fallback={"candidates": {"levels": ["junior"]}, "strategy": "round_robin"},
)
TEAM = [rep("dora", level="director"), rep("sam", level="senior"), rep("jo", level="junior")]


@pytest.mark.parametrize(
    ("lead", "owner", "rule"),
    [
        ({"priority": "urgent", "score": 10}, "dora", "Urgent"),
        ({"priority": "normal", "score": 85, "company_size": 5000}, "sam", "Big and hot"),
        ({"priority": "normal", "score": 85, "company_size": 200}, "jo", "fallback"),
        ({"priority": "normal", "score": None, "company_size": 5000}, "jo", "fallback"),
    ],
)
def test_rules_are_tried_in_order_and_the_fallback_catches_the_rest(lead, owner, rule):
    d = Router(SCENARIO_5, [rep(c.username, level=c.level) for c in TEAM]).route(lead)
    assert (d.rep_username, d.rule.name) == (owner, rule)


def test_a_matching_rule_without_anyone_available_is_skipped_and_recorded():
    cands = [rep("dora", level="director", active=False), rep("jo")]
    d = Router(SCENARIO_5, cands).route({"priority": "urgent"})
    assert d.rep_username == "jo"
    assert d.trace[0].matched and d.trace[0].outcome == "skipped: no available candidate"
    assert d.trace[1].failed.startswith("score gte 80")


def test_without_fallback_a_lead_nobody_matches_stays_unassigned():
    d = Router(rules(SCENARIO_RULE_URGENT), TEAM).route({"priority": "normal"})
    assert d.outcome == "unassigned"
    assert d.note == "no rule matched and there is no fallback"


SCENARIO_RULE_URGENT = {"name": "Urgent", "when": [{"field": "priority", "op": "eq", "value": "urgent"}],
                        "candidates": {"levels": ["director"]}, "strategy": "round_robin"}


def test_a_pool_rule_sends_the_lead_to_the_pool():
    rs = rules({"name": "SMB", "when": [{"field": "company_size", "op": "lt", "value": 50}], "pool": "smb"})
    d = decide({"company_size": 10}, rs, Roster([]), {}, NOW, random.Random(0))
    assert (d.outcome, d.pool_name) == ("pooled", "smb")


def test_the_explanation_is_plain_json():
    import json

    d = Router(SCENARIO_5, [rep(c.username, level=c.level) for c in TEAM]).route({"priority": "urgent"})
    data = json.loads(json.dumps(d.explanation()))
    assert data["rep"] == "dora"
    assert data["tried"][0]["candidates"] == [{"rep": "dora", "chosen": True,
                                               "reason": "chosen: next in turn (first turn of this rule)"}]


def test_when_any_matches_if_one_condition_holds():
    rs = rules({"name": "Any", "when_any": [{"field": "country", "op": "eq", "value": "DE"},
                                            {"field": "industry", "op": "eq", "value": "fintech"}],
                "candidates": {"levels": ["junior"]}, "strategy": "round_robin"})
    assert Router(rs, [rep("jo")]).route({"country": "FR", "industry": "Fintech"}).rep_username == "jo"
    assert Router(rs, [rep("jo")]).route({"country": "FR", "industry": "retail"}).rep_username is None


# -- condition ops -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cond", "value", "expected"),
    [
        ({"field": "country", "op": "eq", "value": "DE"}, "de", True),
        ({"field": "country", "op": "ne", "value": "DE"}, "FR", True),
        ({"field": "country", "op": "in", "value": ["DE", "AT"]}, "AT", True),
        ({"field": "country", "op": "not_in", "value": ["DE", "AT"]}, "AT", False),
        ({"field": "company", "op": "contains", "value": "Bank"}, "Deutsche Bank", True),
        ({"field": "company", "op": "contains", "value": "bank"}, "Deutsche Bank", False),
        ({"field": "company", "op": "icontains", "value": "bank"}, "Deutsche Bank", True),
        ({"field": "email", "op": "endswith", "value": "@acme.com"}, "jo@acme.com", True),
        ({"field": "postcode", "op": "startswith", "value": "80"}, "80331", True),
        ({"field": "company_size", "op": "gt", "value": 1000}, 1000, False),
        ({"field": "company_size", "op": "gte", "value": 1000}, 1000, True),
        ({"field": "score", "op": "lt", "value": 50}, None, False),
        ({"field": "value", "op": "lte", "value": 99.5}, __import__("decimal").Decimal("99.50"), True),
        ({"field": "title", "op": "regex", "value": "^(CFO|CEO)\\b"}, "CFO Europe", True),
        ({"field": "region", "op": "is_empty"}, "", True),
        ({"field": "region", "op": "is_not_empty"}, "Bavaria", True),
        ({"field": "extra.language", "op": "eq", "value": "es"}, "es", True),
        ({"field": "extra.seats", "op": "gte", "value": 10}, "12", True),
    ],
)
def test_condition_ops(cond, value, expected):
    c = compile_condition(cond)
    lead = {"extra": {cond["field"][6:]: value}} if cond["field"].startswith("extra.") else {cond["field"]: value}
    from routing.engine import lead_value

    assert c.test(lead_value(lead, cond["field"])) is expected

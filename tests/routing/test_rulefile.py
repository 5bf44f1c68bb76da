"""Rule-set files: every fault named by path, and a canonical form that round-trips."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from routing.rulefile import KnownNames, RuleFileError, ruleset_parse, ruleset_validate

EXAMPLE = json.loads((Path(__file__).resolve().parents[2] / "docs/examples/rules.json").read_text())
KNOWN = KnownNames(reps={"alice", "bob"}, users={"alice", "bob", "dora"}, teams={"EMEA"},
                   skills={"payments"}, pools={"smb"})


def faults(data, known=KNOWN):
    with pytest.raises(RuleFileError) as exc:
        ruleset_validate(data, known)
    return exc.value.faults


def with_rule(rule, **top):
    return {"name": "T", "rules": [rule], **top}


OK_RULE = {"name": "R", "candidates": {"team": "EMEA"}, "strategy": "round_robin"}


def test_the_contract_example_is_valid():
    assert ruleset_validate(EXAMPLE, KNOWN)["rules"][2]["pool"] == "smb"


def test_the_canonical_form_is_a_fixed_point():
    once = ruleset_validate(EXAMPLE, KNOWN)
    assert ruleset_validate(copy.deepcopy(once), KNOWN) == once


def test_it_names_an_unknown_op_by_rule_and_condition():
    bad = copy.deepcopy(EXAMPLE)
    bad["rules"][2]["when"][0]["op"] = "like"
    assert faults(bad) == ["rules[2].when[0].op: unknown op 'like'"]


def test_it_lists_every_fault_not_just_the_first():
    bad = copy.deepcopy(EXAMPLE)
    bad["rules"][0]["when"][0]["op"] = "like"
    bad["rules"][1]["colour"] = "red"
    assert faults(bad) == ["rules[0].when[0].op: unknown op 'like'", "rules[1].colour: unknown field 'colour'"]


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ({"field": "company_size", "op": "gte", "value": "abc"}, "needs a number"),
        ({"field": "title", "op": "regex", "value": "(unclosed"}, "regex does not compile"),
        ({"field": "country", "op": "in", "value": "DE"}, "needs a non-empty list"),
        ({"field": "country", "op": "in", "value": []}, "needs a non-empty list"),
        ({"field": "priority", "op": "eq", "value": "asap"}, "priority is normal or urgent"),
        ({"field": "score", "op": "gt", "value": 100}, "can never match"),
        ({"field": "country", "op": "eq", "value": "Germany"}, "alpha-2"),
        ({"field": "company", "op": "gt", "value": 3}, "is text"),
        ({"field": "company_size", "op": "contains", "value": "1"}, "does not apply to numeric"),
        ({"field": "received_at", "op": "gte", "value": "yesterday"}, "ISO 8601"),
        ({"field": "region", "op": "is_empty", "value": "x"}, "takes no value"),
        ({"field": "colour", "op": "eq", "value": "red"}, "unknown field 'colour'"),
    ],
)
def test_it_rejects_conditions_that_are_malformed_or_can_never_match(cond, expected):
    found = faults(with_rule({**OK_RULE, "when": [cond]}))
    assert len(found) == 1
    assert found[0].startswith("rules[0].when[0].")
    assert expected in found[0]


def test_it_accepts_custom_fields_under_extra():
    data = with_rule({**OK_RULE, "when": [{"field": "extra.language", "op": "in", "value": ["es", "pt"]}]})
    assert ruleset_validate(data, KNOWN)["rules"][0]["when"][0]["field"] == "extra.language"


def test_a_strategy_needs_candidates():
    assert faults(with_rule({"name": "R", "strategy": "weighted"})) == [
        "rules[0].candidates: strategy 'weighted' without candidates"
    ]


def test_a_pool_must_exist():
    assert faults(with_rule({"name": "R", "pool": "enterprise"})) == ["rules[0].pool: pool 'enterprise' does not exist"]


def test_an_empty_rule_list_is_refused():
    assert faults({"name": "T", "rules": []}) == ["rules: empty rule list: a rule set needs at least one rule"]


def test_unknown_strategy_team_level_skill_and_rep_are_named():
    rule = {"name": "R", "candidates": {"team": "Mars", "levels": ["intern"], "skills": ["juggling"],
                                       "reps": ["zed"]}, "strategy": "lottery"}
    assert faults(with_rule(rule)) == [
        "rules[0].candidates.reps[0]: unknown rep 'zed'",
        "rules[0].candidates.team: team 'Mars' does not exist",
        "rules[0].candidates.levels[0]: unknown level 'intern' (one of junior, senior, director, manager)",
        "rules[0].candidates.skills[0]: skill 'juggling' does not exist",
        "rules[0].strategy: unknown strategy 'lottery' (one of round_robin, weighted, load_balanced, "
        "first_available, predictive)",
    ]


def test_rule_names_are_unique_because_rotation_follows_the_name():
    assert faults({"name": "T", "rules": [OK_RULE, OK_RULE]}) == [
        "rules[1].name: duplicate rule name 'R' (also rules[0])"
    ]


def test_the_fallback_is_checked_like_a_rule():
    assert faults(with_rule(OK_RULE, fallback={"candidates": {"team": "EMEA"}, "strategy": "x", "when": []})) == [
        "fallback.when: unknown field 'when'",
        "fallback.strategy: unknown strategy 'x' (one of round_robin, weighted, load_balanced, first_available, "
        "predictive)",
    ]


def test_escalate_to_takes_usernames_or_levels():
    ok = with_rule({**OK_RULE, "escalate_to": {"levels": ["director"]}})
    assert ruleset_validate(ok, KNOWN)["rules"][0]["escalate_to"] == {"levels": ["director"]}
    assert faults(with_rule({**OK_RULE, "escalate_to": ["nobody"]})) == [
        "rules[0].escalate_to[0]: unknown user 'nobody'"
    ]


def test_a_ladder_step_the_sweep_does_not_know_is_refused():
    ok = with_rule({**OK_RULE, "ladder": ["notify", "remind"]})
    assert ruleset_validate(ok, KNOWN)["rules"][0]["ladder"] == ["notify", "remind"]
    assert faults(with_rule({**OK_RULE, "ladder": ["remind", "phone"]})) == [
        "rules[0].ladder: unknown ladder step 'phone' (use remind, reassign, notify)"
    ]


def test_numbers_too_large_to_store_are_refused():
    rule = {**OK_RULE, "sla_minutes": 2**31, "max_reassignments": 40_000}
    assert faults(with_rule(rule)) == [
        "rules[0].sla_minutes: expected at most 2147483647, got 2147483648",
        "rules[0].max_reassignments: expected at most 32767, got 40000",
    ]


def test_broken_json_is_reported_with_its_position():
    with pytest.raises(RuleFileError) as exc:
        ruleset_parse('{"name": "x",\n "rules": [}')
    assert exc.value.faults[0].startswith("(file): not valid JSON")

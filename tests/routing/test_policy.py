"""describe_rule: the published rules in plain language on /policy/, one phrasing per op and strategy."""

from __future__ import annotations

import pytest

from routing.policy import describe_condition, describe_rule, ruleset_diff


def cond(field, op, value=None):
    c = {"field": field, "op": op}
    if value is not None:
        c["value"] = value
    return c


def test_it_reads_the_dach_enterprise_rule_as_one_sentence():
    rule = {"name": "DACH enterprise",
            "when": [cond("country", "in", ["DE", "AT", "CH"]), cond("company_size", "gte", 1000)],
            "candidates": {"team": "EMEA", "territory": True, "skills": ["payments"]}, "strategy": "weighted"}
    assert describe_rule(rule) == (
        "Leads from DE, AT or CH with 1,000+ employees go to EMEA reps covering the lead's territory "
        "who know payments, in proportion to their weights."
    )


def test_it_sends_urgent_leads_to_directors_in_turn_with_the_sla_and_escalation():
    rule = {"name": "Urgent", "when": [cond("priority", "eq", "urgent")], "candidates": {"levels": ["director"]},
            "strategy": "round_robin", "sla_minutes": 5, "escalate_to": ["dora"]}
    assert describe_rule(rule) == (
        "Leads whose priority is “urgent” go to directors, in turn (round robin). "
        "First touch within 5 working minutes; if missed, dora is told."
    )


def test_it_names_the_pool_for_a_pool_rule():
    rule = {"name": "Small", "when": [cond("company_size", "lt", 50)], "pool": "smb"}
    assert describe_rule(rule) == (
        "Leads with fewer than 50 employees go to the “smb” pool, where its members claim them."
    )


def test_it_joins_when_any_conditions_with_or():
    rule = {"name": "x", "when_any": [cond("source", "eq", "event"), cond("score", "gte", 80)],
            "candidates": {"levels": ["senior"]}, "strategy": "load_balanced"}
    assert describe_rule(rule).startswith("Leads whose source is “event” or whose score is 80 or more go to seniors")


def test_it_lists_named_reps_in_order_for_first_available():
    rule = {"name": "x", "candidates": {"reps": ["alice", "bob"]}, "strategy": "first_available"}
    assert describe_rule(rule) == "All leads go to alice or bob, to the first one available, in the order listed."


def test_it_describes_the_fallback_as_any_other_lead():
    text = describe_rule({"candidates": {"team": "EMEA"}, "strategy": "load_balanced"}, fallback=True)
    assert text == ("Any other lead goes to EMEA reps, to whoever has the most room "
                    "(fewest open leads for their capacity).")


def test_it_describes_predictive_and_escalation_to_levels():
    rule = {"name": "x", "candidates": {"levels": ["senior", "director"]}, "strategy": "predictive",
            "sla_minutes": 1, "escalate_to": {"levels": ["manager"]}}
    assert describe_rule(rule) == (
        "All leads go to seniors or directors, to whoever past results predict will convert it best. "
        "First touch within 1 working minute; if missed, managers are told."
    )


@pytest.mark.parametrize(("condition", "text"), [
    (cond("country", "eq", "FR"), "from FR"),
    (cond("country", "not_in", ["US", "CA"]), "not from US or CA"),
    (cond("company_size", "gt", 10), "with more than 10 employees"),
    (cond("company_size", "lte", 200), "with at most 200 employees"),
    (cond("company_size", "eq", 5), "with exactly 5 employees"),
    (cond("industry", "ne", "retail"), "whose industry is not “retail”"),
    (cond("product", "in", ["crm", "erp"]), "whose product is “crm” or “erp”"),
    (cond("source", "not_in", ["spam", "test"]), "whose source is none of “spam” and “test”"),
    (cond("title", "contains", "CFO"), "whose job title contains “CFO”"),
    (cond("title", "icontains", "chief"), "whose job title contains “chief” (any case)"),
    (cond("email", "startswith", "ceo@"), "whose email starts with “ceo@”"),
    (cond("email", "endswith", ".gov"), "whose email ends with “.gov”"),
    (cond("score", "gt", 50), "whose score is above 50"),
    (cond("score", "lt", 20), "whose score is below 20"),
    (cond("value", "lte", 999.5), "whose deal value is 999.5 or less"),
    (cond("postcode", "regex", "^80"), "whose postcode matches the pattern ^80"),
    (cond("phone", "is_empty"), "with no phone"),
    (cond("region", "is_not_empty"), "with a region"),
    (cond("received_at", "gte", "2026-01-01T00:00:00+00:00"), "arriving from 2026-01-01T00:00:00+00:00"),
    (cond("extra.language", "eq", "es"), "whose custom field “language” is “es”"),
])
def test_it_phrases_each_op(condition, text):
    assert describe_condition(condition) == text


def test_the_diff_names_added_removed_and_changed_rules_field_by_field():
    old = {"name": "Q3", "rules": [
        {"name": "A", "candidates": {"team": "EMEA"}, "strategy": "round_robin"},
        {"name": "B", "pool": "smb"},
    ], "fallback": None}
    new = {"name": "Q3", "rules": [
        {"name": "A", "candidates": {"team": "EMEA"}, "strategy": "weighted", "sla_minutes": 5},
        {"name": "C", "pool": "smb"},
    ], "fallback": None}
    diff = ruleset_diff(old, new)
    assert [r["name"] for r in diff["added"]] == ["C"]
    assert [r["name"] for r in diff["removed"]] == ["B"]
    assert diff["changed"] == [{"name": "A", "fields": [
        {"field": "strategy", "old": "round_robin", "new": "weighted"},
        {"field": "sla_minutes", "old": "—", "new": "5"},
    ]}]


def test_the_diff_counts_a_move_as_a_change_because_order_decides():
    a = {"name": "x", "candidates": {"team": "T"}, "strategy": "round_robin"}
    b = {"name": "y", "candidates": {"team": "T"}, "strategy": "round_robin"}
    diff = ruleset_diff({"name": "s", "rules": [a, b]}, {"name": "s", "rules": [b, a]})
    assert {c["name"] for c in diff["changed"]} == {"x", "y"}
    assert diff["changed"][0]["fields"][0]["field"] == "position"

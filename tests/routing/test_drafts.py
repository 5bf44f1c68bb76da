"""Editing a draft rule set: the workflows behind the /rules/ editor, and their refusal to touch a
version that is (or has just become) published."""

from __future__ import annotations

import pytest

from routing.drafts import (
    DraftRefused,
    DraftRuleInvalid,
    draft_create,
    draft_rename,
    draft_reorder,
    draft_rule_delete,
    draft_rule_save,
)
from routing.models import Rule, RuleSet
from routing.services import ruleset_create_draft, ruleset_publish
from tests.factories import RepFactory, TeamFactory

pytestmark = pytest.mark.django_db

RULES = {
    "name": "Q4 routing",
    "rules": [
        {"name": "Urgent", "when": [{"field": "priority", "op": "eq", "value": "urgent"}],
         "candidates": {"reps": ["alice"]}, "strategy": "round_robin"},
        {"name": "Everyone", "candidates": {"team": "EMEA"}, "strategy": "round_robin"},
    ],
    "fallback": {"candidates": {"team": "EMEA"}, "strategy": "load_balanced"},
}
NEW_RULE = {"name": "DACH", "when": [{"field": "country", "op": "in", "value": ["DE", "AT", "CH"]}],
            "candidates": {"team": "EMEA"}, "strategy": "weighted", "ladder": ["notify"], "max_reassignments": 2}


@pytest.fixture
def org(db):
    RepFactory(user__username="alice", team=TeamFactory(name="EMEA"))


@pytest.fixture
def draft(org, manager):
    return ruleset_create_draft(RULES, actor=manager)


def snapshot(rule_set):
    rule_set = RuleSet.objects.get(pk=rule_set.pk)
    return rule_set.name, rule_set.fallback, list(Rule.objects.filter(rule_set=rule_set).order_by("pk").values())


EDITS = {
    "add a rule": lambda rs: draft_rule_save(rs, None, NEW_RULE),
    "edit a rule": lambda rs: draft_rule_save(rs, rs.rules.get(name="Everyone"), {**NEW_RULE, "name": "Everyone"}),
    "edit the fallback": lambda rs: draft_rule_save(rs, None, {"candidates": {"team": "EMEA"},
                                                               "strategy": "weighted"}, fallback=True),
    "delete a rule": lambda rs: draft_rule_delete(rs, rs.rules.get(name="Urgent").pk),
    "reorder": lambda rs: draft_reorder(rs, list(rs.rules.filter(is_fallback=False)
                                                 .order_by("-position").values_list("pk", flat=True))),
    "rename": lambda rs: draft_rename(rs, "Renamed"),
}


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_every_edit_refuses_a_published_rule_set(draft, manager, edit):
    published = ruleset_publish(draft, actor=manager)
    before = snapshot(published)

    with pytest.raises(DraftRefused, match=f"v{published.version} is published and cannot change"):
        edit(published)

    assert snapshot(published) == before


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_a_draft_published_since_it_was_loaded_is_refused_too(draft, manager, edit):
    # The caller's instance still says "draft": the refusal comes from the row locked in the edit.
    ruleset_publish(RuleSet.objects.get(pk=draft.pk), actor=manager)
    before = snapshot(draft)

    with pytest.raises(DraftRefused):
        edit(draft)

    assert snapshot(draft) == before


def test_an_archived_rule_set_is_refused(draft, manager):
    ruleset_publish(draft, actor=manager)
    newer = ruleset_publish(ruleset_create_draft(RULES, actor=manager), actor=manager)
    archived = RuleSet.objects.get(pk=draft.pk)

    with pytest.raises(DraftRefused, match="is archived and cannot change"):
        draft_rule_save(archived, None, NEW_RULE)
    assert newer.rules.count() == archived.rules.count() == 3


def test_a_saved_rule_lands_before_the_fallback_with_its_ladder(draft):
    row = draft_rule_save(draft, None, NEW_RULE)

    rows = list(draft.rules.order_by("position").values_list("name", "position"))
    assert rows == [("Urgent", 0), ("Everyone", 1), ("DACH", 2), ("fallback", 3)]
    assert (row.ladder, row.max_reassignments) == (["notify"], 2)


def test_an_invalid_rule_is_refused_with_its_path_and_nothing_is_written(draft):
    before = snapshot(draft)

    with pytest.raises(DraftRuleInvalid) as exc:
        draft_rule_save(draft, None, {**NEW_RULE, "ladder": ["remind", "call"], "max_reassignments": -1})

    assert exc.value.prefix == "rules[2]"
    assert exc.value.faults == ["rules[2].max_reassignments: expected a positive whole number, got -1",
                                "rules[2].ladder: unknown ladder step 'call' (use remind, reassign, notify)"]
    assert snapshot(draft) == before


def test_a_stale_order_changes_nothing(draft):
    urgent = draft.rules.get(name="Urgent")

    assert draft_reorder(draft, [urgent.pk]) is False
    assert list(draft.rules.order_by("position").values_list("name", flat=True)) == ["Urgent", "Everyone", "fallback"]


def test_a_new_draft_copies_the_published_version(draft, manager):
    published = ruleset_publish(draft, actor=manager)

    copy = draft_create(actor=manager)

    assert (copy.status, copy.version) == ("draft", published.version + 1)
    assert copy.note == f"Edited from v{published.version}"
    assert list(copy.rules.order_by("position").values_list("name", flat=True)) == ["Urgent", "Everyone", "fallback"]


def test_with_nothing_published_a_new_draft_is_empty(db, manager):
    first = draft_create(actor=manager)

    assert (first.name, first.version, first.status, first.rules.count()) == ("Routing rules", 1, "draft", 0)

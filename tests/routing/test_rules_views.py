"""The managers' rule-set pages: versions, the draft editor, preview, publish, roll back, history."""

from __future__ import annotations

import datetime as dt
import html
import io
import json

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from reps.models import Skill
from routing.models import Lead, Rule, RuleCursor, RuleSet
from routing.services import route_leads, ruleset_create_draft, ruleset_publish, ruleset_to_dict
from tests.factories import LeadFactory, PoolFactory, RepFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db

RULES = {
    "name": "Q4 routing",
    "rules": [
        {"name": "Urgent", "when": [{"field": "priority", "op": "eq", "value": "urgent"}],
         "candidates": {"reps": ["alice"]}, "strategy": "round_robin"},
        {"name": "Everyone", "candidates": {"team": "EMEA"}, "strategy": "round_robin"},
    ],
    "fallback": None,
}


@pytest.fixture
def org(db):
    emea = TeamFactory(name="EMEA")
    Skill.objects.create(name="payments")
    alice = RepFactory(user__username="alice", team=emea)
    bob = RepFactory(user__username="bob", team=emea)
    UserFactory(username="dora")
    PoolFactory(name="smb")
    return {"alice": alice, "bob": bob}


@pytest.fixture
def published(org, manager):
    return ruleset_publish(ruleset_create_draft(RULES, actor=manager), actor=manager)


@pytest.fixture
def draft(published, manager):
    return ruleset_create_draft(ruleset_to_dict(published), actor=manager)


def rule_post(**over):
    data = {"name": "DACH", "match": "all", "cond_field": ["country"], "cond_op": ["in"],
            "cond_value": ["DE, AT, CH"], "target": "candidates", "team": "EMEA", "strategy": "weighted",
            "sla_minutes": "", "escalate_to": ""}
    data.update(over)
    return data


def names(rule_set):
    return list(rule_set.rules.filter(is_fallback=False).order_by("position").values_list("name", flat=True))


# -- who may see the pages -----------------------------------------------------------------------

MANAGER_PAGES = ["rules_list", "rules_diff", "rules_rollback"]


@pytest.mark.parametrize("name", MANAGER_PAGES)
def test_it_sends_anonymous_visitors_to_the_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.parametrize("name", MANAGER_PAGES)
def test_it_forbids_reps_the_manager_pages(rep_client, name):
    assert rep_client.get(reverse(name)).status_code == 403


def test_it_forbids_reps_to_edit_a_draft(client, draft):
    client.force_login(RepFactory(user__username="carol").user)
    response = client.post(reverse("rules_rule_new", args=[draft.pk]), rule_post())
    assert response.status_code == 403
    assert names(draft) == ["Urgent", "Everyone"]


# -- versions --------------------------------------------------------------------------------------


def test_it_lists_versions_with_status_and_who_published(manager_client, published, draft):
    page = manager_client.get(reverse("rules_list")).content.decode()
    assert f"v{published.version}" in page and f"v{draft.version}" in page
    assert "Published" in page and "Draft" in page and "by manager" in page


def test_edit_on_the_published_version_makes_a_new_draft_copy(manager_client, published):
    response = manager_client.post(reverse("rules_new_draft"), {"source": published.pk})
    copy = RuleSet.objects.get(status="draft")
    assert response.status_code == 302 and response["Location"] == reverse("rules_detail", args=[copy.pk])
    assert copy.version == published.version + 1
    assert names(copy) == names(published)
    assert RuleSet.objects.get(pk=published.pk).status == "published"


def test_a_draft_from_a_garbled_source_is_not_found(manager_client, published):
    response = manager_client.post(reverse("rules_new_draft"), {"source": "v1"})

    assert response.status_code == 404
    assert RuleSet.objects.count() == 1


def test_it_refuses_to_change_a_published_version(manager_client, published):
    response = manager_client.post(reverse("rules_rule_new", args=[published.pk]), rule_post())
    assert response.status_code == 302
    assert names(published) == ["Urgent", "Everyone"]


# -- editing a draft ------------------------------------------------------------------------------


def test_it_adds_a_rule_with_conditions_to_the_draft(manager_client, draft):
    response = manager_client.post(reverse("rules_rule_new", args=[draft.pk]), rule_post())
    assert response.status_code == 302
    rule = draft.rules.get(name="DACH")
    assert rule.conditions == [{"field": "country", "op": "in", "value": ["DE", "AT", "CH"]}]
    assert rule.candidates == {"team": "EMEA"} and rule.strategy == "weighted"
    assert names(draft) == ["Urgent", "Everyone", "DACH"]


def test_it_types_numbers_for_numeric_fields(manager_client, draft):
    manager_client.post(reverse("rules_rule_new", args=[draft.pk]),
                        rule_post(cond_field=["company_size"], cond_op=["gte"], cond_value=["1000"]))
    assert draft.rules.get(name="DACH").conditions == [{"field": "company_size", "op": "gte", "value": 1000}]


def test_it_edits_a_rule_in_place(manager_client, draft):
    rule = draft.rules.get(name="Everyone")
    manager_client.post(reverse("rules_rule_edit", args=[draft.pk, rule.pk]),
                        rule_post(name="Everyone", cond_field=[], cond_op=[], cond_value=[], strategy="load_balanced",
                                  sla_minutes="15", escalate_to="dora"))
    rule.refresh_from_db()
    assert (rule.strategy, rule.sla_minutes, rule.escalate_to, rule.conditions) == ("load_balanced", 15, ["dora"], [])
    assert names(draft) == ["Urgent", "Everyone"]


def test_a_ladder_and_reassignment_limit_set_in_the_form_are_what_export_prints(manager_client, draft, manager):
    rule = draft.rules.get(name="Everyone")

    response = manager_client.post(reverse("rules_rule_edit", args=[draft.pk, rule.pk]),
                                   rule_post(name="Everyone", cond_field=[], cond_op=[], cond_value=[],
                                             sla_minutes="15", ladder="notify, reassign", max_reassignments="2"))
    ruleset_publish(draft, actor=manager)
    out = io.StringIO()
    call_command("export_rules", stdout=out)

    assert response.status_code == 302
    exported = next(r for r in json.loads(out.getvalue())["rules"] if r["name"] == "Everyone")
    assert (exported["ladder"], exported["max_reassignments"]) == (["notify", "reassign"], 2)


def test_the_form_shows_the_saved_ladder_and_limit_for_editing(manager_client, draft):
    rule = draft.rules.get(name="Everyone")
    Rule.objects.filter(pk=rule.pk).update(ladder=["remind", "notify"], max_reassignments=3)

    page = manager_client.get(reverse("rules_rule_edit", args=[draft.pk, rule.pk])).content.decode()

    assert 'name="ladder" value="remind, notify"' in page
    assert 'name="max_reassignments" value="3"' in page


def test_emptying_the_ladder_and_limit_goes_back_to_the_default_ladder_without_a_limit(manager_client, draft):
    rule = draft.rules.get(name="Everyone")
    Rule.objects.filter(pk=rule.pk).update(ladder=["notify"], max_reassignments=3)

    manager_client.post(reverse("rules_rule_edit", args=[draft.pk, rule.pk]),
                        rule_post(name="Everyone", cond_field=[], cond_op=[], cond_value=[],
                                  ladder="", max_reassignments=""))

    rule.refresh_from_db()
    assert (rule.ladder, rule.max_reassignments) == ([], None)
    assert "ladder" not in rule.to_data() and "max_reassignments" not in rule.to_data()


def test_the_fallback_takes_a_ladder_too(manager_client, draft):
    manager_client.post(reverse("rules_fallback", args=[draft.pk]),
                        {"target": "candidates", "team": "EMEA", "strategy": "load_balanced",
                         "ladder": "remind", "max_reassignments": "1"})

    draft.refresh_from_db()
    assert draft.fallback == {"candidates": {"team": "EMEA"}, "strategy": "load_balanced",
                              "max_reassignments": 1, "ladder": ["remind"]}


def test_it_sends_a_rule_to_a_pool(manager_client, draft):
    manager_client.post(reverse("rules_rule_new", args=[draft.pk]), rule_post(target="pool", pool="smb"))
    rule = draft.rules.get(name="DACH")
    assert rule.pool.name == "smb" and rule.candidates == {} and rule.strategy == ""


def test_it_reorders_rules_from_the_drag_and_drop_list(manager_client, draft):
    urgent, everyone = draft.rules.order_by("position")
    response = manager_client.post(reverse("rules_reorder", args=[draft.pk]), {"order": [everyone.pk, urgent.pk]},
                                   HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert names(draft) == ["Everyone", "Urgent"]
    assert response.content.decode().index("Everyone") < response.content.decode().index("Urgent")


def test_a_keyboard_user_moves_a_rule_down_without_dragging(manager_client, draft):
    urgent, everyone = draft.rules.order_by("position")

    response = manager_client.post(reverse("rules_reorder", args=[draft.pk]),
                                   {"order": [urgent.pk, everyone.pk], "move": f"{urgent.pk}:down"})

    assert response.status_code == 302
    assert names(draft) == ["Everyone", "Urgent"]


def test_moving_the_top_rule_up_changes_nothing(manager_client, draft):
    urgent, everyone = draft.rules.order_by("position")

    manager_client.post(reverse("rules_reorder", args=[draft.pk]),
                        {"order": [urgent.pk, everyone.pk], "move": f"{urgent.pk}:up"})

    assert names(draft) == ["Urgent", "Everyone"]


def test_each_rule_has_named_move_buttons(manager_client, draft):
    body = manager_client.get(reverse("rules_detail", args=[draft.pk])).content.decode()

    assert "Move rule “Urgent” down" in body and "Move rule “Everyone” up" in body
    assert "Move rule “Urgent” up" not in body


def test_it_keeps_the_fallback_last_when_rules_are_added(manager_client, draft):
    manager_client.post(reverse("rules_fallback", args=[draft.pk]),
                        {"target": "candidates", "team": "EMEA", "strategy": "load_balanced"})
    manager_client.post(reverse("rules_rule_new", args=[draft.pk]), rule_post())
    rows = list(draft.rules.order_by("position").values_list("name", "is_fallback"))
    assert rows[-1] == ("fallback", True)
    draft.refresh_from_db()
    assert draft.fallback == {"candidates": {"team": "EMEA"}, "strategy": "load_balanced"}


def test_it_removes_a_rule_from_the_draft(manager_client, draft):
    rule = draft.rules.get(name="Urgent")
    manager_client.post(reverse("rules_rule_delete", args=[draft.pk, rule.pk]))
    assert names(draft) == ["Everyone"]


def test_a_condition_row_is_served_for_htmx_to_append(manager_client):
    response = manager_client.get(reverse("rules_condition_row"), HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert 'name="cond_field"' in body and 'name="cond_op"' in body and "<html" not in body


# -- bad input: the form names the rule and the field, nothing is saved ---------------------------


@pytest.mark.parametrize(("post", "path", "message"), [
    (rule_post(cond_field=["colour"]), "rules[2].when[0].field", "unknown field 'colour'"),
    (rule_post(cond_op=["like"]), "rules[2].when[0].op", "unknown op 'like'"),
    (rule_post(cond_field=["email"], cond_op=["regex"], cond_value=["(unclosed"]), "rules[2].when[0].value",
     "regex does not compile"),
    (rule_post(cond_field=["company_size"], cond_op=["gte"], cond_value=["lots"]), "rules[2].when[0].value",
     "needs a number"),
    (rule_post(team=""), "rules[2].candidates", "strategy 'weighted' without candidates"),
    (rule_post(target="pool", pool="nope"), "rules[2].pool", "pool 'nope' does not exist"),
    (rule_post(name="Urgent"), "rules[2].name", "duplicate rule name"),
    (rule_post(sla_minutes="soon"), "rules[2].sla_minutes", "expected a positive whole number"),
    (rule_post(ladder="remind, phone"), "rules[2].ladder", "unknown ladder step 'phone'"),
    (rule_post(max_reassignments="lots"), "rules[2].max_reassignments", "expected a positive whole number"),
    (rule_post(max_reassignments="0"), "rules[2].max_reassignments", "expected a positive whole number"),
    (rule_post(max_reassignments="40000"), "rules[2].max_reassignments", "expected at most 32767"),
])
def test_it_rejects_bad_input_naming_the_rule_and_field(manager_client, draft, post, path, message):
    response = manager_client.post(reverse("rules_rule_new", args=[draft.pk]), post)
    body = html.unescape(response.content.decode())
    assert response.status_code == 422
    assert path in body and message in body
    assert "DACH" in body or "Urgent" in body
    assert names(draft) == ["Urgent", "Everyone"]


def test_it_rejects_an_unknown_field_without_touching_the_rule_being_edited(manager_client, draft):
    rule = draft.rules.get(name="Everyone")
    response = manager_client.post(reverse("rules_rule_edit", args=[draft.pk, rule.pk]),
                                   rule_post(name="Everyone", cond_field=["colour"]))
    assert response.status_code == 422 and "rules[1].when[0].field" in response.content.decode()
    rule.refresh_from_db()
    assert rule.conditions == [] and rule.strategy == "round_robin"


def test_a_bad_ladder_step_is_named_beside_the_field_and_the_rule_keeps_its_ladder(manager_client, draft):
    rule = draft.rules.get(name="Everyone")
    Rule.objects.filter(pk=rule.pk).update(ladder=["remind", "notify"], max_reassignments=3)

    response = manager_client.post(reverse("rules_rule_edit", args=[draft.pk, rule.pk]),
                                   rule_post(name="Everyone", cond_field=[], cond_op=[], cond_value=[],
                                             ladder="remind, escalate", max_reassignments="1"))

    body = html.unescape(response.content.decode())
    assert response.status_code == 422
    field = body[body.index('name="ladder"'):]
    field = field[:field.index("</label>")]
    assert 'value="remind, escalate"' in field and 'aria-invalid="true"' in field
    assert "unknown ladder step 'escalate' (use remind, reassign, notify)" in field
    rule.refresh_from_db()
    assert (rule.ladder, rule.max_reassignments) == (["remind", "notify"], 3)


# -- preview ---------------------------------------------------------------------------------------


@pytest.fixture
def recent_leads(org):
    now = timezone.now()
    return [LeadFactory(received_at=now - dt.timedelta(days=d, hours=1)) for d in range(4)]


def test_preview_shows_per_rep_counts_under_both_versions_and_the_leads_that_change(
        manager_client, draft, recent_leads, org):
    # The draft sends everything to bob first: alice loses her share.
    rule = draft.rules.get(name="Everyone")
    manager_client.post(reverse("rules_rule_edit", args=[draft.pk, rule.pk]),
                        rule_post(name="Everyone", cond_field=[], cond_op=[], cond_value=[], team="", reps="bob",
                                  strategy="first_available"))
    response = manager_client.get(reverse("rules_preview", args=[draft.pk]), {"days": 30})
    assert response.status_code == 200
    preview = response.context["preview"]
    per = {r["name"]: r for r in preview["per_rep"]}
    assert per["bob"]["draft"] == 4 and per["alice"]["draft"] == 0
    assert per["alice"]["change"] == -per["alice"]["published"]
    assert preview["changed"] == per["alice"]["published"]
    body = response.content.decode()
    assert "preview-chart" in body and "Leads that would change hands" in body


def test_preview_never_moves_a_rotation_pointer(manager_client, draft, recent_leads, org):
    route_leads([lead.pk for lead in recent_leads[:1]])
    before = list(RuleCursor.objects.order_by("key").values("key", "last_rep", "state"))
    assigned = list(Lead.objects.order_by("pk").values_list("owner", flat=True))
    manager_client.get(reverse("rules_preview", args=[draft.pk]), {"days": 30})
    assert list(RuleCursor.objects.order_by("key").values("key", "last_rep", "state")) == before
    assert list(Lead.objects.order_by("pk").values_list("owner", flat=True)) == assigned


def test_preview_refuses_a_days_value_that_is_not_a_number(manager_client, draft):
    response = manager_client.get(reverse("rules_preview", args=[draft.pk]), {"days": "lots"})
    assert response.context["preview"] is None and "days: a whole number" in response.content.decode()


# -- publish, roll back, history ------------------------------------------------------------------


def test_publishing_asks_for_confirmation_then_puts_the_draft_in_force(manager_client, published, draft):
    page = manager_client.get(reverse("rules_publish", args=[draft.pk]))
    assert page.status_code == 200 and "confirm-publish" in page.content.decode()
    assert RuleSet.objects.get(pk=draft.pk).status == "draft"
    response = manager_client.post(reverse("rules_publish", args=[draft.pk]))
    assert response.status_code == 302
    assert RuleSet.objects.get(pk=draft.pk).status == "published"
    assert RuleSet.objects.get(pk=published.pk).status == "archived"


def test_it_refuses_to_publish_a_draft_without_rules(manager_client, published, draft):
    for rule in draft.rules.all():
        manager_client.post(reverse("rules_rule_delete", args=[draft.pk, rule.pk]))
    response = manager_client.post(reverse("rules_publish", args=[draft.pk]))
    assert response.status_code == 422 and "empty rule list" in response.content.decode()
    assert RuleSet.objects.get(pk=draft.pk).status == "draft"
    assert RuleSet.objects.get(pk=published.pk).status == "published"


def test_rolling_back_brings_the_previous_version_back_as_a_new_one(manager_client, published, draft, manager):
    ruleset_publish(draft, actor=manager)
    page = manager_client.get(reverse("rules_rollback"))
    assert f"v{published.version}" in page.content.decode()
    manager_client.post(reverse("rules_rollback"))
    current = RuleSet.objects.get(status="published")
    assert current.version == draft.version + 1 and current.note == f"Rollback to v{published.version}"
    assert names(current) == names(published)


def test_rolling_back_with_nothing_earlier_says_so(manager_client, published):
    response = manager_client.post(reverse("rules_rollback"), follow=True)
    assert "no earlier published version" in response.content.decode()
    assert RuleSet.objects.get().status == "published"


def test_a_stored_version_that_no_longer_passes_the_checks_is_refused_with_the_fault_not_a_500(
    manager_client, published, draft, manager
):
    """Versions stored before a rule check was tightened (here an unknown ladder step) can still be
    in the history: rolling back to one, or copying it, says why not and changes nothing."""
    Rule.objects.filter(rule_set=published, name="Urgent").update(ladder=["remnd"])
    ruleset_publish(draft, actor=manager)

    response = manager_client.post(reverse("rules_rollback"), follow=True)
    assert response.status_code == 200 and "remnd" in response.content.decode()
    assert RuleSet.objects.get(status="published").pk == draft.pk

    response = manager_client.post(reverse("rules_new_draft"), {"source": published.pk}, follow=True)
    assert response.status_code == 200 and "cannot be copied" in response.content.decode()
    assert not RuleSet.objects.filter(status="draft").exists()


def test_the_history_diff_shows_rules_added_removed_and_changed(manager_client, published, draft):
    everyone = draft.rules.get(name="Everyone")
    manager_client.post(reverse("rules_rule_edit", args=[draft.pk, everyone.pk]),
                        rule_post(name="Everyone", cond_field=[], cond_op=[], cond_value=[], strategy="weighted"))
    manager_client.post(reverse("rules_rule_delete", args=[draft.pk, draft.rules.get(name="Urgent").pk]))
    manager_client.post(reverse("rules_rule_new", args=[draft.pk]), rule_post())
    response = manager_client.get(reverse("rules_diff"), {"a": published.pk, "b": draft.pk})
    diff = response.context["diff"]
    assert [r["name"] for r in diff["added"]] == ["DACH"]
    assert [r["name"] for r in diff["removed"]] == ["Urgent"]
    assert diff["changed"] == [{"name": "Everyone", "fields": [
        {"field": "strategy", "old": "round_robin", "new": "weighted"}]}]
    assert "round_robin" in response.content.decode()


def test_a_published_rule_row_is_never_edited_by_the_editor(manager_client, published, draft):
    before = list(Rule.objects.filter(rule_set=published).values())
    rule = draft.rules.get(name="Everyone")
    manager_client.post(reverse("rules_rule_edit", args=[draft.pk, rule.pk]),
                        rule_post(name="Everyone", strategy="weighted"))
    assert list(Rule.objects.filter(rule_set=published).values()) == before


# -- two managers at once (PostgreSQL row locks) ----------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_managers_adding_rules_at_once_both_land_in_order(org, manager):
    import threading

    from django.db import connection
    from django.test import Client

    draft = ruleset_create_draft(RULES, actor=manager)
    other = UserFactory(username="manager2", groups=["Managers"], is_staff=True)
    barrier = threading.Barrier(4)
    statuses = []

    def add(user, name):
        client = Client()
        client.force_login(user)
        barrier.wait()
        try:
            statuses.append(client.post(reverse("rules_rule_new", args=[draft.pk]), rule_post(name=name)).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=add, args=(u, f"Rule {i}"))
               for i, u in enumerate([manager, other, manager, other])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [302] * 4
    rows = list(draft.rules.order_by("position").values_list("position", "name"))
    assert [p for p, _ in rows] == list(range(6))
    assert {n for _, n in rows} == {"Urgent", "Everyone", "Rule 0", "Rule 1", "Rule 2", "Rule 3"}

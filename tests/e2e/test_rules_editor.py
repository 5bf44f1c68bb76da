"""The rule editor in a real browser: add a condition row with htmx, save the draft, preview, publish."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from routing.models import RuleSet
from routing.services import ruleset_create_draft, ruleset_publish
from tests.factories import LeadFactory, RepFactory, TeamFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Screenshots for a human to look at; CI can point this at its artefacts folder.
SHOTS = Path(os.environ.get("LEADOPS_SCREENSHOTS", tempfile.gettempdir()))

RULES = {"name": "Q4 routing", "rules": [{"name": "Everyone", "candidates": {"team": "EMEA"},
                                          "strategy": "round_robin"}], "fallback": None}


@pytest.fixture
def org(manager):
    emea = TeamFactory(name="EMEA")
    for name in ("alice", "bob", "carol"):
        RepFactory(user__username=name, team=emea)
    published = ruleset_publish(ruleset_create_draft(RULES, actor=manager), actor=manager)
    now = timezone.now()
    for i in range(12):
        LeadFactory(company=f"Company {i}", country="DE" if i % 2 else "FR",
                    received_at=now - dt.timedelta(days=i % 5, hours=1))
    return published


def test_a_manager_adds_a_condition_saves_a_draft_previews_and_publishes(logged_in, manager, org):
    page = logged_in(manager, "/rules/")
    page.get_by_role("button", name=f"Edit v{org.version} as new draft").click()
    expect(page.locator("h1")).to_contain_text(f"v{org.version + 1}")
    draft = RuleSet.objects.get(status="draft")

    page.locator("#add-rule").click()
    page.get_by_label("Name", exact=True).fill("Germany to alice")
    page.evaluate("window.__noReload = true")
    page.locator("#add-condition").click()
    rows = page.locator("#conditions .cond-row")
    expect(rows).to_have_count(2)  # the form opens with one row; htmx appended the second
    assert page.evaluate("window.__noReload === true")
    rows.nth(0).get_by_label("Field").fill("country")
    rows.nth(0).get_by_label("Value").fill("DE")
    rows.nth(1).get_by_label("Field").fill("company_size")
    rows.nth(1).get_by_label("Operator").select_option("gte")
    rows.nth(1).get_by_label("Value").fill("10")
    page.get_by_label("Reps, in order").fill("alice")
    page.locator("select[name=strategy]").select_option("first_available")
    page.get_by_label("Escalation steps").fill("remind, notify")
    page.get_by_label("Max reassignments").fill("1")
    page.screenshot(path=str(SHOTS / "rules_rule_form.png"), full_page=True)
    page.locator("#save-rule").click()

    expect(page.locator(".messages")).to_contain_text("Saved “Germany to alice”")
    saved = draft.rules.get(name="Germany to alice")
    assert (saved.ladder, saved.max_reassignments) == (["remind", "notify"], 1)
    expect(page.locator("ol.rules")).to_contain_text("Leads from DE with 10+ employees go to alice")
    page.screenshot(path=str(SHOTS / "rules_editor.png"), full_page=True)

    # Drag the new rule above "Everyone": Sortable posts the order with htmx.
    page.locator("ol.rules li").nth(1).locator(".handle").drag_to(page.locator("ol.rules li").nth(0))
    expect(page.locator("ol.rules li").nth(0)).to_contain_text("Germany to alice")
    expect(page.locator("ol.rules li").nth(0)).to_contain_text("1. Germany to alice")
    assert list(draft.rules.order_by("position").values_list("name", flat=True)) == ["Germany to alice", "Everyone"]
    # The list was swapped in by htmx; dragging must still work on the new one.
    page.locator("ol.rules li").nth(1).locator(".handle").drag_to(page.locator("ol.rules li").nth(0))
    expect(page.locator("ol.rules li").nth(0)).to_contain_text("1. Everyone")
    page.locator("ol.rules li").nth(1).locator(".handle").drag_to(page.locator("ol.rules li").nth(0))
    expect(page.locator("ol.rules li").nth(0)).to_contain_text("1. Germany to alice")

    page.locator("#preview-link").click()
    expect(page.locator(".preview-summary")).to_contain_text("would go elsewhere")
    expect(page.locator(".preview-table")).to_contain_text("alice")
    page.wait_for_function("() => { const c = document.getElementById('preview-chart'); "
                           "return c && window.Chart && Chart.getChart(c); }")
    page.screenshot(path=str(SHOTS / "rules_preview.png"), full_page=True)

    page.locator("#publish-link").click()
    page.locator("#confirm-publish").click()
    expect(page.locator(".messages")).to_contain_text(f"v{draft.version} is now in force")
    assert RuleSet.objects.get(pk=draft.pk).status == "published"
    assert RuleSet.objects.get(pk=org.pk).status == "archived"

    # The policy page reps read now states the new rule first, in plain language.
    page.get_by_role("link", name="Policy", exact=True).click()
    expect(page.locator("ol.policy li").first).to_contain_text("Leads from DE with 10+ employees go to alice")

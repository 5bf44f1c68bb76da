"""The rep board in a real browser: live claims side by side, shotgun banners, keyboard only."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from routing.models import Lead
from routing.pools import lead_enter_pool
from tests.factories import LeadFactory, PoolFactory
from tests.routing.test_pools_support import pooled

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The board polls every 3 s; allow a few polls on a loaded machine.
LIVE = 12_000


def mark_page(page) -> None:
    """A flag that a full page load would wipe: proves later changes happened in place."""
    page.evaluate("window.__noReload = true")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__noReload === true")


def test_one_rep_claims_and_the_other_reps_board_updates_without_reload(logged_in, rep, other_rep):
    pool = PoolFactory(name="smb", members=[rep, other_rep])
    lead = pooled(pool, company="Contested Co")
    alice, bob = logged_in(rep.user, "/board/"), logged_in(other_rep.user, "/board/")
    for page in (alice, bob):
        expect(page.locator(f"#pool-row-{lead.pk}")).to_contain_text("Contested Co")
        mark_page(page)

    alice.locator(f"#claim-{lead.pk}").click()

    expect(alice.locator(f"#pool-row-{lead.pk}")).to_contain_text("Yours")
    expect(alice.locator("#my-leads")).to_contain_text("Contested Co")
    expect(bob.locator(f"#pool-row-{lead.pk}")).to_contain_text(f"Taken by {rep.display_name}", timeout=LIVE)
    expect(bob.locator(f"#claim-{lead.pk}")).to_have_count(0)
    assert_not_reloaded(alice)
    assert_not_reloaded(bob)
    assert Lead.objects.get(pk=lead.pk).owner == rep


def test_a_released_lead_comes_back_on_the_other_reps_board_and_the_counts_follow(logged_in, rep, other_rep):
    pool = PoolFactory(name="smb", members=[rep, other_rep], claim_limit=5)
    lead = pooled(pool, company="Boomerang BV")
    alice, bob = logged_in(rep.user, "/board/"), logged_in(other_rep.user, "/board/")
    alice.locator(f"#claim-{lead.pk}").click()
    expect(alice.locator(f"#pool-count-{pool.pk}")).to_contain_text("you hold 1 of 5", timeout=LIVE)
    expect(bob.locator(f"#pool-row-{lead.pk}")).to_contain_text("Taken by", timeout=LIVE)
    for page in (alice, bob):
        mark_page(page)

    alice.locator(f"#my-lead-{lead.pk}").get_by_role("button", name="Release").click()

    expect(alice.locator(f"#my-lead-{lead.pk}")).to_have_count(0)
    expect(alice.locator("#my-leads [role=status]")).to_contain_text("went back to the smb pool")
    expect(alice.locator(f"#pool-count-{pool.pk}")).to_contain_text("1 waiting", timeout=LIVE)
    expect(alice.locator(f"#pool-count-{pool.pk}")).to_contain_text("you hold 0 of 5")
    expect(alice.locator(f"#claim-{lead.pk}")).to_be_visible(timeout=LIVE)
    bob.locator(f"#claim-{lead.pk}").click(timeout=LIVE)
    expect(bob.locator("#my-leads")).to_contain_text("Boomerang BV")
    assert_not_reloaded(alice)
    assert_not_reloaded(bob)
    assert Lead.objects.get(pk=lead.pk).owner == other_rep


def test_marking_a_lead_lost_asks_first_and_a_no_keeps_it(logged_in, rep):
    lead = LeadFactory(owner=rep, status=Lead.Status.ASSIGNED, company="Second Thoughts Ltd")
    page = logged_in(rep.user, "/board/")
    row = page.locator(f"#my-lead-{lead.pk}")
    questions: list[str] = []

    def answer(dialog, accept: bool) -> None:
        questions.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda d: answer(d, False))
    row.get_by_role("button", name="Lost").click()
    page.wait_for_timeout(500)
    assert Lead.objects.get(pk=lead.pk).status == Lead.Status.ASSIGNED

    page.once("dialog", lambda d: answer(d, True))
    row.get_by_role("button", name="Lost").click()
    expect(page.locator(f"#my-lead-{lead.pk}")).to_have_count(0)
    assert Lead.objects.get(pk=lead.pk).status == Lead.Status.LOST
    assert len(questions) == 2 and "as lost?" in questions[0]


def test_the_lead_page_asks_too_before_closing_a_lead(logged_in, rep):
    lead = LeadFactory(owner=rep, status=Lead.Status.ASSIGNED, company="Careful Corp")
    page = logged_in(rep.user, f"/board/leads/{lead.pk}/")

    page.once("dialog", lambda d: d.dismiss())
    page.get_by_role("button", name="Won").click()
    page.wait_for_timeout(500)
    assert Lead.objects.get(pk=lead.pk).status == Lead.Status.ASSIGNED

    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Won").click()
    page.wait_for_url(f"**/board/leads/{lead.pk}/")
    expect(page.get_by_role("button", name="Won")).to_have_count(0)
    assert Lead.objects.get(pk=lead.pk).status == Lead.Status.WON


def test_a_shotgun_announcement_appears_live_and_the_claim_succeeds(logged_in, rep, other_rep):
    pool = PoolFactory(name="hot", members=[rep, other_rep], mode="shotgun")
    alice, bob = logged_in(rep.user, "/board/"), logged_in(other_rep.user, "/board/")
    mark_page(alice)

    lead = lead_enter_pool(LeadFactory(company="Shotgun Corp"), pool)

    banner = alice.locator(f"#ann-{lead.pk}")
    expect(banner).to_contain_text("Shotgun Corp", timeout=LIVE)
    expect(bob.locator(f"#ann-{lead.pk}")).to_contain_text("Shotgun Corp", timeout=LIVE)
    banner.get_by_role("button", name="Claim it").click()
    outcome = alice.locator(f"#outcome-{lead.pk}")
    expect(outcome).to_contain_text("Yours")
    expect(banner).to_have_count(0)
    expect(alice.locator("#my-leads")).to_contain_text("Shotgun Corp")
    alice.wait_for_timeout(3500)  # a poll or two later the rep can still read how the claim ended
    expect(outcome).to_contain_text("Yours")
    expect(bob.locator(f"#ann-{lead.pk}")).to_have_count(0, timeout=LIVE)
    assert_not_reloaded(alice)
    assert Lead.objects.get(pk=lead.pk).owner == rep


def test_claiming_works_with_the_keyboard_only(logged_in, rep):
    pool = PoolFactory(members=[rep])
    lead = pooled(pool, company="Keyboard GmbH")
    page = logged_in(rep.user, "/board/")
    target = f"claim-{lead.pk}"

    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == target:
            break
    else:
        pytest.fail("the claim button cannot be reached with Tab")
    page.keyboard.press("Enter")

    expect(page.locator(f"#pool-row-{lead.pk}")).to_contain_text("Yours")
    # Focus stays in the row (on the lead's link), not back at the top of the page.
    page.wait_for_function(f"document.activeElement?.closest('tr')?.id === 'pool-row-{lead.pk}'")
    assert Lead.objects.get(pk=lead.pk).owner == rep


def test_a_lead_arriving_in_the_pool_can_be_shown_and_claimed_without_reload(logged_in, rep):
    pool = PoolFactory(name="smb", members=[rep])
    pooled(pool, company="Early Co")
    page = logged_in(rep.user, "/board/")
    expect(page.locator("#pool-table")).to_contain_text("Early Co")
    mark_page(page)

    fresh = pooled(pool, company="Fresh Arrival GmbH")

    page.get_by_role("button", name="New leads arrived — show them").click(timeout=LIVE)
    expect(page.locator(f"#pool-row-{fresh.pk}")).to_contain_text("Fresh Arrival GmbH")
    expect(page.get_by_role("button", name="New leads arrived — show them")).to_have_count(0)
    page.locator(f"#claim-{fresh.pk}").click()
    expect(page.locator("#my-leads")).to_contain_text("Fresh Arrival GmbH")
    assert_not_reloaded(page)
    assert Lead.objects.get(pk=fresh.pk).owner == rep

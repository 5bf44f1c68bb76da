"""The rep board (/board/): browse, claim in place, work and release — and see nothing that isn't yours."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from routing.models import Lead, LeadEvent
from routing.pools import lead_claim, lead_release
from tests.factories import LeadFactory, PoolFactory
from tests.routing.test_pools_support import pooled

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def test_board_lists_waiting_leads_of_my_pools_only(rep_client, rep, other_rep):
    mine = PoolFactory(name="smb", members=[rep])
    theirs = PoolFactory(name="ent", members=[other_rep])
    pooled(mine, company="Visible GmbH")
    pooled(theirs, company="Hidden AG")

    page = rep_client.get("/board/").content.decode()

    assert "Visible GmbH" in page and "Hidden AG" not in page


def test_board_filters_by_country_and_sorts_by_score(rep_client, rep):
    pool = PoolFactory(members=[rep])
    pooled(pool, company="Low FR", country="FR", score=10)
    pooled(pool, company="High DE", country="DE", score=90)
    pooled(pool, company="Mid DE", country="DE", score=50)

    page = rep_client.get("/board/", {"country": "de", "sort": "-score"}).content.decode()

    assert "Low FR" not in page
    assert page.index("High DE") < page.index("Mid DE")


def test_board_table_paginates(rep_client, rep):
    pool = PoolFactory(members=[rep])
    for i in range(30):
        pooled(pool, company=f"Co {i:02d}", received_at=timezone.now() - dt.timedelta(minutes=60 - i))

    first = rep_client.get("/board/").content.decode()
    second = rep_client.get("/board/", {"page": 2}).content.decode()

    assert "Co 00" in first and "Co 29" not in first
    assert "Co 29" in second


def test_htmx_filter_request_gets_only_the_table(rep_client, rep):
    PoolFactory(members=[rep])
    response = rep_client.get("/board/", {"country": "DE"}, HTTP_HX_TARGET="pool-table", **HX)

    body = response.content.decode()
    assert body.lstrip().startswith('<div id="pool-table">')
    assert "<html" not in body


def test_claim_via_htmx_turns_the_row_into_yours(rep_client, rep):
    pool = PoolFactory(members=[rep])
    lead = pooled(pool, company="Claimable Ltd")

    response = rep_client.post(f"/board/leads/{lead.pk}/claim/", **HX)

    assert response.status_code == 200
    body = response.content.decode()
    assert f'id="pool-row-{lead.pk}"' in body and "Yours" in body
    assert 'id="my-leads" hx-swap-oob="true"' in body
    lead.refresh_from_db()
    assert lead.owner == rep


def test_claim_of_a_taken_lead_shows_who_took_it(rep_client, rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep])
    lead = pooled(pool)
    lead_claim(lead, rep=other_rep)

    response = rep_client.post(f"/board/leads/{lead.pk}/claim/", **HX)

    assert response.status_code == 409
    assert f"Taken by {other_rep.display_name}" in response.content.decode()


def test_claim_at_the_limit_is_409_with_the_reason(rep_client, rep):
    pool = PoolFactory(name="SMB", members=[rep], claim_limit=1)
    lead_claim(pooled(pool), rep=rep)
    lead = pooled(pool)

    response = rep_client.post(f"/board/leads/{lead.pk}/claim/", **HX)

    assert response.status_code == 409
    assert "You hold 1 of 1 leads from the SMB pool" in response.content.decode()


def test_claim_in_a_pool_i_am_not_in_is_forbidden_and_changes_nothing(rep_client, other_rep):
    pool = PoolFactory(members=[other_rep])
    lead = pooled(pool)

    response = rep_client.post(f"/board/leads/{lead.pk}/claim/", **HX)

    assert response.status_code == 403
    lead.refresh_from_db()
    assert lead.owner is None and not lead.events.exists()


def test_claim_without_csrf_token_is_refused(rep):
    pool = PoolFactory(members=[rep])
    lead = pooled(pool)
    client = Client(enforce_csrf_checks=True)
    client.force_login(rep.user)

    response = client.post(f"/board/leads/{lead.pk}/claim/")

    assert response.status_code == 403
    lead.refresh_from_db()
    assert lead.owner is None


def test_claim_without_htmx_redirects_back_to_the_board(rep_client, rep):
    pool = PoolFactory(members=[rep])
    lead = pooled(pool)

    response = rep_client.post(f"/board/leads/{lead.pk}/claim/")

    assert response.status_code == 302 and response.url == "/board/"


@pytest.mark.parametrize("path", ["/board/leads/{pk}/", "/board/leads/{pk}/claim/", "/board/leads/{pk}/release/",
                                  "/board/leads/{pk}/status/"])
def test_another_reps_lead_is_a_404_everywhere(rep_client, other_rep, path):
    lead = LeadFactory(owner=other_rep, status=Lead.Status.ASSIGNED)
    method = rep_client.get if path.endswith("}/") else rep_client.post

    response = method(path.format(pk=lead.pk), {"status": "won"})

    assert response.status_code == 404


def test_my_leads_show_an_sla_countdown(rep_client, rep):
    due = timezone.now() + dt.timedelta(minutes=10)
    LeadFactory(owner=rep, status=Lead.Status.ASSIGNED, sla_due_at=due)

    page = rep_client.get("/board/").content.decode()

    assert f'<span class="countdown" data-due="{due.isoformat()}"' in page


def test_marking_contacted_records_the_touch(rep_client, rep):
    lead = LeadFactory(owner=rep, status=Lead.Status.ASSIGNED)

    response = rep_client.post(f"/board/leads/{lead.pk}/status/", {"status": "contacted"}, **HX)

    assert response.status_code == 200
    lead.refresh_from_db()
    assert lead.status == Lead.Status.CONTACTED and lead.first_touch_at is not None
    assert f"{lead} marked contacted." in response.content.decode()  # said, not just redrawn


def test_release_from_the_board_puts_the_lead_back(rep_client, rep):
    pool = PoolFactory(members=[rep])
    lead = lead_claim(pooled(pool), rep=rep)

    response = rep_client.post(f"/board/leads/{lead.pk}/release/", {"reason": "Not a fit for me"}, **HX)

    assert response.status_code == 200
    lead.refresh_from_db()
    assert lead.owner is None and lead.status == Lead.Status.POOLED
    assert lead.events.get(kind=LeadEvent.Kind.RELEASED).detail["reason"] == "Not a fit for me"
    assert f"went back to the {pool} pool." in response.content.decode()


def test_lead_detail_shows_the_timeline_of_a_waiting_pool_lead(rep_client, rep):
    pool = PoolFactory(members=[rep])
    lead = pooled(pool, company="Timeline Inc")
    LeadEvent.objects.create(lead=lead, kind=LeadEvent.Kind.POOLED, pool=pool)

    page = rep_client.get(f"/board/leads/{lead.pk}/").content.decode()

    assert "Timeline Inc" in page and "Sent to pool" in page


def test_my_untouched_leads_come_most_urgent_first_and_those_without_a_deadline_last(rep_client, rep):
    now = timezone.now()
    LeadFactory(owner=rep, status=Lead.Status.ASSIGNED, company="No Deadline Co", assigned_at=now)
    LeadFactory(owner=rep, status=Lead.Status.ASSIGNED, company="Later Co", sla_due_at=now + dt.timedelta(hours=2))
    LeadFactory(owner=rep, status=Lead.Status.ASSIGNED, company="Soon Co", sla_due_at=now + dt.timedelta(minutes=5))

    page = rep_client.get("/board/").content.decode()

    assert page.index("Soon Co") < page.index("Later Co") < page.index("No Deadline Co")


def test_poll_says_nothing_changed_with_204(rep_client, rep):
    pool = PoolFactory(members=[rep])
    lead = pooled(pool)

    response = rep_client.get("/board/poll/", {"shown": [lead.pk], "waiting": 1}, **HX)

    assert response.status_code == 204


def test_poll_updates_the_waiting_count_when_new_leads_arrive(rep_client, rep):
    pool = PoolFactory(members=[rep])
    pooled(pool)
    pooled(pool)

    response = rep_client.get("/board/poll/", {"waiting": 1}, **HX)

    assert '<span id="waiting-total" hx-swap-oob="true">2</span>' in response.content.decode()


def test_poll_offers_to_show_leads_that_arrived_since_the_page_was_drawn(rep_client, rep):
    pool = PoolFactory(members=[rep])
    first = pooled(pool)
    board = rep_client.get("/board/").content.decode()
    assert f"pool-row-{first.pk}" in board
    fresh = pooled(pool)

    poll = rep_client.get("/board/poll/", {"shown": [first.pk], "waiting": 1}, **HX).content.decode()
    assert 'id="new-leads"' in poll and "New leads arrived" in poll

    table = rep_client.get("/board/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="pool-table").content.decode()
    assert f"pool-row-{fresh.pk}" in table and "New leads arrived" not in table


def test_poll_does_not_offer_new_leads_when_the_pool_only_shrank(rep_client, rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep])
    lead = pooled(pool)
    pooled(pool)
    lead_claim(lead, rep=other_rep)

    poll = rep_client.get("/board/poll/", {"shown": [lead.pk], "waiting": 2}, **HX).content.decode()

    assert "New leads arrived" not in poll


def test_poll_swaps_out_a_row_someone_else_claimed(rep_client, rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep])
    lead = pooled(pool)
    lead_claim(lead, rep=other_rep)

    response = rep_client.get("/board/poll/", {"shown": [lead.pk]}, **HX)

    body = response.content.decode()
    assert response.status_code == 200
    assert f'id="pool-row-{lead.pk}" hx-swap-oob="true"' in body
    assert f"Taken by {other_rep.display_name}" in body


def test_poll_brings_a_new_shotgun_announcement(rep_client, rep):
    from routing.pools import lead_enter_pool

    pool = PoolFactory(members=[rep], mode="shotgun")
    lead = lead_enter_pool(LeadFactory(company="Shotgun Corp"), pool)

    response = rep_client.get("/board/poll/", **HX)

    assert response.status_code == 200
    body = response.content.decode()
    assert "Shotgun Corp" in body and f"/board/leads/{lead.pk}/claim/" in body


def test_non_reps_cannot_open_the_board(manager_client):
    assert manager_client.get("/board/").status_code == 403


def test_board_shows_how_many_leads_i_hold_against_the_limit(rep_client, rep):
    pool = PoolFactory(name="SMB", members=[rep], claim_limit=5)
    lead_claim(pooled(pool), rep=rep)
    lead_claim(pooled(pool), rep=rep)

    assert "you hold 2 of 5" in rep_client.get("/board/").content.decode()


def test_poll_drops_a_shotgun_announcement_once_someone_claimed_it(rep_client, rep, other_rep):
    from routing.pools import lead_enter_pool

    pool = PoolFactory(members=[rep, other_rep], mode="shotgun")
    lead = lead_enter_pool(LeadFactory(company="Gone Fast Ltd"), pool)
    lead_claim(lead, rep=other_rep)

    response = rep_client.get("/board/poll/", {"announced": [lead.pk], "waiting": 0}, **HX)

    assert response.status_code == 200
    assert "Gone Fast Ltd" not in response.content.decode()


def test_a_status_change_never_redirects_off_site(rep_client, rep):
    lead = LeadFactory(owner=rep, status=Lead.Status.ASSIGNED)

    response = rep_client.post(f"/board/leads/{lead.pk}/status/",
                               {"status": "contacted", "next": "https://evil.example/phish"})

    assert response.status_code == 302 and response.url == "/board/"


def test_a_status_change_from_the_lead_page_returns_to_it(rep_client, rep):
    lead = LeadFactory(owner=rep, status=Lead.Status.ASSIGNED)

    response = rep_client.post(f"/board/leads/{lead.pk}/status/",
                               {"status": "contacted", "next": f"/board/leads/{lead.pk}/"})

    assert response.url == f"/board/leads/{lead.pk}/"


def test_the_lead_page_links_the_owner_to_why_it_came_to_them(rep_client, rep):
    lead = LeadFactory(owner=rep, status=Lead.Status.ASSIGNED)

    response = rep_client.get(f"/board/leads/{lead.pk}/")

    assert f'href="/leads/{lead.pk}/explain/"' in response.content.decode()


def test_poll_brings_back_a_row_whose_lead_is_waiting_again(rep_client, rep, other_rep):

    pool = PoolFactory(members=[rep, other_rep])
    lead = lead_claim(pooled(pool, company="Boomerang BV"), rep=other_rep)
    gone = rep_client.get("/board/poll/", {"shown": [lead.pk], "waiting": 1}, **HX).content.decode()
    assert f'name="taken" value="{lead.pk}"' in gone  # the row now says Taken by, and tells the next poll
    lead_release(lead, rep=other_rep, reason="Not a fit for me")

    response = rep_client.get("/board/poll/", {"taken": [lead.pk], "waiting": 0}, **HX)

    body = response.content.decode()
    assert response.status_code == 200
    assert f'id="pool-row-{lead.pk}" hx-swap-oob="true"' in body and f'id="claim-{lead.pk}"' in body
    assert "New leads arrived" not in body  # the one more waiting is this row, back in place


def test_poll_updates_the_pools_counts_after_my_own_status_change(rep_client, rep):
    pool = PoolFactory(name="SMB", members=[rep], claim_limit=5)
    lead = lead_claim(pooled(pool), rep=rep)
    assert "you hold 1 of 5" in rep_client.get("/board/").content.decode()
    rep_client.post(f"/board/leads/{lead.pk}/status/", {"status": "won"}, **HX)

    response = rep_client.get("/board/poll/", {"waiting": 0, "counts": f"{pool.pk}:0:1"}, **HX)

    body = response.content.decode()
    assert f'id="pool-count-{pool.pk}" hx-swap-oob="true"' in body and "you hold 0 of 5" in body
    assert f'name="counts" value="{pool.pk}:0:0"' in body
    assert rep_client.get("/board/poll/", {"waiting": 0, "counts": f"{pool.pk}:0:0"}, **HX).status_code == 204


def test_poll_updates_two_pools_whose_counts_changed_while_the_totals_stayed(rep_client, rep, other_rep):
    smb, ent = PoolFactory(name="SMB", members=[rep, other_rep]), PoolFactory(name="ENT", members=[rep])
    lead = pooled(smb)
    page = rep_client.get("/board/").content.decode()
    counts = f"{smb.pk}:1:0 {ent.pk}:0:0"
    assert f'name="counts" value="{counts}"' in page
    lead_claim(lead, rep=other_rep)
    pooled(ent)

    response = rep_client.get("/board/poll/", {"waiting": 1, "counts": counts}, **HX)

    body = response.content.decode()
    assert response.status_code == 200
    assert f'<small id="pool-count-{smb.pk}" hx-swap-oob="true">(0 waiting' in body
    assert f'<small id="pool-count-{ent.pk}" hx-swap-oob="true">(1 waiting' in body


def test_poll_offers_new_leads_when_as_many_arrived_as_others_claimed(rep_client, rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep])
    lead = pooled(pool)
    lead_claim(lead, rep=other_rep)
    pooled(pool)

    poll = rep_client.get("/board/poll/", {"shown": [lead.pk], "waiting": 1}, **HX).content.decode()

    assert "New leads arrived" in poll


def test_poll_ignores_ids_that_are_digits_but_not_numbers(rep_client, rep):
    pool = PoolFactory(members=[rep])
    pooled(pool)

    response = rep_client.get("/board/poll/", {"shown": ["²"], "taken": ["٣x"], "waiting": "²"}, **HX)

    assert response.status_code == 200


def test_board_actions_make_the_board_poll_at_once(rep_client, rep):
    pool = PoolFactory(members=[rep])
    lead = pooled(pool)

    claimed = rep_client.post(f"/board/leads/{lead.pk}/claim/", **HX)
    released = rep_client.post(f"/board/leads/{lead.pk}/release/", {"reason": "Claimed by mistake"}, **HX)

    assert claimed["HX-Trigger"] == released["HX-Trigger"] == "board-changed"
    assert Lead.objects.get(pk=lead.pk).status == Lead.Status.POOLED


def test_poll_never_brings_back_a_lead_outside_my_pools(rep_client, rep, other_rep):
    PoolFactory(members=[rep])
    secret = pooled(PoolFactory(members=[other_rep]), company="Other Pool Co")

    response = rep_client.get("/board/poll/", {"taken": [secret.pk], "waiting": 0}, **HX)

    assert response.status_code == 204
    assert b"Other Pool Co" not in response.content


def test_poll_reveals_nothing_about_a_lead_outside_my_pools(rep_client, rep, other_rep):
    PoolFactory(members=[rep])
    secret = LeadFactory(owner=other_rep, status=Lead.Status.ASSIGNED, company="Secret Deal Co")

    response = rep_client.get("/board/poll/", {"shown": [secret.pk], "waiting": 0}, **HX)

    assert response.status_code == 204
    assert b"Secret Deal Co" not in response.content

"""Claiming and releasing pool leads (routing.pools): exactly once, within limits, always explained."""

from __future__ import annotations

import datetime as dt

import pytest

from routing.models import Lead, LeadEvent
from routing.pools import ClaimRefused, NotAMember, ReleaseRefused, lead_claim, lead_release, lead_take_back
from tests.factories import PoolFactory, RepFactory
from tests.routing.test_pools_support import pooled

pytestmark = pytest.mark.django_db


def test_it_gives_a_waiting_lead_to_the_claiming_member(rep):
    pool = PoolFactory(members=[rep])
    lead = pooled(pool)

    lead = lead_claim(lead, rep=rep, actor=rep.user)

    assert (lead.owner, lead.status) == (rep, Lead.Status.ASSIGNED)
    assert lead.claimed_at is not None
    assert lead.events.filter(kind=LeadEvent.Kind.CLAIMED, rep=rep, pool=pool).count() == 1


def test_fourth_claim_is_refused_at_limit_with_a_clear_message(rep):
    pool = PoolFactory(name="SMB", members=[rep], claim_limit=3)
    leads = [pooled(pool) for _ in range(4)]
    for lead in leads[:3]:
        lead_claim(lead, rep=rep)

    with pytest.raises(ClaimRefused) as refused:
        lead_claim(leads[3], rep=rep)

    assert str(refused.value).startswith("You hold 3 of 3 leads from the SMB pool")
    assert "release one you have not contacted yet" in str(refused.value)  # what to do about it
    leads[3].refresh_from_db()
    assert leads[3].owner is None and leads[3].status == Lead.Status.POOLED
    event = leads[3].events.get(kind=LeadEvent.Kind.CLAIM_REFUSED)
    assert (event.rep, event.detail["reason"]) == (rep, "claim_limit")


def test_a_closed_lead_no_longer_counts_against_the_limit(rep):
    pool = PoolFactory(members=[rep], claim_limit=1)
    first, second = pooled(pool), pooled(pool)
    lead_claim(first, rep=rep)
    Lead.objects.filter(pk=first.pk).update(status=Lead.Status.WON)

    assert lead_claim(second, rep=rep).owner == rep


def test_it_refuses_a_taken_lead_saying_who_claimed_it_and_when(rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep])
    lead = pooled(pool)
    lead_claim(lead, rep=other_rep, now=dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC))

    with pytest.raises(ClaimRefused) as refused:
        lead_claim(lead, rep=rep)

    assert refused.value.reason == "taken"
    assert other_rep.display_name in str(refused.value) and "2026-11-23 09:30" in str(refused.value)
    assert lead.events.filter(kind=LeadEvent.Kind.CLAIM_REFUSED, rep=rep).count() == 1


def test_a_double_click_claims_once(rep):
    pool = PoolFactory(members=[rep])
    lead = pooled(pool)

    lead_claim(lead, rep=rep)
    again = lead_claim(lead, rep=rep)

    assert again.owner == rep
    assert lead.events.filter(kind=LeadEvent.Kind.CLAIMED).count() == 1


def test_a_non_member_cannot_claim_and_nothing_is_written(rep, other_rep):
    pool = PoolFactory(members=[other_rep])
    lead = pooled(pool)

    with pytest.raises(NotAMember):
        lead_claim(lead, rep=rep)

    lead.refresh_from_db()
    assert lead.owner is None
    assert not lead.events.exists()


def test_the_daily_claim_cap_refuses_the_next_claim(rep):
    pool = PoolFactory(members=[rep], daily_claim_cap=2)
    leads = [pooled(pool) for _ in range(3)]
    for lead in leads[:2]:
        lead_claim(lead, rep=rep)
        Lead.objects.filter(pk=lead.pk).update(status=Lead.Status.WON)

    with pytest.raises(ClaimRefused) as refused:
        lead_claim(leads[2], rep=rep)

    assert refused.value.reason == "daily_cap"


def test_a_claim_starts_the_pools_sla_clock(rep):
    pool = PoolFactory(members=[rep], sla_minutes=15)
    lead = pooled(pool)
    now = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)

    lead = lead_claim(lead, rep=rep, now=now)

    assert lead.sla_due_at == now + dt.timedelta(minutes=15)


def test_release_puts_the_lead_back_with_the_reason(rep):
    pool = PoolFactory(members=[rep], window_minutes=30)
    lead = lead_claim(pooled(pool), rep=rep)
    now = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)

    lead = lead_release(lead, rep=rep, reason="Wrong territory", now=now)

    assert (lead.owner, lead.status, lead.claimed_at) == (None, Lead.Status.POOLED, None)
    assert lead.pool_due_at == now + dt.timedelta(minutes=30)
    event = lead.events.get(kind=LeadEvent.Kind.RELEASED)
    assert (event.rep, event.detail["reason"]) == (rep, "Wrong territory")


def test_release_frees_a_seat_under_the_limit(rep):
    pool = PoolFactory(members=[rep], claim_limit=1)
    first, second = pooled(pool), pooled(pool)
    lead_claim(first, rep=rep)
    lead_release(first, rep=rep)

    assert lead_claim(second, rep=rep).owner == rep


def test_a_worked_lead_cannot_be_released(rep):
    pool = PoolFactory(members=[rep])
    lead = lead_claim(pooled(pool), rep=rep)
    Lead.objects.filter(pk=lead.pk).update(status=Lead.Status.CONTACTED)

    with pytest.raises(ReleaseRefused):
        lead_release(lead, rep=rep)


def test_only_the_owner_can_release(rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep])
    lead = lead_claim(pooled(pool), rep=other_rep)

    with pytest.raises(ReleaseRefused):
        lead_release(lead, rep=rep)
    lead.refresh_from_db()
    assert lead.owner == other_rep


def test_a_manager_can_take_a_lead_back(rep, manager):
    pool = PoolFactory(members=[rep])
    lead = lead_claim(pooled(pool), rep=rep)

    lead = lead_take_back(lead, actor=manager, reason="hoarding")

    assert lead.owner is None and lead.status == Lead.Status.POOLED
    event = lead.events.get(kind=LeadEvent.Kind.RELEASED)
    assert (event.actor, event.detail["taken_back"], event.detail["reason"]) == (manager, True, "hoarding")


def test_released_shotgun_lead_is_announced_again(rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep], mode="shotgun")
    lead = lead_claim(pooled(pool), rep=rep)

    lead_release(lead, rep=rep, reason="no time")

    announced = lead.events.get(kind=LeadEvent.Kind.ANNOUNCED)
    assert set(announced.detail["rep_ids"]) == {rep.pk, other_rep.pk}


def test_limits_are_per_pool(rep):
    smb, ent = PoolFactory(members=[rep], claim_limit=1), PoolFactory(members=[rep], claim_limit=1)
    lead_claim(pooled(smb), rep=rep)

    assert lead_claim(pooled(ent), rep=rep).owner == rep


def test_a_rep_outside_hours_can_still_claim_what_they_see(db):
    # Availability decides who is *told*; a member who opens the board may still pull a lead.
    night_rep = RepFactory(hours={0: ("09:00", "10:00")})
    pool = PoolFactory(members=[night_rep])
    lead = pooled(pool)

    assert lead_claim(lead, rep=night_rep, now=dt.datetime(2026, 11, 23, 22, 0, tzinfo=dt.UTC)).owner == night_rep


def test_a_taken_lead_says_who_took_it_even_when_i_am_at_my_limit(rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep], claim_limit=1)
    lead_claim(pooled(pool), rep=rep)
    taken = lead_claim(pooled(pool), rep=other_rep)

    with pytest.raises(ClaimRefused) as refused:
        lead_claim(taken, rep=rep)

    assert refused.value.reason == "taken"


def test_the_taken_refusal_event_records_the_same_message_and_the_owner(rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep])
    lead = pooled(pool)
    lead_claim(lead, rep=other_rep, now=dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC))

    with pytest.raises(ClaimRefused) as refused:
        lead_claim(lead, rep=rep, now=dt.datetime(2026, 11, 23, 9, 31, tzinfo=dt.UTC))

    event = lead.events.get(kind=LeadEvent.Kind.CLAIM_REFUSED)
    assert event.detail["message"] == str(refused.value)
    assert (event.rep, event.pool, event.detail["owner"]) == (rep, pool, other_rep.username)
    assert event.detail["owner_name"] == other_rep.display_name

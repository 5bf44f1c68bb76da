"""Entering pools, shotgun announcements, pool timeouts, and the managers' pool pages."""

from __future__ import annotations

import datetime as dt

import pytest

from routing.models import Lead, LeadEvent, Notification, PoolMembership
from routing.models.pools import PoolAnnouncement
from routing.pools import lead_claim, lead_enter_pool, pool_timeout_sweep
from tests.factories import LeadFactory, PoolFactory, RepFactory, TeamFactory, TimeOffFactory, weekday_hours
from tests.routing.test_pools_support import NOW, pooled

pytestmark = pytest.mark.django_db


def announced_to(lead) -> set[int]:
    return set(lead.events.filter(kind=LeadEvent.Kind.ANNOUNCED).latest("id").detail["rep_ids"])


def test_entering_a_cherry_pick_pool_waits_without_announcing(rep):
    pool = PoolFactory(members=[rep], window_minutes=10)

    lead = lead_enter_pool(LeadFactory(), pool, now=NOW)

    assert (lead.status, lead.pool, lead.pool_due_at) == ("pooled", pool, NOW + dt.timedelta(minutes=10))
    assert not lead.events.filter(kind=LeadEvent.Kind.ANNOUNCED).exists()


def test_a_shotgun_lead_is_announced_to_every_available_member(rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep], mode="shotgun")

    lead = lead_enter_pool(LeadFactory(), pool, now=NOW)

    assert announced_to(lead) == {rep.pk, other_rep.pk}
    assert set(PoolAnnouncement.objects.filter(lead=lead).values_list("rep_id", flat=True)) == {rep.pk, other_rep.pk}


def test_unavailable_members_are_not_announced_to(rep):
    night = RepFactory(hours=weekday_hours("20:00", "23:00"))
    away = RepFactory()
    TimeOffFactory(rep=away, start=NOW - dt.timedelta(days=1), end=NOW + dt.timedelta(days=1))
    full = RepFactory()
    inactive = RepFactory(active=False)
    pool = PoolFactory(members=[rep, night, away, full, inactive], mode="shotgun", claim_limit=1)
    lead_claim(pooled(pool), rep=full, now=NOW)

    lead = lead_enter_pool(LeadFactory(), pool, now=NOW)

    assert announced_to(lead) == {rep.pk}
    skipped = lead.events.get(kind=LeadEvent.Kind.ANNOUNCED).detail["skipped"]
    assert set(skipped) == {night.username, away.username, full.username, inactive.username}


def test_the_announcement_is_sent_on_commit_to_the_told_members(rep, other_rep, django_capture_on_commit_callbacks):
    pool = PoolFactory(members=[rep, other_rep], mode="shotgun")

    with django_capture_on_commit_callbacks(execute=True):
        lead = lead_enter_pool(LeadFactory(), pool, now=NOW)

    told = set(Notification.objects.filter(lead=lead, kind="announced").values_list("recipient_id", flat=True))
    assert told == {rep.pk, other_rep.pk}


def test_first_claim_wins_and_the_announcement_vanishes_for_the_others(rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep], mode="shotgun")
    lead = lead_enter_pool(LeadFactory(), pool, now=NOW)

    lead_claim(lead, rep=other_rep, now=NOW)

    assert not PoolAnnouncement.objects.filter(lead=lead).exists()


# -- timeouts ---------------------------------------------------------------------------------------


def overdue_lead(pool):
    return lead_enter_pool(LeadFactory(), pool, now=NOW - dt.timedelta(minutes=pool.window_minutes + 1))


def test_timeout_shotgun_announces_to_all_available_members(rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep], window_minutes=10, on_timeout="shotgun")
    lead = overdue_lead(pool)

    counts = pool_timeout_sweep(NOW)

    assert counts["shotgun"] == 1
    assert announced_to(lead) == {rep.pk, other_rep.pk}
    lead.refresh_from_db()
    assert lead.pool_stage == "shotgun"


def test_a_second_sweep_at_the_same_now_does_nothing(rep):
    pool = PoolFactory(members=[rep], window_minutes=10, on_timeout="shotgun")
    lead = overdue_lead(pool)
    pool_timeout_sweep(NOW)

    counts = pool_timeout_sweep(NOW)

    assert sum(counts.values()) == 0
    assert lead.events.filter(kind=LeadEvent.Kind.ANNOUNCED).count() == 1


def test_a_lead_not_yet_due_is_left_alone(rep):
    pool = PoolFactory(members=[rep], window_minutes=10, on_timeout="push")
    lead = lead_enter_pool(LeadFactory(), pool, now=NOW - dt.timedelta(minutes=5))

    pool_timeout_sweep(NOW)

    lead.refresh_from_db()
    assert (lead.owner, lead.pool_stage) == (None, "")


def test_timeout_push_assigns_the_least_loaded_available_member(rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep], window_minutes=10, on_timeout="push")
    LeadFactory(owner=rep, status=Lead.Status.ASSIGNED)
    lead = overdue_lead(pool)

    counts = pool_timeout_sweep(NOW)

    lead.refresh_from_db()
    assert counts["push"] == 1
    assert (lead.owner, lead.status) == (other_rep, Lead.Status.ASSIGNED)
    assert lead.events.get(kind=LeadEvent.Kind.ROUTED).detail["strategy"] == "load_balanced"


def test_timeout_push_skips_members_who_are_away(rep):
    night = RepFactory(hours=weekday_hours("20:00", "23:00"))
    pool = PoolFactory(members=[rep, night], window_minutes=10, on_timeout="push")
    LeadFactory(owner=rep, status=Lead.Status.ASSIGNED)
    lead = overdue_lead(pool)

    pool_timeout_sweep(NOW)

    lead.refresh_from_db()
    assert lead.owner == rep


def test_timeout_escalate_tells_the_pool_managers(rep, django_capture_on_commit_callbacks):
    boss = RepFactory(level="manager")
    pool = PoolFactory(members=[rep], window_minutes=10, on_timeout="escalate")
    pool.managers.add(boss)
    lead = overdue_lead(pool)

    with django_capture_on_commit_callbacks(execute=True):
        counts = pool_timeout_sweep(NOW)

    assert counts["escalate"] == 1
    assert lead.events.get(kind=LeadEvent.Kind.ESCALATED).detail["rep_ids"] == [boss.pk]
    assert Notification.objects.filter(lead=lead, kind="pool_timeout", recipient=boss).exists()


def test_timeout_stay_leaves_the_lead_waiting_once(rep):
    pool = PoolFactory(members=[rep], window_minutes=10, on_timeout="stay")
    lead = overdue_lead(pool)

    assert pool_timeout_sweep(NOW)["stay"] == 1
    lead.refresh_from_db()
    assert (lead.status, lead.owner, lead.pool_stage) == ("pooled", None, "stay")
    assert pool_timeout_sweep(NOW)["stay"] == 0


# -- managers' pages and admin ------------------------------------------------------------------------


def test_pools_page_shows_live_counts(manager_client, rep):
    pool = PoolFactory(name="smb", members=[rep])
    pooled(pool)
    pooled(pool)
    lead_claim(pooled(pool), rep=rep)

    page = manager_client.get("/pools/")

    assert page.status_code == 200
    row = page.context["rows"][0]
    assert (row[0].waiting, row[1]) == (2, 1)


def test_pool_page_flags_a_rep_hoarding_untouched_leads(manager_client, rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep], sla_minutes=5)
    lead_claim(pooled(pool), rep=rep, now=NOW - dt.timedelta(hours=2))
    lead_claim(pooled(pool), rep=other_rep)

    page = manager_client.get(f"/pools/{pool.pk}/")

    hoarding = {m["state"].rep.pk: m["hoarding"] for m in page.context["members"]}
    assert hoarding == {rep.pk: 1, other_rep.pk: 0}
    assert "untouched past SLA" in page.content.decode()

    overview = manager_client.get("/pools/")
    assert [(p.pk, hoarded) for p, _, hoarded in overview.context["rows"]] == [(pool.pk, 1)]


def test_a_manager_takes_a_lead_back_from_the_pool_page(manager_client, rep):
    pool = PoolFactory(members=[rep])
    lead = lead_claim(pooled(pool), rep=rep)

    response = manager_client.post(f"/pools/leads/{lead.pk}/take-back/", {"reason": "hoarding"})

    assert response.status_code == 302
    lead.refresh_from_db()
    assert lead.owner is None and lead.status == "pooled"


def test_reps_cannot_open_the_managers_pool_pages(rep_client):
    assert rep_client.get("/pools/").status_code == 403


def test_admin_lists_pools_with_counts(manager_client, rep):
    pool = PoolFactory(name="smb", members=[rep])
    pooled(pool)

    page = manager_client.get("/admin/routing/pool/")

    assert page.status_code == 200
    assert "smb" in page.content.decode()


def test_admin_adds_the_senior_reps_of_a_team_as_members(client, rep):
    from django.contrib.auth.models import User

    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    emea = TeamFactory(name="EMEA")
    RepFactory(team=emea)  # a junior: not added
    b = RepFactory(team=emea, level="senior")
    pool = PoolFactory(name="smb")

    response = client.post(f"/admin/routing/pool/{pool.pk}/change/", {
        "name": "smb", "mode": "cherry_pick", "on_timeout": "stay", "add_team": emea.pk, "add_level": "senior",
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0", "memberships-MAX_NUM_FORMS": "1000",
    })

    assert response.status_code == 302, response.content.decode()[:2000]
    assert set(PoolMembership.objects.filter(pool=pool).values_list("rep_id", flat=True)) == {b.pk}


def test_a_push_with_nobody_available_is_retried_when_a_member_starts_work(db):
    early = RepFactory(hours={0: ("11:00", "17:00")})  # Monday from 11:00 UTC
    pool = PoolFactory(members=[early], window_minutes=10, on_timeout="push")
    lead = overdue_lead(pool)

    assert pool_timeout_sweep(NOW)["push_failed"] == 1
    assert sum(pool_timeout_sweep(NOW).values()) == 0

    pool_timeout_sweep(NOW.replace(hour=11))
    lead.refresh_from_db()
    assert lead.owner == early

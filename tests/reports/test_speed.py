import pytest

from reports import selectors
from tests.factories import LeadFactory, PoolFactory, RepFactory, TeamFactory
from tests.reports.conftest import NOW, answered_lead, minutes

pytestmark = pytest.mark.django_db


def test_it_finds_the_median_speed_to_lead(scope_for):
    for m in (1, 3, 10, 60):
        answered_lead(NOW - minutes(300), m)
    assert selectors.speed_total(scope_for())["stl_p50"] == pytest.approx(6.5 * 60)


def test_it_finds_the_p90_speed_to_lead(scope_for):
    for m in (1, 3, 10, 60):
        answered_lead(NOW - minutes(300), m)
    assert selectors.speed_total(scope_for())["stl_p90"] == pytest.approx(45 * 60)


def test_it_counts_half_answered_within_five_minutes(scope_for):
    for m in (1, 3, 10, 60):
        answered_lead(NOW - minutes(300), m)
    total = selectors.speed_total(scope_for())
    assert total["share_5m"] == 0.5


def test_it_counts_an_answer_on_the_hour_as_within_the_hour(scope_for):
    for m in (1, 60, 61, 1440):
        answered_lead(NOW - minutes(3000), m)
    total = selectors.speed_total(scope_for())
    assert (total["share_1h"], total["share_24h"]) == (0.5, 1.0)


def test_it_counts_an_old_unanswered_lead_as_a_miss(scope_for):
    answered_lead(NOW - minutes(300), 1)
    answered_lead(NOW - minutes(300), None)
    assert selectors.speed_total(scope_for())["share_5m"] == 0.5


def test_it_leaves_a_fresh_unanswered_lead_out_of_the_share(scope_for):
    answered_lead(NOW - minutes(300), 1)
    answered_lead(NOW - minutes(2), None)  # may still be answered within 5 minutes
    assert selectors.speed_total(scope_for())["share_5m"] == 1.0


def test_it_measures_each_step_of_the_handover(scope_for):
    received = NOW - minutes(600)
    LeadFactory(received_at=received, routed_at=received + minutes(1), notified_at=received + minutes(3),
                pooled_at=received + minutes(1), claimed_at=received + minutes(21))
    total = selectors.speed_total(scope_for())
    assert (total["route_p50"], total["notify_p50"], total["claim_p50"]) == pytest.approx((60, 120, 1200))


def test_it_splits_speed_by_rep(scope_for):
    fast, slow = RepFactory(user__username="fast"), RepFactory(user__username="slow")
    answered_lead(NOW - minutes(300), 2, owner=fast)
    answered_lead(NOW - minutes(300), 4, owner=fast)
    answered_lead(NOW - minutes(300), 90, owner=slow)
    rows = {r["key"]: r for r in selectors.speed_by(scope_for(), "rep")}
    assert rows[fast.pk]["stl_p50"] == pytest.approx(180)
    assert rows[slow.pk]["stl_p50"] == pytest.approx(5400)


def test_it_splits_speed_by_team(scope_for):
    team = TeamFactory(name="EMEA")
    answered_lead(NOW - minutes(300), 10, owner=RepFactory(team=team))
    rows = selectors.speed_by(scope_for(), "team")
    assert [(r["label"], r["leads"]) for r in rows] == [("EMEA", 1)]


def test_it_splits_speed_by_source_and_pool(scope_for):
    pool = PoolFactory(name="smb")
    answered_lead(NOW - minutes(300), 10, source="webinar", pool=pool)
    answered_lead(NOW - minutes(300), 10, source="web")
    assert {r["label"] for r in selectors.speed_by(scope_for(), "source")} == {"webinar", "web"}
    assert {r["label"] for r in selectors.speed_by(scope_for(), "pool")} == {"smb", "(no pool)"}


def test_it_groups_hour_of_day_in_the_managers_time_zone(scope_for):
    answered_lead(NOW.replace(hour=7), 10)  # 07:00 UTC = 08:00 in Berlin (CET)
    rows = selectors.speed_by(scope_for(tz="Europe/Berlin"), "hour")
    assert [r["label"] for r in rows] == ["08:00"]


def test_it_only_looks_at_leads_received_in_the_period(scope_for):
    answered_lead(NOW - minutes(60 * 24 * 10), 1)
    answered_lead(NOW - minutes(300), 30)
    assert selectors.speed_total(scope_for(days=7))["leads"] == 1

import datetime as dt

import pytest

from reports import selectors
from tests.factories import LeadFactory, RepFactory
from tests.reports.conftest import NOW, answered_lead, minutes

pytestmark = pytest.mark.django_db


def _windows(scope):
    return {w["key"]: w for w in selectors.received_windows(scope)}


def test_it_starts_today_at_midnight_in_the_managers_time_zone(scope_for):
    # NOW is 12:00 UTC = 01:00 on the 19th in Auckland (UTC+13): its "today" began at 11:00 UTC.
    LeadFactory(received_at=NOW.replace(hour=10, minute=30))
    LeadFactory(received_at=NOW.replace(hour=11, minute=30))
    assert _windows(scope_for(tz="UTC"))["today"]["value"] == 2
    assert _windows(scope_for(tz="Pacific/Auckland"))["today"]["value"] == 1


def test_it_compares_today_with_yesterday_up_to_the_same_time(scope_for):
    LeadFactory(received_at=NOW - minutes(60))
    LeadFactory(received_at=NOW - dt.timedelta(days=1, minutes=60))
    LeadFactory(received_at=NOW - dt.timedelta(days=1) + minutes(60))  # later in the day than now: not compared
    today = _windows(scope_for())["today"]
    assert (today["value"], today["previous"], today["trend"]) == (1, 1, 0)


def test_it_compares_the_last_seven_days_with_the_seven_before(scope_for):
    for days in (1, 2, 3, 9):
        LeadFactory(received_at=NOW - dt.timedelta(days=days))
    week = _windows(scope_for())["7d"]
    assert (week["value"], week["previous"], week["trend"]) == (3, 1, 2)


def test_it_counts_the_backlog_now(scope_for):
    LeadFactory(status="pooled")
    LeadFactory(status="unassigned")
    LeadFactory(status="unassigned")
    answered_lead(NOW - minutes(60), None, sla_due_at=NOW - minutes(1), owner=RepFactory())
    assert selectors.snapshot(scope_for()) == {"pooled": 1, "unassigned": 2, "overdue": 1}


def test_it_shows_the_speed_trend_against_the_previous_period(scope_for):
    answered_lead(NOW - dt.timedelta(days=2), 10)
    answered_lead(NOW - dt.timedelta(days=9), 30)
    summary = selectors.period_summary(scope_for(days=7))
    assert summary["current"]["stl_p50"] == pytest.approx(600)
    assert summary["stl_trend"] == pytest.approx(-1200)


def test_it_shows_the_sla_trend_against_the_previous_period(scope_for):
    received = NOW - dt.timedelta(days=2)
    answered_lead(received, 3, sla_due_at=received + minutes(5))
    answered_lead(NOW - dt.timedelta(days=9), 30, sla_due_at=NOW - dt.timedelta(days=9) + minutes(5))
    summary = selectors.period_summary(scope_for(days=7))
    assert (summary["current"]["hit_rate"], summary["previous"]["hit_rate"], summary["hit_trend"]) == (1, 0, 1)


def test_it_counts_arrivals_per_local_hour(scope_for):
    LeadFactory(received_at=NOW.replace(hour=8))
    LeadFactory(received_at=NOW.replace(hour=8, minute=59))
    LeadFactory(received_at=NOW.replace(hour=9))
    counts = selectors.arrivals_by_hour(scope_for(tz="Asia/Kolkata"))  # UTC+05:30
    assert (counts[13], counts[14]) == (1, 2)
    assert sum(counts) == 3


def test_it_buckets_the_speed_distribution(scope_for):
    for m in (1, 3, 10, 60, 61, 2000):
        answered_lead(NOW - dt.timedelta(days=3), m)
    answered_lead(NOW - dt.timedelta(days=3), None)
    rows = {r["label"]: r["count"] for r in selectors.speed_distribution(scope_for())}
    assert rows == {"≤ 5 min": 2, "5–15 min": 1, "15–60 min": 1, "1–4 h": 1, "4–24 h": 0, "> 24 h": 1, "not yet": 1}

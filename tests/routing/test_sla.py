"""SLA deadlines in the owner's working minutes (routing.sla.sla_due_at) — scenario 8 and its
holiday, time-off and daylight-saving variants."""

from __future__ import annotations

import datetime as dt

import pytest

from routing.models import Lead, Rule, RuleSet
from routing.sla import sla_due_at
from tests.factories import LeadFactory, RepFactory, TimeOffFactory, weekday_hours

UTC = dt.UTC
FRIDAY_1650 = dt.datetime(2026, 11, 20, 16, 50, tzinfo=UTC)
MONDAY_0905 = dt.datetime(2026, 11, 23, 9, 5, tzinfo=UTC)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def make_rule(**kwargs) -> Rule:
    """A rule in a published rule set (escalation only reads its SLA and ladder fields)."""
    rule_set = RuleSet.objects.filter(version=1).first() or RuleSet.objects.create(
        name="Clock", version=1, status=RuleSet.Status.PUBLISHED
    )
    position = Rule.objects.filter(rule_set=rule_set).count() + 1
    kwargs.setdefault("name", f"rule {position}")
    kwargs.setdefault("strategy", Rule.Strategy.ROUND_ROBIN)
    return Rule.objects.create(rule_set=rule_set, position=position, **kwargs)


def assigned_lead(owner, *, due: dt.datetime, rule: Rule | None = None, **kwargs) -> Lead:
    """A lead assigned to `owner`, untouched, whose first-touch deadline is `due`."""
    return LeadFactory(
        owner=owner, status=Lead.Status.ASSIGNED, rule=rule, sla_due_at=due,
        assigned_at=kwargs.pop("assigned_at", due - dt.timedelta(minutes=15)), **kwargs,
    )


@pytest.mark.django_db
def test_it_carries_friday_evening_minutes_over_the_weekend_to_monday_morning():
    rep = RepFactory(hours=weekday_hours("09:00", "17:00"))

    assert sla_due_at(rep, FRIDAY_1650, 15) == MONDAY_0905


@pytest.mark.django_db
def test_it_counts_only_minutes_inside_the_shift_on_a_working_day():
    rep = RepFactory(hours=weekday_hours("09:00", "17:00"))

    assert sla_due_at(rep, at("2026-11-18T10:00:00+00:00"), 30) == at("2026-11-18T10:30:00+00:00")


@pytest.mark.django_db
def test_it_starts_the_clock_at_the_next_shift_when_assigned_at_night():
    rep = RepFactory(hours=weekday_hours("09:00", "17:00"))

    assert sla_due_at(rep, at("2026-11-18T22:00:00+00:00"), 5) == at("2026-11-19T09:05:00+00:00")


@pytest.mark.django_db
def test_it_skips_the_reps_public_holidays():
    # Christmas Day and Boxing Day 2026 are a Friday and Saturday; German reps work again on Monday.
    rep = RepFactory(hours=weekday_hours("09:00", "17:00"), holidays="DE")

    assert sla_due_at(rep, at("2026-12-24T16:50:00+00:00"), 15) == at("2026-12-28T09:05:00+00:00")


@pytest.mark.django_db
def test_it_ignores_holidays_of_other_countries():
    rep = RepFactory(hours=weekday_hours("09:00", "17:00"), holidays="US")

    assert sla_due_at(rep, at("2026-12-24T16:50:00+00:00"), 15) == at("2026-12-28T09:05:00+00:00")
    assert sla_due_at(rep, at("2026-10-02T16:50:00+00:00"), 15) == at("2026-10-05T09:05:00+00:00")


@pytest.mark.django_db
def test_it_skips_time_off():
    rep = RepFactory(hours=weekday_hours("09:00", "17:00"))
    TimeOffFactory(rep=rep, start=at("2026-11-23T00:00:00+00:00"), end=at("2026-11-24T00:00:00+00:00"))

    assert sla_due_at(rep, FRIDAY_1650, 15) == at("2026-11-24T09:05:00+00:00")


@pytest.mark.django_db
def test_it_counts_in_the_reps_own_time_zone_across_the_end_of_daylight_saving():
    # Berlin leaves summer time on Sunday 25 Oct 2026: 09:05 on Monday is 08:05 UTC, not 07:05.
    rep = RepFactory(hours=weekday_hours("09:00", "17:00"), timezone="Europe/Berlin")
    friday_1650_berlin = at("2026-10-23T16:50:00+02:00")

    assert sla_due_at(rep, friday_1650_berlin, 15) == at("2026-10-26T08:05:00+00:00")


@pytest.mark.django_db
def test_it_counts_in_the_reps_own_time_zone_across_the_start_of_daylight_saving():
    rep = RepFactory(hours=weekday_hours("09:00", "17:00"), timezone="Europe/Berlin")

    assert sla_due_at(rep, at("2026-03-27T16:50:00+01:00"), 15) == at("2026-03-30T07:05:00+00:00")


@pytest.mark.django_db
def test_it_falls_back_to_wall_clock_minutes_for_a_rep_who_never_works_again():
    rep = RepFactory(active=False)

    assert sla_due_at(rep, FRIDAY_1650, 15) == FRIDAY_1650 + dt.timedelta(minutes=15)


@pytest.mark.django_db
def test_it_counts_every_minute_for_a_rep_without_working_hours():
    rep = RepFactory()

    assert sla_due_at(rep, FRIDAY_1650, 15) == at("2026-11-20T17:05:00+00:00")

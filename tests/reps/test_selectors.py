"""reps_with_schedules: reps and their Schedules for the routing engine, in a fixed number of queries."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from reps.models import Rep
from reps.selectors import reps_with_schedules
from tests.factories import RepFactory, TimeOffFactory, weekday_hours

pytestmark = pytest.mark.django_db

MONDAY_10_UTC = dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)


def test_it_pairs_each_rep_with_its_schedule():
    rep = RepFactory(hours=weekday_hours())
    TimeOffFactory(rep=rep, start=MONDAY_10_UTC, end=MONDAY_10_UTC + dt.timedelta(hours=1))

    [(loaded, schedule)] = reps_with_schedules()

    assert loaded == rep
    assert schedule.unavailable_reason(MONDAY_10_UTC) == "time off until 2026-11-23 11:00 UTC"
    assert schedule.is_available(MONDAY_10_UTC + dt.timedelta(hours=1))


def test_it_narrows_to_the_queryset_given():
    RepFactory(user__username="in", level=Rep.Level.SENIOR)
    RepFactory(user__username="out")

    result = reps_with_schedules(Rep.objects.filter(level=Rep.Level.SENIOR))

    assert [rep.username for rep, _ in result] == ["in"]


def test_it_needs_the_same_queries_for_many_reps_as_for_one():
    RepFactory(hours=weekday_hours())
    with CaptureQueriesContext(connection) as one:
        [(rep.team, [s.name for s in rep.skills.all()], schedule) for rep, schedule in reps_with_schedules()]
    for _ in range(10):
        TimeOffFactory(rep=RepFactory(hours=weekday_hours()))

    with CaptureQueriesContext(connection) as many:
        [(rep.team, [s.name for s in rep.skills.all()], schedule) for rep, schedule in reps_with_schedules()]

    assert len(many) == len(one)

"""The roster kept per process (routing/selectors.py): every way the reps' data can change reaches the
next routing decision — including bulk writes and raw SQL that send no signals — and an unchanged
roster is not read again."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from reps.models import Rep, Skill, Team, Territory, TimeOff, WorkingHours
from routing import selectors
from routing.models import Lead
from routing.services import route_leads, ruleset_create_draft, ruleset_publish
from tests.factories import LeadFactory, RepFactory, TerritoryFactory

pytestmark = pytest.mark.django_db

WEDNESDAY = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
RULE = {
    "name": "German speakers in EMEA",
    "candidates": {"team": "EMEA", "skills": ["german"], "territory": True},
    "strategy": "round_robin",
}


@pytest.fixture
def reps(db):
    team = Team.objects.create(name="EMEA")
    german = Skill.objects.create(name="german")
    out = {}
    for name in ("a", "b"):
        rep = RepFactory(user__username=name, team=team)
        rep.skills.add(german)
        rep.territories.add(TerritoryFactory(name=f"DACH {name}", countries=["DE"]))
        out[name] = rep
    ruleset_publish(ruleset_create_draft({"name": "Test", "rules": [RULE], "fallback": None}))
    return out


def owners(n: int) -> list[str | None]:
    leads = [LeadFactory(country="DE") for _ in range(n)]
    route_leads([lead.pk for lead in leads], now=WEDNESDAY)
    out = []
    for lead in leads:
        lead.refresh_from_db()
        out.append(lead.owner.user.username if lead.owner_id else None)
    return out


def _raw_capacity(rep):
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Rep._meta.db_table} SET capacity = 0 WHERE id = %s", [rep.pk])


# Each makes rep "a" unable to take the lead, by a write that sends no model signal.
CHANGES = {
    "time off (bulk_create)": lambda a: TimeOff.objects.bulk_create(
        [TimeOff(rep=a, start=WEDNESDAY - dt.timedelta(hours=1), end=WEDNESDAY + dt.timedelta(days=1))]
    ),
    "rep deactivated (update)": lambda a: Rep.objects.filter(pk=a.pk).update(active=False),
    "user deactivated (update)": lambda a: get_user_model().objects.filter(pk=a.user_id).update(is_active=False),
    "hours on another day only (bulk_create)": lambda a: WorkingHours.objects.bulk_create(
        [WorkingHours(rep=a, weekday=(WEDNESDAY.weekday() + 1) % 7, start=dt.time(9), end=dt.time(17))]
    ),
    "skill removed (through table)": lambda a: Rep.skills.through.objects.filter(rep_id=a.pk).delete(),
    "territory removed (through table)": lambda a: Rep.territories.through.objects.filter(rep_id=a.pk).delete(),
    "territory redrawn (update)": lambda a: Territory.objects.filter(name="DACH a").update(countries=["FR"]),
    "moved to another team (update)": lambda a: Rep.objects.filter(pk=a.pk).update(
        team=Team.objects.create(name="Americas")
    ),
    "team renamed (update)": lambda a: Team.objects.filter(name="EMEA").update(name="Europe"),
    "skill renamed (update)": lambda a: Skill.objects.filter(name="german").update(name="deutsch"),
    "capacity 0 (raw SQL)": _raw_capacity,
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_made_without_signals_reaches_the_next_decision(reps, change):
    assert sorted(owners(2)) == ["a", "b"]  # both can take leads; the roster is now cached
    CHANGES[change](reps["a"])
    assert "a" not in owners(3)


def test_a_deleted_rep_is_no_longer_a_candidate(reps):
    assert sorted(owners(2)) == ["a", "b"]
    get_user_model().objects.filter(pk=reps["a"].user_id).delete()
    assert owners(2) == ["b", "b"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the roster is kept per process on PostgreSQL only")
def test_an_unchanged_roster_is_not_read_again(reps):
    owners(1)
    with CaptureQueriesContext(connection) as reads:
        owners(1)
    # The loading queries name the columns of these tables; the fingerprint does not.
    tables = (WorkingHours._meta.db_table, TimeOff._meta.db_table, Rep.skills.through._meta.db_table)
    assert not [q["sql"] for q in reads.captured_queries if any(f'"{t}"."' in q["sql"] for t in tables)]

    TimeOff.objects.bulk_create([TimeOff(rep=reps["b"], start=WEDNESDAY + dt.timedelta(days=7),
                                         end=WEDNESDAY + dt.timedelta(days=8))])
    with CaptureQueriesContext(connection) as reads:
        owners(1)
    assert [q["sql"] for q in reads.captured_queries if f'"{TimeOff._meta.db_table}"."' in q["sql"]]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the roster is kept per process on PostgreSQL only")
def test_a_kept_roster_serves_later_instants_only(reps):
    """Time off is read from a day before the instant the roster was built for; an earlier instant
    may need older time off, so it reads the roster again."""
    TimeOff.objects.create(rep=reps["a"], start=WEDNESDAY - dt.timedelta(days=3), end=WEDNESDAY - dt.timedelta(days=2))
    selectors.candidate_states(WEDNESDAY)
    earlier = WEDNESDAY - dt.timedelta(days=2, hours=12)
    states = {c.username: c for c in selectors.candidate_states(earlier)}
    assert states["a"].schedule.unavailable_reason(earlier).startswith("time off")


def test_load_counts_reads_the_day_before_an_instant_given_in_any_time_zone(reps):
    # Inside the day before the instant, and just after it.
    day_before, just_after = WEDNESDAY - dt.timedelta(hours=23, minutes=30), WEDNESDAY + dt.timedelta(minutes=30)
    for name, at in (("a", day_before), ("b", just_after)):
        LeadFactory(owner=reps[name], status=Lead.Status.ASSIGNED, assigned_at=at)
    berlin = WEDNESDAY.astimezone(zoneinfo.ZoneInfo("Europe/Berlin"))

    assert selectors.load_counts(berlin)[1] == {reps["a"].pk: 1}


def test_past_time_off_extended_into_now_reaches_the_next_decision(reps):
    """The fingerprint hashes only the time off a roster reads (ending after a day before `now`);
    a past row edited into that window still changes it."""
    past = TimeOff.objects.create(rep=reps["a"], start=WEDNESDAY - dt.timedelta(days=30),
                                  end=WEDNESDAY - dt.timedelta(days=20))
    assert sorted(owners(2)) == ["a", "b"]
    TimeOff.objects.filter(pk=past.pk).update(end=WEDNESDAY + dt.timedelta(days=1))
    assert "a" not in owners(3)

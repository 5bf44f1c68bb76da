"""CONTRACT §2: `python manage.py load_org FILE` with the contract's own example file."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core import serializers
from django.core.management import call_command
from django.core.management.base import CommandError

from reps.availability import schedule_for
from reps.models import Rep, Skill, Team, Territory, TimeOff, WorkingHours
from routing.models import Pool, PoolMembership

pytestmark = pytest.mark.django_db

# The example from CONTRACT §2, with each "a|b" placeholder resolved to one of its choices, plus
# the two people it names but does not define (bob, a member; dora, a manager).
CONTRACT_EXAMPLE = """{
  "teams": [{"name": "EMEA"}],
  "skills": ["spanish", "payments"],
  "territories": [{"name": "DACH", "countries": ["DE", "AT", "CH"],
                   "regions": [], "postcodes": ["80*", "1010"]}],
  "reps": [{"username": "alice", "email": "alice@example.com", "name": "Alice Ahn",
            "team": "EMEA", "level": "senior",
            "skills": ["spanish"], "territories": ["DACH"],
            "capacity": 40, "daily_cap": 15, "weight": 2,
            "timezone": "Europe/Berlin", "holidays": "DE",
            "working_hours": {"mon": ["09:00", "17:00"], "tue": ["09:00", "17:00"]},
            "time_off": [{"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00Z"}],
            "active": true},
           {"username": "bob", "email": "bob@example.com", "name": "Bob Baker", "team": "EMEA"},
           {"username": "dora", "email": "dora@example.com", "name": "Dora Dean", "team": "EMEA",
            "level": "manager"}],
  "pools": [{"name": "smb", "mode": "cherry_pick", "members": ["alice", "bob"],
             "claim_limit": 5, "window_minutes": 10, "on_timeout": "shotgun",
             "managers": ["dora"]}]
}"""


def write(tmp_path, data) -> str:
    path = tmp_path / "org.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def load(tmp_path, data=CONTRACT_EXAMPLE) -> str:
    out = io.StringIO()
    call_command("load_org", write(tmp_path, data), stdout=out, stderr=io.StringIO())
    return out.getvalue()


def snapshot() -> str:
    from django.contrib.auth.models import User

    models = [User, Rep, Team, Skill, Territory, WorkingHours, TimeOff, Pool, PoolMembership]
    return "\n".join(serializers.serialize("json", m.objects.order_by("pk")) for m in models)


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def test_it_loads_the_contract_example_and_prints_one_summary_line(tmp_path):
    out = load(tmp_path)

    assert len(out.strip().splitlines()) == 1
    alice = Rep.objects.select_related("team", "user").get(user__username="alice")
    assert (alice.team.name, alice.level, alice.capacity, alice.daily_cap, alice.weight) == (
        "EMEA", "senior", 40, 15, 2)
    assert (alice.timezone, alice.holidays, alice.active, alice.user.email) == (
        "Europe/Berlin", "DE", True, "alice@example.com")
    assert list(alice.skills.values_list("name", flat=True)) == ["spanish"]
    assert Territory.objects.get(name="DACH").covers(country="DE", postcode="80331")
    pool = Pool.objects.get(name="smb")
    assert (pool.mode, pool.claim_limit, pool.window_minutes, pool.on_timeout) == ("cherry_pick", 5, 10, "shotgun")
    assert sorted(pool.memberships.values_list("rep__user__username", flat=True)) == ["alice", "bob"]


def test_loading_the_same_file_twice_changes_nothing(tmp_path):
    load(tmp_path)
    before = snapshot()

    load(tmp_path)

    assert snapshot() == before


def test_omitted_keys_take_the_contract_defaults(tmp_path):
    load(tmp_path)

    bob = Rep.objects.get(user__username="bob")
    assert (bob.capacity, bob.daily_cap, bob.weight, bob.timezone, bob.active) == (None, None, 1, "UTC", True)
    schedule = schedule_for(bob)
    # No working hours and no holidays: available at any hour, Christmas Day included.
    assert schedule.is_available(utc("2026-12-25T03:00:00"))


def test_the_rep_is_available_only_inside_own_hours_outside_time_off(tmp_path):
    load(tmp_path)
    schedule = schedule_for(Rep.objects.get(user__username="alice"))

    assert schedule.is_available(utc("2026-11-23T08:30:00"))  # Monday 09:30 in Berlin
    assert not schedule.is_available(utc("2026-11-23T07:30:00"))  # Monday 08:30 in Berlin
    assert not schedule.is_available(utc("2026-11-25T10:00:00"))  # Wednesday: no hours


def test_a_public_holiday_of_the_reps_country_is_a_day_off(tmp_path):
    load(tmp_path)
    schedule = schedule_for(Rep.objects.get(user__username="alice"))

    # 2026-10-26 is not a German holiday; Easter Monday 2026-04-06 is (both Mondays).
    assert schedule.is_available(utc("2026-10-26T10:00:00"))
    assert not schedule.is_available(utc("2026-04-06T10:00:00"))


def test_an_end_before_the_start_is_a_shift_past_midnight(tmp_path):
    data = json.loads(CONTRACT_EXAMPLE)
    data["reps"][1]["working_hours"] = {"mon": ["20:00", "02:00"]}
    load(tmp_path, data)
    schedule = schedule_for(Rep.objects.get(user__username="bob"))

    assert schedule.is_available(utc("2026-11-23T23:00:00"))  # Monday night
    assert schedule.is_available(utc("2026-11-24T01:30:00"))  # early Tuesday, same shift
    assert not schedule.is_available(utc("2026-11-24T03:00:00"))


def test_a_bad_value_exits_2_naming_its_path_and_writes_nothing(tmp_path):
    data = json.loads(CONTRACT_EXAMPLE)
    data["reps"].append({"username": "mars", "email": "m@example.com", "name": "M", "timezone": "Mars/Base"})
    err = io.StringIO()

    with pytest.raises(CommandError) as excinfo:
        call_command("load_org", write(tmp_path, data), stdout=io.StringIO(), stderr=err)

    assert excinfo.value.returncode == 2
    assert "reps[3].timezone: unknown time zone 'Mars/Base'" in err.getvalue() + str(excinfo.value)
    assert not Rep.objects.exists() and not Team.objects.exists()


def test_an_unknown_key_exits_2_naming_its_path(tmp_path):
    data = json.loads(CONTRACT_EXAMPLE)
    data["pools"][0]["colour"] = "red"
    err = io.StringIO()

    with pytest.raises(CommandError) as excinfo:
        call_command("load_org", write(tmp_path, data), stdout=io.StringIO(), stderr=err)

    assert excinfo.value.returncode == 2
    assert "pools[0].colour" in err.getvalue()
    assert not Pool.objects.exists()


def test_a_holiday_code_with_a_subdivision_uses_that_regions_days_off(tmp_path):
    data = json.loads(CONTRACT_EXAMPLE)
    data["reps"][1]["holidays"] = "DE-BY"
    data["reps"][2]["holidays"] = "DE-BE"
    load(tmp_path, data)
    epiphany = utc("2026-01-06T10:00:00")  # a public holiday in Bavaria, not in Berlin

    assert not schedule_for(Rep.objects.get(user__username="bob")).is_available(epiphany)
    assert schedule_for(Rep.objects.get(user__username="dora")).is_available(epiphany)


def test_time_off_makes_the_rep_unavailable(tmp_path):
    data = json.loads(CONTRACT_EXAMPLE)
    data["reps"][1]["time_off"] = [{"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00Z"}]
    load(tmp_path, data)
    schedule = schedule_for(Rep.objects.get(user__username="bob"))

    assert not schedule.is_available(utc("2026-12-25T12:00:00"))
    assert schedule.is_available(utc("2026-12-27T12:00:00"))


def test_an_inactive_rep_is_not_available(tmp_path):
    data = json.loads(CONTRACT_EXAMPLE)
    data["reps"][1]["active"] = False
    load(tmp_path, data)

    assert not schedule_for(Rep.objects.get(user__username="bob")).is_available(utc("2026-11-23T10:00:00"))

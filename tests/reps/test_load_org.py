"""`manage.py load_org FILE` (CONTRACT §2): upsert, idempotence, and faults reported by path."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core import serializers
from django.core.management import ManagementUtility, call_command
from django.core.management.base import CommandError

from leadops import roles
from reps.models import Rep, Skill, Team, Territory, TimeOff, WorkingHours
from routing.models import Pool, PoolMembership
from tests.factories import TeamFactory

pytestmark = pytest.mark.django_db

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "org.json"


def minimal(**rep) -> dict:
    return {
        "teams": [{"name": "EMEA"}],
        "skills": ["spanish"],
        "reps": [{"username": "alice", "email": "alice@example.com", "name": "Alice Ahn", "team": "EMEA", **rep}],
    }


def load(tmp_path, data) -> str:
    path = tmp_path / "org.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    out = io.StringIO()
    call_command("load_org", str(path), stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def load_fails(tmp_path, data) -> tuple[str, int]:
    """Run the command expecting faults: returns (stderr, exit code)."""
    path = tmp_path / "org.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    err = io.StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("load_org", str(path), stdout=io.StringIO(), stderr=err)
    return err.getvalue(), excinfo.value.returncode


MODELS = [User, Rep, Team, Skill, Territory, WorkingHours, TimeOff, Pool, PoolMembership]


def dump() -> str:
    """Every row (and many-to-many link) the command can touch, for before/after comparison."""
    rows = []
    for model in MODELS:
        rows.append(serializers.serialize("json", model.objects.order_by("pk")))
    rows.append(json.dumps(sorted(User.groups.through.objects.values_list("user_id", "group_id"))))
    return "\n".join(rows)


# -- the example file ---------------------------------------------------------------------------


def test_it_loads_the_example_file_and_prints_a_one_line_summary(tmp_path):
    out = load(tmp_path, EXAMPLE.read_text())

    assert out == (
        "org loaded: 2 teams (2 created), 2 skills (2 created), 2 territories (2 created), "
        "4 reps (4 created), 2 pools (2 created)"
    )
    assert "\n" not in out


def test_it_stores_everything_the_example_file_says_about_a_rep(tmp_path):
    load(tmp_path, EXAMPLE.read_text())

    alice = Rep.objects.get(user__username="alice")
    assert (alice.user.email, alice.user.first_name, alice.user.last_name) == ("alice@example.com", "Alice", "Ahn")
    assert (alice.team.name, alice.level) == ("EMEA", "senior")
    assert (alice.capacity, alice.daily_cap, alice.weight) == (40, 15, 2)
    assert (alice.timezone, alice.holidays, alice.active) == ("Europe/Berlin", "DE-BY", True)
    assert [s.name for s in alice.skills.all()] == ["spanish"]
    assert [t.name for t in alice.territories.all()] == ["DACH"]
    weekdays = ["mon", "tue", "wed", "thu", "fri"]
    assert [str(w) for w in alice.working_hours.all()] == [f"{d} 09:00–17:00" for d in weekdays]
    assert list(alice.time_off.values_list("start", "end")) == [
        (dt.datetime(2026, 12, 24, tzinfo=dt.UTC), dt.datetime(2026, 12, 27, tzinfo=dt.UTC))
    ]
    dach = Territory.objects.get(name="DACH")
    assert (dach.countries, dach.postcodes) == (["DE", "AT", "CH"], ["80*", "1010"])


def test_it_applies_the_contract_defaults_for_omitted_keys(tmp_path):
    load(tmp_path, minimal())

    rep = Rep.objects.get(user__username="alice")
    assert (rep.capacity, rep.daily_cap, rep.weight, rep.timezone, rep.active, rep.holidays) == (
        None, None, 1, "UTC", True, "",
    )
    assert not rep.working_hours.exists()


def test_it_stores_a_shift_past_midnight_as_given(tmp_path):
    load(tmp_path, minimal(working_hours={"sat": ["20:00", "02:00"]}))

    assert [str(w) for w in WorkingHours.objects.all()] == ["sat 20:00–02:00"]


def test_it_upserts_the_pools_with_members_and_managers(tmp_path):
    load(tmp_path, EXAMPLE.read_text())

    smb = Pool.objects.get(name="smb")
    assert (smb.mode, smb.claim_limit, smb.window_minutes, smb.on_timeout) == ("cherry_pick", 5, 10, "shotgun")
    assert sorted(smb.members.values_list("user__username", flat=True)) == ["alice", "bob"]
    assert list(smb.managers.values_list("user__username", flat=True)) == ["dora"]


# -- users and roles ----------------------------------------------------------------------------


def test_it_creates_reps_without_a_usable_password(tmp_path):
    load(tmp_path, minimal())

    assert not User.objects.get(username="alice").has_usable_password()


def test_it_sets_the_password_the_file_gives_for_a_new_user(tmp_path):
    load(tmp_path, minimal(password="s3cret-pass"))

    assert User.objects.get(username="alice").check_password("s3cret-pass")


def test_it_never_overwrites_a_password_a_rep_already_has(tmp_path):
    load(tmp_path, minimal(password="first-pass"))
    load(tmp_path, minimal(password="second-pass"))

    assert User.objects.get(username="alice").check_password("first-pass")


def test_it_puts_every_rep_in_the_reps_group(tmp_path):
    load(tmp_path, minimal())

    user = User.objects.get(username="alice")
    assert list(user.groups.values_list("name", flat=True)) == [roles.REPS]
    assert not user.is_staff


@pytest.mark.parametrize("level", ["manager", "director"])
def test_it_makes_managers_and_directors_staff_in_the_managers_group(tmp_path, level):
    load(tmp_path, minimal(level=level))

    user = User.objects.get(username="alice")
    assert sorted(user.groups.values_list("name", flat=True)) == sorted([roles.MANAGERS, roles.REPS])
    assert user.is_staff
    assert roles.is_manager(user)


def test_it_turns_an_existing_user_into_a_rep(tmp_path):
    User.objects.create_user("alice", password="kept-password")

    out = load(tmp_path, minimal())

    assert "1 rep (1 created)" in out
    assert User.objects.get(username="alice").check_password("kept-password")


# -- idempotence and updates --------------------------------------------------------------------


def test_it_changes_no_row_when_the_same_file_is_loaded_twice(tmp_path):
    load(tmp_path, EXAMPLE.read_text())
    before = dump()

    out = load(tmp_path, EXAMPLE.read_text())

    assert dump() == before
    assert out == (
        "org loaded: 2 teams (2 unchanged), 2 skills (2 unchanged), 2 territories (2 unchanged), "
        "4 reps (4 unchanged), 2 pools (2 unchanged)"
    )


def test_it_updates_a_changed_rep_and_replaces_its_hours_and_time_off(tmp_path):
    load(tmp_path, minimal(working_hours={"mon": ["09:00", "17:00"]},
                           time_off=[{"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00Z"}]))

    out = load(tmp_path, minimal(capacity=5, working_hours={"tue": ["10:00", "12:00"]}))

    rep = Rep.objects.get(user__username="alice")
    assert "1 rep (1 updated)" in out
    assert rep.capacity == 5
    assert [str(w) for w in rep.working_hours.all()] == ["tue 10:00–12:00"]
    assert not rep.time_off.exists()


def test_it_keeps_pool_members_who_stay_and_drops_those_who_left(tmp_path):
    data = json.loads(EXAMPLE.read_text())
    load(tmp_path, data)
    stayed = PoolMembership.objects.get(pool__name="smb", rep__user__username="alice")

    data["pools"][0]["members"] = ["alice"]
    load(tmp_path, data)

    assert list(PoolMembership.objects.filter(pool__name="smb")) == [stayed]


def test_it_lets_a_rep_name_a_team_that_is_only_in_the_database(tmp_path):
    TeamFactory(name="Americas")
    data = minimal(team="Americas")
    data["teams"] = []

    load(tmp_path, data)

    assert Rep.objects.get(user__username="alice").team.name == "Americas"


# -- faults: exit code 2, every message names its path, nothing written ---------------------------


def assert_rejected(tmp_path, data, *messages):
    TeamFactory(name="Existing")
    before = dump()

    err, code = load_fails(tmp_path, data)

    assert code == 2
    for message in messages:
        assert message in err.splitlines()
    assert dump() == before


def test_it_rejects_an_unknown_team(tmp_path):
    assert_rejected(tmp_path, minimal(team="Nowhere"), "reps[0].team: unknown team 'Nowhere'")


def test_it_rejects_an_unknown_time_zone(tmp_path):
    assert_rejected(tmp_path, minimal(timezone="Mars/Base"), "reps[0].timezone: unknown time zone 'Mars/Base'")


def test_it_rejects_overlapping_time_off(tmp_path):
    data = minimal(time_off=[
        {"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00Z"},
        {"start": "2026-12-26T00:00:00Z", "end": "2026-12-28T00:00:00Z"},
    ])
    assert_rejected(tmp_path, data, "reps[0].time_off[1]: overlaps time_off[0]")


def test_it_rejects_a_negative_capacity(tmp_path):
    assert_rejected(tmp_path, minimal(capacity=-1), "reps[0].capacity: must be a whole number ≥ 0 or null")


def test_it_rejects_duplicate_usernames(tmp_path):
    data = minimal()
    data["reps"].append({"username": "bob"})
    data["reps"].append({"username": "alice"})
    assert_rejected(tmp_path, data, "reps[2].username: duplicate of reps[0]")


def test_it_rejects_a_file_that_is_not_json(tmp_path):
    assert_rejected(
        tmp_path, '{\n  "teams": [\n    {"name" "EMEA"}\n]}',
        "$: not valid JSON (line 3, column 13: Expecting ':' delimiter)",
    )


def test_it_rejects_an_unknown_key(tmp_path):
    assert_rejected(tmp_path, minimal(colour="blue"), "reps[0].colour: unknown key")


def test_it_rejects_a_bad_level(tmp_path):
    assert_rejected(
        tmp_path, minimal(level="intern"),
        "reps[0].level: must be one of junior, senior, director, manager (got 'intern')",
    )


def test_it_rejects_a_bad_weekday_and_a_bad_time(tmp_path):
    assert_rejected(
        tmp_path, minimal(working_hours={"monday": ["09:00", "17:00"], "tue": ["9am", "17:00"]}),
        "reps[0].working_hours.monday: unknown weekday (use mon, tue, wed, thu, fri, sat, sun)",
        "reps[0].working_hours.tue[0]: must be a time like '09:00' (got '9am')",
    )


def test_it_rejects_a_shift_that_starts_when_it_ends(tmp_path):
    assert_rejected(
        tmp_path, minimal(working_hours={"mon": ["09:00", "09:00"]}),
        "reps[0].working_hours.mon: start and end must differ",
    )


def test_it_rejects_an_unknown_holiday_calendar(tmp_path):
    assert_rejected(tmp_path, minimal(holidays="DE-XX"), "reps[0].holidays: unknown holiday subdivision 'DE-XX'")


def test_it_rejects_a_bad_pool_mode_and_an_unknown_member(tmp_path):
    data = minimal()
    data["pools"] = [{"name": "smb", "mode": "lottery", "members": ["alice", "zed"]}]
    assert_rejected(
        tmp_path, data,
        "pools[0].mode: must be one of cherry_pick, shotgun (got 'lottery')",
        "pools[0].members[1]: unknown rep 'zed'",
    )


def test_it_reports_every_fault_at_once(tmp_path):
    data = minimal(timezone="Mars/Base", capacity=-1)
    data["reps"].append(copy.deepcopy(data["reps"][0]) | {"team": "Nowhere"})
    data["teams"].append({"name": "EMEA"})

    err, code = load_fails(tmp_path, data)

    assert code == 2
    assert err.splitlines() == [
        "teams[1].name: duplicate of teams[0]",
        "reps[0].capacity: must be a whole number ≥ 0 or null",
        "reps[0].timezone: unknown time zone 'Mars/Base'",
        "reps[1].team: unknown team 'Nowhere'",
        "reps[1].capacity: must be a whole number ≥ 0 or null",
        "reps[1].timezone: unknown time zone 'Mars/Base'",
        "reps[1].username: duplicate of reps[0]",
    ]


def test_it_writes_nothing_when_only_the_last_rep_is_bad(tmp_path):
    data = json.loads(EXAMPLE.read_text())
    data["reps"][-1]["timezone"] = "Mars/Base"

    err, code = load_fails(tmp_path, data)

    assert code == 2
    assert "reps[3].timezone: unknown time zone 'Mars/Base'" in err
    assert not Team.objects.exists() and not User.objects.exists() and not Pool.objects.exists()


def test_it_exits_with_code_2_from_the_command_line(tmp_path, capsys):
    bad = tmp_path / "org.json"
    bad.write_text(json.dumps(minimal(timezone="Mars/Base")))

    with pytest.raises(SystemExit) as excinfo:
        ManagementUtility(["manage.py", "load_org", str(bad)]).execute()

    assert excinfo.value.code == 2
    assert "reps[0].timezone: unknown time zone 'Mars/Base'" in capsys.readouterr().err.splitlines()


def test_it_reads_time_off_without_an_offset_in_the_reps_own_time_zone(tmp_path):
    load(tmp_path, minimal(timezone="Europe/Berlin", time_off=[{"start": "2026-12-24T00:00", "end": "2026-12-27"}]))

    assert list(TimeOff.objects.values_list("start", "end")) == [
        (dt.datetime(2026, 12, 23, 23, tzinfo=dt.UTC), dt.datetime(2026, 12, 26, 23, tzinfo=dt.UTC))
    ]


def test_it_accepts_split_shifts_on_one_day(tmp_path):
    load(tmp_path, minimal(working_hours={"mon": [["09:00", "12:00"], ["13:00", "17:00"]]}))

    assert [str(w) for w in WorkingHours.objects.all()] == ["mon 09:00–12:00", "mon 13:00–17:00"]


def test_it_rejects_an_unknown_section(tmp_path):
    assert_rejected(tmp_path, minimal() | {"regions": []}, "regions: unknown key")


def test_it_rejects_a_file_whose_top_level_is_not_an_object(tmp_path):
    assert_rejected(tmp_path, "[]", "$: must be an object with teams, skills, territories, reps and pools")


def test_it_exits_with_code_2_when_the_file_cannot_be_read(tmp_path):
    with pytest.raises(CommandError) as excinfo:
        call_command("load_org", str(tmp_path / "missing.json"), stdout=io.StringIO(), stderr=io.StringIO())

    assert excinfo.value.returncode == 2
    assert str(excinfo.value).startswith("$: cannot read")

"""Is a rep workable at T, and when have N working minutes passed? (reps/availability.py)

Pure Schedules, no database: every instant is spelled out so a failure reads like a calendar.
2026 dates used below: Fri 20 Nov, Mon 23 Nov; Berlin springs forward on Sun 29 Mar and falls
back on Sun 25 Oct; Epiphany (Tue 6 Jan) is a holiday in Bavaria (DE-BY) but not in Berlin (DE-BE).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from hypothesis import given, settings
from hypothesis import strategies as st

from reps.availability import Schedule

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
UTC = dt.UTC
NINE_TO_FIVE = (dt.time(9), dt.time(17))


def at(text: str, tz: zoneinfo.ZoneInfo = BERLIN) -> dt.datetime:
    """A local wall-clock time (first occurrence when ambiguous)."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz)


def weekdays(shift=NINE_TO_FIVE, days=range(5)) -> dict[int, tuple]:
    return {d: (shift,) for d in days}


def berlin(**kwargs) -> Schedule:
    return Schedule(timezone="Europe/Berlin", **({"shifts": weekdays()} | kwargs))


# -- working hours in the rep's own time zone --------------------------------------------------------


def test_it_is_available_inside_local_working_hours():
    assert berlin().is_available(at("2026-11-23 09:00"))
    assert berlin().is_available(at("2026-11-23 16:59"))


def test_it_is_unavailable_at_the_end_of_the_shift():
    assert not berlin().is_available(at("2026-11-23 17:00"))


def test_it_reads_working_hours_in_the_reps_time_zone_not_utc():
    # 08:30 UTC is 09:30 in Berlin in November
    assert berlin().is_available(dt.datetime(2026, 11, 23, 8, 30, tzinfo=UTC))
    assert not berlin().is_available(dt.datetime(2026, 11, 23, 16, 30, tzinfo=UTC))


def test_it_explains_an_early_morning_with_the_local_start_time():
    assert berlin().unavailable_reason(at("2026-11-23 07:00")) == "outside working hours until 09:00 Europe/Berlin"


def test_it_names_the_next_working_day_when_the_next_shift_is_not_today():
    assert berlin().unavailable_reason(at("2026-11-20 18:00")) == "outside working hours until Mon 09:00 Europe/Berlin"


def test_it_says_no_working_hours_when_the_rep_never_works():
    never = Schedule(shifts={0: (NINE_TO_FIVE,)}, holidays="", active=True, time_off=(
        (dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2028, 1, 1, tzinfo=UTC)),
    ))

    assert never.unavailable_reason(dt.datetime(2025, 12, 31, 20, tzinfo=UTC)) == "no working hours"


def test_it_is_available_at_any_hour_without_working_hours():
    anytime = Schedule(timezone="Europe/Berlin")

    assert anytime.is_available(at("2026-11-22 03:00"))
    assert anytime.unavailable_reason(at("2026-11-22 03:00")) is None


# -- shifts past midnight --------------------------------------------------------------------------


NIGHTS = Schedule(shifts={0: ((dt.time(20), dt.time(2)),)})


def test_a_night_shift_covers_the_small_hours_of_the_next_day():
    assert NIGHTS.is_available(at("2026-11-24 01:00", UTC))


def test_a_night_shift_ends_at_its_end_time_the_next_day():
    assert not NIGHTS.is_available(at("2026-11-24 03:00", UTC))
    assert not NIGHTS.is_available(at("2026-11-24 02:00", UTC))


def test_a_night_shift_starts_at_its_start_time():
    assert not NIGHTS.is_available(at("2026-11-23 19:59", UTC))
    assert NIGHTS.is_available(at("2026-11-23 20:00", UTC))


def test_a_sunday_night_shift_runs_into_monday():
    sunday_nights = Schedule(shifts={6: ((dt.time(22), dt.time(2)),)})

    assert sunday_nights.is_available(at("2026-11-23 01:00", UTC))


def test_a_night_shift_counts_its_minutes_across_midnight():
    assert NIGHTS.working_minutes_between(at("2026-11-23 00:00", UTC), at("2026-11-25 00:00", UTC)) == 6 * 60


# -- daylight saving time --------------------------------------------------------------------------


EVERY_DAY = berlin(shifts=weekdays(days=range(7)))


def test_a_nine_to_five_shift_starts_at_nine_local_on_the_spring_forward_day():
    assert not EVERY_DAY.is_available(dt.datetime(2026, 3, 29, 6, 59, tzinfo=UTC))
    assert EVERY_DAY.is_available(dt.datetime(2026, 3, 29, 7, 0, tzinfo=UTC))  # 09:00 CEST


def test_a_nine_to_five_shift_is_still_eight_hours_on_the_spring_forward_day():
    assert EVERY_DAY.working_minutes_between(at("2026-03-29 00:00"), at("2026-03-30 00:00")) == 8 * 60


def test_a_nine_to_five_shift_starts_at_nine_local_on_the_fall_back_day():
    assert not EVERY_DAY.is_available(dt.datetime(2026, 10, 25, 7, 59, tzinfo=UTC))
    assert EVERY_DAY.is_available(dt.datetime(2026, 10, 25, 8, 0, tzinfo=UTC))  # 09:00 CET
    assert EVERY_DAY.working_minutes_between(at("2026-10-25 00:00"), at("2026-10-26 00:00")) == 8 * 60


def test_a_rep_without_hours_has_a_23_hour_spring_day_and_a_25_hour_autumn_day():
    anytime = Schedule(timezone="Europe/Berlin")

    assert anytime.working_minutes_between(at("2026-03-29 00:00"), at("2026-03-30 00:00")) == 23 * 60
    assert anytime.working_minutes_between(at("2026-10-25 00:00"), at("2026-10-26 00:00")) == 25 * 60


def test_a_night_shift_over_the_spring_forward_is_an_hour_shorter():
    saturday_nights = berlin(shifts={5: ((dt.time(22), dt.time(6)),)})

    assert saturday_nights.working_minutes_between(at("2026-03-28 12:00"), at("2026-03-29 12:00")) == 7 * 60


def test_a_shift_ending_in_the_skipped_hour_ends_when_the_clock_jumps():
    # On 29 March Berlin clocks go from 02:00 straight to 03:00, so "until 02:30" means until the jump.
    early = berlin(shifts={6: ((dt.time(1), dt.time(2, 30)),)})

    assert early.is_available(dt.datetime(2026, 3, 29, 0, 59, tzinfo=UTC))  # 01:59 CET
    assert not early.is_available(dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC))  # 03:00 CEST
    assert early.working_minutes_between(at("2026-03-29 00:00"), at("2026-03-29 12:00")) == 60


def test_a_shift_ending_in_the_repeated_hour_ends_the_first_time_the_clock_shows_it():
    late = berlin(shifts={5: ((dt.time(22), dt.time(2, 30)),)})

    assert late.is_available(dt.datetime(2026, 10, 25, 0, 29, tzinfo=UTC))  # 02:29 CEST
    assert not late.is_available(dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC))  # 02:30 CEST
    assert not late.is_available(dt.datetime(2026, 10, 25, 1, 15, tzinfo=UTC))  # 02:15 CET, the second time


# -- time off, inactive, public holidays --------------------------------------------------------------


CHRISTMAS_OFF = ((dt.datetime(2026, 12, 24, tzinfo=UTC), dt.datetime(2026, 12, 27, tzinfo=UTC)),)


def test_it_is_unavailable_during_time_off_and_says_until_when_in_local_time():
    schedule = berlin(time_off=CHRISTMAS_OFF)

    assert schedule.unavailable_reason(at("2026-12-24 10:00")) == "time off until 2026-12-27 01:00 Europe/Berlin"


def test_it_is_available_again_when_time_off_ends():
    monday_morning_off = ((at("2026-11-23 00:00"), at("2026-11-23 12:00")),)

    assert berlin(time_off=monday_morning_off).is_available(at("2026-11-23 12:00"))


def test_back_to_back_time_off_is_reported_until_the_last_one_ends():
    schedule = berlin(time_off=(
        (at("2026-11-23 00:00"), at("2026-11-24 00:00")),
        (at("2026-11-24 00:00"), at("2026-11-25 12:00")),
    ))

    assert schedule.unavailable_reason(at("2026-11-23 10:00")) == "time off until 2026-11-25 12:00 Europe/Berlin"


def test_an_inactive_rep_is_never_available():
    schedule = Schedule(active=False)

    assert schedule.unavailable_reason(at("2026-11-23 10:00")) == "inactive"
    assert schedule.add_working_minutes(at("2026-11-23 10:00"), 15) is None


def test_it_is_unavailable_on_a_public_holiday_of_its_calendar():
    schedule = berlin(holidays="DE-BY")

    assert schedule.unavailable_reason(at("2026-12-25 10:00")) == "public holiday (Christmas Day)"


def test_a_regional_holiday_applies_only_to_that_region():
    assert berlin(holidays="DE-BY").unavailable_reason(at("2026-01-06 10:00")) == "public holiday (Epiphany)"
    assert berlin(holidays="DE-BE").is_available(at("2026-01-06 10:00"))


def test_a_rep_without_hours_is_off_the_whole_holiday():
    anytime = Schedule(timezone="Europe/Berlin", holidays="DE")

    assert not anytime.is_available(at("2026-12-25 03:00"))
    assert anytime.is_available(at("2026-12-27 03:00"))


def test_a_night_shift_that_starts_the_evening_before_a_holiday_is_worked_to_its_end():
    schedule = berlin(shifts={3: ((dt.time(20), dt.time(2)),)}, holidays="DE")  # Thu 24 Dec → Fri 25 Dec

    assert schedule.is_available(at("2026-12-25 01:00"))


# -- adding working minutes (SLA clocks) --------------------------------------------------------------


def test_friday_afternoon_plus_fifteen_working_minutes_is_monday_morning():
    # DOMAIN scenario 8: Friday 16:50 + 15 working minutes with Mon–Fri 09:00–17:00 ⇒ Monday 09:05
    assert berlin().add_working_minutes(at("2026-11-20 16:50"), 15) == at("2026-11-23 09:05")


def test_working_minutes_that_end_with_the_shift_end_at_the_shift_end():
    assert berlin().add_working_minutes(at("2026-11-20 16:50"), 10) == at("2026-11-20 17:00")


def test_working_minutes_started_outside_hours_start_counting_at_the_next_shift():
    assert berlin().add_working_minutes(at("2026-11-21 11:00"), 5) == at("2026-11-23 09:05")


def test_working_minutes_skip_a_public_holiday():
    # Christmas Day 2026 is a Friday: Thursday 16:50 + 15 lands on Monday 28 December
    assert berlin(holidays="DE-BY").add_working_minutes(at("2026-12-24 16:50"), 15) == at("2026-12-28 09:05")


def test_working_minutes_skip_time_off():
    monday_morning_off = ((at("2026-11-23 00:00"), at("2026-11-23 12:00")),)

    assert berlin(time_off=monday_morning_off).add_working_minutes(at("2026-11-20 16:50"), 15) == at("2026-11-23 12:05")


def test_working_minutes_between_counts_only_working_time():
    assert berlin().working_minutes_between(at("2026-11-20 16:50"), at("2026-11-23 09:05")) == 15


def test_zero_working_minutes_is_the_start_itself():
    assert berlin().add_working_minutes(at("2026-11-21 11:00"), 0) == at("2026-11-21 11:00")


# -- properties -------------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]  # Lord Howe shifts by 30 min


@st.composite
def shifts(draw) -> tuple[dt.time, dt.time]:
    start, end = draw(st.lists(st.integers(0, 47), min_size=2, max_size=2, unique=True))
    return (dt.time(start // 2, 30 * (start % 2)), dt.time(end // 2, 30 * (end % 2)))


@st.composite
def schedules(draw) -> Schedule:
    days = draw(st.dictionaries(st.integers(0, 6), st.lists(shifts(), min_size=1, max_size=2), max_size=7))
    shift_map = {d: tuple(sorted({s[0]: s for s in v}.values())) for d, v in days.items()}
    off = []
    for _ in range(draw(st.integers(0, 2))):
        start = draw(st.datetimes(dt.datetime(2026, 1, 1), dt.datetime(2026, 12, 1), timezones=st.just(UTC)))
        start = start.replace(second=0, microsecond=0)
        off.append((start, start + dt.timedelta(minutes=draw(st.integers(1, 10 * 24 * 60)))))
    return Schedule(
        timezone=draw(st.sampled_from(ZONES)),
        shifts=shift_map,
        time_off=tuple(sorted(off)),
        holidays=draw(st.sampled_from(["", "DE-BY", "US"])),
    )


instants = st.datetimes(dt.datetime(2026, 1, 1), dt.datetime(2026, 12, 31), timezones=st.just(UTC)).map(
    lambda d: d.replace(second=0, microsecond=0)
)


@settings(max_examples=150, deadline=None)
@given(schedules(), instants, st.integers(0, 500), st.integers(0, 500))
def test_adding_working_minutes_in_two_steps_is_the_same_as_in_one(schedule, start, a, b):
    middle = schedule.add_working_minutes(start, a)

    assert schedule.add_working_minutes(start, a + b) == schedule.add_working_minutes(middle, b)


@settings(max_examples=150, deadline=None)
@given(schedules(), instants, st.integers(1, 1000))
def test_adding_working_minutes_ends_inside_or_at_the_end_of_working_time(schedule, start, minutes):
    end = schedule.add_working_minutes(start, minutes)

    assert schedule.is_available(end - dt.timedelta(minutes=1))


@settings(max_examples=150, deadline=None)
@given(schedules(), instants, st.integers(0, 1000))
def test_the_working_minutes_between_start_and_the_sum_are_the_minutes_added(schedule, start, minutes):
    end = schedule.add_working_minutes(start, minutes)

    assert schedule.working_minutes_between(start, end) == minutes


@settings(max_examples=200, deadline=None)
@given(schedules(), instants)
def test_available_now_agrees_with_the_working_intervals(schedule, moment):
    # "Is the rep available?" and the SLA clock must never disagree about the same minute.
    assert schedule.is_available(moment) == (schedule.next_available(moment) == moment)

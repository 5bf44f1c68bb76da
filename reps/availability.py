"""When can a rep work? Pure functions over a rep's schedule — no queries, no clock.

A `Schedule` is plain data (built once per rep by `schedule_for`) so that the routing engine,
SLA clocks and previews can ask "is this rep workable at T?" thousands of times cheaply.

Conventions:
- Working hours are wall-clock times in the rep's own time zone; a shift whose end is not after
  its start runs past midnight and belongs to the day it starts.
- A public holiday removes the shifts that start on it (and the whole day for reps without hours).
- No working hours at all means "any hour".
- All datetimes going in and out are timezone-aware; results are UTC.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import holidays as holidays_lib

UTC = dt.UTC
DAY = dt.timedelta(days=1)
MIDNIGHT = dt.time(0, 0)
# How far ahead we look for the next working minute before giving up (a rep with no shifts ever).
HORIZON_DAYS = 400

Shift = tuple[dt.time, dt.time]


@lru_cache(maxsize=256)
def _holiday_calendar(code: str, year: int) -> dict[dt.date, str]:
    country, _, subdiv = code.partition("-")
    try:
        cal = holidays_lib.country_holidays(country, subdiv=subdiv or None, years=year)
    except NotImplementedError:
        return {}
    return dict(cal.items())


def holiday_name(code: str, day: dt.date) -> str | None:
    if not code:
        return None
    return _holiday_calendar(code.upper(), day.year).get(day)


def validate_holiday_code(code: str) -> str | None:
    """Return an error message for an unknown country/subdivision code, else None."""
    country, _, subdiv = code.upper().partition("-")
    try:
        holidays_lib.country_holidays(country, subdiv=subdiv or None, years=2026)
    except NotImplementedError:
        if subdiv:
            return f"unknown holiday subdivision {code!r}"
        return f"unknown holiday country {code!r}"
    return None


@dataclass(frozen=True)
class Schedule:
    timezone: str = "UTC"
    # weekday (0 = Monday) -> shifts; an empty mapping means available at any hour
    shifts: dict[int, tuple[Shift, ...]] = field(default_factory=dict)
    time_off: tuple[tuple[dt.datetime, dt.datetime], ...] = ()
    holidays: str = ""
    active: bool = True

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return _zone(self.timezone)

    # -- single instants -------------------------------------------------------------------

    def unavailable_reason(self, at: dt.datetime) -> str | None:
        """None when the rep can work at `at`, else a short human reason."""
        if not self.active:
            return "inactive"
        off_until = self._time_off_until(at)
        if off_until is not None:
            return f"time off until {off_until.astimezone(self.tz):%Y-%m-%d %H:%M} {self.timezone}"
        local = at.astimezone(self.tz)
        if self._works_at(at):
            return None
        holiday = holiday_name(self.holidays, local.date())
        if holiday:
            return f"public holiday ({holiday})"
        nxt = self.next_available(at)
        if nxt is None:
            return "no working hours"
        nxt_local = nxt.astimezone(self.tz)
        when = f"{nxt_local:%H:%M}" if nxt_local.date() == local.date() else f"{nxt_local:%a %H:%M}"
        return f"outside working hours until {when} {self.timezone}"

    def is_available(self, at: dt.datetime) -> bool:
        return self.unavailable_reason(at) is None

    def _time_off_until(self, at: dt.datetime) -> dt.datetime | None:
        """End of the time off covering `at`, following back-to-back or overlapping periods."""
        until = None
        for start, end in sorted(self.time_off):
            point = at if until is None else until
            if start <= point < end:
                until = end
        return until

    def _works_at(self, at: dt.datetime) -> bool:
        # Asked of the same intervals that working minutes are counted over, so "available now"
        # and SLA clocks can never disagree (e.g. about a shift that ends inside a DST change).
        today = at.astimezone(self.tz).date()
        return any(s <= at < e for day in (today - DAY, today) for s, e in self._raw_day(day))

    # -- intervals ---------------------------------------------------------------------------

    def _raw_day(self, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        if holiday_name(self.holidays, day):
            return []
        tz = self.tz
        if not self.shifts:
            return [(_utc(day, MIDNIGHT, tz), _utc(day + DAY, MIDNIGHT, tz))]
        out = []
        for start, end in self.shifts.get(day.weekday(), ()):
            end_day = day if start < end else day + DAY
            out.append((_utc(day, start, tz), _utc(end_day, end, tz)))
        return out

    def intervals(
        self, start: dt.datetime, end: dt.datetime | None = None
    ) -> Iterator[tuple[dt.datetime, dt.datetime]]:
        """Working intervals (UTC, in order, non-overlapping) from `start`, minus time off."""
        if not self.active:
            return
        start = start.astimezone(UTC)
        day = start.astimezone(self.tz).date() - DAY
        last_day = day + dt.timedelta(days=HORIZON_DAYS)
        cursor = start
        off = sorted(self.time_off)
        while day <= last_day:
            batch: list[tuple[dt.datetime, dt.datetime]] = []
            for i in range(7):
                batch.extend(self._raw_day(day + dt.timedelta(days=i)))
            batch.sort()
            for s, e in batch:
                s = max(s, cursor)
                if e <= s:
                    continue
                for piece in _subtract(s, e, off):
                    if end is not None and piece[0] >= end:
                        return
                    yield (piece[0], min(piece[1], end) if end else piece[1])
                cursor = e
            day += dt.timedelta(days=7)

    def next_available(self, at: dt.datetime) -> dt.datetime | None:
        for s, _ in self.intervals(at):
            return s
        return None

    def add_working_minutes(self, start: dt.datetime, minutes: float) -> dt.datetime | None:
        """The instant at which `minutes` working minutes have passed since `start`."""
        # The earliest instant with that many working minutes behind it: zero minutes is `start`
        # itself, and a sum that ends exactly at the end of a shift is that end, not the next
        # shift's start. This is what makes add(add(t, a), b) == add(t, a + b).
        if minutes <= 0:
            return start
        remaining = dt.timedelta(minutes=minutes)
        for s, e in self.intervals(start):
            if e - s >= remaining:
                return s + remaining
            remaining -= e - s
        return None

    def working_minutes_between(self, start: dt.datetime, end: dt.datetime) -> float:
        total = dt.timedelta()
        for s, e in self.intervals(start, end):
            total += e - s
        return total.total_seconds() / 60


@lru_cache(maxsize=512)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


@lru_cache(maxsize=4096)
def _utc(day: dt.date, clock: dt.time, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """The first instant at which the local clock shows `clock` on `day` (or has jumped past it).

    In the autumn hour that happens twice that is the first occurrence; in the spring gap that the
    clock skips it is the moment of the jump (03:00 CEST for a Berlin shift edge at 02:30).
    Remembered: every SLA deadline and availability check builds a week of shift edges again, the
    same few days for a whole batch. (A `clock` with fold=1 is the same key as with fold=0, so the
    fold is not read: the first occurrence, as said.)
    """
    wall = dt.datetime.combine(day, clock).replace(fold=0)
    late = wall.replace(tzinfo=tz).astimezone(UTC)
    if late.astimezone(tz).replace(tzinfo=None) == wall:
        return late
    # `wall` does not exist: the jump lies between its two possible readings; find it to the second.
    early = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = early, late
    while hi - lo > dt.timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def _subtract(
    s: dt.datetime, e: dt.datetime, off: list[tuple[dt.datetime, dt.datetime]]
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    for os_, oe in off:
        if oe <= s or os_ >= e:
            continue
        if os_ > s:
            yield (s, os_)
        s = max(s, oe)
        if s >= e:
            return
    if s < e:
        yield (s, e)


def schedule_for(rep) -> Schedule:
    """Build a Schedule from a Rep (prefetch `working_hours` and `time_off` for many reps)."""
    shifts: dict[int, list[Shift]] = {}
    for wh in rep.working_hours.all():
        shifts.setdefault(wh.weekday, []).append((wh.start, wh.end))
    return Schedule(
        timezone=rep.timezone,
        shifts={k: tuple(sorted(v)) for k, v in shifts.items()},
        time_off=tuple(sorted((t.start, t.end) for t in rep.time_off.all())),
        holidays=rep.holidays,
        active=rep.active,
    )

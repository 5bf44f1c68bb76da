"""Reading the organisation file (CONTRACT §2): parse, validate, normalise — no database access.

`parse_org(text, known=...)` returns `(org, errors)`. Every fault is collected (not just the first)
as one line that starts with the JSON path of the offending value, so a manager can fix the whole
file in one go. The caller passes what the database already holds (`Known`) so that a rep may name
a team that exists only in the database.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator, URLValidator

from reps.availability import validate_holiday_code
from reps.models import WEEKDAYS

LEVELS = ("junior", "senior", "director", "manager")
POOL_MODES = ("cherry_pick", "shotgun")
ON_TIMEOUT = ("shotgun", "push", "escalate", "stay")

TOP_KEYS = {"teams", "skills", "territories", "reps", "pools"}
TEAM_KEYS = {"name", "slack_webhook_url"}
SKILL_KEYS = {"name"}
TERRITORY_KEYS = {"name", "countries", "regions", "postcodes"}
REP_KEYS = {
    "username", "email", "name", "password", "team", "level", "skills", "territories", "capacity",
    "daily_cap", "weight", "timezone", "holidays", "working_hours", "time_off", "active", "slack_webhook_url",
}
TIME_OFF_KEYS = {"start", "end", "reason"}
POOL_KEYS = {
    "name", "mode", "members", "claim_limit", "daily_claim_cap", "window_minutes", "on_timeout",
    "managers", "sla_minutes",
}

_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")


@dataclass(frozen=True)
class Known:
    """Names already in the database, which the file may refer to without defining them."""

    teams: frozenset[str] = frozenset()
    skills: frozenset[str] = frozenset()
    territories: frozenset[str] = frozenset()
    reps: frozenset[str] = frozenset()


@dataclass
class TeamSpec:
    name: str
    slack_webhook_url: str | None = None  # None = leave as it is


@dataclass
class TerritorySpec:
    name: str
    countries: list[str] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    postcodes: list[str] = field(default_factory=list)


@dataclass
class RepSpec:
    username: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    password: str | None = None
    team: str | None = None
    level: str = "junior"
    skills: list[str] = field(default_factory=list)
    territories: list[str] = field(default_factory=list)
    capacity: int | None = None
    daily_cap: int | None = None
    weight: int = 1
    timezone: str = "UTC"
    holidays: str = ""
    # (weekday 0 = Monday, start, end), sorted
    working_hours: list[tuple[int, dt.time, dt.time]] = field(default_factory=list)
    # (start, end, reason) as aware datetimes, sorted
    time_off: list[tuple[dt.datetime, dt.datetime, str]] = field(default_factory=list)
    active: bool = True
    slack_webhook_url: str | None = None


@dataclass
class PoolSpec:
    name: str
    mode: str = "cherry_pick"
    members: list[str] = field(default_factory=list)
    managers: list[str] = field(default_factory=list)
    claim_limit: int | None = None
    daily_claim_cap: int | None = None
    window_minutes: int | None = None
    on_timeout: str = "stay"
    sla_minutes: int | None = None


@dataclass
class Org:
    teams: list[TeamSpec] = field(default_factory=list)
    skills: list[str] = field(default_factory=list)
    territories: list[TerritorySpec] = field(default_factory=list)
    reps: list[RepSpec] = field(default_factory=list)
    pools: list[PoolSpec] = field(default_factory=list)


def parse_org(text: str, known: Known | None = None) -> tuple[Org, list[str]]:
    """Parse JSON text; on any fault the returned Org must not be written."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return Org(), [f"$: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"]
    return validate_org(data, known or Known())


def validate_org(data: Any, known: Known) -> tuple[Org, list[str]]:
    v = _Validator(known)
    org = v.org(data)
    return org, v.errors


class _Validator:
    def __init__(self, known: Known) -> None:
        self.known = known
        self.errors: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    # -- generic shapes ------------------------------------------------------------------------

    def keys(self, path: str, obj: dict, allowed: set[str], required: tuple[str, ...] = ()) -> None:
        for key in obj:
            if key not in allowed:
                self.fail(_join(path, key), "unknown key")
        for key in required:
            if key not in obj:
                self.fail(_join(path, key), "is required")

    def obj(self, path: str, value: Any) -> dict | None:
        if not isinstance(value, dict):
            self.fail(path, "must be an object")
            return None
        return value

    def lst(self, path: str, value: Any) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, "must be a list")
            return []
        return value

    def text(self, path: str, value: Any, *, blank: bool = False, max_length: int = 100) -> str | None:
        if not isinstance(value, str) or (not blank and not value.strip()):
            self.fail(path, "must be a non-empty string" if not blank else "must be a string")
            return None
        if len(value) > max_length:
            self.fail(path, f"must be at most {max_length} characters")
            return None
        return value.strip()

    def strings(self, path: str, value: Any, *, max_length: int = 100) -> list[str]:
        out = []
        for i, item in enumerate(self.lst(path, value)):
            s = self.text(f"{path}[{i}]", item, max_length=max_length)
            if s is not None:
                out.append(s)
        return out

    def count(self, path: str, value: Any, default: int | None) -> int | None:
        """A whole number ≥ 0, or null (= unlimited) where the default is None."""
        if value is None and default is None:
            return None
        # bool is an int in Python; `true` as a capacity is a mistake, not 1
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(path, "must be a whole number ≥ 0" + (" or null" if default is None else ""))
            return default
        return value

    def choice(self, path: str, value: Any, choices: tuple[str, ...]) -> str | None:
        if value not in choices:
            self.fail(path, f"must be one of {', '.join(choices)} (got {value!r})")
            return None
        return value

    def url(self, path: str, value: Any) -> str | None:
        if value in (None, ""):
            return ""
        if not isinstance(value, str):
            self.fail(path, "must be a URL")
            return None
        try:
            URLValidator()(value)
        except ValidationError:
            self.fail(path, f"not a valid URL {value!r}")
            return None
        return value

    def unique(self, section: str, names: list[tuple[int, str | None]], key: str = "name") -> None:
        seen: dict[str, int] = {}
        for i, name in names:
            if name is None:
                continue
            if name in seen:
                self.fail(f"{section}[{i}].{key}", f"duplicate of {section}[{seen[name]}]")
            else:
                seen[name] = i

    # -- sections ------------------------------------------------------------------------------

    def org(self, data: Any) -> Org:
        org = Org()
        if not isinstance(data, dict):
            self.fail("$", "must be an object with teams, skills, territories, reps and pools")
            return org
        for key in data:
            if key not in TOP_KEYS:
                self.fail(key, "unknown key")
        teams = [self.team(f"teams[{i}]", x) for i, x in enumerate(self.lst("teams", data.get("teams")))]
        self.unique("teams", [(i, t.name if t else None) for i, t in enumerate(teams)])
        org.teams = [t for t in teams if t]
        org.skills = self.skills(data.get("skills"))
        raw_territories = self.lst("territories", data.get("territories"))
        territories = [self.territory(f"territories[{i}]", x) for i, x in enumerate(raw_territories)]
        self.unique("territories", [(i, t.name if t else None) for i, t in enumerate(territories)])
        org.territories = [t for t in territories if t]

        teams = self.known.teams | {t.name for t in org.teams}
        skills = self.known.skills | set(org.skills)
        territories = self.known.territories | {t.name for t in org.territories}
        raw_reps = self.lst("reps", data.get("reps"))
        specs = [self.rep(f"reps[{i}]", x, teams, skills, territories) for i, x in enumerate(raw_reps)]
        self.unique("reps", [(i, s.username if s else None) for i, s in enumerate(specs)], key="username")
        org.reps = [s for s in specs if s]

        reps = self.known.reps | {s.username for s in org.reps}
        pools = [self.pool(f"pools[{i}]", x, reps) for i, x in enumerate(self.lst("pools", data.get("pools")))]
        self.unique("pools", [(i, p.name if p else None) for i, p in enumerate(pools)])
        org.pools = [p for p in pools if p]
        return org

    def team(self, path: str, value: Any) -> TeamSpec | None:
        if isinstance(value, str):
            value = {"name": value}
        obj = self.obj(path, value)
        if obj is None:
            return None
        self.keys(path, obj, TEAM_KEYS, required=("name",))
        name = self.text(f"{path}.name", obj.get("name"))
        url = self.url(f"{path}.slack_webhook_url", obj["slack_webhook_url"]) if "slack_webhook_url" in obj else None
        return TeamSpec(name=name, slack_webhook_url=url) if name else None

    def skills(self, value: Any) -> list[str]:
        names: list[tuple[int, str | None]] = []
        for i, item in enumerate(self.lst("skills", value)):
            path = f"skills[{i}]"
            if isinstance(item, dict):
                self.keys(path, item, SKILL_KEYS, required=("name",))
                names.append((i, self.text(f"{path}.name", item.get("name"))))
            else:
                names.append((i, self.text(path, item)))
        seen: dict[str, int] = {}
        for i, name in names:
            if name is not None and name in seen:
                self.fail(f"skills[{i}]", f"duplicate of skills[{seen[name]}]")
            elif name is not None:
                seen[name] = i
        return list(seen)

    def territory(self, path: str, value: Any) -> TerritorySpec | None:
        obj = self.obj(path, value)
        if obj is None:
            return None
        self.keys(path, obj, TERRITORY_KEYS, required=("name",))
        name = self.text(f"{path}.name", obj.get("name"))
        countries = []
        for i, code in enumerate(self.lst(f"{path}.countries", obj.get("countries"))):
            if isinstance(code, str) and _COUNTRY.match(code):
                countries.append(code.upper())
            else:
                self.fail(f"{path}.countries[{i}]", f"must be a two-letter country code (got {code!r})")
        regions = self.strings(f"{path}.regions", obj.get("regions"))
        postcodes = self.strings(f"{path}.postcodes", obj.get("postcodes"), max_length=20)
        if name is None:
            return None
        return TerritorySpec(name=name, countries=countries, regions=regions, postcodes=postcodes)

    def rep(self, path: str, value: Any, teams: set[str], skills: set[str], territories: set[str]) -> RepSpec | None:
        obj = self.obj(path, value)
        if obj is None:
            return None
        before = len(self.errors)
        self.keys(path, obj, REP_KEYS, required=("username",))
        username = self.username(f"{path}.username", obj.get("username"))
        spec = RepSpec(username=username or "")

        if "email" in obj:
            spec.email = self.email(f"{path}.email", obj["email"])
        if "name" in obj:
            name = self.text(f"{path}.name", obj["name"], max_length=300)
            if name:
                first, _, last = name.partition(" ")
                if len(first) > 150 or len(last.strip()) > 150:
                    self.fail(f"{path}.name", "first and last name must each be at most 150 characters")
                spec.first_name, spec.last_name = first, last.strip()
        if obj.get("password") is not None:
            spec.password = self.text(f"{path}.password", obj["password"], max_length=128)

        if obj.get("team") is not None:
            spec.team = self.text(f"{path}.team", obj["team"])
            if spec.team and spec.team not in teams:
                self.fail(f"{path}.team", f"unknown team {spec.team!r}")
        if "level" in obj:
            spec.level = self.choice(f"{path}.level", obj["level"], LEVELS) or "junior"
        spec.skills = self.names(f"{path}.skills", obj.get("skills"), skills, "skill")
        spec.territories = self.names(f"{path}.territories", obj.get("territories"), territories, "territory")
        spec.capacity = self.count(f"{path}.capacity", obj.get("capacity"), None)
        spec.daily_cap = self.count(f"{path}.daily_cap", obj.get("daily_cap"), None)
        spec.weight = self.count(f"{path}.weight", obj.get("weight", 1), 1)

        if "timezone" in obj:
            spec.timezone = self.timezone(f"{path}.timezone", obj["timezone"]) or "UTC"
        if obj.get("holidays") not in (None, ""):
            spec.holidays = self.holidays(f"{path}.holidays", obj["holidays"]) or ""
        spec.working_hours = self.working_hours(f"{path}.working_hours", obj.get("working_hours"))
        spec.time_off = self.time_off(f"{path}.time_off", obj.get("time_off"), spec.timezone)
        if "active" in obj:
            if isinstance(obj["active"], bool):
                spec.active = obj["active"]
            else:
                self.fail(f"{path}.active", "must be true or false")
        if "slack_webhook_url" in obj:
            spec.slack_webhook_url = self.url(f"{path}.slack_webhook_url", obj["slack_webhook_url"])
        # A rep with faults is still returned when it has a username, so that the duplicate and
        # pool-member checks can name it; nothing is written anyway when there is any fault.
        return spec if username or len(self.errors) == before else None

    def username(self, path: str, value: Any) -> str | None:
        name = self.text(path, value, max_length=150)
        if name is None:
            return None
        try:
            UnicodeUsernameValidator()(name)
        except ValidationError:
            self.fail(path, f"not a valid username {name!r} (letters, digits and @/./+/-/_ only)")
            return None
        return name

    def email(self, path: str, value: Any) -> str | None:
        if value in (None, ""):
            return ""
        if not isinstance(value, str):
            self.fail(path, "must be an email address")
            return None
        try:
            EmailValidator()(value)
        except ValidationError:
            self.fail(path, f"not a valid email address {value!r}")
            return None
        return value

    def names(self, path: str, value: Any, known: set[str], kind: str) -> list[str]:
        out = []
        for i, name in enumerate(self.strings(path, value)):
            if name not in known:
                self.fail(f"{path}[{i}]", f"unknown {kind} {name!r}")
            elif name not in out:
                out.append(name)
        return out

    def timezone(self, path: str, value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            self.fail(path, f"unknown time zone {value!r}")
            return None
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.fail(path, f"unknown time zone {value!r}")
            return None
        return value

    def holidays(self, path: str, value: Any) -> str | None:
        if not isinstance(value, str) or len(value) > 10:
            self.fail(path, f"must be a country code like 'DE' or 'DE-BY' (got {value!r})")
            return None
        problem = validate_holiday_code(value)
        if problem:
            self.fail(path, problem)
            return None
        return value.upper()

    def clock(self, path: str, value: Any) -> dt.time | None:
        match = _CLOCK.match(value) if isinstance(value, str) else None
        if not match:
            self.fail(path, f"must be a time like '09:00' (got {value!r})")
            return None
        return dt.time(int(match[1]), int(match[2]))

    def working_hours(self, path: str, value: Any) -> list[tuple[int, dt.time, dt.time]]:
        if value is None:
            return []
        obj = self.obj(path, value)
        if obj is None:
            return []
        out: list[tuple[int, dt.time, dt.time]] = []
        for day, shifts in obj.items():
            day_path = _join(path, day)
            if day not in WEEKDAYS:
                self.fail(day_path, f"unknown weekday (use {', '.join(WEEKDAYS)})")
                continue
            # One shift ["09:00", "17:00"] or split shifts [["09:00", "12:00"], ["13:00", "17:00"]]
            if isinstance(shifts, list) and shifts and all(isinstance(s, list) for s in shifts):
                pairs = [(f"{day_path}[{i}]", s) for i, s in enumerate(shifts)]
            else:
                pairs = [(day_path, shifts)]
            starts: dict[dt.time, str] = {}
            for shift_path, shift in pairs:
                if not isinstance(shift, list) or len(shift) != 2:
                    self.fail(shift_path, 'must be ["HH:MM", "HH:MM"] (start, end)')
                    continue
                start, end = self.clock(f"{shift_path}[0]", shift[0]), self.clock(f"{shift_path}[1]", shift[1])
                if start is None or end is None:
                    continue
                if start == end:
                    self.fail(shift_path, "start and end must differ")
                    continue
                if start in starts:
                    self.fail(shift_path, f"starts at the same time as {starts[start]}")
                    continue
                starts[start] = shift_path
                out.append((WEEKDAYS.index(day), start, end))
        return sorted(out)

    def instant(self, path: str, value: Any, tz: str) -> dt.datetime | None:
        if not isinstance(value, str):
            self.fail(path, f"must be an ISO 8601 date-time (got {value!r})")
            return None
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            self.fail(path, f"must be an ISO 8601 date-time (got {value!r})")
            return None
        if parsed.tzinfo is None:
            # No offset: the rep's own wall clock, which is what a manager typing a holiday means.
            parsed = parsed.replace(tzinfo=zoneinfo.ZoneInfo(tz))
        return parsed.astimezone(dt.UTC)

    def time_off(self, path: str, value: Any, tz: str) -> list[tuple[dt.datetime, dt.datetime, str]]:
        periods: list[tuple[dt.datetime, dt.datetime, str, int]] = []
        for i, item in enumerate(self.lst(path, value)):
            item_path = f"{path}[{i}]"
            obj = self.obj(item_path, item)
            if obj is None:
                continue
            self.keys(item_path, obj, TIME_OFF_KEYS, required=("start", "end"))
            start = self.instant(f"{item_path}.start", obj.get("start"), tz) if "start" in obj else None
            end = self.instant(f"{item_path}.end", obj.get("end"), tz) if "end" in obj else None
            reason = self.text(f"{item_path}.reason", obj.get("reason", ""), blank=True, max_length=200) or ""
            if start is None or end is None:
                continue
            if end <= start:
                self.fail(item_path, "end must be after start")
                continue
            periods.append((start, end, reason, i))
        periods.sort()
        # Compare with the furthest-reaching earlier period, so one long absence catches all it covers.
        reach: tuple[dt.datetime, int] | None = None
        for start, end, _, i in periods:
            if reach and start < reach[0]:
                self.fail(f"{path}[{i}]", f"overlaps time_off[{reach[1]}]")
            if reach is None or end > reach[0]:
                reach = (end, i)
        return [(s, e, r) for s, e, r, _ in periods]

    def pool(self, path: str, value: Any, reps: set[str]) -> PoolSpec | None:
        obj = self.obj(path, value)
        if obj is None:
            return None
        self.keys(path, obj, POOL_KEYS, required=("name",))
        name = self.text(f"{path}.name", obj.get("name"))
        spec = PoolSpec(name=name or "")
        if "mode" in obj:
            spec.mode = self.choice(f"{path}.mode", obj["mode"], POOL_MODES) or spec.mode
        if "on_timeout" in obj:
            spec.on_timeout = self.choice(f"{path}.on_timeout", obj["on_timeout"], ON_TIMEOUT) or spec.on_timeout
        for key in ("claim_limit", "daily_claim_cap", "window_minutes", "sla_minutes"):
            setattr(spec, key, self.count(f"{path}.{key}", obj.get(key), None))
        spec.members = self.names(f"{path}.members", obj.get("members"), reps, "rep")
        spec.managers = self.names(f"{path}.managers", obj.get("managers"), reps, "rep")
        return spec if name else None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key

"""Workflows over the sales organisation. `org_load` writes a validated organisation file."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.contrib.auth.models import Group, User
from django.db import transaction

from leadops import roles
from reps.models import Rep, Skill, Team, Territory, TimeOff, WorkingHours
from reps.orgfile import Known, Org, PoolSpec, RepSpec

MANAGER_LEVELS = {Rep.Level.MANAGER, Rep.Level.DIRECTOR}


class OrgFileInvalid(Exception):
    """The organisation file has faults; `errors` holds one line per fault, each naming its path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class Tally:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged

    def count(self, created: bool, changed: bool) -> None:
        if created:
            self.created += 1
        elif changed:
            self.updated += 1
        else:
            self.unchanged += 1


@dataclass
class OrgSummary:
    teams: Tally = field(default_factory=Tally)
    skills: Tally = field(default_factory=Tally)
    territories: Tally = field(default_factory=Tally)
    reps: Tally = field(default_factory=Tally)
    pools: Tally = field(default_factory=Tally)

    @property
    def changed(self) -> bool:
        return any(t.created or t.updated for t in (self.teams, self.skills, self.territories, self.reps, self.pools))

    def __str__(self) -> str:
        parts = []
        for label, plural, tally in (
            ("team", "teams", self.teams),
            ("skill", "skills", self.skills),
            ("territory", "territories", self.territories),
            ("rep", "reps", self.reps),
            ("pool", "pools", self.pools),
        ):
            detail = ", ".join(
                f"{n} {word}"
                for n, word in ((tally.created, "created"), (tally.updated, "updated"), (tally.unchanged, "unchanged"))
                if n
            )
            text = f"{tally.total} {label if tally.total == 1 else plural}"
            parts.append(f"{text} ({detail})" if detail else text)
        return "org loaded: " + ", ".join(parts)


def known_names() -> Known:
    """What the database already holds, so a file may refer to it without redefining it."""
    return Known(
        teams=frozenset(Team.objects.values_list("name", flat=True)),
        skills=frozenset(Skill.objects.values_list("name", flat=True)),
        territories=frozenset(Territory.objects.values_list("name", flat=True)),
        reps=frozenset(Rep.objects.values_list("user__username", flat=True)),
    )


def org_load(org: Org, *, actor: User | None = None) -> OrgSummary:
    """Upsert everything in `org` (already validated) in one transaction.

    Rows are saved only when a value differs, and child sets (hours, time off, memberships) are
    replaced only when they differ, so loading the same file twice changes no row at all.
    """
    summary = OrgSummary()
    with transaction.atomic():
        teams = {}
        for spec in org.teams:
            defaults = {} if spec.slack_webhook_url is None else {"slack_webhook_url": spec.slack_webhook_url}
            teams[spec.name], created, changed = _upsert(Team, {"name": spec.name}, defaults)
            summary.teams.count(created, changed)
        for name in org.skills:
            _, created, changed = _upsert(Skill, {"name": name}, {})
            summary.skills.count(created, changed)
        for spec in org.territories:
            _, created, changed = _upsert(
                Territory,
                {"name": spec.name},
                {"countries": spec.countries, "regions": spec.regions, "postcodes": spec.postcodes},
            )
            summary.territories.count(created, changed)

        reps_group = Group.objects.get_or_create(name=roles.REPS)[0]
        managers_group = Group.objects.get_or_create(name=roles.MANAGERS)[0]
        for spec in org.reps:
            created, changed = _rep_upsert(spec, reps_group=reps_group, managers_group=managers_group)
            summary.reps.count(created, changed)

        for spec in org.pools:
            created, changed = _pool_upsert(spec)
            summary.pools.count(created, changed)
    return summary


def _upsert(model, lookup: dict, values: dict):
    """get-or-create by natural key, then save only the fields whose value differs."""
    obj = model.objects.filter(**lookup).first()
    if obj is None:
        return model.objects.create(**lookup, **values), True, False
    dirty = [name for name, value in values.items() if getattr(obj, name) != value]
    for name in dirty:
        setattr(obj, name, values[name])
    if dirty:
        obj.save(update_fields=dirty)
    return obj, False, bool(dirty)


def _rep_upsert(spec: RepSpec, *, reps_group: Group, managers_group: Group) -> tuple[bool, bool]:
    user_values = {
        k: v
        for k, v in (("email", spec.email), ("first_name", spec.first_name), ("last_name", spec.last_name))
        if v is not None
    }
    user, user_created, changed = _upsert(User, {"username": spec.username}, user_values)
    if user_created or (spec.password and not user.has_usable_password()):
        # Reps without a password in the file cannot log in until someone sets one (admin,
        # `changepassword`, or the password-reset email); a password is never overwritten.
        if spec.password:
            user.set_password(spec.password)
        else:
            user.set_unusable_password()
        user.save(update_fields=["password"])
        changed = True

    is_manager = spec.level in MANAGER_LEVELS
    groups = set(user.groups.values_list("name", flat=True))
    if roles.REPS not in groups:
        user.groups.add(reps_group)
        changed = True
    if is_manager and roles.MANAGERS not in groups:
        user.groups.add(managers_group)
        changed = True
    if is_manager and not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
        changed = True

    values = {
        "team": Team.objects.get(name=spec.team) if spec.team else None,
        "level": spec.level,
        "capacity": spec.capacity,
        "daily_cap": spec.daily_cap,
        "weight": spec.weight,
        "timezone": spec.timezone,
        "holidays": spec.holidays,
        "active": spec.active,
    }
    if spec.slack_webhook_url is not None:
        values["slack_webhook_url"] = spec.slack_webhook_url
    rep, rep_created, rep_changed = _upsert(Rep, {"user": user}, values)
    changed |= rep_changed

    changed |= _set_m2m(rep.skills, Skill.objects.filter(name__in=spec.skills))
    changed |= _set_m2m(rep.territories, Territory.objects.filter(name__in=spec.territories))

    wanted_hours = sorted(spec.working_hours)
    have_hours = sorted(rep.working_hours.values_list("weekday", "start", "end"))
    if wanted_hours != have_hours:
        rep.working_hours.all().delete()
        WorkingHours.objects.bulk_create(
            WorkingHours(rep=rep, weekday=day, start=start, end=end) for day, start, end in wanted_hours
        )
        changed = True

    wanted_off = sorted(spec.time_off)
    have_off = sorted(rep.time_off.values_list("start", "end", "reason"))
    if wanted_off != have_off:
        rep.time_off.all().delete()
        TimeOff.objects.bulk_create(
            TimeOff(rep=rep, start=start, end=end, reason=reason) for start, end, reason in wanted_off
        )
        changed = True
    return user_created or rep_created, changed and not (user_created or rep_created)


def _set_m2m(manager, wanted: Iterable) -> bool:
    wanted_ids = {obj.pk for obj in wanted}
    if wanted_ids == set(manager.values_list("pk", flat=True)):
        return False
    manager.set(wanted_ids)
    return True


def _pool_upsert(spec: PoolSpec) -> tuple[bool, bool]:
    """The one write into routing: a pool is organisation data even though routing owns the model."""
    from routing.models import Pool, PoolMembership

    pool, created, changed = _upsert(
        Pool,
        {"name": spec.name},
        {
            "mode": spec.mode,
            "claim_limit": spec.claim_limit,
            "daily_claim_cap": spec.daily_claim_cap,
            "window_minutes": spec.window_minutes,
            "on_timeout": spec.on_timeout,
            "sla_minutes": spec.sla_minutes,
        },
    )
    members = {r.pk: r for r in Rep.objects.filter(user__username__in=spec.members)}
    have = set(pool.memberships.values_list("rep_id", flat=True))
    # Keep existing memberships (and their joined_at) for members who stay.
    if set(members) != have:
        pool.memberships.exclude(rep_id__in=members).delete()
        PoolMembership.objects.bulk_create(PoolMembership(pool=pool, rep=members[pk]) for pk in members.keys() - have)
        changed = True
    changed |= _set_m2m(pool.managers, Rep.objects.filter(user__username__in=spec.managers))
    return created, changed and not created

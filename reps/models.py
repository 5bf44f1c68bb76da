"""The sales organisation: teams, territories, skills, reps and when they can work.

Nothing here knows about leads (dependencies point reports → routing → reps).
"""

from __future__ import annotations

import fnmatch
import zoneinfo
from functools import cached_property

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"unknown time zone {value!r}") from exc


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slack_webhook_url = models.URLField(
        blank=True, help_text="Slack-compatible incoming webhook for the whole team."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Skill(models.Model):
    name = models.CharField(max_length=100, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Territory(models.Model):
    """A geographic patch: countries (ISO alpha-2), regions and postcode patterns (`80*`)."""

    name = models.CharField(max_length=100, unique=True)
    countries = models.JSONField(default=list, blank=True)
    regions = models.JSONField(default=list, blank=True)
    postcodes = models.JSONField(default=list, blank=True, help_text="Exact codes or prefixes like 80*")

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "territories"

    def __str__(self) -> str:
        return self.name

    def covers(self, country: str = "", region: str = "", postcode: str = "") -> bool:
        return territory_covers(self.countries, self.regions, self.postcodes, country, region, postcode)


def territory_covers(
    countries: list[str],
    regions: list[str],
    postcodes: list[str],
    country: str = "",
    region: str = "",
    postcode: str = "",
) -> bool:
    """A territory covers a lead when every dimension it defines matches the lead.

    Countries narrow first; regions and postcodes (when given) must also match, so
    "DE + 80*" means Munich, not all of Germany or every 80xxx anywhere.
    """
    country = (country or "").upper()
    if countries and country not in {c.upper() for c in countries}:
        return False
    if regions and (region or "").casefold() not in {r.casefold() for r in regions}:
        return False
    if postcodes:
        code = (postcode or "").replace(" ", "").upper()
        if not code or not any(fnmatch.fnmatchcase(code, p.replace(" ", "").upper()) for p in postcodes):
            return False
    return bool(countries or regions or postcodes)


class Rep(models.Model):
    class Level(models.TextChoices):
        JUNIOR = "junior", "Junior"
        SENIOR = "senior", "Senior"
        DIRECTOR = "director", "Director"
        MANAGER = "manager", "Manager"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rep")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="reps")
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.JUNIOR, db_index=True)
    skills = models.ManyToManyField(Skill, blank=True, related_name="reps")
    territories = models.ManyToManyField(Territory, blank=True, related_name="reps")
    capacity = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most open leads (assigned or contacted) at once; empty = unlimited."
    )
    daily_cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most leads given in any 24 hours; empty = unlimited."
    )
    weight = models.PositiveIntegerField(default=1, help_text="Share in weighted rotation.")
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    holidays = models.CharField(
        max_length=10, blank=True, help_text="Country (DE) or subdivision (DE-BY) whose public holidays are off."
    )
    active = models.BooleanField(default=True, db_index=True)
    slack_webhook_url = models.URLField(blank=True)
    notify_email = models.BooleanField(default=True, help_text="Send new-lead and SLA emails.")
    notify_webhook = models.BooleanField(default=True, help_text="Post to the Slack-compatible webhook.")
    quiet_start = models.TimeField(null=True, blank=True, help_text="No email/webhook from (rep's time).")
    quiet_end = models.TimeField(null=True, blank=True)

    class Meta:
        ordering = ["user__username"]

    def __str__(self) -> str:
        return self.display_name

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def display_name(self) -> str:
        return self.user.get_full_name() or self.user.username

    @cached_property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class WorkingHours(models.Model):
    """One shift on one weekday, in the rep's own time zone. An end before the start runs past midnight."""

    rep = models.ForeignKey(Rep, on_delete=models.CASCADE, related_name="working_hours")
    weekday = models.PositiveSmallIntegerField(choices=[(i, d.title()) for i, d in enumerate(WEEKDAYS)])
    start = models.TimeField()
    end = models.TimeField()

    class Meta:
        ordering = ["rep", "weekday", "start"]
        verbose_name_plural = "working hours"
        constraints = [models.UniqueConstraint(fields=["rep", "weekday", "start"], name="unique_shift_start")]

    def __str__(self) -> str:
        return f"{WEEKDAYS[self.weekday]} {self.start:%H:%M}–{self.end:%H:%M}"

    def clean(self) -> None:
        if self.start == self.end:
            raise ValidationError("A shift needs different start and end times.")


class TimeOff(models.Model):
    rep = models.ForeignKey(Rep, on_delete=models.CASCADE, related_name="time_off")
    start = models.DateTimeField()
    end = models.DateTimeField()
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["rep", "start"]
        verbose_name_plural = "time off"
        indexes = [models.Index(fields=["rep", "end"])]
        constraints = [
            models.CheckConstraint(condition=models.Q(end__gt=models.F("start")), name="time_off_end_after_start")
        ]

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} → {self.end:%Y-%m-%d %H:%M}"

    def clean(self) -> None:
        if self.start and self.end and self.end <= self.start:
            raise ValidationError("Time off must end after it starts.")

"""The managers' home for the sales organisation: reps with their hours and time off, teams, patches."""

from __future__ import annotations

from django.contrib import admin
from django.db import models
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from reps.availability import schedule_for
from reps.models import Rep, Skill, Team, Territory, TimeOff, WorkingHours

# Webhook URLs are https in practice; saying so also keeps Django 5.2's URLField scheme warning away.
URL_FIELDS = {models.URLField: {"assume_scheme": "https"}}


class WorkingHoursInline(admin.TabularInline):
    model = WorkingHours
    extra = 0
    fields = ["weekday", "start", "end"]
    verbose_name = "shift"
    # Shown above the inline, where a manager needs the rules while typing shifts.
    verbose_name_plural = "working hours (own time zone; none = any hour; end before start = past midnight)"


class TimeOffInline(admin.TabularInline):
    model = TimeOff
    extra = 0
    fields = ["start", "end", "reason"]


@admin.register(Rep)
class RepAdmin(admin.ModelAdmin):
    list_display = [
        "display_name", "username", "team", "level", "active", "capacity", "daily_cap", "weight",
        "timezone", "available_now",
    ]
    list_filter = ["team", "level", "active"]
    list_select_related = ["user", "team"]
    search_fields = ["user__username", "user__first_name", "user__last_name", "user__email"]
    # The user is a plain select: managers hold no permission on auth.User, which autocomplete would need.
    autocomplete_fields = ["team"]
    filter_horizontal = ["skills", "territories"]
    inlines = [WorkingHoursInline, TimeOffInline]
    ordering = ["user__username"]
    formfield_overrides = URL_FIELDS
    fieldsets = [
        (None, {"fields": ["user", "team", "level", "active"]}),
        ("What they cover", {"fields": ["skills", "territories"]}),
        ("How much they get", {"fields": ["capacity", "daily_cap", "weight"]}),
        ("When they work", {"fields": ["timezone", "holidays"]}),
        (
            "Notifications",
            {
                "fields": ["notify_email", "notify_webhook", "slack_webhook_url", "quiet_start", "quiet_end"],
                "classes": ["collapse"],
            },
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Rep]:
        # "available now" needs every rep's hours and time off: two queries for the page, not two per row.
        return super().get_queryset(request).prefetch_related("working_hours", "time_off")

    @admin.display(description="name", ordering="user__last_name")
    def display_name(self, rep: Rep) -> str:
        return rep.display_name

    @admin.display(description="username", ordering="user__username")
    def username(self, rep: Rep) -> str:
        return rep.user.username

    @admin.display(description="available now", boolean=True)
    def available_now(self, rep: Rep) -> bool:
        return schedule_for(rep).is_available(timezone.now())


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "rep_count"]
    search_fields = ["name"]
    formfield_overrides = URL_FIELDS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Team]:
        return super().get_queryset(request).annotate(rep_count=Count("reps"))

    @admin.display(description="reps", ordering="rep_count")
    def rep_count(self, team: Team) -> int:
        return team.rep_count


@admin.register(Territory)
class TerritoryAdmin(admin.ModelAdmin):
    list_display = ["name", "country_list", "region_list", "postcode_list"]
    search_fields = ["name"]

    @admin.display(description="countries")
    def country_list(self, territory: Territory) -> str:
        return ", ".join(territory.countries) or "—"

    @admin.display(description="regions")
    def region_list(self, territory: Territory) -> str:
        return ", ".join(territory.regions) or "—"

    @admin.display(description="postcodes")
    def postcode_list(self, territory: Territory) -> str:
        return ", ".join(territory.postcodes) or "—"


@admin.register(Skill)
class SkillAdmin(admin.ModelAdmin):
    list_display = ["name", "rep_count"]
    search_fields = ["name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Skill]:
        return super().get_queryset(request).annotate(rep_count=Count("reps"))

    @admin.display(description="reps", ordering="rep_count")
    def rep_count(self, skill: Skill) -> int:
        return skill.rep_count

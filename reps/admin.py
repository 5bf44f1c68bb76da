"""The managers' home for the sales organisation: reps with their hours and time off, teams, patches."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.forms import SetPasswordForm
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from leadops import roles
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
    readonly_fields = ["password"]
    fieldsets = [
        (None, {"fields": ["user", "password", "team", "level", "active"]}),
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

    def get_urls(self):
        own = [path("<int:rep_id>/password/", self.admin_site.admin_view(self.password_view), name="reps_rep_password")]
        return own + super().get_urls()

    @admin.display(description="password")
    def password(self, rep: Rep) -> str:
        if rep.pk is None:
            return "Save the rep first, then set a password here."
        state = "set" if rep.user.has_usable_password() else "none yet: the rep cannot log in"
        return format_html('{} · <a href="{}">Set a new password…</a>', state,
                           reverse("admin:reps_rep_password", args=[rep.pk]))

    def password_view(self, request: HttpRequest, rep_id: int) -> HttpResponse:
        """A manager sets the password of a rep (onboarding, a forgotten password). Only of a plain rep:
        the accounts of managers, ops staff, staff and superusers stay with a superuser."""
        rep = get_object_or_404(Rep.objects.select_related("user"), pk=rep_id)
        user = rep.user
        if not self.has_change_permission(request, rep):
            raise PermissionDenied
        # A rep and nothing else: an ops user's or a manager's password would let a manager act as them.
        plain_rep = not (user.is_superuser or user.is_staff) and set(
            user.groups.values_list("name", flat=True)) <= {roles.REPS}
        if not (request.user.is_superuser or plain_rep):
            raise PermissionDenied("Only a superuser sets the password of someone who is more than a rep.")
        form = SetPasswordForm(user, request.POST or None)
        if request.method == "POST" and form.is_valid():
            form.save()
            self.log_change(request, rep, "Set the rep's password.")
            messages.success(request, f"New password set for {user.username}.")
            return redirect("admin:reps_rep_change", rep.pk)
        return TemplateResponse(request, "admin/reps/rep/password.html", {
            **self.admin_site.each_context(request), "title": f"Set a password for {rep.display_name}",
            "form": form, "rep": rep, "opts": self.model._meta,
        })

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

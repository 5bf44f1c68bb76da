"""Pools in the admin: settings, members (with "add a whole team / level"), and live counts."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import Count, Min, Q
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince

from reps.models import Rep, Team
from routing.models import Lead, LeadEvent, Pool, PoolMembership


class PoolMembershipInline(admin.TabularInline):
    model = PoolMembership
    extra = 0
    raw_id_fields = ["rep"]
    readonly_fields = ["joined_at"]


class PoolForm(forms.ModelForm):
    add_team = forms.ModelChoiceField(
        queryset=Team.objects.all(), required=False, help_text="Also add every active rep of this team."
    )
    add_level = forms.ChoiceField(
        choices=[("", "—"), *Rep.Level.choices], required=False,
        help_text="Also add every active rep of this level (combined with the team when both are set).",
    )

    class Meta:
        model = Pool
        fields = ["name", "mode", "managers", "claim_limit", "daily_claim_cap", "sla_minutes", "window_minutes",
                  "on_timeout"]


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    form = PoolForm
    inlines = [PoolMembershipInline]
    list_display = ["name", "mode", "members_count", "waiting", "oldest_waiting", "claimed_today", "claim_limit",
                    "on_timeout", "board_link"]
    list_filter = ["mode", "on_timeout"]
    search_fields = ["name"]
    filter_horizontal = ["managers"]
    fieldsets = [
        (None, {"fields": ["name", "mode", "managers"]}),
        ("Fairness", {"fields": ["claim_limit", "daily_claim_cap", "sla_minutes"]}),
        ("When nobody claims", {"fields": ["window_minutes", "on_timeout"]}),
        ("Add members in bulk", {"fields": ["add_team", "add_level"]}),
    ]

    def get_queryset(self, request):
        waiting = Q(leads__status=Lead.Status.POOLED, leads__owner__isnull=True)
        return (
            super()
            .get_queryset(request)
            .annotate(
                _waiting=Count("leads", filter=waiting, distinct=True),
                _oldest=Min("leads__pooled_at", filter=waiting),
                _members=Count("memberships", distinct=True),
            )
        )

    def changelist_view(self, request, extra_context=None):
        start = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
        self._claimed_today = dict(
            LeadEvent.objects.filter(kind=LeadEvent.Kind.CLAIMED, at__gte=start, pool__isnull=False)
            .values_list("pool_id")
            .annotate(n=Count("id"))
        )
        return super().changelist_view(request, extra_context)

    @admin.display(description="members", ordering="_members")
    def members_count(self, obj):
        return obj._members

    @admin.display(description="waiting", ordering="_waiting")
    def waiting(self, obj):
        return obj._waiting

    @admin.display(description="oldest waiting", ordering="_oldest")
    def oldest_waiting(self, obj):
        return timesince(obj._oldest) if obj._oldest else "—"

    @admin.display(description="claimed today")
    def claimed_today(self, obj):
        return getattr(self, "_claimed_today", {}).get(obj.pk, 0)

    @admin.display(description="claims & hoarding")
    def board_link(self, obj):
        return format_html('<a href="/pools/{}/">per rep →</a>', obj.pk)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        team, level = form.cleaned_data.get("add_team"), form.cleaned_data.get("add_level")
        if not team and not level:
            return
        reps = Rep.objects.filter(active=True)
        if team:
            reps = reps.filter(team=team)
        if level:
            reps = reps.filter(level=level)
        pool = form.instance
        existing = set(pool.memberships.values_list("rep_id", flat=True))
        new = [PoolMembership(pool=pool, rep=r) for r in reps if r.pk not in existing]
        PoolMembership.objects.bulk_create(new)
        self.message_user(request, f"Added {len(new)} member(s) to {pool.name}.")

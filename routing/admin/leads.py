"""Leads in the managers' admin: the story of each lead at a glance, its timeline, and reassignment."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.cache import cache
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from reps.models import Rep
from routing.models import Lead, LeadEvent


class LeadEventInline(admin.TabularInline):
    model = LeadEvent
    extra = 0
    can_delete = False
    ordering = ["at", "id"]
    fields = ["at", "kind", "rep", "actor", "rule", "pool", "detail_text"]
    readonly_fields = fields
    verbose_name = "timeline event"
    verbose_name_plural = "Timeline"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[LeadEvent]:
        # Every column names a related row; without this the timeline costs four queries per event.
        return super().get_queryset(request).select_related("rep__user", "actor", "rule", "pool")

    @admin.display(description="detail")
    def detail_text(self, event: LeadEvent) -> str:
        return _detail_summary(event.detail)


def _detail_summary(detail: dict) -> str:
    if not detail:
        return ""
    parts = []
    for key, value in detail.items():
        if isinstance(value, list | dict):
            value = f"{len(value)} item(s)" if key in ("rules", "trace", "candidates") else value
        parts.append(f"{key}: {value}")
    text = "; ".join(str(p) for p in parts)
    return text if len(text) < 300 else text[:297] + "…"


class ReassignForm(forms.Form):
    rep = forms.ModelChoiceField(
        queryset=Rep.objects.filter(active=True).select_related("user", "team"), label="New owner"
    )
    reason = forms.CharField(max_length=200, required=False, help_text="Shown in the lead's timeline.")


class OwnerFilter(admin.RelatedOnlyFieldListFilter):
    """Reps who own some lead, named without a query per rep."""

    def field_choices(self, field, request, model_admin):
        # NOT NULL lets PostgreSQL read the owners from the partial lead_owner_status index.
        owners = model_admin.get_queryset(request).filter(owner__isnull=False).values("owner_id")
        reps = Rep.objects.filter(pk__in=owners).select_related("user").order_by("user__username")
        return [(rep.pk, rep.display_name) for rep in reps]


class CachedValuesFilter(admin.AllValuesFieldListFilter):
    """A column's values to filter by, read from the leads at most every five minutes. For country and
    industry, which have no index (each was paid on every imported lead): reading their distinct values
    over a million leads took 150 ms on every changelist page; a value first seen in the last five
    minutes is offered once the list is read again."""

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        key = f"admin-lead-values:{field_path}"
        values = cache.get(key)
        if values is None:
            values = list(self.lookup_choices)
            cache.set(key, values, 300)
        self.lookup_choices = values


class SlaFilter(admin.SimpleListFilter):
    title = "SLA"
    parameter_name = "sla"

    def lookups(self, request, model_admin):
        return [("overdue", "Overdue now"), ("running", "Clock running"), ("touched", "Touched")]

    def queryset(self, request, queryset):
        now = timezone.now()
        waiting = queryset.filter(first_touch_at__isnull=True, status="assigned")
        if self.value() == "overdue":
            return waiting.filter(sla_due_at__lt=now)
        if self.value() == "running":
            return waiting.filter(sla_due_at__gte=now)
        if self.value() == "touched":
            return queryset.filter(first_touch_at__isnull=False)
        return queryset


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin):
    list_display = [
        "who", "company", "status_badge", "owner", "pool", "rule", "source", "country", "company_size", "score",
        "received_at", "speed_to_lead", "sla",
    ]
    list_display_links = ["who"]
    list_filter = ["status", SlaFilter, "priority", "source", "pool", ("owner", OwnerFilter),
                   ("country", CachedValuesFilter), ("industry", CachedValuesFilter), "routing_held"]
    search_fields = ["email", "company", "first_name", "last_name", "phone"]
    date_hierarchy = "received_at"
    list_select_related = ["owner__user", "pool", "rule"]
    list_per_page = 50
    autocomplete_fields = ["owner"]
    inlines = [LeadEventInline]
    actions = ["reassign"]
    readonly_fields = [
        "status", "pool", "rule", "routed_at", "pooled_at", "assigned_at", "claimed_at", "notified_at",
        "first_touch_at", "closed_at", "sla_due_at", "escalation_step", "reassign_count", "merged_count",
        "import_job", "routing_held", "created_at", "updated_at", "explain_link",
    ]
    fieldsets = [
        ("Person", {"fields": [("first_name", "last_name"), ("email", "phone"), ("company", "title")]}),
        ("Routing attributes", {"fields": [("country", "region", "postcode"), ("industry", "company_size", "product"),
                                           ("source", "score", "priority"), "value", "received_at", "extra"]}),
        ("Ownership", {"fields": [("status", "owner"), ("pool", "rule"), "routing_held", "explain_link"],
                       "description": "Change the owner with the “Reassign to…” action so it is logged."}),
        ("Clock", {"fields": [("routed_at", "pooled_at", "assigned_at"),
                              ("claimed_at", "notified_at", "first_touch_at"),
                              ("sla_due_at", "escalation_step", "reassign_count"), "closed_at"],
                   "classes": ["collapse"]}),
        ("Bookkeeping", {"fields": [("merged_count", "import_job"), ("created_at", "updated_at")],
                         "classes": ["collapse"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        # Ownership changes go through the logged reassign action, never a silent field edit.
        if obj is not None:
            return [*self.readonly_fields, "owner"]
        return self.readonly_fields

    @admin.display(description="lead", ordering="last_name")
    def who(self, lead: Lead) -> str:
        return lead.full_name or lead.email or lead.phone or f"#{lead.pk}"

    @admin.display(description="status", ordering="status")
    def status_badge(self, lead: Lead) -> str:
        return format_html('<span class="lo-badge lo-{}">{}</span>', lead.status, lead.get_status_display())

    @admin.display(description="speed to lead")
    def speed_to_lead(self, lead: Lead) -> str:
        if not lead.first_touch_at:
            return "—"
        return _duration(lead.first_touch_at - lead.received_at)

    @admin.display(description="SLA due", ordering="sla_due_at")
    def sla(self, lead: Lead) -> str:
        if not lead.sla_due_at or lead.first_touch_at or lead.status != "assigned":
            return "—"
        left = lead.sla_due_at - timezone.now()
        if left.total_seconds() < 0:
            return format_html('<strong style="color:#d4353b">overdue {}</strong>', _duration(-left))
        return f"in {_duration(left)}"

    @admin.display(description="why this owner?")
    def explain_link(self, lead: Lead) -> str:
        if not lead.pk:
            return "—"
        return format_html('<a href="{}">Explain the routing decision</a>', reverse("lead_explain", args=[lead.pk]))

    @admin.action(description="Reassign to…", permissions=["reassign"])
    def reassign(self, request: HttpRequest, queryset: QuerySet[Lead]) -> HttpResponse | None:
        from routing.services import LeadError, lead_assign_manual

        if "apply" in request.POST:
            form = ReassignForm(request.POST)
            if form.is_valid():
                done, refused = 0, []
                for lead in queryset:
                    try:
                        lead_assign_manual(lead, form.cleaned_data["rep"], actor=request.user,
                                           reason=form.cleaned_data["reason"])
                        done += 1
                    except LeadError as exc:
                        refused.append(f"{lead}: {exc}")
                self.message_user(request, f"Reassigned {done} lead(s) to {form.cleaned_data['rep']}.",
                                  messages.SUCCESS)
                for line in refused:
                    self.message_user(request, line, messages.WARNING)
                return None
        else:
            form = ReassignForm()
        context = {
            **self.admin_site.each_context(request),
            "title": "Reassign leads",
            "leads": queryset,
            "form": form,
            "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/routing/lead/reassign.html", context)

    def has_reassign_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("routing.reassign_lead")


def _duration(delta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} d {hours % 24} h"

"""The filter bar shared by every report (django-filter), and how it becomes a `Scope`.

Everything lives in the query string, so a report URL is a bookmark.
"""

from __future__ import annotations

import zoneinfo

import django_filters
from django import forms
from django.conf import settings
from django.utils import timezone

from reports.selectors import Scope, make_scope
from reps.models import Rep, Team
from routing.models import Lead, Pool, Rule

DATE = forms.DateInput(attrs={"type": "date"})


class ReportFilter(django_filters.FilterSet):
    start = django_filters.DateFilter(field_name="received_at", lookup_expr="date__gte", label="From", widget=DATE)
    end = django_filters.DateFilter(field_name="received_at", lookup_expr="date__lte", label="To", widget=DATE)
    team = django_filters.ModelChoiceFilter(
        field_name="owner__team", queryset=Team.objects.all(), empty_label="All", label="Team"
    )
    rep = django_filters.ModelChoiceFilter(
        field_name="owner", queryset=Rep.objects.select_related("user"), empty_label="All", label="Rep"
    )
    source = django_filters.CharFilter(field_name="source", label="Source")
    rule = django_filters.ModelChoiceFilter(
        field_name="rule", queryset=Rule.objects.filter(rule_set__status="published"), empty_label="All", label="Rule"
    )
    pool = django_filters.ModelChoiceFilter(
        field_name="pool", queryset=Pool.objects.all(), empty_label="All", label="Pool"
    )
    tz = django_filters.CharFilter(method="keep", label="Time zone")

    class Meta:
        model = Lead
        fields = ["start", "end", "team", "rep", "source", "rule", "pool", "tz"]

    def keep(self, queryset, name, value):
        return queryset

    def __init__(self, data=None, *args, **kwargs):
        super().__init__(data, *args, **kwargs)
        rule_field = self.form.fields["rule"]
        # A filter link from an older rule version still works: accept any rule id that exists.
        rule_field.queryset = Rule.objects.select_related("rule_set")
        rule_field.label_from_instance = lambda r: f"{r.name} (v{r.rule_set.version})"
        self.form.fields["rep"].label_from_instance = lambda rep: rep.display_name
        self.form.fields["tz"].widget.attrs["placeholder"] = settings.TIME_ZONE


def resolve_tz(name: str | None) -> zoneinfo.ZoneInfo:
    """?tz= when it names a real zone, else the site's TIME_ZONE."""
    if name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return zoneinfo.ZoneInfo(settings.TIME_ZONE)


def scope_from(filterset: ReportFilter, *, now=None, fixed: dict | None = None) -> Scope:
    """Invalid values are dropped (the form shows why) rather than failing the page."""
    form = filterset.form
    form.is_valid()
    data = getattr(form, "cleaned_data", {})
    dims = {
        "team": data["team"].pk if data.get("team") else None,
        "rep": data["rep"].pk if data.get("rep") else None,
        "source": (data.get("source") or "").strip(),
        "rule": data["rule"].pk if data.get("rule") else None,
        "pool": data["pool"].pk if data.get("pool") else None,
    }
    dims.update(fixed or {})
    return make_scope(
        now=now or timezone.now(),
        tz=resolve_tz(data.get("tz")),
        start_date=data.get("start"),
        end_date=data.get("end"),
        **dims,
    )

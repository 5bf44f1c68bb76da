"""django-filter sets for lead lists (the rep board's pool table)."""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q

from routing.models import Lead, Pool


class WaitingLeadFilter(django_filters.FilterSet):
    """What helps a rep choose a lead: who, how big, where, how good, how old, from where."""

    q = django_filters.CharFilter(method="search", label="Search")
    pool = django_filters.ModelChoiceFilter(queryset=Pool.objects.none(), empty_label="All my pools")
    country = django_filters.CharFilter(lookup_expr="iexact", label="Country",
                                        widget=forms.TextInput(attrs={"size": 3, "placeholder": "DE"}))
    industry = django_filters.CharFilter(lookup_expr="icontains")
    source = django_filters.CharFilter(lookup_expr="iexact")
    min_size = django_filters.NumberFilter(field_name="company_size", lookup_expr="gte", label="Size ≥")
    min_score = django_filters.NumberFilter(field_name="score", lookup_expr="gte", label="Score ≥")
    sort = django_filters.OrderingFilter(
        fields=(
            ("company", "company"),
            ("company_size", "size"),
            ("country", "country"),
            ("industry", "industry"),
            ("score", "score"),
            ("received_at", "received"),
            ("source", "source"),
        ),
        label="Sort",
    )

    class Meta:
        model = Lead
        fields = ["q", "pool", "country", "industry", "source", "min_size", "min_score"]

    def __init__(self, *args, pools=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if pools is not None:
            self.filters["pool"].queryset = pools

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(
            Q(company__icontains=value) | Q(first_name__icontains=value) | Q(last_name__icontains=value)
            | Q(title__icontains=value)
        )

"""Reads over the sales organisation that routing, pages and reports share."""

from __future__ import annotations

from django.db.models import QuerySet

from reps.availability import Schedule, schedule_for
from reps.models import Rep


def reps_with_schedules(queryset: QuerySet[Rep] | None = None) -> list[tuple[Rep, Schedule]]:
    """Reps with their Schedule, in a fixed number of queries however many reps there are.

    The routing engine asks "is this rep workable at T?" for every candidate of every lead; building
    each Schedule from prefetched rows keeps that from turning into queries per rep.
    """
    qs = Rep.objects.all() if queryset is None else queryset
    qs = qs.select_related("user", "team").prefetch_related("working_hours", "time_off", "skills", "territories")
    return [(rep, schedule_for(rep)) for rep in qs]

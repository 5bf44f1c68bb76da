"""Workflows over leads: anything touching more than one row lives here (STYLE §1).

Every change of hands writes a LeadEvent in the same transaction as the change.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone

from routing.models import Lead, LeadEvent


class LeadError(Exception):
    """A domain error the views and the API turn into a message / status code."""


class TransitionRefused(LeadError):
    pass


def record_event(
    lead: Lead,
    kind: str,
    *,
    at: dt.datetime | None = None,
    actor=None,
    rep=None,
    rule=None,
    pool=None,
    **detail: Any,
) -> LeadEvent:
    return LeadEvent.objects.create(
        lead=lead, kind=kind, at=at or timezone.now(), actor=actor, rep=rep, rule=rule, pool=pool, detail=detail
    )


def lead_set_status(lead: Lead, status: str, *, actor=None, now: dt.datetime | None = None) -> Lead:
    """The owner records progress (contacted/qualified/won/lost). The first touch stops the SLA clock."""
    now = now or timezone.now()
    with transaction.atomic():
        lead = Lead.objects.select_for_update().get(pk=lead.pk)
        if status == lead.status:
            return lead
        if not lead.can_become(status) or status in ("unassigned", "pooled", "assigned"):
            raise TransitionRefused(f"cannot go from {lead.status} to {status}")
        previous = lead.status
        lead.status = status
        fields = ["status", "updated_at"]
        if lead.first_touch_at is None:
            lead.first_touch_at = now
            fields.append("first_touch_at")
        if status in ("won", "lost"):
            lead.closed_at = now
            fields.append("closed_at")
        lead.save(update_fields=fields)
        record_event(lead, LeadEvent.Kind.STATUS_CHANGED, at=now, actor=actor, rep=lead.owner,
                     **{"from": previous, "to": status})
    return lead


def route_leads(lead_ids: list[int], *, now: dt.datetime | None = None, actor=None) -> dict[str, int]:
    """Route the given unassigned leads with the published rule set.

    Returns counts {"assigned", "pooled", "unassigned"}. (Placeholder until the engine lands:
    every lead stays unassigned.)
    """
    return {"assigned": 0, "pooled": 0, "unassigned": len(lead_ids)}

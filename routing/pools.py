"""Shared pools: entering, claiming, releasing and pool timeouts.

(Skeleton: the pools work fills this in. `lead_enter_pool` is what routing calls.)
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from routing.models import Lead, LeadEvent, Pool
from routing.services import record_event


def lead_enter_pool(lead: Lead, pool: Pool, *, rule=None, now: dt.datetime | None = None, actor=None) -> Lead:
    """Put an unowned lead into `pool` (inside the caller's transaction) and write the `pooled` event."""
    now = now or timezone.now()
    lead.status = Lead.Status.POOLED
    lead.pool = pool
    lead.owner = None
    lead.rule = rule
    lead.pooled_at = lead.pooled_at or now
    lead.routed_at = lead.routed_at or now
    if pool.window_minutes:
        lead.pool_due_at = now + dt.timedelta(minutes=pool.window_minutes)
    lead.save(update_fields=["status", "pool", "owner", "rule", "pooled_at", "routed_at", "pool_due_at", "updated_at"])
    record_event(lead, LeadEvent.Kind.POOLED, at=now, actor=actor, pool=pool, rule=rule, mode=pool.mode)
    return lead

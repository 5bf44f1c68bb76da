"""Notifications (email, Slack-compatible webhook, in-app).

(Skeleton: the clock work fills this in.) Callers queue with
`transaction.on_commit(lambda: lead_notify(lead.pk, "assigned"))` so a rolled-back change never
notifies anyone.
"""

from __future__ import annotations


def lead_notify(lead_id: int, kind: str, **context) -> None:
    """Queue the notifications for something that happened to a lead.

    kind: "assigned", "announced", "reassigned", "sla_reminder", "escalated", "pool_timeout".
    context: e.g. rep_ids=[...] for announcements, step=N for escalations.
    """

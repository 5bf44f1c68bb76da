"""Routing models, one module per concern so the parts of routing can grow independently."""

from routing.models.intake import ApiToken, IdempotencyRecord, ImportJob
from routing.models.lead import Lead, LeadEvent, LeadQuerySet
from routing.models.notifications import Notification
from routing.models.pools import Pool, PoolMembership
from routing.models.rules import Rule, RuleCursor, RuleSet

__all__ = [
    "ApiToken",
    "IdempotencyRecord",
    "ImportJob",
    "Lead",
    "LeadEvent",
    "LeadQuerySet",
    "Notification",
    "Pool",
    "PoolMembership",
    "Rule",
    "RuleCursor",
    "RuleSet",
]

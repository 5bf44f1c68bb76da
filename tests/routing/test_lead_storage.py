"""How leads and their events are stored: the partial indexes still serve the queries that need them,
and the references that record provenance (the event log's, a lead's rule and import) behave as
before without database constraints."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from routing.models import ImportJob, Lead, LeadEvent, Pool
from routing.services import record_event, ruleset_create_draft
from tests.factories import LeadFactory, PoolFactory, RepFactory, UserFactory

pytestmark = pytest.mark.django_db


def _plan(queryset) -> str:
    """The plan PostgreSQL picks when it may not scan the table (so the tiny test table cannot hide
    an index the planner could not prove usable)."""
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        return queryset.explain()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="query plans are PostgreSQL's")
@pytest.mark.parametrize(
    ("query", "indexes"),
    [
        (lambda rep, pool: Lead.objects.filter(owner=rep, status__in=Lead.OPEN_STATUSES),
         {"lead_owner_status", "lead_owner_assigned"}),
        (lambda rep, pool: Lead.objects.filter(owner_id__in=[rep.pk], assigned_at__gte=timezone.now()),
         {"lead_owner_status", "lead_owner_assigned"}),
        (lambda rep, pool: Lead.objects.filter(pool=pool, status__in=["assigned", "contacted"]), {"lead_pool_status"}),
        (lambda rep, pool: Lead.objects.filter(rule_id=7), {"lead_rule"}),
        (lambda rep, pool: LeadEvent.objects.filter(rep=rep, kind=LeadEvent.Kind.CLAIMED), {"event_rep_kind_at"}),
    ],
)
def test_queries_naming_an_owner_pool_or_rep_use_the_partial_indexes(query, indexes):
    rep, pool = RepFactory(), PoolFactory()
    LeadFactory.create_batch(3)
    plan = _plan(query(rep, pool))
    assert any(f" {name} on " in plan or f" on {name} " in plan for name in indexes), plan


def test_deleting_a_rep_pool_rule_import_or_user_clears_the_references_to_it():
    actor, rep, pool = UserFactory(), RepFactory(), PoolFactory()
    rule = ruleset_create_draft({"name": "R", "rules": [
        {"name": "Any", "when": [], "candidates": {"reps": [rep.user.username]}, "strategy": "round_robin"},
    ]}).rules.get()
    job = ImportJob.objects.create(original_name="leads.csv")
    lead = LeadFactory(rule=rule, import_job=job)
    event = record_event(lead, LeadEvent.Kind.CLAIMED, actor=actor, rep=rep, pool=pool, rule=rule)

    rule.rule_set.delete()
    job.delete()
    Pool.objects.filter(pk=pool.pk).delete()
    rep.delete()
    User.objects.filter(pk=actor.pk).delete()

    event.refresh_from_db()
    assert (event.actor_id, event.rep_id, event.rule_id, event.pool_id) == (None, None, None, None)
    assert event.kind == LeadEvent.Kind.CLAIMED  # the history itself stays
    lead.refresh_from_db()
    assert (lead.rule_id, lead.import_job_id) == (None, None)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite does not enforce these in tests")
def test_an_event_for_a_missing_lead_is_still_refused():
    with pytest.raises(IntegrityError), transaction.atomic():
        LeadEvent.objects.create(lead_id=10**9, kind=LeadEvent.Kind.RECEIVED)
        with connection.cursor() as cur:
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")

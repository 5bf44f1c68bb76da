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


def test_a_reference_left_behind_by_a_racing_delete_reads_as_none(client, manager):
    """A delete that races with a transaction still writing the reference leaves the id behind (there is
    no constraint to stop it); every reader then sees an empty reference, not an error."""
    from routing.sla import sla_minutes_for
    from tests.routing.test_api_leads import bearer

    rep, pool = RepFactory(), PoolFactory(sla_minutes=30)
    rule = ruleset_create_draft({"name": "R", "rules": [
        {"name": "Any", "when": [], "candidates": {"reps": [rep.user.username]}, "strategy": "round_robin",
         "sla_minutes": 5},
    ]}).rules.get()
    lead = LeadFactory(rule=rule, pool=pool, import_job=ImportJob.objects.create(original_name="a.csv"))
    record_event(lead, LeadEvent.Kind.ROUTED, actor=UserFactory(), rep=rep, rule=rule, pool=pool)
    gone = 10**9
    Lead.objects.filter(pk=lead.pk).update(rule_id=gone, import_job_id=gone)
    LeadEvent.objects.filter(lead=lead).update(actor_id=gone, rep_id=gone, rule_id=gone, pool_id=gone)

    lead = Lead.objects.get(pk=lead.pk)
    event = LeadEvent.objects.get(lead=lead)
    joined = LeadEvent.objects.select_related("rep__user", "rule", "actor", "pool").get(lead=lead)
    body = client.get(f"/api/leads/{lead.pk}/", headers=bearer(manager)).json()

    assert (lead.rule, lead.import_job) == (None, None)
    assert (event.actor, event.rep, event.rule, event.pool) == (None, None, None, None)
    assert (joined.rep, joined.rule) == (None, None)
    assert sla_minutes_for(lead) == 30  # the pool's, as for a lead without a rule
    assert (body["rule"], body["events"][0]["rep"], body["events"][0]["rule"]) == (None, None, None)

"""Claims under real concurrency on PostgreSQL: threads, each with its own connection, at once."""

from __future__ import annotations

import contextlib
import random
import threading
from collections import Counter

import pytest
from django.db import connection

from routing.models import Lead, LeadEvent
from routing.pools import ClaimRefused, lead_claim
from tests.factories import PoolFactory, RepFactory
from tests.routing.test_pools_support import pooled

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_at_once(workers: list) -> list[BaseException]:
    """Start every worker together (a barrier) and return the unexpected exceptions they raised."""
    barrier = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def wrap(fn):
        def target():
            try:
                barrier.wait()
                fn()
            except BaseException as exc:  # reported to the test below
                errors.append(exc)
            finally:
                connection.close()

        return target

    threads = [threading.Thread(target=wrap(fn)) for fn in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def test_twenty_claimers_on_two_hundred_leads_give_each_lead_one_owner_within_limits():
    reps = [RepFactory() for _ in range(20)]
    pool = PoolFactory(members=reps, claim_limit=12)
    lead_ids = [pooled(pool).pk for _ in range(200)]

    def claimer(rep):
        def work():
            order = lead_ids[:]
            random.shuffle(order)
            for pk in order:
                try:
                    lead_claim(Lead(pk=pk), rep=rep)
                except ClaimRefused as exc:
                    if exc.reason == "claim_limit":
                        return
        return work

    assert run_at_once([claimer(r) for r in reps]) == []

    assert Lead.objects.filter(pk__in=lead_ids, owner__isnull=True).count() == 0
    claimed = Counter(LeadEvent.objects.filter(kind="claimed").values_list("lead_id", flat=True))
    assert set(claimed) == set(lead_ids) and max(claimed.values()) == 1
    held = Counter(Lead.objects.filter(pk__in=lead_ids).values_list("owner_id", flat=True))
    assert max(held.values()) <= 12


def test_twenty_reps_on_one_shotgun_lead_give_one_owner_and_nineteen_refusals():
    reps = [RepFactory() for _ in range(20)]
    pool = PoolFactory(members=reps, mode="shotgun")
    lead = pooled(pool)
    refusals: list[str] = []

    def claimer(rep):
        def work():
            try:
                lead_claim(Lead(pk=lead.pk), rep=rep)
            except ClaimRefused as exc:
                refusals.append(str(exc))
        return work

    assert run_at_once([claimer(r) for r in reps]) == []

    lead.refresh_from_db()
    assert lead.owner in reps
    assert lead.events.filter(kind="claimed").count() == 1
    assert lead.events.filter(kind="claim_refused").count() == 19
    assert len(refusals) == 19
    assert all(r.startswith(f"Already claimed by {lead.owner.display_name}") for r in refusals)


def test_simultaneous_claims_by_one_rep_cannot_pass_the_limit_together():
    rep = RepFactory()
    pool = PoolFactory(members=[rep], claim_limit=3)
    leads = [pooled(pool) for _ in range(10)]

    def claimer(lead):
        def work():
            with contextlib.suppress(ClaimRefused):
                lead_claim(Lead(pk=lead.pk), rep=rep)
        return work

    assert run_at_once([claimer(lead) for lead in leads]) == []

    assert Lead.objects.filter(owner=rep).count() == 3
    assert LeadEvent.objects.filter(kind="claim_refused", detail__reason="claim_limit").count() == 7

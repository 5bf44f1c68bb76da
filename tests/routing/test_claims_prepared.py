"""The PostgreSQL claim runs as server-side prepared statements: prepared once per connection, still
exactly-once inside a caller's transaction, and prepared again on a new connection."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from routing.models import Lead, LeadEvent
from routing.pools import ClaimRefused, lead_claim
from tests.factories import PoolFactory, RepFactory
from tests.routing.test_pools_support import pooled

pytestmark = pytest.mark.postgres


class Rollback(Exception):
    pass


def prepared_claims() -> dict[str, int]:
    """This session's claim statements and how often each ran (custom + generic plans)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, generic_plans + custom_plans FROM pg_prepared_statements WHERE name LIKE 'leadops_claim%'"
        )
        return dict(cursor.fetchall())


@pytest.mark.django_db
def test_claims_on_one_connection_prepare_the_claim_statements_once(rep):
    pool = PoolFactory(members=[rep])
    before = prepared_claims()  # earlier tests may have claimed on this connection already

    for _ in range(3):
        lead_claim(pooled(pool), rep=rep)

    after = prepared_claims()
    assert set(after) == {"leadops_claim_lock", "leadops_claim"}
    assert {name: n - before.get(name, 0) for name, n in after.items()} == {"leadops_claim_lock": 3, "leadops_claim": 3}


@pytest.mark.django_db
def test_a_claim_rolled_back_with_the_callers_transaction_leaves_the_lead_waiting(rep):
    pool = PoolFactory(members=[rep])
    lead = pooled(pool)

    with pytest.raises(Rollback), transaction.atomic():
        lead_claim(lead, rep=rep)
        raise Rollback

    lead.refresh_from_db()
    assert (lead.owner, lead.status) == (None, Lead.Status.POOLED)
    assert not lead.events.filter(kind=LeadEvent.Kind.CLAIMED).exists()
    # The statements outlive the rolled-back transaction: the next claim on this connection works.
    assert lead_claim(lead, rep=rep).owner == rep


@pytest.mark.django_db
def test_a_refusal_inside_the_callers_transaction_keeps_its_commits_durable(rep, other_rep):
    pool = PoolFactory(members=[rep, other_rep])
    lead = pooled(pool)
    lead_claim(lead, rep=other_rep)

    with transaction.atomic():
        with pytest.raises(ClaimRefused):
            lead_claim(lead, rep=rep)
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            # The caller's transaction may hold other writes: only a claim's own transaction relaxes.
            assert cursor.fetchone() == ("on",)


@pytest.mark.django_db(transaction=True)
def test_a_new_connection_prepares_the_claim_again():
    rep = RepFactory()
    pool = PoolFactory(members=[rep])
    lead_claim(pooled(pool), rep=rep)

    connection.close()
    second = lead_claim(pooled(pool), rep=rep)

    assert second.owner == rep
    assert prepared_claims() == {"leadops_claim_lock": 1, "leadops_claim": 1}


@pytest.mark.django_db(transaction=True)
def test_a_session_left_half_prepared_still_claims():
    """A PREPARE cut short (the first statement prepared, the second cancelled by a timeout) must not
    make every later claim on that connection fail with "already exists"."""
    rep = RepFactory()
    pool = PoolFactory(members=[rep])
    lead_claim(pooled(pool), rep=rep)
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE leadops_claim")
    connection._claim_prepared_on = None  # as if the marker was never set after the cut

    assert lead_claim(pooled(pool), rep=rep).owner == rep
    assert set(prepared_claims()) == {"leadops_claim_lock", "leadops_claim"}

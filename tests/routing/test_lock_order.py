"""Routing's lock order — the rule cursors, then leads, then reps — holds for everything that locks a
lead and then routes it, so none of them can deadlock with an import chunk, which holds the cursors
while it locks the open leads its duplicates merge into (PostgreSQL, real threads)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from django.db import DatabaseError, connection, transaction

from routing.models import Lead
from routing.services import lead_route_by_hand, routing_locked, ruleset_create_draft, ruleset_publish
from routing.sla import lead_escalate
from tests.factories import LeadFactory, RepFactory, weekday_hours
from tests.routing.test_import_command import _api_data
from tests.routing.test_sla import MONDAY_0905, assigned_lead, make_rule

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def waiting_on_a_lock() -> int:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'")
        return cur.fetchone()[0]


def lead_is_free(lead_id: int) -> bool:
    try:
        with transaction.atomic():
            list(Lead.objects.select_for_update(nowait=True).filter(pk=lead_id))
        return True
    except DatabaseError:
        return False


@contextmanager
def an_import_chunk(then: Callable[[], object] = lambda: None) -> Iterator[list[BaseException]]:
    """A thread holding routing's locks as an import chunk does, from entering the block until it ends;
    then, still in its transaction, it runs `then`. Yields the list its errors are put in."""
    with transaction.atomic():
        routing_locked()  # the cursor rows exist before the threads race for them
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def chunk() -> None:
        try:
            with transaction.atomic():
                routing_locked()
                holding.set()
                release.wait(10)
                then()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=chunk)
    thread.start()
    try:
        assert holding.wait(10)
        yield errors
    finally:
        release.set()
        thread.join(20)


def run_beside_an_import_chunk(lead_id: int, action: Callable[[], object]) -> tuple[bool, list[BaseException]]:
    """Hold routing's locks as an import chunk does, start `action` in another thread and wait until
    it queues behind them; then see whether `action` holds the lead meanwhile, and let the chunk go on
    to lock the lead (its duplicate merges into it). Returns (lead free while waiting, errors)."""

    def other() -> None:
        try:
            action()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    with an_import_chunk(lambda: list(Lead.objects.select_for_update().filter(pk=lead_id))) as errors:
        thread = threading.Thread(target=other)
        thread.start()
        deadline = time.monotonic() + 10
        while not waiting_on_a_lock() and time.monotonic() < deadline:
            time.sleep(0.01)
        free = lead_is_free(lead_id)
    thread.join(20)
    return free, errors


def test_an_escalation_that_reassigns_waits_for_routing_before_it_locks_the_lead():
    alice = RepFactory(user__username="alice", hours=weekday_hours("00:00", "23:59"))
    bob = RepFactory(user__username="bob", hours=weekday_hours("00:00", "23:59"))
    rule = make_rule(sla_minutes=15, candidates={"reps": ["alice", "bob"]})
    lead = assigned_lead(alice, due=MONDAY_0905, rule=rule, escalation_step=1)  # the next rung reassigns

    free, errors = run_beside_an_import_chunk(lead.pk, lambda: lead_escalate(lead.pk, now=MONDAY_0905))

    assert errors == [] and free
    lead.refresh_from_db()
    assert (lead.owner, lead.escalation_step, lead.reassign_count) == (bob, 2, 1)


def test_routing_a_held_lead_by_hand_waits_for_routing_before_it_locks_the_lead():
    RepFactory(user__username="ann")
    ruleset_publish(ruleset_create_draft({"name": "T", "rules": [
        {"name": "All", "candidates": {"reps": ["ann"]}, "strategy": "round_robin"}]}))
    lead = LeadFactory(routing_held=True)

    free, errors = run_beside_an_import_chunk(lead.pk, lambda: lead_route_by_hand(lead.pk))

    assert errors == [] and free
    lead.refresh_from_db()
    assert (lead.status, lead.routing_held, lead.owner.user.username) == ("assigned", False, "ann")


def test_a_duplicate_of_an_owned_lead_does_not_wait_for_a_chunk_holding_the_cursors():
    """A web-form repeat of someone who has an owner is merged at once: only a lead nobody has yet is
    routed, so only that waits for an import chunk to give up the rule cursors."""
    from routing.intake import lead_receive

    owner = RepFactory(user__username="ann")
    ruleset_publish(ruleset_create_draft(
        {"name": "All", "rules": [{"name": "All", "candidates": {"reps": ["ann"]}, "strategy": "round_robin"}]}))
    lead = LeadFactory(email="own@x.example", owner=owner, status="assigned")
    data = {**_api_data("own@x.example"), "phone": "+4930123456"}

    with an_import_chunk() as errors:
        with connection.cursor() as cur:
            cur.execute("SET lock_timeout = '2s'")  # waiting for the cursors would fail here
        try:
            merged = lead_receive(data, source="webform")
        finally:
            with connection.cursor() as cur:
                cur.execute("SET lock_timeout = 0")

    assert merged == (lead.pk, True) and errors == []
    lead.refresh_from_db()
    assert (lead.owner_id, lead.phone, lead.merged_count) == (owner.pk, "+4930123456", 1)

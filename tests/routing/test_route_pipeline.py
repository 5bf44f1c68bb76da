"""Pipelined batch routing (PostgreSQL, outside a transaction): batch n+1 is decided while a second
connection writes batch n. It must give every lead the owner the plain path would, and fall back
to the plain path — keeping round robin exact — when someone else routes or takes a lead between
deciding and writing."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections import Counter
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Count

from routing import services
from routing.models import Lead, LeadEvent, RuleCursor
from routing.services import lead_route, route_leads, ruleset_create_draft, ruleset_publish
from tests.factories import LeadFactory, RepFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
NAMES = ["ann", "bob", "cyd", "dee", "eve"]


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of 25 (50 when pipelined) so that a few hundred leads make a long pipelined run
    (still more than FEW_LEADS, so counts are carried from batch to batch as in a real run)."""
    monkeypatch.setattr(services, "ROUTE_BATCH", 25)


def publish(rest: str = "weighted") -> None:
    ruleset_publish(ruleset_create_draft({"name": "P", "rules": [
        {"name": "DE", "when": [{"field": "country", "op": "eq", "value": "DE"}],
         "candidates": {"reps": NAMES[:3]}, "strategy": "round_robin"},
        {"name": "rest", "candidates": {"reps": NAMES}, "strategy": rest},
    ]}))


def make_leads(n: int) -> list[int]:
    countries = itertools.cycle(["DE", "FR", "DE", "US", "AT"])
    return [LeadFactory(country=next(countries), received_at=NOW - dt.timedelta(minutes=n - i)).pk
            for i in range(n)]


def owners(ids: list[int]) -> list[str | None]:
    by_id = dict(Lead.objects.filter(pk__in=ids).values_list("pk", "owner__user__username"))
    return [by_id[pk] for pk in ids]


def routed_in_order(rule: str) -> list[str]:
    return list(LeadEvent.objects.filter(kind="routed", rule__name=rule).order_by("id")
                .values_list("rep__user__username", flat=True))


def test_pipelined_run_gives_every_lead_the_owner_the_plain_path_gives(small_batches, monkeypatch):
    for i, name in enumerate(NAMES):
        RepFactory(user__username=name, weight=1 + i % 3)
    publish(rest="round_robin")  # weighted and load-balanced ties are drawn at random
    ids = make_leads(230)
    pipelined_calls = []
    monkeypatch.setattr(services, "_route_pipelined", wrap_counting(services._route_pipelined, pipelined_calls))

    counts = route_leads(ids, now=NOW, notify=False)
    first = owners(ids)

    assert pipelined_calls == [230]  # the run really was pipelined, not passed to the plain path
    assert counts == {"assigned": 230, "pooled": 0, "unassigned": 0}
    # Exactly one routed event per lead, with its explanation.
    per_lead = Counter(LeadEvent.objects.filter(kind="routed").values_list("lead_id", flat=True))
    assert set(per_lead) == set(ids) and set(per_lead.values()) == {1}

    # The same leads again through the plain path, from the same starting cursors.
    Lead.objects.filter(pk__in=ids).update(owner=None, status=Lead.Status.UNASSIGNED, routed_at=None,
                                           assigned_at=None, rule=None, sla_due_at=None)
    LeadEvent.objects.all().delete()
    RuleCursor.objects.all().delete()
    monkeypatch.setattr(services, "ROUTE_PIPELINE", False)
    route_leads(ids, now=NOW, notify=False)

    assert owners(ids) == first
    de = routed_in_order("DE")
    assert de == (NAMES[:3] * 100)[:len(de)]


def wrap_counting(fn, calls):
    def inner(ids, **kwargs):
        calls.append(len(ids))
        return fn(ids, **kwargs)
    return inner


def test_single_lead_routed_between_decide_and_write_sends_the_run_to_the_plain_path(
    small_batches, monkeypatch, caplog
):
    """The API routes one lead while route_pending is mid-run: the planned batch that assumed the
    old cursor is not written, the rest of the run is decided again under the locks, and the
    round robin of the whole DE rule is still a perfect rotation."""
    for name in NAMES:
        RepFactory(user__username=name)
    publish()
    ids = make_leads(200)
    intruder = LeadFactory(country="DE", received_at=NOW)
    plans_seen = []
    real_apply = services._apply_checked

    def apply_after_intrusion(plan, rule_set_pk, **kwargs):
        plans_seen.append(plan.ids[0])
        if len(plans_seen) == 3:
            lead_route(Lead.objects.get(pk=intruder.pk), now=NOW)  # commits on the writer's connection
        return real_apply(plan, rule_set_pk, **kwargs)

    monkeypatch.setattr(services, "_apply_checked", apply_after_intrusion)
    with caplog.at_level(logging.INFO, logger="routing.services"):
        counts = route_leads(ids, now=NOW, notify=False)

    assert "pipelined routing stops at lead 100 " in caplog.text and "cursor DE moved" in caplog.text
    assert counts == {"assigned": 200, "pooled": 0, "unassigned": 0}
    assert Lead.objects.filter(status=Lead.Status.UNASSIGNED).count() == 0
    assert LeadEvent.objects.filter(kind="routed").values("lead").annotate(n=Count("id")).filter(n__gt=1).count() == 0
    de = routed_in_order("DE")
    assert len(de) == Lead.objects.filter(country="DE").count() == 81
    assert all(x != y for x, y in itertools.pairwise(de))
    assert de == (NAMES[:3] * 100)[:81]


def test_lead_taken_by_someone_else_before_its_batch_is_written_is_left_to_them(small_batches, monkeypatch):
    for name in NAMES:
        RepFactory(user__username=name)
    publish()
    ids = make_leads(120)
    manual = RepFactory(user__username="zed")
    real_apply = services._apply_checked
    taken = ids[65]

    def apply(plan, rule_set_pk, **kwargs):
        if taken in plan.ids:  # a manager assigns one of the batch's leads first
            Lead.objects.filter(pk=taken).update(owner=manual, status=Lead.Status.ASSIGNED)
        return real_apply(plan, rule_set_pk, **kwargs)

    monkeypatch.setattr(services, "_apply_checked", apply)
    counts = route_leads(ids, now=NOW, notify=False)

    assert counts["assigned"] == 119
    assert Lead.objects.get(pk=taken).owner == manual
    assert not LeadEvent.objects.filter(lead_id=taken, kind="routed").exists()
    assert Lead.objects.filter(status=Lead.Status.UNASSIGNED).count() == 0


@pytest.mark.parametrize("max_age", [0.0, services.LOADS_MAX_AGE], ids=["recount-each-batch", "carried"])
def test_capacity_holds_across_pipelined_batches_and_recounts(small_batches, monkeypatch, max_age):
    """Counts carried from batch to batch, or recounted after the writer caught up, keep every rep
    at or under capacity; the leads nobody can take stay unassigned with the reason."""
    monkeypatch.setattr(services, "LOADS_MAX_AGE", max_age)
    pipelined_calls = []
    monkeypatch.setattr(services, "_route_pipelined", wrap_counting(services._route_pipelined, pipelined_calls))
    for name in NAMES:
        RepFactory(user__username=name, capacity=30)
    publish()
    ids = make_leads(220)

    counts = route_leads(ids, now=NOW, notify=False)

    assert pipelined_calls == [220]
    per_rep = Counter(Lead.objects.filter(owner__isnull=False).values_list("owner__user__username", flat=True))
    assert max(per_rep.values()) <= 30
    assert counts["assigned"] == sum(per_rep.values()) == 150
    assert counts["unassigned"] == Lead.objects.filter(status=Lead.Status.UNASSIGNED).count() == 70


def test_lead_edited_after_it_was_decided_is_decided_again_with_its_new_values(small_batches, monkeypatch):
    """An import merging a duplicate fills the blank country of a waiting lead while its batch is
    being decided: the batch is not written on the old values; the lead goes to the DE rule."""
    for name in NAMES:
        RepFactory(user__username=name)
    publish()
    ids = make_leads(150)
    blank = ids[80]
    Lead.objects.filter(pk=blank).update(country="")
    real_apply = services._apply_checked

    def apply(plan, rule_set_pk, **kwargs):
        if blank in plan.ids:
            lead = Lead.objects.get(pk=blank)
            lead.country = "DE"
            lead.save(update_fields=["country", "updated_at"])
        return real_apply(plan, rule_set_pk, **kwargs)

    monkeypatch.setattr(services, "_apply_checked", apply)
    route_leads(ids, now=NOW, notify=False)

    assert Lead.objects.get(pk=blank).rule.name == "DE"
    assert Lead.objects.filter(status=Lead.Status.UNASSIGNED).count() == 0


def test_writer_error_stops_the_run_and_is_raised_with_earlier_batches_kept(small_batches, monkeypatch):
    for name in NAMES:
        RepFactory(user__username=name)
    publish()
    ids = make_leads(250)
    real_apply = services._apply_checked
    written = []

    def apply(plan, rule_set_pk, **kwargs):
        if len(written) == 2:
            raise RuntimeError("disk full")
        written.append(plan.ids)
        return real_apply(plan, rule_set_pk, **kwargs)

    monkeypatch.setattr(services, "_apply_checked", apply)
    with pytest.raises(RuntimeError, match="disk full"):
        route_leads(ids, now=NOW, notify=False)

    done = [pk for batch in written for pk in batch]
    assert len(done) == 100
    assert set(Lead.objects.filter(status=Lead.Status.ASSIGNED).values_list("pk", flat=True)) == set(done)
    assert LeadEvent.objects.filter(kind="routed").count() == 100


def test_every_lead_is_notified_once_even_when_a_planned_batch_was_thrown_away(small_batches, monkeypatch):
    for name in NAMES:
        RepFactory(user__username=name)
    publish()
    ids = make_leads(150)
    intruder = LeadFactory(country="DE", received_at=NOW)
    real_apply = services._apply_checked
    seen = []

    def apply(plan, rule_set_pk, **kwargs):
        seen.append(plan)
        if len(seen) == 2:
            lead_route(Lead.objects.get(pk=intruder.pk), now=NOW)
        return real_apply(plan, rule_set_pk, **kwargs)

    monkeypatch.setattr(services, "_apply_checked", apply)
    route_leads(ids, now=NOW)

    notified = Counter(LeadEvent.objects.filter(kind="notified").values_list("lead_id", flat=True))
    assert set(notified) == {*ids, intruder.pk}
    assert set(notified.values()) == {1}


def test_batch_rows_read_as_tuples_equal_what_the_orm_gives():
    """Batch routing reads leads with a raw cursor on PostgreSQL; the engine must see exactly the
    values values() would give (jsonb parsed, Decimal, aware datetimes, NULLs) — except updated_at,
    kept as PostgreSQL's text for the write's check, which must name the same instant."""
    lead = LeadFactory(extra={"campaign": "spring", "tags": ["a", 1], "n": None}, value=Decimal("1234.50"),
                       score=None, region="")
    expected = Lead.objects.filter(pk=lead.pk).values(*services._BATCH_FIELDS).get()

    (got,) = services._unassigned_data([lead.pk], lock=False)
    updated_text = got.pop("updated_at")
    assert got == {k: v for k, v in expected.items() if k != "updated_at"}
    assert type(got["value"]) is Decimal
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::timestamptz", [updated_text])
        assert cursor.fetchone()[0] == expected["updated_at"]


def test_batches_read_the_fields_the_rules_test_including_extra(small_batches, monkeypatch):
    """Batches read only the columns the rules need; a rule on an extra field and one on
    company size must still see their values."""
    for name in NAMES:
        RepFactory(user__username=name)
    ruleset_publish(ruleset_create_draft({"name": "X", "rules": [
        {"name": "spring", "when": [{"field": "extra.campaign", "op": "eq", "value": "spring"}],
         "candidates": {"reps": ["ann"]}, "strategy": "round_robin"},
        {"name": "big", "when": [{"field": "company_size", "op": "gte", "value": 1000}],
         "candidates": {"reps": ["bob"]}, "strategy": "round_robin"},
        {"name": "rest", "candidates": {"reps": ["cyd"]}, "strategy": "round_robin"},
    ]}))
    leads = [LeadFactory(extra={"campaign": "spring"} if i % 3 == 0 else {}, company_size=5000 if i % 3 == 1 else 10,
                         received_at=NOW - dt.timedelta(minutes=150 - i)) for i in range(150)]

    pipelined_calls = []
    monkeypatch.setattr(services, "_route_pipelined", wrap_counting(services._route_pipelined, pipelined_calls))
    route_leads([lead.pk for lead in leads], now=NOW, notify=False)

    assert pipelined_calls == [150]
    got = dict(Lead.objects.values_list("pk", "rule__name"))
    assert [got[lead.pk] for lead in leads] == ["spring", "big", "rest"] * 50

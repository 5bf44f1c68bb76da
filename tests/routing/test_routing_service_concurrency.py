"""Round robin stays exact when leads are routed at the same moment by different workers (PostgreSQL)."""

from __future__ import annotations

import itertools
import threading
from collections import Counter

import pytest
from django.db import connection

from routing.models import Lead, LeadEvent
from routing.services import route_leads, ruleset_create_draft, ruleset_publish
from tests.factories import LeadFactory, RepFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_ten_leads_routed_concurrently_over_three_reps_split_4_3_3_in_turn():
    for name in ("a", "b", "c"):
        RepFactory(user__username=name)
    ruleset_publish(ruleset_create_draft(
        {"name": "T", "rules": [{"name": "RR", "candidates": {"levels": ["junior"]}, "strategy": "round_robin"}]}
    ))
    leads = [LeadFactory() for _ in range(10)]
    start = threading.Barrier(10)
    errors: list[BaseException] = []

    def worker(lead_id: int) -> None:
        try:
            start.wait()
            route_leads([lead_id], notify=False)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(lead.pk,)) for lead in leads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert sorted(Counter(Lead.objects.values_list("owner__user__username", flat=True)).values()) == [3, 3, 4]
    in_order = list(
        LeadEvent.objects.filter(kind="routed").order_by("at", "id").values_list("rep__user__username", flat=True)
    )
    assert len(in_order) == 10
    assert all(x != y for x, y in itertools.pairwise(in_order))
    assert in_order == (["a", "b", "c"] * 4)[:10]

"""At phone width (390 px) wide tables scroll inside their own box; the page itself never scrolls sideways,
so the navigation and the buttons outside the tables stay on screen."""

from __future__ import annotations

import pytest

from routing.models import Lead
from routing.services import route_leads, ruleset_create_draft, ruleset_publish
from tests.factories import LeadFactory, PoolFactory
from tests.routing.test_pools_support import pooled

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 800}


def page_overflow(page) -> int:
    """How many pixels the document is wider than the screen."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def test_the_board_with_a_full_pool_table_fits_a_phone(logged_in, rep):
    pool = PoolFactory(name="smb", members=[rep])
    pooled(pool, company="A company with a rather long name", industry="Financial services")
    LeadFactory(owner=rep, status=Lead.Status.ASSIGNED, pool=pool, company="Mine Ltd")
    page = logged_in(rep.user, "/board/")
    page.set_viewport_size(PHONE)

    assert page_overflow(page) == 0


def test_the_managers_tables_fit_a_phone(logged_in, manager):
    ruleset_publish(ruleset_create_draft(
        {"name": "Nobody", "rules": [{"name": "Named rep", "candidates": {"reps": [manager.username]},
                                      "strategy": "first_available"}]},
        actor=manager, check_names=False), actor=manager)
    lead = LeadFactory(company="Stuck Co")
    route_leads([lead.pk])
    page = logged_in(manager, "/rules/")
    page.set_viewport_size(PHONE)
    for path in ["/rules/", "/unassigned/", f"/leads/{lead.pk}/explain/"]:
        page.goto(path)
        assert page_overflow(page) == 0, path

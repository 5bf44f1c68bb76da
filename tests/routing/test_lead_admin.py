"""The lead changelist in the managers' admin."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from routing.models import Lead
from tests.factories import LeadFactory, RepFactory

pytestmark = pytest.mark.django_db


def test_the_owner_filter_offers_only_reps_who_own_leads_by_name(manager_client, rep):
    idle = RepFactory(user__username="idle", user__first_name="Ida", user__last_name="Idle")
    LeadFactory(owner=rep, status=Lead.Status.ASSIGNED)

    response = manager_client.get("/admin/routing/lead/")

    changelist = response.context["cl"]
    owner_filter = next(f for f in changelist.filter_specs if getattr(f, "field_path", "") == "owner")
    choices = [c["display"] for c in owner_filter.choices(changelist)]
    assert rep.display_name in choices
    assert idle.display_name not in choices


def test_filtering_by_owner_lists_that_reps_leads(manager_client, rep, other_rep):
    mine = LeadFactory(owner=rep, status=Lead.Status.ASSIGNED, company="Mine Co")
    LeadFactory(owner=other_rep, status=Lead.Status.ASSIGNED, company="Theirs Co")

    response = manager_client.get(f"/admin/routing/lead/?owner__id__exact={rep.pk}")

    assert list(response.context["cl"].result_list) == [mine]


def test_the_country_filter_offers_the_leads_countries_read_once_for_a_few_minutes(manager_client):
    """Country and industry have no index: their values are read once, not on every page."""
    LeadFactory(country="DE", company="Berlin Co")
    LeadFactory(country="FR", company="Paris Co")

    first = manager_client.get("/admin/routing/lead/?country=FR")
    with CaptureQueriesContext(connection) as queries:
        again = manager_client.get("/admin/routing/lead/")

    changelist = first.context["cl"]
    country = next(f for f in changelist.filter_specs if getattr(f, "field_path", "") == "country")
    assert [c["display"] for c in country.choices(changelist)][1:] == ["DE", "FR"]
    assert [lead.company for lead in changelist.result_list] == ["Paris Co"]
    assert again.status_code == 200 and len(again.context["cl"].result_list) == 2
    assert not [q["sql"] for q in queries if "DISTINCT" in q["sql"] and "country" in q["sql"]]

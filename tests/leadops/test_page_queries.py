"""List pages cost the same number of queries for 2 rows as for 20: no query per row (N+1).

Each test draws the page once over a small data set to learn its cost, adds ten times the rows
(more reps, pools, rules, events), and draws it again under django_assert_max_num_queries.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from routing.models import Lead, LeadEvent, Rule, RuleSet
from routing.models.pools import PoolAnnouncement
from tests.factories import LeadFactory, PoolFactory, RepFactory
from tests.routing.test_pools_support import pooled

pytestmark = pytest.mark.django_db


def cost(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(ctx.captured_queries)


def busy_org(n: int, rep) -> Lead:
    """n leads of each kind: the rep's own, waiting in the rep's pools, announced, routed by a rule with events."""
    now = timezone.now()
    rule_set, _ = RuleSet.objects.get_or_create(name="Rules", version=1, defaults={"status": RuleSet.Status.PUBLISHED})
    lead = None
    for i in range(n):
        other = RepFactory()
        pool = PoolFactory(members=[rep, other])
        rule = Rule.objects.create(rule_set=rule_set, name=f"rule {i}", position=Rule.objects.count())
        lead = LeadFactory(owner=other, status=Lead.Status.ASSIGNED, rule=rule, pool=pool,
                           assigned_at=now, sla_due_at=now + dt.timedelta(hours=1))
        LeadFactory(owner=rep, status=Lead.Status.ASSIGNED, rule=rule, pool=pool, claimed_at=now, assigned_at=now)
        waiting = pooled(pool)
        PoolAnnouncement.objects.create(lead=waiting, pool=pool, rep=rep, at=now)
        for kind in (LeadEvent.Kind.RECEIVED, LeadEvent.Kind.ROUTED, LeadEvent.Kind.CLAIMED):
            LeadEvent.objects.create(lead=lead, kind=kind, at=now, rep=other, rule=rule, pool=pool, actor=rep.user)
            LeadEvent.objects.create(lead=waiting, kind=kind, at=now, rep=other, rule=rule, pool=pool)
    return lead


def test_the_board_does_not_query_per_lead_or_pool(client, rep, django_assert_max_num_queries):
    client.force_login(rep.user)
    busy_org(2, rep)
    baseline = cost(client, "/board/")
    busy_org(20, rep)

    with django_assert_max_num_queries(baseline):
        client.get("/board/")


@pytest.mark.parametrize("url", ["/admin/routing/lead/", "/reports/", "/reports/speed/", "/reports/sla/",
                                 "/reports/conversion/", "/reports/fairness/", "/unassigned/", "/rules/", "/pools/"])
def test_a_manager_list_page_does_not_query_per_row(manager_client, rep, url, django_assert_max_num_queries):
    busy_org(2, rep)
    baseline = cost(manager_client, url)
    busy_org(20, rep)

    with django_assert_max_num_queries(baseline):
        manager_client.get(url)


def test_the_lead_change_page_timeline_does_not_query_per_event(manager_client, rep, django_assert_max_num_queries):
    few = busy_org(1, rep)
    baseline = cost(manager_client, f"/admin/routing/lead/{few.pk}/change/")
    many = busy_org(1, rep)
    other = many.owner
    for _ in range(10):
        LeadEvent.objects.create(lead=many, kind=LeadEvent.Kind.NOTIFIED, at=timezone.now(), rep=RepFactory(),
                                 rule=many.rule, pool=PoolFactory(members=[other]), actor=RepFactory().user)

    with django_assert_max_num_queries(baseline):
        manager_client.get(f"/admin/routing/lead/{many.pk}/change/")


def test_a_reps_own_numbers_do_not_query_per_lead(client, rep, django_assert_max_num_queries):
    client.force_login(rep.user)
    busy_org(2, rep)
    baseline = cost(client, "/reports/me/")
    busy_org(20, rep)

    with django_assert_max_num_queries(baseline):
        client.get("/reports/me/")


def test_the_intake_history_does_not_query_per_import(ops_client, ops_user, django_assert_max_num_queries):
    from routing.models import ImportJob

    ImportJob.objects.create(original_name="a.csv", created_by=ops_user)
    baseline = cost(ops_client, "/intake/")
    ImportJob.objects.bulk_create(ImportJob(original_name=f"{i}.csv", created_by=ops_user) for i in range(20))

    with django_assert_max_num_queries(baseline):
        ops_client.get("/intake/")


def _tokens_and_jobs(n: int, users) -> None:
    from routing.models import ApiToken, ImportJob

    for i in range(n):
        user = users[i % len(users)]
        ApiToken.issue(user, name=f"token {ApiToken.objects.count()}")
        ImportJob.objects.create(original_name=f"{i}.csv", created_by=user)


@pytest.mark.parametrize("url", ["/admin/routing/apitoken/", "/admin/routing/importjob/", "/admin/reps/rep/",
                                 "/admin/routing/pool/", "/admin/routing/notification/"])
def test_an_admin_changelist_does_not_query_per_row(manager_client, manager, rep, url, django_assert_max_num_queries):
    busy_org(2, rep)
    _tokens_and_jobs(2, [manager, rep.user])
    baseline = cost(manager_client, url)
    busy_org(10, rep)
    _tokens_and_jobs(10, [RepFactory().user for _ in range(10)])

    with django_assert_max_num_queries(baseline):
        manager_client.get(url)

import pytest
from django.core.management import call_command

from leadops import demo
from reps.models import Rep, Team
from routing.models import Lead, LeadEvent, Pool, RuleSet
from routing.pools import lead_claim
from tests.factories import LeadFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(db):
    return demo.demo_seed(leads=150)


def test_it_builds_three_teams_fifteen_people_two_pools_and_a_published_rule_set(seeded):
    assert set(Team.objects.values_list("name", flat=True)) == {"EMEA", "Americas", "APAC"}
    assert Rep.objects.count() == 15
    assert set(Rep.objects.values_list("level", flat=True)) == {"junior", "senior", "director", "manager"}
    assert set(Pool.objects.values_list("mode", flat=True)) == {"cherry_pick", "shotgun"}
    assert RuleSet.objects.filter(status="published").count() == 1


def test_history_has_outcomes_with_a_timeline(seeded):
    statuses = set(Lead.objects.values_list("status", flat=True))
    assert {"won", "lost"} <= statuses
    touched = Lead.objects.filter(first_touch_at__isnull=False).first()
    assert touched.first_touch_at > touched.received_at
    assert LeadEvent.objects.filter(lead=touched, kind="received").exists()
    assert LeadEvent.objects.filter(lead=touched, kind="status_changed").exists()


def test_fresh_leads_went_through_the_live_engine(seeded):
    assert seeded["live"] == 40
    assert seeded["assigned"] + seeded["pooled"] + seeded["unassigned"] == 40
    assert Lead.objects.filter(status="pooled", pool__isnull=False).exists()


def test_seed_demo_runs_once_and_prints_logins(db, capsys):
    call_command("seed_demo", "--leads", "50")
    first = capsys.readouterr().out
    assert "Demo loaded" in first and "maria" in first and demo.DEMO_PASSWORD in first
    count = Lead.objects.count()

    call_command("seed_demo", "--leads", "50")
    assert "already loaded" in capsys.readouterr().out
    assert Lead.objects.count() == count


def test_seed_demo_reset_reloads(db):
    call_command("seed_demo", "--leads", "50")
    call_command("seed_demo", "--reset", "--leads", "60")
    assert Lead.objects.count() == 60 + 40
    assert RuleSet.objects.count() == 1


@pytest.mark.parametrize(("username", "home"), [("maria", "/reports/"), ("alice", "/board/"), ("oscar", "/intake/")])
def test_demo_logins_land_on_their_home(seeded, client, username, home):
    assert client.login(username=username, password=demo.DEMO_PASSWORD)
    response = client.get("/", follow=True)
    assert response.redirect_chain[-1][0] == home
    assert response.status_code == 200


def test_the_manager_sees_reps_and_leads_in_the_admin(seeded, client):
    client.login(username="maria", password=demo.DEMO_PASSWORD)
    assert b"Alice Ahn" in client.get("/admin/reps/rep/").content
    response = client.get("/admin/routing/lead/")
    assert response.status_code == 200
    lead = Lead.objects.exclude(owner=None).first()
    assert client.get(f"/admin/routing/lead/{lead.pk}/change/").status_code == 200


def test_no_member_holds_more_pool_leads_than_the_claim_limit(db):
    demo.demo_seed(leads=1000, days=20)  # the demo's density of open pool leads

    for pool in Pool.objects.all():
        held = Lead.objects.filter(pool=pool, claimed_at__isnull=False,
                                   status__in=["assigned", "contacted", "qualified"])
        per_owner = {}
        for owner_id in held.values_list("owner_id", flat=True):
            per_owner[owner_id] = per_owner.get(owner_id, 0) + 1
        assert max(per_owner.values(), default=0) <= pool.claim_limit, pool.name


def test_the_reps_one_logs_in_as_can_claim_from_their_pools_straight_away(db):
    """Found trying the demo: alice and ben were seeded at their pools' claim limits, so their first
    click on Claim was refused."""
    demo.demo_seed(leads=1000, days=20)

    for username in ("alice", "ben"):
        rep = Rep.objects.get(user__username=username)
        for pool in Pool.objects.filter(members=rep):
            waiting = Lead.objects.filter(pool=pool, status="pooled").order_by("pooled_at").first()
            if waiting is None:
                waiting = LeadFactory(pool=pool, status="pooled")
            assert lead_claim(waiting, rep=rep).owner == rep, (username, pool.name)

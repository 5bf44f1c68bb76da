import datetime as dt

import pytest
from django.utils import timezone

from reports import selectors
from tests.factories import LeadFactory, RepFactory, TeamFactory
from tests.reports.conftest import NOW, answered_lead, minutes

pytestmark = pytest.mark.django_db


@pytest.fixture
def team_of_three(rep):
    team = TeamFactory(name="EMEA")
    mates = [RepFactory(team=team, user__username=name) for name in ("mate1", "mate2")]
    rep.team = team
    rep.save(update_fields=["team"])
    return rep, mates


def test_it_puts_the_reps_speed_next_to_the_team_median(team_of_three, scope_for):
    me, (m1, m2) = team_of_three
    received = NOW - dt.timedelta(days=1)
    answered_lead(received, 2, owner=me)
    answered_lead(received, 10, owner=m1)
    answered_lead(received, 30, owner=m2)
    summary = selectors.rep_summary(scope_for(), me)
    assert summary.mine["stl_p50"] == pytest.approx(120)
    assert summary.team_median["stl_p50"] == pytest.approx(600)


def test_it_compares_the_reps_share_with_the_expected_share(team_of_three, scope_for):
    me, (m1, _) = team_of_three
    received = NOW - dt.timedelta(days=1)
    for _ in range(3):
        answered_lead(received, 5, owner=me)
    answered_lead(received, 5, owner=m1)
    summary = selectors.rep_summary(scope_for(), me)
    assert (summary.mine["received"], summary.mine["share"]) == (3, 0.75)
    assert summary.mine["expected_share"] == pytest.approx(1 / 3)


def test_it_gives_the_conversion_rate_against_the_team_median(team_of_three, scope_for):
    me, (m1, m2) = team_of_three
    received = NOW - minutes(600)
    for owner, statuses in [(me, ["won", "won"]), (m1, ["won", "lost"]), (m2, ["lost", "lost"])]:
        for status in statuses:
            LeadFactory(owner=owner, received_at=received, assigned_at=received, status=status)
    summary = selectors.rep_summary(scope_for(), me)
    assert (summary.mine["won_rate"], summary.team_median["won_rate"]) == (1, 0.5)


def test_it_shows_the_rep_their_page_without_anyone_elses_leads(team_of_three, rep_client):
    me, (m1, _) = team_of_three
    now = timezone.now()
    LeadFactory(owner=me, company="Mine GmbH", received_at=now, assigned_at=now)
    LeadFactory(owner=m1, company="Secret Corp", email="secret@corp.example", received_at=now, assigned_at=now)
    html = rep_client.get("/reports/me/").content.decode()
    assert "My numbers" in html
    assert "Secret Corp" not in html and "secret@corp.example" not in html
    assert "mate1" not in html


def test_it_ignores_a_rep_filter_on_the_reps_page(team_of_three, rep_client):
    _me, (m1, _) = team_of_three
    now = timezone.now()
    LeadFactory(owner=m1, received_at=now, assigned_at=now)
    response = rep_client.get(f"/reports/me/?rep={m1.pk}")
    assert response.context["summary"].mine.get("received", 0) == 0


def test_it_keeps_the_reps_page_for_reps(manager_client):
    assert manager_client.get("/reports/me/").status_code == 403

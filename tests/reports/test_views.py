import re

import pytest
from django.utils import timezone

from tests.factories import LeadFactory, RepFactory, TeamFactory

pytestmark = pytest.mark.django_db
PAGES = ["/reports/", "/reports/speed/", "/reports/sla/", "/reports/conversion/", "/reports/fairness/"]


@pytest.fixture
def some_leads():
    now = timezone.now()
    rep = RepFactory(team=TeamFactory(name="EMEA"), user__username="carol")
    LeadFactory(source="web", owner=rep, received_at=now, assigned_at=now, first_touch_at=now, status="won",
                sla_due_at=now)
    LeadFactory(source="fair", received_at=now, status="unassigned")
    return rep


@pytest.mark.parametrize("url", PAGES)
def test_it_shows_every_report_to_managers(manager_client, some_leads, url):
    assert manager_client.get(url).status_code == 200


@pytest.mark.parametrize("url", [*PAGES, "/reports/export/sources.csv"])
def test_reports_only_answer_reads(manager_client, url):
    assert manager_client.post(url).status_code == 405


@pytest.mark.parametrize("url", PAGES)
def test_it_keeps_reports_from_reps(rep_client, url):
    assert rep_client.get(url).status_code == 403


def test_it_sends_anonymous_visitors_to_log_in(client):
    assert client.get("/reports/").url.startswith("/login/")


@pytest.mark.parametrize("url", PAGES)
def test_it_links_every_table_to_a_working_csv_export(manager_client, some_leads, url):
    html = manager_client.get(url).content.decode()
    links = re.findall(r'href="(/reports/export/[^"]+)"', html)
    assert links
    assert html.count("<table") == len(links) or "Nothing to show" in html
    for link in links:
        assert manager_client.get(link.replace("&amp;", "&")).status_code == 200


def test_it_swaps_only_the_report_body_for_htmx(manager_client, some_leads):
    response = manager_client.get("/reports/speed/?by=source", headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="report-body">')
    assert "<html" not in html


def test_it_filters_by_source_from_a_bookmarkable_url(manager_client, some_leads):
    html = manager_client.get("/reports/conversion/?by=source&source=web").content.decode()
    assert "<td class=\"k-text\">web</td>" in html
    assert "<td class=\"k-text\">fair</td>" not in html


def test_it_filters_by_team(manager_client, some_leads):
    other = TeamFactory(name="APAC")
    html = manager_client.get(f"/reports/speed/?by=source&team={other.pk}").content.decode()
    assert "Nothing to show" in html


def test_it_survives_nonsense_in_the_query_string(manager_client, some_leads):
    response = manager_client.get("/reports/?start=yesterday&team=999&tz=Mars/Base&by=shoe")
    assert response.status_code == 200


def test_it_reads_the_date_range_in_the_chosen_time_zone(manager_client):
    html = manager_client.get("/reports/?start=2026-01-01&end=2026-01-31&tz=Europe/Berlin").content.decode()
    assert "1 Jan 2026 – 31 Jan 2026 · Europe/Berlin" in html


@pytest.mark.parametrize("url", ["/reports/", "/reports/fairness/"])
def test_charts_are_named_images_for_screen_readers(manager_client, some_leads, url):
    body = manager_client.get(url).content.decode()

    canvases = re.findall(r"<canvas[^>]*>", body)
    assert canvases
    assert all('role="img"' in c and "aria-label=" in c for c in canvases)


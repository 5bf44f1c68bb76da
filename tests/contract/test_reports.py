"""CONTRACT §7: /reports/ is the managers' dashboard; every report table links to its CSV export."""

from __future__ import annotations

import csv
import io
import re

import pytest

from tests.factories import LeadFactory, RepFactory

pytestmark = pytest.mark.django_db

REPORT_PAGES = ["/reports/", "/reports/speed/", "/reports/sla/", "/reports/conversion/", "/reports/fairness/"]


@pytest.fixture
def some_leads(db):
    alice = RepFactory(user__username="alice")
    LeadFactory.create_batch(3, owner=alice, status="assigned")
    LeadFactory.create_batch(2, owner=alice, status="won")
    LeadFactory.create_batch(2, status="unassigned")


def tables_and_links(html: str) -> tuple[list[str], list[str]]:
    sections = re.findall(r'<section class="report-table" id="table-([\w-]+)"', html)
    links = re.findall(r'href="(/reports/export/[\w-]+\.csv[^"]*)"', html)
    return sections, [link.replace("&amp;", "&") for link in links]


def test_the_dashboard_is_for_managers(client, rep):
    client.force_login(rep.user)
    assert client.get("/reports/").status_code in (403, 404)


@pytest.mark.parametrize("page", REPORT_PAGES)
def test_every_report_table_links_to_a_csv_export_that_answers_csv(manager_client, some_leads, page):
    resp = manager_client.get(page)
    assert resp.status_code == 200
    sections, links = tables_and_links(resp.content.decode())

    assert len(sections) >= 1
    assert [link.split("?")[0] for link in links] == [f"/reports/export/{name}.csv" for name in sections]
    for link in links:
        export = manager_client.get(link)
        assert export.status_code == 200, link
        assert export["Content-Type"].startswith("text/csv"), link
        rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
        assert rows and rows[0], link  # a header row at least


def test_the_dashboard_links_every_table_it_shows(manager_client, some_leads):
    html = manager_client.get("/reports/").content.decode()
    sections, links = tables_and_links(html)
    tables = html.count("<table")

    assert len(links) == len(sections) >= 1
    assert tables <= len(links), "a table on /reports/ without a CSV link"

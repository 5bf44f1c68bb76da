import csv
import datetime as dt
import io

import pytest
from django.utils import timezone

from reports.export import csv_safe
from tests.factories import LeadFactory


@pytest.mark.parametrize("text", ["=1+1", "+49 30 1234", "-2", "@SUM(A1)", "\tcmd", "\rcmd"])
def test_it_defuses_cells_a_spreadsheet_would_run(text):
    assert csv_safe(text) == "'" + text


def test_it_leaves_numbers_as_numbers_even_negative_ones():
    assert (csv_safe(-0.25), csv_safe(3)) == (-0.25, 3)


def test_it_writes_datetimes_as_iso_8601():
    assert csv_safe(dt.datetime(2026, 11, 18, 12, 0, tzinfo=dt.UTC)) == "2026-11-18T12:00:00+00:00"


def _csv(client, url):
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.mark.django_db
def test_it_exports_a_hostile_source_name_safely(manager_client):
    LeadFactory(source="=HYPERLINK(\"http://evil\")", received_at=timezone.now(), assigned_at=timezone.now())
    rows = _csv(manager_client, "/reports/export/conversion.csv?by=source")
    assert rows[0][:3] == ["label", "assigned", "qualified"]
    assert rows[1][0] == "'=HYPERLINK(\"http://evil\")"


@pytest.mark.django_db
def test_it_exports_rates_as_fractions_with_their_interval(manager_client):
    now = timezone.now()
    LeadFactory(source="web", received_at=now, assigned_at=now, status="won")
    LeadFactory(source="web", received_at=now, assigned_at=now, status="lost")
    rows = _csv(manager_client, "/reports/export/conversion.csv?by=source")
    record = dict(zip(rows[0], rows[1], strict=True))
    assert (record["won_rate"], record["qualified_rate"]) == ("0.5", "0.5")
    assert float(record["won_rate_ci_low"]) < 0.5 < float(record["won_rate_ci_high"])


@pytest.mark.django_db
def test_it_exports_overdue_dates_in_iso_8601(manager_client):
    due = timezone.now() - dt.timedelta(hours=1)
    LeadFactory(status="assigned", sla_due_at=due, escalation_step=1)
    rows = _csv(manager_client, "/reports/export/overdue.csv")
    record = dict(zip(rows[0], rows[1], strict=True))
    assert dt.datetime.fromisoformat(record["sla_due_at"]) == due
    assert record["escalation_step"] == "1"


@pytest.mark.django_db
def test_it_refuses_an_unknown_table(manager_client):
    assert manager_client.get("/reports/export/salaries.csv").status_code == 404


@pytest.mark.django_db
def test_it_keeps_csv_exports_for_managers(rep_client):
    assert rep_client.get("/reports/export/speed.csv").status_code == 403

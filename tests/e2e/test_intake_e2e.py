"""Ops staff upload a messy Salesforce export in the browser and get back exactly the rows that failed."""

from __future__ import annotations

import csv
import io

import pytest

from routing.models import ImportJob, Lead
from tests.factories import UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# cp1252, semicolons, Salesforce headers, a stray unknown column, one bad email and one bad score.
SALESFORCE_EXPORT = (
    "First Name;Last Name;Company;Email;Lead Source;Country;Zip/Postal Code;No. of Employees;Score;Campaign\r\n"
    "Jürgen;Müller;Müller GmbH;juergen@mueller.example;Trade Show;Germany;80331;250;70;Q4 fair\r\n"
    "Ana;Peña;Peña SL;ana@pena.example;Web;Spain;28001;51-200;55;Q4 fair\r\n"
    "Bad;Email;Nowhere Inc;not-an-email;Web;France;75001;10;20;Q4 fair\r\n"
    "Chloé;Durand;Durand SA;chloe@durand.example;Partner;France;75002;40;high;Q4 fair\r\n"
    "Zoë;Ng;Ng Pte;zoe@ng.example;Web;Singapore;018989;1200;90;Q4 fair\r\n"
).encode("cp1252")


def test_ops_upload_a_salesforce_export_and_download_the_rejected_rows(logged_in, tmp_path):
    from leadops import roles
    from routing.services import ruleset_create_draft, ruleset_publish
    from tests.factories import RepFactory

    oscar = UserFactory(username="oscar", groups=[roles.OPS])
    RepFactory(user__username="rita")
    ruleset_publish(ruleset_create_draft({"name": "Intake", "rules": [
        {"name": "Everyone", "candidates": {"reps": ["rita"]}, "strategy": "round_robin"}]}))
    path = tmp_path / "salesforce export.csv"
    path.write_bytes(SALESFORCE_EXPORT)

    page = logged_in(oscar, "/intake/")
    page.set_input_files("#id_file", str(path))
    page.get_by_role("button", name="Upload and preview").click()

    # The preview recognised the export and mapped its columns; the user corrects one with htmx.
    page.get_by_text("recognised as a Salesforce export").wait_for()
    campaign = page.get_by_label("Field for Campaign")
    assert campaign.input_value() == "extra"
    campaign.select_option("source")
    page.wait_for_function(
        "document.querySelector('select[aria-label=\"Field for Campaign\"]').value === 'source'"
    )

    page.get_by_role("button", name="Import").click()
    page.get_by_text("Done").first.wait_for()
    assert page.locator(".stat-value").nth(1).inner_text() == "3"  # created
    # Routed as they were written: the job's counts say where the new leads went.
    assigned = page.locator(".stat", has_text="Assigned / pooled / unassigned").locator(".stat-value")
    assert assigned.inner_text() == "3 / 0 / 0"
    # Each rejected row with its spreadsheet row number, the file's column, and the reason.
    problems = page.locator("table tbody tr").all_inner_texts()
    assert problems[0].split("\t")[:2] == ["4", "Email"] and "not-an-email" in problems[0]
    assert problems[1].split("\t")[:2] == ["5", "Score"] and "'high'" in problems[1]

    with page.expect_download() as download:
        page.get_by_role("button", name="Download rejected rows (CSV with reasons)").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text(encoding="utf-8-sig"))))
    assert [r["Email"] for r in rows] == ["not-an-email", "chloe@durand.example"]
    assert all(r["reason"] for r in rows)

    job = ImportJob.objects.get()
    assert (job.created, job.merged, job.failed) == (3, 0, 2)
    assert set(Lead.objects.values_list("source", flat=True)) == {"Q4 fair"}
    assert Lead.objects.get(email="juergen@mueller.example").last_name == "Müller"
    assert set(Lead.objects.values_list("status", "owner__user__username")) == {("assigned", "rita")}

"""Web intake (/intake/): upload, mapping preview, background import with progress, rejected rows, retry."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from routing.intake_tasks import run_import_job
from routing.models import ImportJob, Lead

pytestmark = pytest.mark.django_db

GOOD_AND_BAD = (
    "Email,First Name,Company,Score,Notes\r\n"
    "ann@x.example,Ann,=HYPERLINK(\"http://evil\"),10,first\r\n"
    "bad-email,Bob,+cmd,20,second\r\n"
    "cy@x.example,Cy,@SUM(A1),high,third\r\n"
    "dee@x.example,Dee,Dee Co,30,fourth\r\n"
)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def sync_q(monkeypatch):
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)


def upload(client, text: str | bytes, name: str = "leads.csv", **fields):
    data = text.encode() if isinstance(text, str) else text
    return client.post("/intake/", {"file": SimpleUploadedFile(name, data, content_type="text/csv"), **fields})


def start(client, job: ImportJob, captures, **mapping):
    with captures(execute=True):
        return client.post(f"/intake/{job.pk}/start/", mapping)


ASCII_ROWS = b"Email;Name\r\n" + b"".join(b"a%d@x.example;Ann\r\n" % i for i in range(20))


@pytest.mark.parametrize(("data", "said"), [
    (ASCII_ROWS + "b@x.example;Jürgen\r\n".encode(), "Read as UTF-8,"),
    # Windows-1252 only in row 22, long after the eight rows the preview shows.
    (ASCII_ROWS + "b@x.example;Jürgen\r\n".encode("cp1252"),
     "Read as UTF-8, and Windows-1252 (Latin-1) for the lines that are not UTF-8,"),
    (b"\xef\xbb\xbf" + ASCII_ROWS, "Read as UTF-8 (with a byte-order mark),"),
    # Past the first 64 kB that open_csv() looks at before reading rows.
    (ASCII_ROWS * 2000 + "b@x.example;Jürgen\r\n".encode("cp1252"),
     "Read as UTF-8, and Windows-1252 (Latin-1) for the lines that are not UTF-8,"),
])
def test_the_preview_names_the_encoding_every_row_is_read_with(ops_client, data, said):
    page = ops_client.get(upload(ops_client, data)["Location"]).content.decode()

    assert said in page


def test_a_rep_cannot_open_intake(rep_client):
    assert rep_client.get("/intake/").status_code == 403


def test_uploading_shows_a_preview_with_the_detected_mapping(ops_client):
    resp = upload(ops_client, GOOD_AND_BAD)

    job = ImportJob.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/intake/{job.pk}/"
    page = ops_client.get(resp["Location"]).content.decode()
    assert job.mapping == {"Email": "email", "First Name": "first_name", "Company": "company", "Score": "score",
                           "Notes": "extra"}
    assert "ann@x.example" in page and 'value="email" selected' in page
    assert job.awaiting_confirmation


def test_a_file_over_the_size_limit_is_refused_with_a_clear_message(ops_client, settings):
    settings.INTAKE_MAX_UPLOAD_BYTES = 100

    resp = upload(ops_client, GOOD_AND_BAD)

    assert resp.status_code == 413
    assert "upload limit is 100" in resp.content.decode()
    assert ImportJob.objects.count() == 0


def test_an_unreadable_upload_is_refused(ops_client):
    resp = upload(ops_client, bytes(range(256)) * 10, name="photo.csv")

    assert resp.status_code == 400 and "binary" in resp.content.decode()
    assert ImportJob.objects.count() == 0


def test_correcting_a_column_with_htmx_saves_the_mapping_and_returns_the_preview(ops_client):
    upload(ops_client, GOOD_AND_BAD)
    job = ImportJob.objects.get()

    resp = ops_client.post(f"/intake/{job.pk}/mapping/", {"map-4": "product"}, headers={"HX-Request": "true"})

    job.refresh_from_db()
    assert job.mapping["Notes"] == "product"
    body = resp.content.decode()
    assert body.lstrip().startswith('<section id="preview">') and "<html" not in body


def test_starting_runs_the_import_in_the_background_and_reports_the_counts(
    ops_client, sync_q, django_capture_on_commit_callbacks
):
    upload(ops_client, GOOD_AND_BAD, no_route="on")
    job = ImportJob.objects.get()

    resp = start(ops_client, job, django_capture_on_commit_callbacks)

    job.refresh_from_db()
    assert resp.status_code == 302
    assert (job.status, job.total_rows, job.rows_done, job.created, job.merged, job.failed) == ("done", 4, 4, 2, 0, 2)
    assert set(Lead.objects.values_list("import_job", flat=True)) == {job.pk}
    assert Lead.objects.get(email="ann@x.example").extra == {"Notes": "first"}


def test_the_progress_partial_polls_while_running_and_stops_when_done(ops_client):
    upload(ops_client, GOOD_AND_BAD)
    job = ImportJob.objects.get()
    ImportJob.objects.filter(pk=job.pk).update(status="running", total_rows=4, rows_done=2, created=2)

    running = ops_client.get(f"/intake/{job.pk}/?part=progress", headers={"HX-Request": "true"}).content.decode()
    ImportJob.objects.filter(pk=job.pk).update(status="done", rows_done=4)
    done = ops_client.get(f"/intake/{job.pk}/?part=progress", headers={"HX-Request": "true"}).content.decode()

    assert 'hx-trigger="every 1s"' in running and "2 of 4 rows" in running
    assert "hx-trigger" not in done


def test_the_rejected_rows_download_has_reasons_and_neutralised_formulas(
    ops_client, sync_q, django_capture_on_commit_callbacks
):
    upload(ops_client, GOOD_AND_BAD, no_route="on")
    job = ImportJob.objects.get()
    start(ops_client, job, django_capture_on_commit_callbacks)

    resp = ops_client.get(f"/intake/{job.pk}/rejected.csv")

    rows = list(csv.reader(io.StringIO(b"".join(resp.streaming_content).decode("utf-8-sig"))))
    assert resp["Content-Type"].startswith("text/csv")
    assert rows[0] == ["Email", "First Name", "Company", "Score", "Notes", "row", "reason"]
    assert rows[1][:3] == ["bad-email", "Bob", "'+cmd"]
    assert [r[5] for r in rows[1:]] == ["3", "4"]  # their rows in the uploaded file, as the page lists them
    assert "invalid email" in rows[1][6]
    assert rows[2][2] == "'@SUM(A1)" and rows[2][6].startswith("Score: score must be")
    assert len(rows) == 3


def test_a_corrected_rejected_file_can_be_imported_as_a_retry(
    ops_client, sync_q, django_capture_on_commit_callbacks
):
    upload(ops_client, GOOD_AND_BAD, no_route="on")
    first = ImportJob.objects.get()
    start(ops_client, first, django_capture_on_commit_callbacks)
    rejected = b"".join(ops_client.get(f"/intake/{first.pk}/rejected.csv").streaming_content).decode("utf-8-sig")
    fixed = rejected.replace("bad-email", "bob@x.example").replace(",high,", ",40,")

    resp = upload(ops_client, fixed, name="fixed.csv", retry_of=first.pk)
    retry = ImportJob.objects.exclude(pk=first.pk).get()
    start(ops_client, retry, django_capture_on_commit_callbacks)

    retry.refresh_from_db()
    assert resp.status_code == 302 and retry.retry_of == first
    assert (retry.created, retry.failed) == (2, 0)
    bob = Lead.objects.get(email="bob@x.example")
    assert bob.company == "+cmd"  # our own "'" escape is undone on a retry
    assert "reason" not in bob.extra and "row" not in bob.extra
    assert retry.route is False and bob.routing_held  # held, as the import it retries was


def test_a_retry_of_a_retry_keeps_one_row_and_one_reason_column(
    ops_client, sync_q, django_capture_on_commit_callbacks
):
    def rejected(job):
        return b"".join(ops_client.get(f"/intake/{job.pk}/rejected.csv").streaming_content).decode("utf-8-sig")

    def retry(text, of):
        upload(ops_client, text, name="fixed.csv", retry_of=of.pk)
        job = ImportJob.objects.latest("pk")
        start(ops_client, job, django_capture_on_commit_callbacks)
        job.refresh_from_db()
        return job

    upload(ops_client, GOOD_AND_BAD, no_route="on")
    first = ImportJob.objects.get()
    start(ops_client, first, django_capture_on_commit_callbacks)
    second = retry(rejected(first).replace("bad-email", "bob@x.example"), of=first)  # the score still says "high"
    again = rejected(second)
    third = retry(again.replace(",high,", ",40,"), of=second)

    header, *rows = list(csv.reader(io.StringIO(again)))
    assert header == ["Email", "First Name", "Company", "Score", "Notes", "row", "reason"]
    assert rows[0][5] == "3" and rows[0][6].startswith("Score: score must be")  # its row in the second file
    assert (second.created, second.failed, third.created, third.failed) == (1, 1, 1, 0)
    assert Lead.objects.get(email="cy@x.example").extra == {"Notes": "third"}


def test_a_column_of_the_files_own_called_reason_survives_a_retry(
    ops_client, sync_q, django_capture_on_commit_callbacks
):
    """Our row and reason are told from the user's own "reason" column by their place: the last two."""
    upload(ops_client, "Email,Name,reason\r\nbad-email,Bob,trade fair\r\n", no_route="on")
    first = ImportJob.objects.get()
    start(ops_client, first, django_capture_on_commit_callbacks)
    rejected = b"".join(ops_client.get(f"/intake/{first.pk}/rejected.csv").streaming_content).decode("utf-8-sig")
    upload(ops_client, rejected.replace("bad-email", "bob@x.example"), name="fixed.csv", retry_of=first.pk)
    retry = ImportJob.objects.latest("pk")
    start(ops_client, retry, django_capture_on_commit_callbacks)

    assert rejected.splitlines()[0] == "Email,Name,reason,row,reason"
    assert retry.mapping == {"Email": "email", "Name": "extra", "reason": "extra", "row": "ignore",
                             "reason_2": "ignore"}
    assert Lead.objects.get(email="bob@x.example").extra == {"Name": "Bob", "reason": "trade fair"}


def test_the_history_lists_imports_with_their_counts(ops_client):
    upload(ops_client, GOOD_AND_BAD)
    ImportJob.objects.update(status="done", total_rows=4, created=2, failed=2)

    page = ops_client.get("/intake/").content.decode()

    assert "leads.csv" in page and "Rejected rows" in page


def test_the_task_claims_its_job_once(ops_client):
    upload(ops_client, GOOD_AND_BAD, no_route="on")
    job = ImportJob.objects.get()
    ImportJob.objects.filter(pk=job.pk).update(queued_at=job.created_at)

    first = run_import_job(job.pk)
    second = run_import_job(job.pk)

    assert first["rows"] == 4 and first["created"] == 2
    assert second == {"skipped": True}
    assert Lead.objects.count() == 2


def test_a_garbled_retry_reference_uploads_as_a_fresh_import(ops_client):
    response = upload(ops_client, GOOD_AND_BAD, retry_of="not-a-number")

    job = ImportJob.objects.get()
    assert response.status_code == 302
    assert job.retry_of is None


def test_the_job_page_and_rejected_rows_only_answer_reads(ops_client):
    upload(ops_client, GOOD_AND_BAD)
    job = ImportJob.objects.get()

    assert ops_client.post(f"/intake/{job.pk}/").status_code == 405
    assert ops_client.post(f"/intake/{job.pk}/rejected.csv").status_code == 405

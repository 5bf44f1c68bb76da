"""Creating and starting web imports (routing.intake_jobs): a job is queued once, however often it is confirmed."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django_q.models import Task

from routing.intake_jobs import ImportAlreadyStarted, ImportRefused, UploadTooLarge, import_job_create, import_job_start
from routing.models import ImportJob, Lead
from tests.concurrency import run_at_once

LEADS = "Email,First Name\r\nann@x.example,Ann\r\nbob@x.example,Bob\r\n"


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def csv_upload(text: str = LEADS, name: str = "leads.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")


def new_job(user, text: str = LEADS, **options) -> ImportJob:
    return import_job_create(csv_upload(text), actor=user, route=False, **options)


def runs_queued(job: ImportJob) -> int:
    return Task.objects.filter(name=f"import-{job.pk}").count()


def stored_files(settings) -> list:
    return [p for p in settings.MEDIA_ROOT.rglob("*") if p.is_file()] if settings.MEDIA_ROOT.exists() else []


@pytest.mark.django_db
def test_an_upload_becomes_a_job_awaiting_confirmation_with_the_detected_mapping(ops_user):
    job = new_job(ops_user, source="Fair 2026")

    job.refresh_from_db()
    assert job.awaiting_confirmation
    assert job.mapping == {"Email": "email", "First Name": "first_name"}
    assert (job.original_name, job.source, job.created_by, job.route) == ("leads.csv", "Fair 2026", ops_user, False)


@pytest.mark.django_db
def test_a_retry_keeps_the_source_of_the_job_it_retries_and_ignores_the_reason_column(ops_user):
    first = new_job(ops_user, source="Fair 2026")

    retry = new_job(ops_user, text="Email,reason\r\nbob@x.example,invalid email\r\n", retry_of=first)

    assert retry.source == "Fair 2026"
    assert retry.mapping["reason"] == "ignore"


@pytest.mark.django_db
def test_a_retry_keeps_the_mapping_the_user_corrected_for_the_first_attempt(ops_user):
    """The user mapped "Where" (unrecognised) to country before importing; the rejected rows come
    back under the same headers and must not lose that, or the fixed leads arrive without a country."""
    first = new_job(ops_user, text="Email,Where,Notes\r\nann@x.example,Austria,hi\r\n")
    import_job_start(first, {"Email": "email", "Where": "country", "Notes": "extra"}, actor=ops_user)

    retry = new_job(ops_user, text="Email,Where,Notes,row,reason\r\nann@x.example,Austria,hi,2,bad\r\n",
                    retry_of=first)

    assert retry.mapping == {"Email": "email", "Where": "country", "Notes": "extra", "row": "ignore",
                             "reason": "ignore"}


@pytest.mark.django_db
def test_salesforce_account_address_columns_are_recognised(ops_user):
    job = new_job(ops_user, text="Email,Billing Country,Billing State/Province,Billing Zip/Postal Code,Lead Source\r\n"
                                 "ann@x.example,Austria,Wien,1010,Web\r\n")

    assert job.mapping == {"Email": "email", "Billing Country": "country", "Billing State/Province": "region",
                           "Billing Zip/Postal Code": "postcode", "Lead Source": "source"}


@pytest.mark.django_db
def test_an_unreadable_upload_is_refused_and_leaves_no_job_and_no_file(ops_user, settings):
    with pytest.raises(ImportRefused, match=r"photo\.csv"):
        import_job_create(SimpleUploadedFile("photo.csv", bytes(range(256)) * 10), actor=ops_user)

    assert ImportJob.objects.count() == 0
    assert stored_files(settings) == []


@pytest.mark.django_db
def test_an_upload_over_the_limit_is_refused_before_anything_is_stored(ops_user, settings):
    settings.INTAKE_MAX_UPLOAD_BYTES = 10

    with pytest.raises(UploadTooLarge, match="the upload limit is 10"):
        new_job(ops_user)

    assert ImportJob.objects.count() == 0
    assert stored_files(settings) == []


@pytest.mark.django_db(transaction=True)
def test_starting_saves_the_mapping_and_queues_one_run_that_imports_the_file(ops_user):
    job = new_job(ops_user)
    mapping = {"Email": "email", "First Name": "extra"}

    import_job_start(job, mapping, actor=ops_user)

    job.refresh_from_db()
    assert job.mapping == mapping and job.queued_at is not None
    assert runs_queued(job) == 1
    assert (job.status, job.created) == ("done", 2)
    assert Lead.objects.get(email="ann@x.example").extra == {"First Name": "Ann"}


@pytest.mark.django_db(transaction=True)
def test_a_second_start_from_a_stale_page_is_refused_and_queues_nothing(ops_user):
    job = new_job(ops_user)
    stale = ImportJob.objects.get(pk=job.pk)  # the second tab, loaded before the first confirmed
    import_job_start(job, job.mapping, actor=ops_user)

    with pytest.raises(ImportAlreadyStarted):
        import_job_start(stale, {"Email": "email", "First Name": "last_name"}, actor=ops_user)

    job.refresh_from_db()
    assert runs_queued(job) == 1
    assert job.mapping["First Name"] == "first_name"  # the refused start changed nothing


@pytest.mark.django_db
def test_a_job_that_has_run_cannot_be_started_again(ops_user):
    job = new_job(ops_user)
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.DONE)
    job.refresh_from_db()

    with pytest.raises(ImportAlreadyStarted):
        import_job_start(job, job.mapping, actor=ops_user)

    assert runs_queued(job) == 0


@pytest.mark.django_db
def test_a_mapping_without_email_or_phone_is_refused_and_not_saved(ops_user):
    job = new_job(ops_user)

    with pytest.raises(ImportRefused, match="Map a column to email or phone before importing"):
        import_job_start(job, {"Email": "extra", "First Name": "first_name"}, actor=ops_user)

    job.refresh_from_db()
    assert job.awaiting_confirmation and job.mapping["Email"] == "email"
    assert runs_queued(job) == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_starts_at_once_queue_one_run(ops_user):
    job = new_job(ops_user)
    # Both loaded before either confirms, so both get past the first check: only the UPDATE decides.
    pages = [ImportJob.objects.get(pk=job.pk) for _ in range(2)]

    def confirm() -> str:
        try:
            import_job_start(pages.pop(), job.mapping, actor=ops_user)
        except ImportAlreadyStarted:
            return "refused"
        return "started"

    outcomes = run_at_once(confirm, threads=2)

    job.refresh_from_db()
    assert sorted(outcomes) == ["refused", "started"]
    assert runs_queued(job) == 1
    assert (job.status, job.created) == ("done", 2)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_double_click_on_start_queues_one_run(ops_user):
    job = new_job(ops_user)
    tabs = []
    for _ in range(2):
        tab = Client()
        tab.force_login(ops_user)
        tabs.append(tab)

    responses = run_at_once(lambda: tabs.pop().post(f"/intake/{job.pk}/start/", {"map-0": "email"}), threads=2)

    job.refresh_from_db()
    assert [r.status_code for r in responses] == [302, 302]
    assert runs_queued(job) == 1
    assert (job.status, job.created) == ("done", 2)

"""Web imports as a workflow: create an ImportJob from an uploaded file, then start it once the user has
confirmed the column mapping. The views parse the form and turn ImportRefused into a message; the
background work itself is routing.intake_tasks.run_import_job."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from routing.csvio import IGNORE, TARGETS, CsvUnreadable, open_csv, scan_encoding
from routing.models import ImportJob
from routing.tasks import enqueue

# The columns the rejected-rows download adds after the file's own (routing/views/intake.py).
REJECTED_COLUMNS = ("row", "reason")
# As they come back in a retry's file: renamed row_2 / reason_2 when the file had its own of that name.
_OWN_ROW = re.compile(r"row(_\d+)?")
_OWN_REASON = re.compile(r"reason(_\d+)?")


def rejected_columns_in(headers: list[str]) -> list[str]:
    """The headers of a retry file that our rejected-rows download added: its last two, `row` then
    `reason` (an export from before the row column ends with `reason` alone). Recognised by their
    place, not their name alone, so that a column of the user's own called "reason" stays data."""
    if not headers or not _OWN_REASON.fullmatch(headers[-1]):
        return []
    if len(headers) >= 2 and _OWN_ROW.fullmatch(headers[-2]):
        return headers[-2:]
    return headers[-1:]

log = logging.getLogger(__name__)

# A job needs at least one of these mapped: they are how a lead is recognised and deduplicated.
CONTACT_TARGETS = frozenset({"email", "phone"})


class ImportRefused(Exception):
    """An upload or a start that is not allowed; the message is meant for the user."""


class UploadTooLarge(ImportRefused):
    """The file is over INTAKE_MAX_UPLOAD_BYTES (the view answers 413)."""


class ImportAlreadyStarted(ImportRefused):
    """The job was confirmed before (a double click, a second tab) or has already run."""


def import_job_create(
    upload: File, *, actor, source: str = "", route: bool = True, retry_of: ImportJob | None = None
) -> ImportJob:
    """Store the uploaded file and create a job awaiting confirmation, with the detected mapping.

    A retry of a job's rejected rows takes that job's source unless one is given, and ignores the
    `row` and `reason` columns our own export added. Raises UploadTooLarge or ImportRefused (unreadable CSV);
    nothing is kept then.
    """
    limit = settings.INTAKE_MAX_UPLOAD_BYTES
    if upload.size > limit:
        raise UploadTooLarge(
            f"{upload.name} is {filesizeformat(upload.size)}; the upload limit is {filesizeformat(limit)}. "
            "Split the file or import it with `manage.py import_leads`."
        )
    name = Path(upload.name).name
    job = ImportJob(
        original_name=name[:255], created_by=actor, retry_of=retry_of,
        source=(source or (retry_of.source if retry_of else "")).strip()[:100], route=route,
    )
    job.file.save(name, upload, save=False)
    try:
        with job.file.open("rb") as stream:
            csvfile = open_csv(stream)
            # Once, here: the preview is drawn again on every change of a column's target.
            stream.seek(0)
            job.encoding = scan_encoding(stream)
        job.mapping = csvfile.mapping
        if retry_of is not None:
            # The columns keep the targets the user confirmed for the first attempt (the rejected
            # rows come back under the same headers), where the guess may differ.
            job.mapping.update({h: t for h, t in retry_of.mapping.items() if h in job.mapping and t in TARGETS})
            for column in rejected_columns_in(csvfile.headers):  # our own export's: not lead data
                job.mapping[column] = IGNORE
        with transaction.atomic():
            job.save()
    except CsvUnreadable as exc:
        job.file.delete(save=False)
        raise ImportRefused(f"{upload.name}: {exc}") from exc
    except BaseException:
        job.file.delete(save=False)  # no row points at it: it would never be cleaned up
        raise
    return job


def import_job_start(job: ImportJob, mapping: dict[str, str], *, actor) -> ImportJob:
    """Save the confirmed mapping, mark the job queued and enqueue its run after commit.

    The job is claimed with one conditional UPDATE, so two confirmations at once (double click,
    two tabs) queue it once: the loser gets ImportAlreadyStarted. A mapping without an email or
    phone column is refused with ImportRefused.
    """
    if not job.awaiting_confirmation:
        raise ImportAlreadyStarted(f"{job.original_name} has already been started.")
    if not CONTACT_TARGETS & set(mapping.values()):
        raise ImportRefused("Map a column to email or phone before importing.")
    now = timezone.now()
    with transaction.atomic():
        claimed = ImportJob.objects.filter(
            pk=job.pk, status=ImportJob.Status.PENDING, queued_at__isnull=True
        ).update(mapping=mapping, queued_at=now)
        if not claimed:
            raise ImportAlreadyStarted(f"{job.original_name} has already been started.")
        # Enqueue after commit so the worker never looks for a job row that is not there yet.
        transaction.on_commit(
            lambda: enqueue("routing.intake_tasks.run_import_job", job.pk, task_name=f"import-{job.pk}")
        )
    job.mapping, job.queued_at = mapping, now
    log.info("import job %s queued by %s", job.pk, actor)
    return job

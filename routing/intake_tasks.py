"""The django-q2 task behind web imports. It takes the ImportJob id, never the instance."""

from __future__ import annotations

import logging

from django.utils import timezone

from routing.csvio import CsvUnreadable, open_csv
from routing.intake import Importer, ImportResult
from routing.models import ImportJob

log = logging.getLogger(__name__)


def run_import_job(job_id: int) -> dict:
    """Import the job's file. Claimed with a conditional UPDATE so a retried task never runs twice."""
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.PENDING).update(
        status=ImportJob.Status.RUNNING, started_at=timezone.now()
    )
    if not claimed:
        return {"skipped": True}
    job = ImportJob.objects.select_related("created_by").get(pk=job_id)
    try:
        total = _count_rows(job)
        ImportJob.objects.filter(pk=job.pk).update(total_rows=total)

        def progress(result: ImportResult, rows_done: int) -> None:
            # One UPDATE per chunk: the page polls these counters for the progress bar.
            ImportJob.objects.filter(pk=job.pk).update(
                rows_done=rows_done, total_rows=max(total, rows_done), created=result.created,
                merged=result.merged, failed=result.failed, assigned=result.assigned, pooled=result.pooled,
                unassigned=result.unassigned,
            )

        with job.file.open("rb") as stream:
            csvfile = open_csv(stream, job.mapping)
            importer = Importer(
                source=job.source or job.original_name, actor=job.created_by, route=job.route, job=job,
                on_progress=progress, unescape_formulas=job.retry_of_id is not None,
            )
            result = importer.run(csvfile)
    except CsvUnreadable as exc:
        _finish(job.pk, ImportJob.Status.FAILED, message=str(exc))
        return {"failed": str(exc)}
    except Exception as exc:
        log.exception("import job %s failed", job_id)
        _finish(job.pk, ImportJob.Status.FAILED, message=f"The import stopped: {exc}")
        raise
    summary = result.as_json()
    ImportJob.objects.filter(pk=job.pk).update(
        rows_done=result.rows, total_rows=result.rows,
        created=result.created, merged=result.merged, failed=result.failed, assigned=result.assigned,
        pooled=result.pooled, unassigned=result.unassigned, errors=result.errors,
    )
    _finish(job.pk, ImportJob.Status.DONE)
    return summary


def _count_rows(job: ImportJob) -> int:
    with job.file.open("rb") as stream:
        return sum(1 for _ in open_csv(stream, job.mapping).records)


def _finish(job_id: int, status: str, message: str = "") -> None:
    ImportJob.objects.filter(pk=job_id).update(status=status, message=message, finished_at=timezone.now())

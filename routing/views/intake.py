"""Web intake for ops staff: upload, map columns, preview, import in the background, follow progress,
download the rejected rows, retry with a corrected file."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from leadops.roles import is_manager, ops_required
from routing.csvio import IGNORE, TARGETS, CsvUnreadable, open_csv, safe_cell
from routing.intake_jobs import (
    REJECTED_COLUMNS,
    ImportAlreadyStarted,
    ImportRefused,
    UploadTooLarge,
    import_job_create,
    import_job_start,
    rejected_columns_in,
)
from routing.models import ImportJob, Lead

PREVIEW_ROWS = 8
ENCODING_NAMES = {
    "utf-8": "UTF-8",
    "utf-8-sig": "UTF-8 (with a byte-order mark)",
    "utf-16": "UTF-16 (Excel Unicode text)",
    "utf-8+cp1252": "UTF-8, and Windows-1252 (Latin-1) for the lines that are not UTF-8",
    "utf-8-sig+cp1252": "UTF-8 with a byte-order mark, and Windows-1252 (Latin-1) for the lines that are not UTF-8",
}
DELIMITER_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}


def _get_job(pk: int) -> ImportJob:
    return get_object_or_404(ImportJob.objects.select_related("created_by", "retry_of"), pk=pk)


@ops_required
@require_http_methods(["GET", "POST"])
def intake_home(request: HttpRequest) -> HttpResponse:
    """The upload form and the import history. POST uploads a file (optionally as a retry)."""
    status = 200
    if request.method == "POST":
        try:
            job = _upload(request)
        except ImportRefused as exc:
            messages.error(request, str(exc))
            status = 413 if isinstance(exc, UploadTooLarge) else 400
        else:
            return redirect("intake_job", pk=job.pk)
    jobs = ImportJob.objects.select_related("created_by")[:30]
    return TemplateResponse(
        request, "routing/intake.html",
        {"jobs": jobs, "limit": settings.INTAKE_MAX_UPLOAD_BYTES}, status=status,
    )


def _upload(request: HttpRequest) -> ImportJob:
    upload = request.FILES.get("file")
    if upload is None:
        raise ImportRefused("Choose a CSV file to upload.")
    # A hand-edited or stale form may send anything here; an unknown job is simply not a retry.
    retry_id = request.POST.get("retry_of", "")
    retry_of = ImportJob.objects.filter(pk=int(retry_id)).first() if retry_id.isdecimal() else None
    return import_job_create(
        upload, actor=request.user, retry_of=retry_of, source=request.POST.get("source") or "",
        # A retry is routed, or held, as the import it retries was.
        route=retry_of.route if retry_of is not None else request.POST.get("no_route") != "on",
    )


def _preview(job: ImportJob) -> dict:
    try:
        with job.file.open("rb") as stream:
            csvfile = open_csv(stream, job.mapping)
            rows = [
                {"n": n, "cells": None, "error": cells} if isinstance(cells, str) else {"n": n, "cells": cells}
                for n, cells in islice(csvfile.records, PREVIEW_ROWS)
            ]
    except CsvUnreadable as exc:
        return {"preview_error": str(exc)}
    columns = [
        {"index": i, "header": h, "target": csvfile.mapping.get(h, "extra")} for i, h in enumerate(csvfile.headers)
    ]
    # The rows shown are only the start: the label was found for the whole file at upload (a job
    # uploaded before that was stored has only what reading the first rows found).
    encoding = job.encoding or csvfile.encoding
    return {
        "columns": columns, "rows": rows, "targets": TARGETS,
        "encoding": ENCODING_NAMES.get(encoding, encoding),
        "delimiter": DELIMITER_NAMES.get(csvfile.delimiter, csvfile.delimiter),
        "preset": csvfile.preset,
    }


@ops_required
@require_GET
def intake_job(request: HttpRequest, pk: int) -> HttpResponse:
    """One import: the mapping preview while waiting, then live progress and the summary."""
    job = _get_job(pk)
    context = {"job": job, "errors": job.errors[:100], "can_manage": is_manager(request.user)}
    if not job.route and job.status == ImportJob.Status.DONE:
        context["held_now"] = job.leads.filter(status=Lead.Status.UNASSIGNED, routing_held=True).count()
    if job.awaiting_confirmation:
        context.update(_preview(job))
    if request.htmx and request.GET.get("part") == "progress":
        return TemplateResponse(request, "routing/intake_job.html#progress", context)
    return TemplateResponse(request, "routing/intake_job.html", context)


def _mapping_from(request: HttpRequest, job: ImportJob) -> dict[str, str]:
    with job.file.open("rb") as stream:
        headers = open_csv(stream, job.mapping).headers
    mapping = dict(job.mapping)
    for i, header in enumerate(headers):
        target = request.POST.get(f"map-{i}")
        if target in TARGETS:
            mapping[header] = target
    return mapping


@ops_required
@require_POST
def intake_mapping(request: HttpRequest, pk: int) -> HttpResponse:
    """htmx: the user corrected a column's target; save it and show the preview again."""
    job = _get_job(pk)
    if not job.awaiting_confirmation:
        return redirect("intake_job", pk=job.pk)
    try:
        job.mapping = _mapping_from(request, job)
    except CsvUnreadable:
        return redirect("intake_job", pk=job.pk)
    job.save(update_fields=["mapping"])
    context = {"job": job, **_preview(job)}
    template = "routing/intake_job.html#preview" if request.htmx else "routing/intake_job.html"
    return TemplateResponse(request, template, context)


@ops_required
@require_POST
def intake_start(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job(pk)
    if not job.awaiting_confirmation:
        return redirect("intake_job", pk=job.pk)  # already running or done: the page shows it
    try:
        import_job_start(job, _mapping_from(request, job), actor=request.user)
    except ImportAlreadyStarted:
        pass  # a double click or a second tab: the first confirmation is the one that runs
    except (CsvUnreadable, ImportRefused) as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Importing {job.original_name} in the background.")
    return redirect("intake_job", pk=job.pk)


@ops_required
@require_GET
def intake_rejected(request: HttpRequest, pk: int) -> HttpResponse:
    """The rejected rows as they were uploaded, plus `row` (its row in the uploaded file, as the page
    lists it) and `reason` columns; cells made formula-safe. A retry ignores both columns."""
    job = _get_job(pk)
    reasons: dict[int, list[str]] = {}
    for err in job.errors:
        column = f"{err['column']}: " if err.get("column") else ""
        reasons.setdefault(err["row"], []).append(column + err["message"])
    response = StreamingHttpResponse(_rejected_lines(job, reasons), content_type="text/csv; charset=utf-8")
    stem = Path(job.original_name).stem or "import"
    response["Content-Disposition"] = f'attachment; filename="{stem}-rejected.csv"'
    return response


def _rejected_lines(job: ImportJob, reasons: dict[int, list[str]]) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")

    def flush() -> str:
        text = buf.getvalue()
        buf.seek(0)
        buf.truncate()
        return text

    yield "\ufeff"  # so Excel opens the accents correctly
    with job.file.open("rb") as stream:
        csvfile = open_csv(stream, job.mapping)
        width = len(csvfile.headers)
        # A retry's file carries the row and reason of the import before: replaced, not repeated,
        # so that fixing a file twice gives the same columns (not row_2, reason_2 landing in extra).
        earlier = rejected_columns_in(csvfile.headers) if job.retry_of_id else []
        keep = [
            i for i, h in enumerate(csvfile.headers) if not (h in earlier and job.mapping.get(h) == IGNORE)
        ]
        writer.writerow([safe_cell(csvfile.headers[i]) for i in keep] + list(REJECTED_COLUMNS))
        yield flush()
        for row, cells in csvfile.records:
            if row not in reasons:
                continue
            cells = [cells] if isinstance(cells, str) else list(cells)
            reason = "; ".join(reasons[row])
            if len(cells) > width:
                # Keep the `reason` column aligned; the surplus cells travel inside the reason.
                reason += " (surplus cells: " + " | ".join(cells[width:]) + ")"
            cells = (cells + [""] * width)[:width]
            writer.writerow([safe_cell(c) for c in [*(cells[i] for i in keep), str(row), reason]])
            yield flush()

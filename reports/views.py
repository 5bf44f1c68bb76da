"""Report pages for managers (and one for each rep). Read-only: nothing here writes.

Filters live in the query string; an htmx request (the filter bar) gets only the report body.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from leadops.roles import manager_required, rep_required
from reports import selectors
from reports.export import csv_lines
from reports.filters import ReportFilter, scope_from
from reports.selectors import Scope
from reports.tables import TABLES, Table

REPORT_PAGES = [
    ("reports:dashboard", "Overview"),
    ("reports:speed", "Speed-to-lead"),
    ("reports:sla", "SLA"),
    ("reports:conversion", "Conversion"),
    ("reports:fairness", "Fairness & workload"),
]


def _scope(request: HttpRequest, fixed: dict | None = None) -> tuple[Scope, ReportFilter]:
    filterset = ReportFilter(request.GET or None)
    return scope_from(filterset, fixed=fixed), filterset


def _query(request: HttpRequest, **overrides: str) -> str:
    params = request.GET.copy()
    for key, value in overrides.items():
        params[key] = value
    return params.urlencode()


def _render(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    # A filter change swaps only the body; a boosted or history-restore request needs the full page.
    if request.htmx and not request.htmx.boosted and not request.htmx.history_restore_request:
        template = f"{template}#report-body"
    context.setdefault("pages", REPORT_PAGES)
    context.setdefault("query", _query(request))
    response = TemplateResponse(request, template, context)
    # Render now, inside the report's time zone, so dates on the page read as the manager's local time.
    with timezone.override(context["scope"].tz):
        response.render()
    return response


def _with_links(request: HttpRequest, *tables: Table) -> list[Table]:
    for table in tables:
        table.csv_query = _query(request, **({"by": table.by} if table.by else {}))
        table.by_links = [(key, label, _query(request, by=key)) for key, label in table.by_choices]
    return list(tables)


@manager_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    scope, filterset = _scope(request)
    board = selectors.dashboard(scope)
    sources = TABLES["sources"](scope, rows=board.sources)
    context = {
        "filter": filterset,
        "scope": scope,
        "received": selectors.received_windows(scope),
        "summary": board.summary,
        "snapshot": selectors.snapshot(scope),
        "arrivals_chart": {"labels": [f"{h:02d}" for h in range(24)], "values": board.arrivals},
        "distribution_chart": {
            "labels": [row["label"] for row in board.distribution],
            "values": [row["count"] for row in board.distribution],
        },
        "tables": _with_links(request, sources),
    }
    return _render(request, "reports/dashboard.html", context)


def _table_page(request: HttpRequest, names: list[str], title: str, intro: str) -> HttpResponse:
    scope, filterset = _scope(request)
    by = request.GET.get("by", "")
    tables = _with_links(request, *[TABLES[name](scope, by) for name in names])
    return _render(
        request,
        "reports/table_page.html",
        {"filter": filterset, "scope": scope, "tables": tables, "title": title, "intro": intro},
    )


@manager_required
@require_GET
def speed(request: HttpRequest) -> HttpResponse:
    return _table_page(
        request,
        ["speed"],
        "Speed-to-lead",
        "From arrival to first touch, and each step in between: median, 90th percentile and the share "
        "answered within 5 minutes, an hour and a day.",
    )


@manager_required
@require_GET
def sla(request: HttpRequest) -> HttpResponse:
    return _table_page(
        request,
        ["sla", "overdue"],
        "SLA",
        "How often the first-touch promise is kept, who breached it, how far escalations went — and what is "
        "overdue right now.",
    )


@manager_required
@require_GET
def conversion(request: HttpRequest) -> HttpResponse:
    return _table_page(
        request,
        ["conversion"],
        "Conversion",
        "Rates, not totals: won and qualified as a share of the leads each rep, source or segment was given.",
    )


@manager_required
@require_GET
def fairness(request: HttpRequest) -> HttpResponse:
    scope, filterset = _scope(request)
    index = TABLES["fairness_index"](scope)
    tables = _with_links(request, TABLES["fairness"](scope), index, TABLES["hoarding"](scope))
    chart = {
        "labels": [row["label"] for row in index.rows],
        "values": [round(row["gini"], 3) if row["gini"] is not None else None for row in index.rows],
    }
    return _render(
        request,
        "reports/table_page.html",
        {
            "filter": filterset,
            "scope": scope,
            "tables": tables,
            "gini_chart": chart,
            "title": "Fairness & workload",
            "intro": "Did each rep get the share their weight and working hours promise? Who is full, who hoards?",
        },
    )


@manager_required
@require_GET
def export(request: HttpRequest, name: str) -> StreamingHttpResponse:
    builder = TABLES.get(name)
    if builder is None:
        raise Http404("no such report table")
    scope, _ = _scope(request)
    table = builder(scope, request.GET.get("by", ""))
    stamp = scope.now.astimezone(scope.tz).strftime("%Y%m%d-%H%M")
    suffix = f"-by-{table.by}" if table.by else ""
    response = StreamingHttpResponse(csv_lines(table), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="leadops-{name}{suffix}-{stamp}.csv"'
    return response


@rep_required
@require_GET
def me(request: HttpRequest) -> HttpResponse:
    rep = request.user.rep
    # A rep sees only their own figures and team medians: the dimension filters are fixed to them.
    scope, filterset = _scope(request, fixed={"team": None, "rep": None, "source": "", "rule": None, "pool": None})
    summary = selectors.rep_summary(scope, rep)
    return _render(request, "reports/me.html", {"filter": filterset, "scope": scope, "summary": summary,
                                                "pages": [], "only_dates": True})

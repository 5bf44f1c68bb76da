"""Per-lead pages outside the board: "why did this lead go there?" (/leads/<id>/explain/) and the
managers' Unassigned queue (/unassigned/) with route-now and manual assignment as htmx row swaps.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, OuterRef, Q, Subquery
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_GET, require_POST

from leadops.roles import is_manager, manager_required
from reps.models import Rep
from routing.models import Lead, LeadEvent
from routing.services import LeadError, lead_assign_manual, lead_explain, lead_route_by_hand, leads_release_held

UNASSIGNED_PAGE = 200


def _get_lead_for_user(user, pk: int) -> Lead:
    """The lead if the user may see it (managers: any; reps: their own and their pools' waiting
    leads); otherwise 404, so nobody learns which ids exist."""
    lead = Lead.objects.visible_to(user).select_related("owner__user", "pool", "rule").filter(pk=pk).first()
    if lead is None:
        raise Http404("No such lead")
    return lead


@login_required
@require_GET
def explain(request: HttpRequest, pk: int) -> HttpResponse:
    lead = _get_lead_for_user(request.user, pk)
    explanation = lead_explain(lead)
    try:
        decided_at = dt.datetime.fromisoformat(explanation["at"]) if explanation.get("at") else None
    except (TypeError, ValueError):
        decided_at = None
    events = list(lead.events.select_related("rep__user", "actor").order_by("at", "id"))
    return TemplateResponse(request, "routing/explain.html", {
        "lead": lead,
        "x": explanation,
        "tried": explanation.get("tried") or [],
        "decided_at": decided_at,
        "events": events if is_manager(request.user) else [e for e in events if e.kind != LeadEvent.Kind.NOTIFIED],
    })


# -- the Unassigned queue -------------------------------------------------------------------------


def _unassigned_leads():
    last_reason = (
        LeadEvent.objects.filter(lead=OuterRef("pk"), kind=LeadEvent.Kind.UNASSIGNED)
        .order_by("-at", "-id")
        .values("detail")[:1]
    )
    return (
        Lead.objects.filter(status=Lead.Status.UNASSIGNED)
        .annotate(last_unassigned=Subquery(last_reason))
        .order_by("received_at", "id")
    )


def _reason(detail: Any) -> str:
    # JSON from a Subquery arrives decoded on PostgreSQL but as text on SQLite.
    if isinstance(detail, str):
        try:
            detail = json.loads(detail)
        except ValueError:
            return detail
    if isinstance(detail, dict):
        return detail.get("summary") or detail.get("reason") or ""
    return ""


HELD_REASON = "held: imported without routing — route it or assign it"


def _why(lead: Lead) -> str:
    if lead.routing_held and not lead.last_unassigned:
        return HELD_REASON
    return _reason(lead.last_unassigned) or "not routed yet"


def _reps():
    return list(Rep.objects.filter(active=True).select_related("user").order_by("user__username"))


@manager_required
@require_GET
def unassigned(request: HttpRequest) -> HttpResponse:
    counts = Lead.objects.filter(status=Lead.Status.UNASSIGNED).aggregate(
        total=Count("id"), held=Count("id", filter=Q(routing_held=True)))
    leads = list(_unassigned_leads()[:UNASSIGNED_PAGE])
    for lead in leads:
        lead.reason = _why(lead)
    return TemplateResponse(request, "routing/unassigned.html", {
        "leads": leads, **counts, "reps": _reps(), "page_size": UNASSIGNED_PAGE,
    })


@manager_required
@require_POST
def unassigned_release_held(request: HttpRequest) -> HttpResponse:
    """"Route all held leads": every lead imported with "do not route" goes to routing."""
    released = leads_release_held(actor=request.user)
    if released:
        messages.success(request, f"{released} held lead{'s' if released != 1 else ''} released to routing: "
                                  "they are being routed now.")
    else:
        messages.info(request, "No held leads were waiting.")
    return redirect("unassigned")


def _row(request: HttpRequest, pk: int, *, note: str = "", error: str = "") -> TemplateResponse:
    lead = Lead.objects.select_related("owner__user", "pool").filter(pk=pk).first()
    if lead is None:
        raise Http404("No such lead")
    if lead.status == Lead.Status.UNASSIGNED:
        row = _unassigned_leads().filter(pk=pk).first()
        lead.reason = _why(row) if row else "not routed yet"
    context = {"lead": lead, "reps": _reps(), "note": note, "error": error}
    return TemplateResponse(request, "routing/unassigned.html#lead-row", context, status=422 if error else 200)


@manager_required
@require_POST
def unassigned_route(request: HttpRequest, pk: int) -> HttpResponse:
    lead = Lead.objects.filter(pk=pk).first()
    if lead is None:
        raise Http404("No such lead")
    # Routing it by hand ends a hold: if nobody can take it now, route_pending retries.
    counts = lead_route_by_hand(pk, actor=request.user)
    lead.refresh_from_db()
    if counts["assigned"]:
        note = f"Routed to {lead.owner.display_name}."
    elif counts["pooled"]:
        note = f"Sent to pool {lead.pool}."
    elif lead.status != Lead.Status.UNASSIGNED:
        note = f"Already {lead.get_status_display().lower()}."
    else:
        note = "Still nobody available — see the reason."
    return _after_action(request, pk, note=note)


@manager_required
@require_POST
def unassigned_assign(request: HttpRequest, pk: int) -> HttpResponse:
    lead = Lead.objects.filter(pk=pk).first()
    if lead is None:
        raise Http404("No such lead")
    choice = request.POST.get("rep", "")
    rep = Rep.objects.select_related("user").filter(pk=int(choice)).first() if choice.isdecimal() else None
    if rep is None:
        return _after_action(request, pk, error="Choose a rep to assign the lead to.")
    try:
        lead_assign_manual(lead, rep, actor=request.user, reason=request.POST.get("reason", "").strip()[:300])
    except LeadError as exc:
        return _after_action(request, pk, error=str(exc))
    return _after_action(request, pk, note=f"Assigned to {rep.display_name}.")


def _after_action(request: HttpRequest, pk: int, *, note: str = "", error: str = "") -> HttpResponse:
    if request.htmx:
        return _row(request, pk, note=note, error=error)
    # Without JavaScript the whole queue comes back, with the outcome as a message on top.
    if error:
        messages.error(request, error)
    elif note:
        messages.success(request, note)
    return redirect("unassigned")

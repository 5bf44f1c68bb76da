"""The rep board (/board/) and the managers' pool pages (/pools/).

Live updates use htmx polling (`every 3s` on one small endpoint) rather than SSE: an SSE stream
holds a worker thread per open board for as long as it is open, which a sync WSGI server
(runserver, gunicorn sync workers) cannot afford, and it needs proxy tuning. A poll is stateless,
answers 204 when nothing changed, and a few seconds of delay is harmless because who wins a claim
is decided by the database, never by what the page showed.
"""

from __future__ import annotations

import datetime as dt

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, F, Min, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from leadops.roles import manager_required, rep_required
from routing import pools as pool_services
from routing.filters import WaitingLeadFilter
from routing.models import Lead, LeadEvent, Pool
from routing.models.pools import PoolAnnouncement
from routing.services import LeadError, lead_set_status

PAGE_SIZE = 25
REP_STATUS_ACTIONS = ["contacted", "qualified", "won", "lost"]
RELEASE_REASONS = ["Not a fit for me", "No time to work it", "Wrong territory or language", "Claimed by mistake"]


# -- lookups (permission-scoped) ------------------------------------------------------------------


def _my_pools(rep) -> list[Pool]:
    pools = list(
        Pool.objects.filter(memberships__rep=rep).annotate(
            waiting=Count("leads", filter=Q(leads__status=Lead.Status.POOLED, leads__owner__isnull=True), distinct=True)
        )
    )
    held = dict(
        Lead.objects.filter(owner=rep, claimed_at__isnull=False, status__in=pool_services.HELD_STATUSES)
        .values_list("pool_id")
        .annotate(n=Count("id"))
    )
    for pool in pools:
        # Shown beside the pool so the limit is no surprise at claim time.
        pool.held = held.get(pool.pk, 0)
    return pools


def _counts(pools: list[Pool]) -> str:
    """Every number the pool list prints, in one string the page sends back with each poll: the totals
    alone can stay equal while two pools' counts change (one claimed here, one arrived there)."""
    return " ".join(f"{p.pk}:{p.waiting}:{p.held}" for p in pools)


def _get_lead_for_rep(rep, pk: int) -> Lead:
    """The lead if the rep may see it (Lead.objects.for_rep); anything else is a 404."""
    lead = Lead.objects.for_rep(rep).select_related("pool", "owner__user", "rule").filter(pk=pk).first()
    if lead is None:
        raise Http404("No such lead")
    return lead


def _my_leads(rep):
    return (
        Lead.objects.filter(owner=rep, status__in=pool_services.HELD_STATUSES)
        .select_related("pool")
        # Leads still waiting for their first touch come first, the most urgent deadline on top.
        .order_by(F("first_touch_at").asc(nulls_first=True), F("sla_due_at").asc(nulls_last=True), "-assigned_at",
                  "-id")[:200]
    )


def _announcements(rep):
    return (
        PoolAnnouncement.objects.filter(rep=rep, lead__status=Lead.Status.POOLED, lead__owner__isnull=True)
        .select_related("lead__pool", "pool")
        .order_by("-at")[:10]
    )


def _status_actions(lead: Lead) -> list[str]:
    return [s for s in REP_STATUS_ACTIONS if lead.can_become(s)]


# -- the board ------------------------------------------------------------------------------------


@rep_required
@require_GET
def board(request: HttpRequest) -> HttpResponse:
    rep = request.user.rep
    pools = _my_pools(rep)
    waiting = (
        Lead.objects.waiting_in_pool()
        .filter(pool__in=[p.pk for p in pools])
        .select_related("pool")
        .order_by("received_at", "id")
    )
    lead_filter = WaitingLeadFilter(
        request.GET or None, queryset=waiting, pools=Pool.objects.filter(pk__in=[p.pk for p in pools])
    )
    qs = lead_filter.qs if lead_filter.is_bound else waiting
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    sort_params = params.copy()
    sort_params.pop("sort", None)
    context = {
        "rep": rep,
        "pools": pools,
        "waiting_total": sum(p.waiting for p in pools),
        "counts": _counts(pools),
        "filter": lead_filter,
        "page": page,
        "query": params.urlencode(),
        "sort_query": sort_params.urlencode(),
        "sort": request.GET.get("sort", ""),
        "my_leads": [(lead, _status_actions(lead)) for lead in _my_leads(rep)],
        "announcements": _announcements(rep),
        "release_reasons": RELEASE_REASONS,
    }
    template = "routing/board.html"
    if request.htmx and request.htmx.target == "pool-table":
        template += "#pool-table"
    return TemplateResponse(request, template, context)


@rep_required
@require_GET
def board_poll(request: HttpRequest) -> HttpResponse:
    """What changed since the page was drawn: the shotgun banner, rows of the pool table whose lead
    someone else took or that are waiting again (a release, a take-back), and the pools' counts, all
    swapped out of band. 204 when nothing changed, so the DOM stays put.

    The page sends what it shows: `shown` (rows with a Claim button), `taken` (rows saying Yours or
    Taken by), `announced`, the `waiting` total and the pools' `counts` it printed."""
    rep = request.user.rep
    shown = _ids(request, "shown")
    taken = _ids(request, "taken")
    seen = _ids(request, "announced")
    announcements = list(_announcements(rep))
    pools = _my_pools(rep)
    # Only rows of the rep's own pools: the ids come from the client and must not reveal the company
    # or owner of any other lead.
    in_my_pools = Lead.objects.filter(pool__in=[p.pk for p in pools])
    gone = list(
        in_my_pools.filter(pk__in=shown).exclude(status=Lead.Status.POOLED, owner__isnull=True)
        .select_related("owner__user", "pool")
    ) if shown else []
    back = list(
        Lead.objects.for_rep(rep).waiting_in_pool().filter(pk__in=taken).select_related("pool")
    ) if taken else []
    waiting_total = sum(p.waiting for p in pools)
    counts = _counts(pools)
    known = request.GET.get("waiting", "")
    if (not gone and not back and {a.lead_id for a in announcements} == seen and known == str(waiting_total)
            and request.GET.get("counts", "") in ("", counts)):
        return HttpResponse(status=204)
    # More waiting than the page knew of, once the rows that left (gone) and came back in place (back)
    # are set aside: offer to redraw the table (rows are not pushed in, so the rep's sort, filters and
    # page do not shift under the pointer).
    arrived = known.isdecimal() and waiting_total + len(gone) > int(known) + len(back)
    return TemplateResponse(
        request,
        "routing/board.html#poll",
        {"rep": rep, "announcements": announcements, "gone": gone, "back": back, "pools": pools,
         "waiting_total": waiting_total, "counts": counts, "arrived": arrived, "oob_row": True,
         "oob_counts": True},
    )


def _ids(request: HttpRequest, name: str) -> set[int]:
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    return {int(x) for x in request.GET.getlist(name) if x.isdecimal()}


def _after_action(request: HttpRequest, lead: Lead, *, partial: str, status: int = 200, **extra) -> HttpResponse:
    rep = request.user.rep
    if not request.htmx:
        # `next` comes from our own lead page; anything pointing off-site goes back to the board.
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
            target = "board"
        return redirect(target)
    context = {
        "rep": rep,
        "lead": lead,
        "actions": _status_actions(lead),
        "my_leads": [(lead, _status_actions(lead)) for lead in _my_leads(rep)],
        "release_reasons": RELEASE_REASONS,
        **{"oob_my_leads": True, **extra},
    }
    response = TemplateResponse(request, f"routing/board.html#{partial}", context, status=status)
    # The board polls at once: the pools' counts, and the row of a lead just released, catch up.
    response["HX-Trigger"] = "board-changed"
    return response


@rep_required
@require_POST
def claim(request: HttpRequest, pk: int) -> HttpResponse:
    rep = request.user.rep
    try:
        lead = pool_services.lead_for_claim(rep, pk)
    except Lead.DoesNotExist as exc:
        raise Http404("No such lead") from exc
    except pool_services.NotAMember as exc:
        raise PermissionDenied(str(exc)) from exc
    where = "claim-announcement" if request.POST.get("view") == "banner" else "claim-pool-row"
    try:
        lead = pool_services.lead_claim(lead, rep=rep, actor=request.user)
    except pool_services.NotAMember as exc:
        raise PermissionDenied(str(exc)) from exc
    except pool_services.ClaimRefused as exc:
        if not request.htmx:
            messages.warning(request, str(exc))
        lead = Lead.objects.select_related("owner__user", "pool").get(pk=pk)
        return _after_action(request, lead, partial=where, status=409, refusal=str(exc), oob_row=True, focus_row=True)
    if not request.htmx:
        messages.success(request, f"{lead} is yours.")
    lead = Lead.objects.select_related("owner__user", "pool").get(pk=lead.pk)
    return _after_action(request, lead, partial=where, oob_row=True, focus_row=True)


@rep_required
@require_POST
def release(request: HttpRequest, pk: int) -> HttpResponse:
    rep = request.user.rep
    lead = _get_lead_for_rep(rep, pk)
    reason = request.POST.get("reason", "").strip()[:200]
    try:
        lead = pool_services.lead_release(lead, rep=rep, reason=reason, actor=request.user)
    except pool_services.ReleaseRefused as exc:
        if not request.htmx:
            messages.error(request, str(exc))
        return _after_action(
            request, lead, partial="my-leads", status=409, my_leads_message=str(exc), oob_my_leads=False
        )
    note = f"{lead} went back to the {lead.pool} pool."
    if not request.htmx:
        messages.success(request, note)
    return _after_action(request, lead, partial="my-leads", oob_my_leads=False, my_leads_note=note)


@rep_required
@require_POST
def set_status(request: HttpRequest, pk: int) -> HttpResponse:
    rep = request.user.rep
    lead = _get_lead_for_rep(rep, pk)
    status = request.POST.get("status", "")
    if lead.owner_id != rep.pk or status not in REP_STATUS_ACTIONS:
        raise Http404("No such lead")
    try:
        lead = lead_set_status(lead, status, actor=request.user)
    except LeadError as exc:
        if not request.htmx:
            messages.error(request, str(exc))
        return _after_action(
            request, lead, partial="my-leads", status=409, my_leads_message=str(exc), oob_my_leads=False
        )
    note = f"{lead} marked {lead.get_status_display().lower()}."
    return _after_action(request, lead, partial="my-leads", oob_my_leads=False, my_leads_note=note)


@rep_required
@require_GET
def lead_detail(request: HttpRequest, pk: int) -> HttpResponse:
    rep = request.user.rep
    lead = _get_lead_for_rep(rep, pk)
    events = lead.events.select_related("rep__user", "pool", "actor").order_by("at", "id")
    return TemplateResponse(
        request,
        "routing/board/lead_detail.html",
        {
            "rep": rep, "lead": lead, "events": events, "release_reasons": RELEASE_REASONS,
            "actions": _status_actions(lead) if lead.owner_id == rep.pk else [],
        },
    )


# -- the managers' pool pages ---------------------------------------------------------------------


def _start_of_today(now: dt.datetime) -> dt.datetime:
    local = timezone.localtime(now)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


@manager_required
@require_GET
def pools_overview(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    pools = Pool.objects.annotate(
        waiting=Count("leads", filter=Q(leads__status=Lead.Status.POOLED, leads__owner__isnull=True), distinct=True),
        oldest=Min("leads__pooled_at", filter=Q(leads__status=Lead.Status.POOLED, leads__owner__isnull=True)),
        member_count=Count("memberships", distinct=True),
    )
    claimed_today = dict(
        LeadEvent.objects.filter(kind=LeadEvent.Kind.CLAIMED, at__gte=_start_of_today(now), pool__isnull=False)
        .values_list("pool_id")
        .annotate(n=Count("id"))
    )
    hoarded = pool_services.hoarded_counts(now)
    rows = [(p, claimed_today.get(p.pk, 0), hoarded.get(p.pk, 0)) for p in pools]
    return TemplateResponse(request, "routing/board/pools.html", {"rows": rows, "now": now})


@manager_required
@require_GET
def pool_detail(request: HttpRequest, pk: int) -> HttpResponse:
    now = timezone.now()
    pool = get_object_or_404(Pool, pk=pk)
    states = pool_services.member_states(pool, now)
    ids = [m.rep.pk for m in states]
    today = pool_services.claims_since(pool, _start_of_today(now), ids)
    week = pool_services.claims_since(pool, now - dt.timedelta(days=7), ids)
    releases = dict(
        LeadEvent.objects.filter(pool=pool, kind=LeadEvent.Kind.RELEASED, at__gte=now - dt.timedelta(days=7))
        .values_list("rep_id")
        .annotate(n=Count("id"))
    )
    hoarded = list(pool_services.hoarded_leads(pool, now).select_related("owner__user"))
    hoarding = {}
    for lead in hoarded:
        hoarding[lead.owner_id] = hoarding.get(lead.owner_id, 0) + 1
    members = [
        {"state": m, "today": today.get(m.rep.pk, 0), "week": week.get(m.rep.pk, 0),
         "releases": releases.get(m.rep.pk, 0), "hoarding": hoarding.get(m.rep.pk, 0)}
        for m in states
    ]
    claimed = (
        Lead.objects.filter(pool=pool, claimed_at__isnull=False, status__in=pool_services.HELD_STATUSES)
        .select_related("owner__user")
        .order_by("claimed_at")[:200]
    )
    waiting = Lead.objects.waiting_in_pool().filter(pool=pool).order_by("pooled_at", "id")
    return TemplateResponse(
        request,
        "routing/board/pool_detail.html",
        {"pool": pool, "members": members, "claimed": claimed, "hoarded_ids": {lead.pk for lead in hoarded},
         "waiting_count": waiting.count(), "waiting": waiting[:50], "now": now},
    )


@manager_required
@require_POST
def take_back(request: HttpRequest, pk: int) -> HttpResponse:
    lead = get_object_or_404(Lead.objects.select_related("pool"), pk=pk)
    try:
        lead = pool_services.lead_take_back(lead, actor=request.user, reason=request.POST.get("reason", "").strip())
    except LeadError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{lead} is back in the {lead.pool} pool.")
    return redirect("pool_detail", pk=lead.pool_id) if lead.pool_id else redirect("pools")

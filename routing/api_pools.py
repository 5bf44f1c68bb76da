"""Pools in the JSON API (CONTRACT §5), for a rep's own token.

Mounted at the API root with full paths because `/leads/{id}/claim/` sits beside the intake
router's `/leads/` endpoints without belonging to them.
"""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import urlencode

from django.db.models import Count, Q
from django.http import HttpRequest
from ninja import Router, Schema
from ninja.errors import HttpError

from leadops import roles
from routing import pools as pool_services
from routing.api_auth import token_auth
from routing.models import ApiToken, Lead, Pool

router = Router(auth=token_auth, tags=["pools"])

MAX_LIMIT = 200


class PoolOut(Schema):
    name: str
    mode: str
    waiting: int


class WaitingLeadOut(Schema):
    id: int
    email: str
    name: str
    company: str
    first_name: str
    last_name: str
    title: str
    company_size: int | None
    country: str
    region: str
    industry: str
    product: str
    score: int | None
    priority: str
    source: str
    received_at: dt.datetime
    pooled_at: dt.datetime | None
    pool: str
    status: str


class WaitingPage(Schema):
    items: list[WaitingLeadOut]
    count: int
    next: str | None


class ClaimOut(Schema):
    owner: str
    id: int
    status: str
    pool: str | None
    sla_due_at: dt.datetime | None


class ReleaseOut(Schema):
    id: int
    status: str
    pool: str | None
    owner: str | None


class ErrorOut(Schema):
    detail: str


def _reason(request: HttpRequest) -> str:
    # The body is optional, so it is read by hand rather than declared (ninja would demand one).
    if not request.content_type.endswith("json"):
        return request.POST.get("reason", "").strip()[:200]
    try:
        data = json.loads(request.body or b"{}")
    except ValueError as exc:
        raise HttpError(422, "The body must be JSON like {\"reason\": \"...\"}.") from exc
    reason = data.get("reason", "") if isinstance(data, dict) else ""
    return str(reason).strip()[:200]


def _rep_for(request: HttpRequest):
    """The calling rep. An intake-only token, or a user who is not a rep (no rep profile, or no
    longer in the Reps group, e.g. after leaving the team), may not use pools: the same test as the
    web board's rep_required."""
    token: ApiToken | None = getattr(request, "api_token", None)
    if token is not None and token.scope == ApiToken.Scope.INTAKE:
        raise HttpError(403, "This token may only create leads.")
    if not roles.is_rep(request.user):
        raise HttpError(403, "Only reps claim from pools.")
    return request.user.rep


@router.get("/pools/", response=list[PoolOut], summary="The caller's pools")
def list_pools(request: HttpRequest):
    rep = _rep_for(request)
    pools = Pool.objects.filter(memberships__rep=rep).annotate(
        waiting=Count("leads", filter=Q(leads__status=Lead.Status.POOLED, leads__owner__isnull=True), distinct=True)
    )
    return [{"name": p.name, "mode": p.mode, "waiting": p.waiting} for p in pools]


@router.get(
    "/pools/{name}/leads/", response={200: WaitingPage, 403: ErrorOut, 404: ErrorOut},
    summary="Waiting leads of one of the caller's pools, oldest first",
)
def pool_leads(request: HttpRequest, name: str, limit: int = 50, offset: int = 0):
    rep = _rep_for(request)
    pool = Pool.objects.filter(name=name).first()
    if pool is None:
        raise HttpError(404, "No such pool.")
    if not pool.memberships.filter(rep=rep).exists():
        raise HttpError(403, "You are not a member of this pool.")
    limit = max(1, min(limit, MAX_LIMIT))
    offset = max(0, offset)
    qs = Lead.objects.waiting_in_pool().filter(pool=pool).order_by("received_at", "id")
    count = qs.count()
    items = [
        {
            **{f: getattr(lead, f) for f in WaitingLeadOut.model_fields if f not in ("pool", "name")},
            "name": lead.full_name, "pool": pool.name,
        }
        for lead in qs[offset : offset + limit]
    ]
    nxt = None
    if offset + limit < count:
        nxt = request.build_absolute_uri(request.path) + "?" + urlencode({"limit": limit, "offset": offset + limit})
    return {"items": items, "count": count, "next": nxt}


@router.post(
    "/leads/{lead_id}/claim/", response={200: ClaimOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    summary="Claim a waiting lead: 409 when taken or at the limit",
)
def claim_lead(request: HttpRequest, lead_id: int):
    rep = _rep_for(request)
    try:
        lead = pool_services.lead_for_claim(rep, lead_id)
        lead = pool_services.lead_claim(lead, rep=rep, actor=request.user)
    except Lead.DoesNotExist as exc:
        raise HttpError(404, "No such lead.") from exc
    except pool_services.NotAMember as exc:
        raise HttpError(403, str(exc)) from exc
    except pool_services.ClaimRefused as exc:
        return 409, {"detail": str(exc)}
    return 200, {"owner": rep.user.username, "id": lead.pk, "status": lead.status,
                 "pool": lead.pool.name if lead.pool else None, "sla_due_at": lead.sla_due_at}


@router.post(
    "/leads/{lead_id}/release/", response={200: ReleaseOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    summary="Give a claimed lead back to its pool",
)
def release_lead(request: HttpRequest, lead_id: int):
    """Body (optional): {"reason": "..."}."""
    rep = _rep_for(request)
    lead = Lead.objects.for_rep(rep).filter(pk=lead_id).first()
    if lead is None:
        raise HttpError(404, "No such lead.")
    try:
        lead = pool_services.lead_release(lead, rep=rep, reason=_reason(request), actor=request.user)
    except pool_services.ReleaseRefused as exc:
        return 409, {"detail": str(exc)}
    return 200, {"id": lead.pk, "status": lead.status, "pool": lead.pool.name if lead.pool else None, "owner": None}

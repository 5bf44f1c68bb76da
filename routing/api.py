"""Leads in the JSON API (CONTRACT §4): create (idempotent), read, list, record progress.

A token acts as its user: managers and superusers see every lead, ops staff create and list,
reps see their own leads and the waiting leads of their pools. An `intake` token only creates
leads (and reads back the ones it created).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.utils import timezone
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError, ValidationError
from pydantic import ConfigDict

from leadops import roles
from routing import selectors, services
from routing.api_auth import token_auth
from routing.csvio import FIELDS
from routing.intake import lead_receive
from routing.intake_normalise import normalise_lead
from routing.models import ApiToken, IdempotencyRecord, Lead, LeadEvent

router = Router(auth=token_auth, tags=["leads"])

MAX_LIMIT = 200
EXPLAINING_KINDS = [LeadEvent.Kind.ROUTED, LeadEvent.Kind.UNASSIGNED, LeadEvent.Kind.POOLED]


def require_full_scope(request: HttpRequest) -> None:
    """403 for an intake-only token. Endpoints beyond creating leads call this first."""
    token: ApiToken | None = getattr(request, "api_token", None)
    if token is not None and token.scope != ApiToken.Scope.FULL:
        raise HttpError(403, "This token may only create leads.")


# -- schemas ---------------------------------------------------------------------------------
Scalar = str | int | float | None


class LeadIn(Schema):
    """Any lead field of CONTRACT §4. Unknown keys are kept in `extra`."""

    model_config = ConfigDict(extra="allow")

    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: Scalar = None
    company: str | None = None
    title: str | None = None
    country: str | None = Field(None, description="ISO alpha-2 code or a country name")
    region: str | None = None
    postcode: Scalar = None
    industry: str | None = None
    company_size: Scalar = Field(None, description='A number, or a range like "51-200"')
    product: str | None = None
    source: str | None = None
    score: Scalar = Field(None, description="0–100")
    priority: str | None = Field(None, description="normal | urgent")
    value: Scalar = None
    received_at: str | None = Field(None, description="ISO 8601; default now")
    extra: dict[str, Any] | None = None


class LeadCreatedOut(Schema):
    id: int
    status: str
    owner: str | None
    pool: str | None
    rule: str | None
    explanation: dict[str, Any] | None
    duplicate_of: int | None = None


class EventOut(Schema):
    kind: str
    at: dt.datetime
    rep: str | None
    rule: str | None
    detail: dict[str, Any]


class LeadOut(Schema):
    id: int
    email: str
    first_name: str
    last_name: str
    phone: str
    company: str
    title: str
    country: str
    region: str
    postcode: str
    industry: str
    company_size: int | None
    product: str
    source: str
    score: int | None
    priority: str
    value: Decimal | None
    received_at: dt.datetime
    extra: dict[str, Any]
    status: str
    owner: str | None
    pool: str | None
    rule: str | None
    sla_due_at: dt.datetime | None
    merged_count: int
    events: list[EventOut]


class LeadSummaryOut(Schema):
    id: int
    email: str
    name: str
    company: str
    country: str
    source: str
    status: str
    owner: str | None
    pool: str | None
    received_at: dt.datetime
    sla_due_at: dt.datetime | None


class LeadPage(Schema):
    items: list[LeadSummaryOut]
    count: int
    next: str | None


class LeadFilters(Schema):
    status: str | None = None
    owner: str | None = Field(None, description="the owner's username")
    pool: str | None = Field(None, description="pool name")
    source: str | None = None
    email: str | None = None


class StatusIn(Schema):
    status: Lead.Status


class ErrorOut(Schema):
    detail: Any


# -- helpers -----------------------------------------------------------------------------------
def _owner_name(lead: Lead) -> str | None:
    return lead.owner.user.username if lead.owner_id else None


def _lead_result(lead_id: int, duplicate: bool) -> dict[str, Any]:
    """Where a lead stands and why, for the create and status answers."""
    standing = selectors.lead_standing(lead_id, EXPLAINING_KINDS)
    detail = standing["explained"]
    return {
        "id": lead_id,
        "status": standing["status"],
        "owner": standing["owner"],
        "pool": standing["pool"],
        "rule": standing["rule"],
        "explanation": selectors.explanation_expand(detail) if detail is not None else None,
        "duplicate_of": lead_id if duplicate else None,
    }


def _validation_error(errors: list[tuple[str, str]]) -> ValidationError:
    # The same shape as ninja's own 422s, so clients handle one format.
    return ValidationError([{"type": "value_error", "loc": ["body", "payload", f], "msg": m} for f, m in errors])


def _body_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _create(request: HttpRequest, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    now = timezone.now()
    values = {name: payload.get(name) for name in FIELDS}
    extra = dict(payload.get("extra") or {}) if isinstance(payload.get("extra"), dict) else payload.get("extra")
    unknown = {k: v for k, v in payload.items() if k not in FIELDS and k != "extra"}
    values["extra"] = {**unknown, **extra} if isinstance(extra, dict) else extra
    data, errors = normalise_lead(values, now=now)
    if errors:
        raise _validation_error(errors)
    token: ApiToken | None = getattr(request, "api_token", None)
    source = token.name if token else "api"
    lead_id, merged = lead_receive(data, source=source, actor=request.user, now=now,
                                   token_id=token.pk if token else None)
    return (200 if merged else 201), _lead_result(lead_id, merged)


def _visible(request: HttpRequest):
    token: ApiToken | None = getattr(request, "api_token", None)
    if token is not None and token.scope == ApiToken.Scope.INTAKE:
        # An intake token reads back only what it created itself.
        return Lead.objects.filter(events__kind=LeadEvent.Kind.RECEIVED, events__detail__token=token.pk)
    return Lead.objects.visible_to(request.user)


# -- endpoints ---------------------------------------------------------------------------------
@router.post(
    "/", response={200: LeadCreatedOut, 201: LeadCreatedOut, 403: ErrorOut, 409: ErrorOut, 422: ErrorOut},
    summary="Create a lead (idempotent with an Idempotency-Key header)",
)
def create_lead(request: HttpRequest, payload: LeadIn):
    """201 with the routing result; a duplicate email merges into the open lead (200 + `duplicate_of`).

    With `Idempotency-Key`, a repeat with the same body replays the first answer (200) and a
    different body under the same key is refused (409).
    """
    if not (roles.is_ops(request.user) or roles.is_manager(request.user)):
        raise HttpError(403, "Only ops staff and managers create leads.")
    # ninja has checked the types; the raw object also carries the unknown keys meant for `extra`.
    raw = json.loads(request.body)
    body = {k: v for k, v in raw.items() if v is not None} if isinstance(raw, dict) else {}
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        return _create(request, body)
    if len(key) > 200:
        raise HttpError(422, "Idempotency-Key is longer than 200 characters.")
    digest = _body_hash(body)
    with transaction.atomic():
        try:
            # The unique (user, key) row is the lock: a concurrent repeat's INSERT waits here
            # until this transaction ends, then finds the finished record.
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(user=request.user, key=key, body_hash=digest)
        except IntegrityError:
            record = IdempotencyRecord.objects.get(user=request.user, key=key)
            if record.body_hash != digest:
                raise HttpError(409, "This Idempotency-Key was used with a different body.") from None
            return 200, record.response
        status, response = _create(request, body)
        record.lead_id = response["id"]
        record.response = response
        record.save(update_fields=["lead", "response"])
    return status, response


@router.get("/", response={200: LeadPage, 403: ErrorOut}, summary="List leads the caller may see")
def list_leads(request: HttpRequest, filters: Query[LeadFilters], limit: int = 50, offset: int = 0):
    require_full_scope(request)
    limit = max(1, min(limit, MAX_LIMIT))
    offset = max(0, offset)
    qs = _visible(request).select_related("owner__user", "pool")
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.owner:
        qs = qs.filter(owner__user__username=filters.owner)
    if filters.pool:
        qs = qs.filter(pool__name=filters.pool)
    if filters.source:
        qs = qs.filter(source=filters.source)
    if filters.email:
        qs = qs.filter(email=filters.email.strip().lower())
    count = qs.count()
    page = list(qs.order_by("-received_at", "-id")[offset : offset + limit])
    nxt = None
    if offset + limit < count:
        params = {k: v for k, v in filters.model_dump().items() if v}
        nxt = request.build_absolute_uri(
            request.path + "?" + urlencode({**params, "limit": limit, "offset": offset + limit})
        )
    items = [
        {
            "id": lead.pk, "email": lead.email, "name": lead.full_name, "company": lead.company,
            "country": lead.country, "source": lead.source, "status": lead.status, "owner": _owner_name(lead),
            "pool": lead.pool.name if lead.pool_id else None, "received_at": lead.received_at,
            "sla_due_at": lead.sla_due_at,
        }
        for lead in page
    ]
    return {"items": items, "count": count, "next": nxt}


@router.get("/{int:lead_id}/", response={200: LeadOut, 404: ErrorOut}, summary="One lead with its timeline")
def get_lead(request: HttpRequest, lead_id: int):
    lead = get_object_or_404(_visible(request).select_related("owner__user", "pool", "rule").distinct(), pk=lead_id)
    events = [
        {"kind": e.kind, "at": e.at, "rep": e.rep.user.username if e.rep else None,
         "rule": e.rule.name if e.rule else None, "detail": selectors.explanation_expand(e.detail)}
        for e in lead.events.select_related("rep__user", "rule").order_by("at", "id")
    ]
    return {
        **{name: getattr(lead, name) for name in FIELDS}, "extra": lead.extra, "id": lead.pk,
        "status": lead.status, "owner": _owner_name(lead), "pool": lead.pool.name if lead.pool_id else None,
        "rule": lead.rule.name if lead.rule else None, "sla_due_at": lead.sla_due_at,
        "merged_count": lead.merged_count, "events": events,
    }


@router.post(
    "/{int:lead_id}/status/", response={200: LeadCreatedOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    summary="The owner records progress (contacted, qualified, won, lost)",
)
def set_status(request: HttpRequest, lead_id: int, payload: StatusIn):
    require_full_scope(request)
    lead = get_object_or_404(_visible(request).select_related("owner__user"), pk=lead_id)
    is_owner = lead.owner_id is not None and lead.owner.user_id == request.user.pk
    if not (is_owner or roles.is_manager(request.user)):
        raise HttpError(403, "Only the lead's owner or a manager records its status.")
    try:
        services.lead_set_status(lead, payload.status.value, actor=request.user)
    except services.TransitionRefused as exc:
        raise HttpError(409, str(exc)) from exc
    return 200, _lead_result(lead.pk, False)

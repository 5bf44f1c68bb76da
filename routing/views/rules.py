"""The managers' rule-set pages (/rules/): versions, the draft editor, preview, publish, roll back,
history diff — and the routing policy in plain language for everyone (/policy/).

The views parse the request, call a workflow and render. Editing a draft (copy, rename, save or
remove a rule, reorder) lives in routing.drafts, which locks the draft and refuses a published
version; publish and roll back live in routing.services.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from leadops.roles import manager_required
from reps.models import Rep, Skill, Team
from routing.drafts import (
    DraftRefused,
    DraftRuleInvalid,
    draft_create,
    draft_faults,
    draft_rename,
    draft_reorder,
    draft_rule_delete,
    draft_rule_faults,
    draft_rule_save,
    ruleset_rows_data,
)
from routing.forms_rules import (
    FIELD_CHOICES,
    LEVELS,
    OP_CHOICES,
    STRATEGY_CHOICES,
    ConditionRow,
    RuleForm,
    fault_label,
)
from routing.models import Pool, Rule, RuleSet
from routing.policy import describe_rule, ruleset_diff
from routing.rulefile import RuleFileError
from routing.selectors import previous_published
from routing.services import (
    RuleSetRefused,
    ruleset_preview,
    ruleset_publish,
    ruleset_rollback,
    ruleset_to_dict,
)
from routing.sla import DEFAULT_LADDER, LADDER_ACTIONS

PREVIEW_DAYS = 30
PREVIEW_MAX_DAYS = 365


# -- helpers --------------------------------------------------------------------------------------


def _labelled(faults: list[str], data: dict[str, Any]) -> list[dict[str, str]]:
    names = [r.get("name", "") for r in data.get("rules") or []]
    return [fault_label(f, names) for f in faults]


def _refuse_non_draft(request: HttpRequest, rule_set: RuleSet) -> HttpResponse:
    messages.error(request, str(DraftRefused(rule_set)))
    return redirect("rules_detail", rule_set.pk)


def _choices() -> dict[str, Any]:
    return {
        "field_choices": FIELD_CHOICES,
        "op_choices": OP_CHOICES,
        "strategy_choices": STRATEGY_CHOICES,
        "level_choices": LEVELS,
        "ladder_actions": LADDER_ACTIONS,
        "default_ladder": DEFAULT_LADDER,
        "teams": list(Team.objects.values_list("name", flat=True)),
        "skills": list(Skill.objects.values_list("name", flat=True)),
        "pools": list(Pool.objects.values_list("name", flat=True)),
        "rep_names": list(Rep.objects.filter(active=True).order_by("user__username")
                          .values_list("user__username", flat=True)),
    }


# -- versions -------------------------------------------------------------------------------------


@manager_required
@require_GET
def rules_list(request: HttpRequest) -> HttpResponse:
    versions = list(
        RuleSet.objects.select_related("created_by", "published_by")
        .annotate(rule_count=Count("rules"))
        .order_by("-version")
    )
    published = next((v for v in versions if v.status == RuleSet.Status.PUBLISHED), None)
    return TemplateResponse(request, "routing/rules/list.html", {
        "versions": versions,
        "published": published,
        "can_roll_back": previous_published(published) is not None,
    })


@manager_required
@require_POST
def rules_new_draft(request: HttpRequest) -> HttpResponse:
    """A draft to edit: a copy of the given (or the published) version, else an empty one."""
    source_id = request.POST.get("source", "")
    source = None
    if source_id:
        if not source_id.isdecimal():
            raise Http404("No such rule set")
        source = get_object_or_404(RuleSet, pk=int(source_id))
    try:
        draft = draft_create(actor=request.user, source=source)
    except RuleFileError as exc:
        # A version stored before a rule check was tightened (e.g. an unknown ladder step) no longer
        # passes it: say which fault, rather than a server error.
        messages.error(request, f"This version cannot be copied as it is: {'; '.join(exc.faults)}. "
                                "Start an empty draft or load a corrected rule file.")
        return redirect("rules_list")
    messages.success(request, f"Draft v{draft.version} created.")
    return redirect("rules_detail", draft.pk)


@manager_required
@require_GET
def rules_detail(request: HttpRequest, pk: int) -> HttpResponse:
    rule_set = get_object_or_404(RuleSet.objects.select_related("created_by", "published_by"), pk=pk)
    return TemplateResponse(request, "routing/rules/detail.html", _detail_context(rule_set))


def _detail_context(rule_set: RuleSet) -> dict[str, Any]:
    rows = list(rule_set.rules.select_related("pool").order_by("position"))
    data = ruleset_rows_data(rule_set, rows)
    faults = draft_faults(data) if rule_set.is_editable else []
    rules = [{"row": r, "data": r.to_data(), "text": describe_rule(r.to_data(), fallback=r.is_fallback)}
             for r in rows]
    return {
        "rule_set": rule_set,
        "rules": [r for r in rules if not r["row"].is_fallback],
        "fallback": next((r for r in rules if r["row"].is_fallback), None),
        "faults": _labelled(faults, data),
        "previous": RuleSet.objects.filter(version__lt=rule_set.version).order_by("-version").first(),
    }


@manager_required
@require_POST
def rules_rename(request: HttpRequest, pk: int) -> HttpResponse:
    rule_set = get_object_or_404(RuleSet, pk=pk)
    try:
        draft_rename(rule_set, request.POST.get("name", ""))
    except DraftRefused as exc:
        return _refuse_non_draft(request, exc.rule_set)
    except RuleFileError as exc:
        messages.error(request, str(exc))
    return redirect("rules_detail", pk)


# -- rules of a draft ---------------------------------------------------------------------------


@manager_required
@require_http_methods(["GET", "POST"])
def rule_edit(request: HttpRequest, pk: int, rule_pk: int | None = None, fallback: bool = False) -> HttpResponse:
    """Add a rule, edit one, or edit the fallback (rule_pk None + fallback=True)."""
    rule_set = get_object_or_404(RuleSet, pk=pk)
    if not rule_set.is_editable:
        return _refuse_non_draft(request, rule_set)
    row = None
    if rule_pk is not None:
        row = get_object_or_404(Rule, pk=rule_pk, rule_set=rule_set, is_fallback=False)
    elif fallback:
        row = Rule.objects.filter(rule_set=rule_set, is_fallback=True).first()
    if request.method == "GET":
        form = RuleForm.from_rule(row.to_data() if row else None, fallback=fallback)
        if row is None and not fallback:
            form.conditions = [ConditionRow()]
        return _rule_form_response(request, rule_set, row, form)

    form = RuleForm.from_post(request.POST, fallback=fallback)
    try:
        if not form.is_valid:
            # The form's own complaint; show the validator's too, so one round trip lists them all.
            prefix, faults = draft_rule_faults(rule_set, row, form.to_rule(), fallback=fallback)
            form.add_faults(faults, prefix)
            return _rule_form_response(request, rule_set, row, form, status=422)
        row = draft_rule_save(rule_set, row, form.to_rule(), fallback=fallback)
    except DraftRefused as exc:
        return _refuse_non_draft(request, exc.rule_set)
    except DraftRuleInvalid as exc:
        form.add_faults(exc.faults, exc.prefix)
        return _rule_form_response(request, rule_set, row, form, status=422)
    except Rule.DoesNotExist as exc:
        raise Http404("No such rule") from exc
    messages.success(request, f"Saved {'the fallback' if fallback else '“' + row.name + '”'} in draft "
                              f"v{rule_set.version}.")
    return redirect(reverse("rules_detail", args=[pk]) + f"#rule-{row.pk}")


def _rule_form_response(request, rule_set, row, form, status: int = 200) -> TemplateResponse:
    return TemplateResponse(request, "routing/rules/rule_form.html", {
        "rule_set": rule_set, "row": row, "form": form, **_choices(),
    }, status=status)


@manager_required
@require_GET
def condition_row(request: HttpRequest) -> HttpResponse:
    """One blank condition row, appended to the form by htmx."""
    return TemplateResponse(request, "routing/rules/rule_form.html#condition-row",
                            {"cond": ConditionRow(), **_choices()})


@manager_required
@require_POST
def rule_delete(request: HttpRequest, pk: int, rule_pk: int) -> HttpResponse:
    rule_set = get_object_or_404(RuleSet, pk=pk)
    try:
        row = draft_rule_delete(rule_set, rule_pk)
    except DraftRefused as exc:
        return _refuse_non_draft(request, exc.rule_set)
    except Rule.DoesNotExist as exc:
        raise Http404("No such rule") from exc
    messages.success(request, f"Removed {'the fallback' if row.is_fallback else '“' + row.name + '”'}.")
    return redirect("rules_detail", pk)


@manager_required
@require_POST
def rules_reorder(request: HttpRequest, pk: int) -> HttpResponse:
    """The new order from the drag-and-drop list (`order` = rule ids, top first), or the page's
    order with one rule moved a step (`move` = "<id>:up" or "<id>:down", the keyboard way)."""
    try:
        order = [int(x) for x in request.POST.getlist("order")]
    except ValueError:
        order = []
    order = _moved(order, request.POST.get("move", ""))
    rule_set = get_object_or_404(RuleSet, pk=pk)
    try:
        if not draft_reorder(rule_set, order):
            # The page was stale (a rule was added or removed elsewhere): show the real order.
            messages.error(request, "The rules changed while you were reordering; here is the current order.")
    except DraftRefused as exc:
        return _refuse_non_draft(request, exc.rule_set)
    context = _detail_context(rule_set)
    if request.htmx:
        return TemplateResponse(request, "routing/rules/detail.html#rule-list", context)
    return redirect("rules_detail", pk)


def _moved(order: list[int], move: str) -> list[int]:
    """`order` with the rule named by `move` ("<id>:up" / "<id>:down") swapped with its neighbour."""
    pk, _, direction = move.partition(":")
    if not pk.isdecimal() or int(pk) not in order or direction not in ("up", "down"):
        return order
    i = order.index(int(pk))
    j = i - 1 if direction == "up" else i + 1
    if 0 <= j < len(order):
        order = order.copy()
        order[i], order[j] = order[j], order[i]
    return order


# -- preview, publish, roll back, history ---------------------------------------------------------


@manager_required
@require_GET
def rules_preview(request: HttpRequest, pk: int) -> HttpResponse:
    rule_set = get_object_or_404(RuleSet, pk=pk)
    days_error = ""
    try:
        days = int(request.GET.get("days", PREVIEW_DAYS))
        if not 1 <= days <= PREVIEW_MAX_DAYS:
            raise ValueError
    except ValueError:
        days_error = f"days: a whole number from 1 to {PREVIEW_MAX_DAYS}"
        days = PREVIEW_DAYS
    data = ruleset_rows_data(rule_set)
    faults = draft_faults(data)
    preview = None
    if not faults and not days_error:
        preview = ruleset_preview(rule_set, days=days)
    chart = None
    if preview:
        for s in preview["sample"]:
            s["received"] = dt.datetime.fromisoformat(s["received_at"])
        reps = [r for r in preview["per_rep"]]
        chart = {"labels": [r["name"] for r in reps],
                 "published": [r["published"] for r in reps],
                 "draft": [r["draft"] for r in reps],
                 "published_label": f"v{preview['published_version']} (in force)" if preview["published_version"]
                 else "in force (none)",
                 "draft_label": f"v{rule_set.version} (draft)"}
    return TemplateResponse(request, "routing/rules/preview.html", {
        "rule_set": rule_set, "days": request.GET.get("days", days) if days_error else days,
        "days_error": days_error, "faults": _labelled(faults, data), "preview": preview, "chart": chart,
    })


@manager_required
@require_http_methods(["GET", "POST"])
def rules_publish(request: HttpRequest, pk: int) -> HttpResponse:
    rule_set = get_object_or_404(RuleSet, pk=pk)
    if rule_set.status != RuleSet.Status.DRAFT:
        return _refuse_non_draft(request, rule_set)
    data = ruleset_rows_data(rule_set)
    faults = draft_faults(data)
    status = 200
    if request.method == "POST" and not faults:
        try:
            ruleset_publish(rule_set, actor=request.user)
        except RuleSetRefused as exc:
            messages.error(request, str(exc))
            return redirect("rules_detail", pk)
        messages.success(request, f"v{rule_set.version} is now in force.")
        return redirect("rules_list")
    if request.method == "POST":
        status = 422  # nothing published: the confirmation page lists what to fix
    current = RuleSet.objects.filter(status=RuleSet.Status.PUBLISHED).first()
    return TemplateResponse(request, "routing/rules/publish.html", {
        "rule_set": rule_set, "current": current, "faults": _labelled(faults, data),
        "diff": ruleset_diff(ruleset_rows_data(current), data) if current else None,
        "rule_count": len(data["rules"]),
    }, status=status)


@manager_required
@require_http_methods(["GET", "POST"])
def rules_rollback(request: HttpRequest) -> HttpResponse:
    current = RuleSet.objects.filter(status=RuleSet.Status.PUBLISHED).first()
    previous = previous_published(current)
    if request.method == "POST":
        try:
            restored = ruleset_rollback(actor=request.user)
        except RuleSetRefused as exc:
            messages.error(request, str(exc))
            return redirect("rules_list")
        except RuleFileError as exc:
            messages.error(request, f"v{previous.version} no longer passes the rule checks, so nothing changed: "
                                    f"{'; '.join(exc.faults)}.")
            return redirect("rules_list")
        messages.success(request, f"Rolled back: v{restored.version} (a copy of v{previous.version}) is in force.")
        return redirect("rules_list")
    return TemplateResponse(request, "routing/rules/rollback.html", {
        "current": current, "previous": previous,
        "diff": ruleset_diff(ruleset_rows_data(current), ruleset_rows_data(previous)) if current and previous
        else None,
    })


@manager_required
@require_GET
def rules_diff(request: HttpRequest) -> HttpResponse:
    """Rules added, removed and changed (field by field) from version `a` to version `b`."""
    versions = list(RuleSet.objects.order_by("-version"))
    by_pk = {str(v.pk): v for v in versions}
    new = by_pk.get(request.GET.get("b", "")) or (versions[0] if versions else None)
    old = by_pk.get(request.GET.get("a", ""))
    if old is None and new is not None:
        old = next((v for v in versions if v.version < new.version), None)
    diff = ruleset_diff(ruleset_rows_data(old), ruleset_rows_data(new)) if old and new else None
    return TemplateResponse(request, "routing/rules/diff.html", {
        "versions": versions, "old": old, "new": new, "diff": diff,
        "old_label": f"v{old.version}" if old else "", "new_label": f"v{new.version}" if new else "",
    })


# -- the policy, for everyone -------------------------------------------------------------------


@login_required
@require_GET
def policy(request: HttpRequest) -> HttpResponse:
    published = RuleSet.objects.filter(status=RuleSet.Status.PUBLISHED).select_related("published_by").first()
    rules, fallback = [], None
    if published:
        data = ruleset_to_dict(published)
        rules = [{"name": r["name"], "text": describe_rule(r)} for r in data["rules"]]
        if data.get("fallback"):
            fallback = describe_rule(data["fallback"], fallback=True)
    return TemplateResponse(request, "routing/policy.html", {
        "published": published, "rules": rules, "fallback": fallback, "now": timezone.now(),
    })

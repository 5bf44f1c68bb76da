"""Editing a draft rule set (the /rules/ editor's workflows; STYLE §1).

A published version is immutable: every function here locks the rule set row and re-checks that it
is still a draft inside its own transaction, so a publish racing an edit cannot change the rules in
force. Drafts are edited row by row (the Rule rows of the draft), but every save is validated by
putting the rule into the whole draft dict and running the rule-file validator, so what the editor
accepts is exactly what `load_rules` would accept.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F

from routing.models import Pool, Rule, RuleSet
from routing.rulefile import RuleFileError, ruleset_validate
from routing.services import RuleSetRefused, ruleset_check, ruleset_create_draft


class DraftRefused(RuleSetRefused):
    """The rule set is published or archived: it cannot change."""

    def __init__(self, rule_set: RuleSet):
        self.rule_set = rule_set
        super().__init__(
            f"v{rule_set.version} is {rule_set.get_status_display().lower()} and cannot change. "
            "Use “Edit as new draft” to make a copy you can edit."
        )


class DraftRuleInvalid(RuleFileError):
    """The rule, put into its draft, has faults; `prefix` is its path there (`rules[2]`, `fallback`)."""

    def __init__(self, faults: list[str], prefix: str):
        self.prefix = prefix
        super().__init__(faults)


# -- reads ---------------------------------------------------------------------------------------


def ruleset_rows_data(rule_set: RuleSet, rows: list[Rule] | None = None) -> dict[str, Any]:
    """The rule set as a rule-file dict, *without* validating it: a draft may be mid-edit (e.g. no
    rules yet), and the editor must still show it together with what is wrong."""
    if rows is None:
        rows = list(rule_set.rules.select_related("pool").order_by("position"))
    fallback = next((r for r in rows if r.is_fallback), None)
    return {
        "name": rule_set.name,
        "rules": [r.to_data() for r in rows if not r.is_fallback],
        "fallback": fallback.to_data() if fallback else None,
    }


def draft_faults(data: dict[str, Any]) -> list[str]:
    """Every fault of a rule-set dict against the organisation (empty: `load_rules` would take it)."""
    try:
        ruleset_check(data)
    except RuleFileError as exc:
        return exc.faults
    return []


def draft_rule_faults(rule_set: RuleSet, row: Rule | None, rule: dict[str, Any], *,
                      fallback: bool = False) -> tuple[str, list[str]]:
    """The faults the draft would have that concern `rule` put in place of `row` (None: added at the
    end, or the fallback), with the rule's path in the draft. Reads only; `draft_rule_save` repeats
    the check under the lock."""
    rows = list(rule_set.rules.select_related("pool").order_by("position"))
    return _rule_faults(rule_set, rows, row, rule, fallback=fallback)


def _rule_faults(rule_set: RuleSet, rows: list[Rule], row: Rule | None, rule: dict[str, Any], *,
                 fallback: bool) -> tuple[str, list[str]]:
    data = ruleset_rows_data(rule_set, rows)
    if fallback:
        prefix = "fallback"
        data["fallback"] = rule
    elif row is not None:
        ids = [r.pk for r in rows if not r.is_fallback]
        if row.pk not in ids:
            raise Rule.DoesNotExist(f"rule {row.pk} is not in draft v{rule_set.version}")
        index = ids.index(row.pk)
        prefix = f"rules[{index}]"
        data["rules"][index] = rule
    else:
        prefix = f"rules[{len(data['rules'])}]"
        data["rules"].append(rule)
    return prefix, [f for f in draft_faults(data) if fault_concerns(f, prefix)]


def fault_concerns(fault: str, prefix: str) -> bool:
    """Whether a whole-draft fault (`path: message`) is about the rule at `prefix` (`rules[3]` or
    `fallback`), including the duplicate-name fault reported on the other rule of the pair."""
    path, sep, _ = fault.partition(": ")
    if not sep or ":" in path:
        path = ""
    if path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "["):
        return True
    return f"(also {prefix})" in fault


# -- writes --------------------------------------------------------------------------------------


def _lock_draft(rule_set: RuleSet) -> RuleSet:
    """The rule set row, locked until the transaction ends; DraftRefused unless it is a draft.
    Re-read, not trusted: the caller's instance may predate a publish."""
    locked = RuleSet.objects.select_for_update().get(pk=rule_set.pk)
    if not locked.is_editable:
        raise DraftRefused(locked)
    return locked


def draft_create(*, actor, source: RuleSet | None = None) -> RuleSet:
    """A new draft to edit: a copy of `source` (default: the published version), else an empty one."""
    with transaction.atomic():
        if source is None:
            source = RuleSet.objects.filter(status=RuleSet.Status.PUBLISHED).first()
        if source is not None:
            # No name check: a rep named in the old version may have left; the editor then shows it
            # as a fault to fix instead of refusing to open the copy.
            return ruleset_create_draft(ruleset_rows_data(source), actor=actor,
                                        note=f"Edited from v{source.version}", check_names=False)
        # Lock the newest version so two managers cannot both take the same next number.
        latest = RuleSet.objects.select_for_update().order_by("-version").first()
        return RuleSet.objects.create(name="Routing rules", version=(latest.version if latest else 0) + 1,
                                      status=RuleSet.Status.DRAFT, created_by=actor)


def draft_rename(rule_set: RuleSet, name: str) -> RuleSet:
    name = name.strip()
    with transaction.atomic():
        rule_set = _lock_draft(rule_set)
        if not name:
            raise RuleFileError(["name: expected a non-empty string"])
        rule_set.name = name[:200]
        rule_set.save(update_fields=["name"])
    return rule_set


def draft_rule_save(rule_set: RuleSet, row: Rule | None, data: dict[str, Any], *, fallback: bool = False) -> Rule:
    """Put the rule-file dict `data` into the draft: in place of `row`, as a new last rule (row None),
    or as the fallback. Raises DraftRuleInvalid with the faults that concern this rule (faults in
    other rules of the draft do not stop it), DraftRefused when the rule set is not a draft."""
    with transaction.atomic():
        rule_set = _lock_draft(rule_set)
        rows = list(rule_set.rules.select_related("pool").order_by("position"))
        if fallback:
            row = next((r for r in rows if r.is_fallback), None)
        prefix, faults = _rule_faults(rule_set, rows, row, data, fallback=fallback)
        if faults:
            raise DraftRuleInvalid(faults, prefix)
        canonical = _canonical_rule(data, fallback=fallback)
        if row is None:
            row = Rule(rule_set=rule_set, position=100_000 + len(rows), is_fallback=fallback)
        else:
            row = next(r for r in rows if r.pk == row.pk)
        _write_rule(row, canonical)
        row.save()
        if row not in rows:
            rows.append(row)
        _renumber(rule_set, rows)
        if fallback:
            rule_set.fallback = canonical
            rule_set.save(update_fields=["fallback"])
    return row


def draft_rule_delete(rule_set: RuleSet, rule_pk: int) -> Rule:
    """Remove one rule (or the fallback) from the draft; Rule.DoesNotExist if it is not there."""
    with transaction.atomic():
        rule_set = _lock_draft(rule_set)
        row = Rule.objects.get(pk=rule_pk, rule_set=rule_set)
        row.delete()
        if row.is_fallback:
            rule_set.fallback = None
            rule_set.save(update_fields=["fallback"])
        _renumber(rule_set, list(rule_set.rules.order_by("position")))
    return row


def draft_reorder(rule_set: RuleSet, order: list[int]) -> bool:
    """Put the draft's rules in `order` (rule ids, top first; the fallback stays last).

    Returns False and changes nothing when `order` does not name exactly the draft's rules — the
    page was stale (a rule was added or removed elsewhere)."""
    with transaction.atomic():
        rule_set = _lock_draft(rule_set)
        rows = {r.pk: r for r in rule_set.rules.filter(is_fallback=False)}
        if sorted(order) != sorted(rows):
            return False
        fallback = list(rule_set.rules.filter(is_fallback=True))
        _renumber(rule_set, [rows[i] for i in order] + fallback)
    return True


def _canonical_rule(rule: dict[str, Any], *, fallback: bool) -> dict[str, Any]:
    """The rule in canonical form (key order, trimmed names), validated on its own: a fault in some
    other rule of the draft must not stop this one from being saved."""
    if fallback:
        data = {"name": "x", "rules": [{"name": "x", "candidates": {"territory": True}}], "fallback": rule}
        return ruleset_validate(data)["fallback"]
    return ruleset_validate({"name": "x", "rules": [rule]})["rules"][0]


def _write_rule(row: Rule, rule: dict[str, Any]) -> None:
    row.name = "fallback" if row.is_fallback else rule["name"]
    row.conditions = rule.get("when_any") or rule.get("when") or []
    row.match_any = "when_any" in rule
    row.candidates = rule.get("candidates") or {}
    row.strategy = rule.get("strategy", "")
    row.pool = Pool.objects.filter(name=rule["pool"]).first() if rule.get("pool") else None
    row.sla_minutes = rule.get("sla_minutes")
    row.escalate_to = rule.get("escalate_to") or []
    row.ladder = rule.get("ladder") or []
    row.max_reassignments = rule.get("max_reassignments")


def _renumber(rule_set: RuleSet, ordered: list[Rule]) -> None:
    """Positions 0..n-1 in the given order, the fallback always last. Two passes because
    (rule_set, position) is unique and a swap would collide half-way."""
    Rule.objects.filter(rule_set=rule_set).update(position=F("position") + 100_000)
    rules = [r for r in ordered if not r.is_fallback] + [r for r in ordered if r.is_fallback]
    for i, row in enumerate(rules):
        Rule.objects.filter(pk=row.pk).update(position=i)


__all__ = [
    "DraftRefused",
    "DraftRuleInvalid",
    "draft_create",
    "draft_faults",
    "draft_rename",
    "draft_reorder",
    "draft_rule_delete",
    "draft_rule_faults",
    "draft_rule_save",
    "fault_concerns",
    "ruleset_rows_data",
]

"""The rule editor's form: one rule (or the fallback) as HTML fields <-> a rule-file dict.

Validation is not duplicated here: routing.drafts puts the rule into the whole draft dict and runs
the rule-file validator, then `RuleForm.add_faults` pins each `rules[i].when[j].value: …`
message next to the field it names, so the editor says exactly what `load_rules` would say.
Fields are parsed only as far as needed to build the dict; text that does not parse (`"soon"` as
SLA minutes) is passed on as it is so that the validator names the fault.
Condition rows are dynamic (added with htmx), which is why this is a small class over
QueryDict lists rather than a Django Form with a formset.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from django.http import QueryDict

from routing.engine import OPS, STRATEGIES
from routing.rulefile import LEAD_FIELDS, LEVELS, NUMERIC_FIELDS, ORDER_OPS

NO_VALUE_OPS = ("is_empty", "is_not_empty")
LIST_OPS = ("in", "not_in")
OP_LABELS = {
    "eq": "is", "ne": "is not", "in": "is one of", "not_in": "is none of", "contains": "contains",
    "icontains": "contains (any case)", "startswith": "starts with", "endswith": "ends with",
    "gt": ">", "gte": "≥", "lt": "<", "lte": "≤", "regex": "matches regex",
    "is_empty": "is empty", "is_not_empty": "is not empty",
}
STRATEGY_LABELS = {
    "round_robin": "Round robin", "weighted": "Weighted (by rep weight)",
    "load_balanced": "Load balanced (most room)", "first_available": "First available (listed order)",
    "predictive": "Predictive",
}
FIELD_CHOICES = [(f, f) for f in LEAD_FIELDS]
OP_CHOICES = [(op, OP_LABELS.get(op, op)) for op in OPS]
STRATEGY_CHOICES = [(s, STRATEGY_LABELS.get(s, s)) for s in STRATEGIES]
FAULT_RE = re.compile(r"^(?P<path>[^:]*?): (?P<message>.*)$", re.S)


@dataclasses.dataclass
class ConditionRow:
    field: str = ""
    op: str = "eq"
    value: str = ""
    errors: list[str] = dataclasses.field(default_factory=list)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _whole_number(raw: str) -> Any:
    """An int when `raw` is one, else the text itself (for the validator to name)."""
    try:
        return int(raw)
    except ValueError:
        return raw


def parse_value(field_name: str, op: str, raw: str) -> Any:
    """The typed value a condition row means. Anything that does not parse is passed on as text so
    the rule-file validator reports it ("company_size is a number, got 'lots'")."""
    if op in LIST_OPS:
        return [_scalar(field_name, op, part) for part in _names(raw)]
    return _scalar(field_name, op, raw.strip())


def _scalar(field_name: str, op: str, raw: str) -> Any:
    numeric = field_name in NUMERIC_FIELDS or (field_name.startswith("extra.") and op in (*ORDER_OPS, "eq", "ne",
                                                                                           *LIST_OPS))
    if field_name.startswith("extra.") and raw in ("true", "false") and op in ("eq", "ne"):
        return raw == "true"
    if numeric and op != "regex":
        for kind in (int, float):
            try:
                return kind(raw)
            except ValueError:
                continue
    return raw


class RuleForm:
    """One rule's fields as the editor shows them, with errors per field and per condition row."""

    def __init__(self, *, fallback: bool = False):
        self.fallback = fallback
        self.name = ""
        self.match = "all"
        self.conditions: list[ConditionRow] = []
        self.target = "candidates"
        self.reps = ""
        self.team = ""
        self.levels: list[str] = []
        self.skills: list[str] = []
        self.territory = False
        self.strategy = "round_robin"
        self.pool = ""
        self.sla_minutes = ""
        self.escalate_to = ""
        self.escalate_levels: list[str] = []
        # Escalation steps after a missed SLA, comma separated ("" = the default ladder).
        self.ladder = ""
        self.max_reassignments = ""
        self.errors: dict[str, list[str]] = {}
        self.summary: list[dict[str, str]] = []

    # -- in ---------------------------------------------------------------------------------------

    @classmethod
    def from_rule(cls, rule: dict[str, Any] | None, *, fallback: bool = False) -> RuleForm:
        form = cls(fallback=fallback)
        rule = rule or {}
        form.name = rule.get("name", "")
        form.match = "any" if rule.get("when_any") else "all"
        form.conditions = [
            ConditionRow(c.get("field", ""), c.get("op", ""), _text(c.get("value")))
            for c in (rule.get("when_any") or rule.get("when") or [])
        ]
        if rule.get("pool"):
            form.target, form.pool = "pool", rule["pool"]
        cands = rule.get("candidates") or {}
        form.reps = ", ".join(cands.get("reps") or [])
        form.team = cands.get("team") or ""
        form.levels = list(cands.get("levels") or [])
        form.skills = list(cands.get("skills") or [])
        form.territory = bool(cands.get("territory"))
        form.strategy = rule.get("strategy") or "round_robin"
        form.sla_minutes = _text(rule.get("sla_minutes"))
        escalate = rule.get("escalate_to")
        if isinstance(escalate, dict):
            form.escalate_levels = list(escalate.get("levels") or [])
        elif escalate:
            form.escalate_to = ", ".join(escalate)
        form.ladder = _text(rule.get("ladder"))
        form.max_reassignments = _text(rule.get("max_reassignments"))
        return form

    @classmethod
    def from_post(cls, post: QueryDict, *, fallback: bool = False) -> RuleForm:
        form = cls(fallback=fallback)
        form.name = post.get("name", "").strip()
        form.match = "any" if post.get("match") == "any" else "all"
        fields, ops, values = post.getlist("cond_field"), post.getlist("cond_op"), post.getlist("cond_value")
        for i, name in enumerate(fields):
            op = ops[i] if i < len(ops) else ""
            value = values[i] if i < len(values) else ""
            if not name.strip() and not value.strip():
                continue  # an empty row the manager added and left blank
            form.conditions.append(ConditionRow(name.strip(), op.strip(), value))
        form.target = "pool" if post.get("target") == "pool" else "candidates"
        form.reps = post.get("reps", "").strip()
        form.team = post.get("team", "").strip()
        form.levels = post.getlist("levels")
        form.skills = post.getlist("skills")
        form.territory = post.get("territory") in ("on", "true", "1")
        form.strategy = post.get("strategy", "round_robin").strip()
        form.pool = post.get("pool", "").strip()
        form.sla_minutes = post.get("sla_minutes", "").strip()
        form.escalate_to = post.get("escalate_to", "").strip()
        form.escalate_levels = post.getlist("escalate_levels")
        form.ladder = post.get("ladder", "").strip()
        form.max_reassignments = post.get("max_reassignments", "").strip()
        if form.escalate_to and form.escalate_levels:
            form.error("escalate_to", "escalate to named people or to levels, not both")
        return form

    # -- out --------------------------------------------------------------------------------------

    def to_rule(self) -> dict[str, Any]:
        """The rule-file dict these fields mean (not yet validated)."""
        rule: dict[str, Any] = {}
        if not self.fallback:
            rule["name"] = self.name
            if self.conditions:
                conds = []
                for row in self.conditions:
                    cond: dict[str, Any] = {"field": row.field, "op": row.op}
                    if row.op not in NO_VALUE_OPS:
                        cond["value"] = parse_value(row.field, row.op, row.value)
                    elif row.value.strip():
                        cond["value"] = row.value.strip()  # the validator says such an op takes no value
                    conds.append(cond)
                rule["when_any" if self.match == "any" else "when"] = conds
        if self.target == "pool":
            rule["pool"] = self.pool
        else:
            cands: dict[str, Any] = {}
            if self.reps:
                cands["reps"] = _names(self.reps)
            if self.team:
                cands["team"] = self.team
            if self.levels:
                cands["levels"] = self.levels
            if self.skills:
                cands["skills"] = self.skills
            if self.territory:
                cands["territory"] = True
            # No filter at all: leave `candidates` out so the validator names the fault
            # ("strategy 'weighted' without candidates") instead of silently meaning "everyone".
            if cands:
                rule["candidates"] = cands
            rule["strategy"] = self.strategy
        if self.sla_minutes:
            rule["sla_minutes"] = _whole_number(self.sla_minutes)
        if self.escalate_levels:
            rule["escalate_to"] = {"levels": self.escalate_levels}
        elif self.escalate_to:
            rule["escalate_to"] = _names(self.escalate_to)
        if self.ladder:
            rule["ladder"] = _names(self.ladder)
        if self.max_reassignments:
            rule["max_reassignments"] = _whole_number(self.max_reassignments)
        return rule

    # -- errors -----------------------------------------------------------------------------------

    @property
    def is_valid(self) -> bool:
        return not self.errors and not any(row.errors for row in self.conditions)

    def error(self, key: str, message: str, path: str = "") -> None:
        self.errors.setdefault(key, []).append(message)
        self.summary.append({"path": path, "label": self._label(key), "message": message})

    def add_faults(self, faults: list[str], prefix: str) -> None:
        """Pin validator faults (`rules[2].when[0].value: …`) on this form's fields."""
        for fault in faults:
            m = FAULT_RE.match(fault)
            path, message = (m["path"], m["message"]) if m else ("", fault)
            rest = path[len(prefix):] if path.startswith(prefix) else ""
            key = self._key_for(rest)
            cond = re.match(r"^\.when(?:_any)?\[(\d+)\](?:\.(\w+))?", rest)
            if cond and int(cond[1]) < len(self.conditions):
                row = self.conditions[int(cond[1])]
                part = cond[2] or "condition"
                row.errors.append(f"{part}: {message}")
                self.summary.append({"path": path, "label": f"condition {int(cond[1]) + 1}, {part}",
                                     "message": message})
                continue
            self.errors.setdefault(key, []).append(message)
            self.summary.append({"path": path, "label": self._label(key), "message": message})

    @staticmethod
    def _key_for(rest: str) -> str:
        for prefix, key in ((".name", "name"), (".when", "conditions"), (".candidates", "candidates"),
                            (".strategy", "strategy"), (".pool", "pool"), (".sla_minutes", "sla_minutes"),
                            (".escalate_to", "escalate_to"), (".ladder", "ladder"),
                            (".max_reassignments", "max_reassignments")):
            if rest.startswith(prefix):
                return key
        if rest == "":
            return "candidates"  # "needs 'candidates' (with a strategy) or a 'pool'"
        return "other"

    @staticmethod
    def _label(key: str) -> str:
        return {"name": "name", "conditions": "conditions", "candidates": "candidates", "strategy": "strategy",
                "pool": "pool", "sla_minutes": "SLA minutes", "escalate_to": "escalate to",
                "ladder": "escalation steps", "max_reassignments": "max reassignments"}.get(key, "rule")


def fault_label(fault: str, names: list[str]) -> dict[str, str]:
    """A whole-draft fault as {"path", "label", "message"}, naming the rule (`Rule 2 “DACH”`)."""
    m = FAULT_RE.match(fault)
    path, message = (m["path"], m["message"]) if m else ("", fault)
    label = "Rule set"
    rm = re.match(r"^rules\[(\d+)\]", path)
    if rm:
        i = int(rm[1])
        label = f"Rule {i + 1}" + (f" “{names[i]}”" if i < len(names) and names[i] else "")
    elif path.startswith("fallback"):
        label = "Fallback"
    elif path == "rules":
        label = "Rules"
    return {"path": path, "label": label, "message": message}


__all__ = ["FIELD_CHOICES", "LEVELS", "OP_CHOICES", "STRATEGY_CHOICES", "ConditionRow", "RuleForm", "fault_label",
           "parse_value"]

"""Rules in plain language, and what changed between two versions — pure functions over rule dicts
in the rule-file format (routing.rulefile), so the policy page, the editor and the history diff
all read the same data the engine runs on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

FIELD_LABELS = {
    "email": "email", "first_name": "first name", "last_name": "last name", "phone": "phone",
    "company": "company", "title": "job title", "country": "country", "region": "region",
    "postcode": "postcode", "industry": "industry", "company_size": "company size", "product": "product",
    "source": "source", "score": "score", "priority": "priority", "value": "deal value",
    "received_at": "arrival time",
}

LEVEL_PLURALS = {"junior": "juniors", "senior": "seniors", "director": "directors", "manager": "managers"}

STRATEGY_PHRASES = {
    "round_robin": "in turn (round robin)",
    "weighted": "in proportion to their weights",
    "load_balanced": "to whoever has the most room (fewest open leads for their capacity)",
    "first_available": "to the first one available, in the order listed",
    "predictive": "to whoever past results predict will convert it best",
}


def _num(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return str(value)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"“{value}”"
    return _num(value)


def _listing(items: Sequence[str], last: str = "or") -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def _label(name: str) -> str:
    if name.startswith("extra."):
        return f"custom field “{name[6:]}”"
    return FIELD_LABELS.get(name, name)


def describe_condition(cond: Mapping[str, Any]) -> str:
    """One condition as a phrase that follows "Leads …" (e.g. "from DE, AT or CH")."""
    name, op, value = cond.get("field", ""), cond.get("op", ""), cond.get("value")
    # The two fields reps think about most get natural phrasing; the rest read "whose X is …".
    if name == "country" and op in ("eq", "in", "ne", "not_in"):
        codes = value if isinstance(value, list) else [value]
        places = _listing([str(c) for c in codes])
        return f"from {places}" if op in ("eq", "in") else f"not from {places}"
    if name == "company_size" and op in ("gt", "gte", "lt", "lte", "eq", "ne"):
        return {
            "gte": f"with {_num(value)}+ employees",
            "gt": f"with more than {_num(value)} employees",
            "lt": f"with fewer than {_num(value)} employees",
            "lte": f"with at most {_num(value)} employees",
            "eq": f"with exactly {_num(value)} employees",
            "ne": f"without exactly {_num(value)} employees",
        }[op]
    label = _label(name)
    if name == "received_at" and op in ("gt", "gte", "lt", "lte"):
        return {"gt": f"arriving after {value}", "gte": f"arriving from {value}",
                "lt": f"arriving before {value}", "lte": f"arriving up to {value}"}[op]
    phrases = {
        "eq": lambda: f"whose {label} is {_show(value)}",
        "ne": lambda: f"whose {label} is not {_show(value)}",
        "in": lambda: f"whose {label} is {_listing([_show(v) for v in value or []])}",
        "not_in": lambda: f"whose {label} is none of {_listing([_show(v) for v in value or []], 'and')}",
        "contains": lambda: f"whose {label} contains {_show(value)}",
        "icontains": lambda: f"whose {label} contains {_show(value)} (any case)",
        "startswith": lambda: f"whose {label} starts with {_show(value)}",
        "endswith": lambda: f"whose {label} ends with {_show(value)}",
        "gt": lambda: f"whose {label} is above {_num(value)}",
        "gte": lambda: f"whose {label} is {_num(value)} or more",
        "lt": lambda: f"whose {label} is below {_num(value)}",
        "lte": lambda: f"whose {label} is {_num(value)} or less",
        "regex": lambda: f"whose {label} matches the pattern {value}",
        "is_empty": lambda: f"with no {label}",
        "is_not_empty": lambda: f"with a {label}",
    }
    phrase = phrases.get(op)
    return phrase() if phrase else f"whose {label} {op} {_show(value)}"


def describe_candidates(cands: Mapping[str, Any]) -> str:
    """Who may get the lead, e.g. "EMEA seniors covering the lead's territory who know payments"."""
    levels = cands.get("levels") or []
    team = cands.get("team")
    who = _listing([LEVEL_PLURALS.get(lv, lv) for lv in levels]) if levels else "reps"
    if team:
        who = f"{team} {who}"
    qualifiers = []
    if cands.get("territory"):
        qualifiers.append("covering the lead's territory")
    if cands.get("skills"):
        qualifiers.append(f"who know {_listing(cands['skills'], 'and')}")
    reps = cands.get("reps") or []
    if reps:
        named = _listing(reps)
        if team or levels or qualifiers:
            return f"{named}, when they are {' '.join([who, *qualifiers])}"
        return named
    return " ".join([who, *qualifiers])


def _escalation(target: Any) -> str:
    if isinstance(target, Mapping):
        return _listing([LEVEL_PLURALS.get(lv, lv) for lv in target.get("levels") or []], "and")
    return _listing(list(target), "and")


def describe_rule(rule: Mapping[str, Any], *, fallback: bool = False) -> str:
    """A rule (rule-file dict) as one or two plain sentences for reps.

    >>> describe_rule({"when": [{"field": "priority", "op": "eq", "value": "urgent"}],
    ...                "candidates": {"levels": ["director"]}, "strategy": "round_robin"})
    'Leads whose priority is “urgent” go to directors, in turn (round robin).'
    """
    conds = rule.get("when_any") or rule.get("when") or []
    joiner = " or " if rule.get("when_any") else " and "
    if fallback:
        subject, verb = "Any other lead", "goes"
    elif conds:
        subject, verb = "Leads " + _join_conditions([describe_condition(c) for c in conds], joiner), "go"
    else:
        subject, verb = "All leads", "go"
    if rule.get("pool"):
        text = f"{subject} {verb} to the “{rule['pool']}” pool, where its members claim them."
    else:
        who = describe_candidates(rule.get("candidates") or {})
        how = STRATEGY_PHRASES.get(rule.get("strategy") or "round_robin", rule.get("strategy", ""))
        text = f"{subject} {verb} to {who}, {how}."
    if rule.get("sla_minutes"):
        minutes = rule["sla_minutes"]
        text += f" First touch within {_num(minutes)} working minute{'s' if minutes != 1 else ''}"
        if rule.get("escalate_to"):
            text += f"; if missed, {_escalation(rule['escalate_to'])} {'is' if _single(rule) else 'are'} told."
        else:
            text += "."
    elif rule.get("escalate_to"):
        text += f" Escalations go to {_escalation(rule['escalate_to'])}."
    return text


def _join_conditions(phrases: list[str], joiner: str) -> str:
    # "from DE with 1,000+ employees" reads better than "from DE and with 1,000+ employees".
    out = phrases[0]
    for p in phrases[1:]:
        out += " " + p if joiner == " and " and p.startswith(("with ", "without ")) else joiner + p
    return out


def _single(rule: Mapping[str, Any]) -> bool:
    target = rule.get("escalate_to")
    return isinstance(target, list) and len(target) == 1


# -- history diff ---------------------------------------------------------------------------------

DIFF_FIELDS = ("when", "when_any", "candidates", "strategy", "pool", "sla_minutes", "escalate_to", "ladder",
               "max_reassignments")


def _plain(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def rule_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, str]]:
    """Field-by-field differences of one rule: [{"field", "old", "new"}]."""
    out = []
    for key in DIFF_FIELDS:
        if old.get(key) != new.get(key):
            out.append({"field": key, "old": _plain(old.get(key)), "new": _plain(new.get(key))})
    return out


def ruleset_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """What changed from `old` to `new` (rule-file dicts); rules are matched by name, because the
    name is also what keeps a rule's round-robin pointer across versions."""
    old_rules = {r["name"]: (i, r) for i, r in enumerate(old.get("rules") or [])}
    new_rules = {r["name"]: (i, r) for i, r in enumerate(new.get("rules") or [])}
    added = [{"name": n, "position": i + 1, "text": describe_rule(r)}
             for n, (i, r) in new_rules.items() if n not in old_rules]
    removed = [{"name": n, "position": i + 1, "text": describe_rule(r)}
               for n, (i, r) in old_rules.items() if n not in new_rules]
    changed = []
    for name, (i, r) in new_rules.items():
        if name not in old_rules:
            continue
        j, before = old_rules[name]
        fields = rule_changes(before, r)
        # Order matters (first match wins), so a move is a change even when the rule is the same.
        kept_old = [n for n in old_rules if n in new_rules]
        kept_new = [n for n in new_rules if n in old_rules]
        if kept_old.index(name) != kept_new.index(name):
            fields.insert(0, {"field": "position", "old": str(j + 1), "new": str(i + 1)})
        if fields:
            changed.append({"name": name, "fields": fields})
    fallback = rule_changes(old.get("fallback") or {}, new.get("fallback") or {})
    return {
        "name": None if old.get("name") == new.get("name") else {"old": old.get("name"), "new": new.get("name")},
        "added": added,
        "removed": removed,
        "changed": changed,
        "fallback": fallback,
        "same": not (added or removed or changed or fallback) and old.get("name") == new.get("name"),
    }

"""Rule-set files (CONTRACT §3): parse, validate, normalise, export.

`ruleset_validate(data, known=...)` returns the canonical dict or raises RuleFileError listing
every fault with its path (`rules[2].when[0].op: unknown op 'like'`). The canonical dict is what
is stored and what `export_rules` prints, so load → export → load → export is a fixed point.

A condition that can never match (`company_size gte "abc"`, `priority eq "asap"`) is rejected
here rather than silently evaluating to false at routing time.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from routing.engine import OPS, STRATEGIES

LEAD_FIELDS = (
    "email", "first_name", "last_name", "phone", "company", "title", "country", "region", "postcode",
    "industry", "company_size", "product", "source", "score", "priority", "value", "received_at",
)
NUMERIC_FIELDS = {"company_size", "score", "value"}
LEVELS = ("junior", "senior", "director", "manager")
PRIORITIES = ("normal", "urgent")
TOP_KEYS = ("name", "rules", "fallback")
RULE_KEYS = (
    "name", "when", "when_any", "candidates", "strategy", "pool", "sla_minutes", "escalate_to",
    "ladder", "max_reassignments",
)
FALLBACK_KEYS = tuple(k for k in RULE_KEYS if k not in ("name", "when", "when_any"))
CANDIDATE_KEYS = ("reps", "team", "levels", "skills", "territory")
# The largest values the Rule columns hold (integer, smallint): more would fail the save on PostgreSQL.
INT_MAX = 2_147_483_647
SMALLINT_MAX = 32_767
TEXT_OPS = ("contains", "icontains", "startswith", "endswith", "regex")
ORDER_OPS = ("gt", "gte", "lt", "lte")


class RuleFileError(Exception):
    """Every fault in a rule-set file, each as `path: message`."""

    def __init__(self, faults: list[str]):
        self.faults = faults
        super().__init__("\n".join(faults))


@dataclass
class KnownNames:
    """What exists in the organisation; None means "don't check" (pure validation)."""

    reps: set[str] | None = None
    users: set[str] | None = None
    teams: set[str] | None = None
    skills: set[str] | None = None
    pools: set[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def known_names_from_db() -> KnownNames:
    from django.contrib.auth import get_user_model

    from reps.models import Rep, Skill, Team
    from routing.models import Pool

    return KnownNames(
        reps=set(Rep.objects.values_list("user__username", flat=True)),
        users=set(get_user_model().objects.values_list("username", flat=True)),
        teams=set(Team.objects.values_list("name", flat=True)),
        skills=set(Skill.objects.values_list("name", flat=True)),
        pools=set(Pool.objects.values_list("name", flat=True)),
    )


def ruleset_parse(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RuleFileError([f"(file): not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]) from exc


def ruleset_validate(data: Any, known: KnownNames | None = None) -> dict[str, Any]:
    """The canonical form of a rule-set dict, or RuleFileError with all faults."""
    v = _Validator(known or KnownNames())
    out = v.ruleset(data)
    if v.faults:
        raise RuleFileError(v.faults)
    return out


def ruleset_dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_moment(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        dt.datetime.fromisoformat(v)
    except ValueError:
        return False
    return True


class _Validator:
    def __init__(self, known: KnownNames):
        self.known = known
        self.faults: list[str] = []

    def fault(self, path: str, message: str) -> None:
        self.faults.append(f"{path}: {message}")

    def unknown_keys(self, obj: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
        for key in obj:
            if key not in allowed:
                self.fault(f"{path}.{key}" if path else str(key), f"unknown field {key!r}")

    # -- top level ---------------------------------------------------------------------------

    def ruleset(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fault("(file)", "expected an object with 'name', 'rules' and 'fallback'")
            return {}
        self.unknown_keys(data, TOP_KEYS, "")
        name = data.get("name", "Rule set")
        if not isinstance(name, str) or not name.strip():
            self.fault("name", "expected a non-empty string")
            name = ""
        out: dict[str, Any] = {"name": name.strip() if isinstance(name, str) else ""}
        rules = data.get("rules")
        if not isinstance(rules, list):
            self.fault("rules", "expected a list of rules")
            rules = []
        elif not rules:
            self.fault("rules", "empty rule list: a rule set needs at least one rule")
        out["rules"] = [self.rule(r, f"rules[{i}]", i) for i, r in enumerate(rules)]
        seen: dict[str, int] = {}
        for i, r in enumerate(out["rules"]):
            nm = r.get("name")
            if nm in seen:
                self.fault(f"rules[{i}].name", f"duplicate rule name {nm!r} (also rules[{seen[nm]}])")
            elif nm:
                seen[nm] = i
        fallback = data.get("fallback")
        if fallback is not None:
            out["fallback"] = self.rule(fallback, "fallback", None)
        else:
            out["fallback"] = None
        return out

    # -- one rule ----------------------------------------------------------------------------

    def rule(self, data: Any, path: str, index: int | None) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fault(path, "expected an object")
            return {}
        self.unknown_keys(data, RULE_KEYS if index is not None else FALLBACK_KEYS, path)
        out: dict[str, Any] = {}
        if index is not None:
            name = data.get("name", f"rule {index + 1}")
            if not isinstance(name, str) or not name.strip():
                self.fault(f"{path}.name", "expected a non-empty string")
            else:
                out["name"] = name.strip()
            if "when" in data and "when_any" in data:
                self.fault(f"{path}.when_any", "use either 'when' (all) or 'when_any' (any), not both")
            for key in ("when", "when_any"):
                if key in data:
                    conds = data[key]
                    if not isinstance(conds, list):
                        self.fault(f"{path}.{key}", "expected a list of conditions")
                        continue
                    if key == "when_any" and not conds:
                        self.fault(f"{path}.{key}", "empty list: the rule could never match")
                    out[key] = [self.condition(c, f"{path}.{key}[{j}]") for j, c in enumerate(conds)]
        has_pool = data.get("pool") is not None
        has_cands = data.get("candidates") is not None
        if has_pool and (has_cands or data.get("strategy") is not None):
            self.fault(f"{path}.pool", "a rule sends to a pool or picks among candidates, not both")
        if not has_pool and not has_cands:
            if data.get("strategy") is not None:
                self.fault(f"{path}.candidates", f"strategy {data['strategy']!r} without candidates")
            else:
                self.fault(path, "needs 'candidates' (with a strategy) or a 'pool'")
        if has_cands:
            out["candidates"] = self.candidates(data["candidates"], f"{path}.candidates")
            strategy = data.get("strategy", "round_robin")
            if strategy not in STRATEGIES:
                self.fault(f"{path}.strategy", f"unknown strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
            out["strategy"] = strategy
        if has_pool:
            pool = data["pool"]
            if not isinstance(pool, str) or not pool:
                self.fault(f"{path}.pool", "expected a pool name")
            elif self.known.pools is not None and pool not in self.known.pools:
                self.fault(f"{path}.pool", f"pool {pool!r} does not exist")
            out["pool"] = pool
        for key, most in (("sla_minutes", INT_MAX), ("max_reassignments", SMALLINT_MAX)):
            if data.get(key) is not None:
                val = data[key]
                if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                    self.fault(f"{path}.{key}", f"expected a positive whole number, got {val!r}")
                elif val > most:
                    self.fault(f"{path}.{key}", f"expected at most {most}, got {val!r}")
                out[key] = val
        if data.get("escalate_to") is not None:
            out["escalate_to"] = self.escalate_to(data["escalate_to"], f"{path}.escalate_to")
        if data.get("ladder") is not None:
            ladder = data["ladder"]
            if not isinstance(ladder, list) or not all(isinstance(s, str) and s for s in ladder):
                self.fault(f"{path}.ladder", "expected a list of step names")
            else:
                # Imported here: routing.sla imports the services, which import this module. A step
                # the sweep does not know would silently fall back to the default ladder there.
                from routing.sla import LadderError, validate_ladder

                try:
                    validate_ladder(ladder)
                except LadderError as exc:
                    self.fault(f"{path}.ladder", str(exc))
            out["ladder"] = ladder
        return out

    def candidates(self, data: Any, path: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fault(path, "expected an object")
            return {}
        self.unknown_keys(data, CANDIDATE_KEYS, path)
        out: dict[str, Any] = {}
        if "reps" in data:
            reps = data["reps"]
            if not isinstance(reps, list) or not reps or not all(isinstance(u, str) for u in reps):
                self.fault(f"{path}.reps", "expected a non-empty list of usernames")
            else:
                for j, u in enumerate(reps):
                    if self.known.reps is not None and u not in self.known.reps:
                        self.fault(f"{path}.reps[{j}]", f"unknown rep {u!r}")
                if len(set(reps)) != len(reps):
                    self.fault(f"{path}.reps", "a rep is listed twice")
                out["reps"] = reps
        if "team" in data:
            team = data["team"]
            if not isinstance(team, str) or not team:
                self.fault(f"{path}.team", "expected a team name")
            elif self.known.teams is not None and team not in self.known.teams:
                self.fault(f"{path}.team", f"team {team!r} does not exist")
            out["team"] = team
        if "levels" in data:
            levels = data["levels"]
            if not isinstance(levels, list) or not levels:
                self.fault(f"{path}.levels", "expected a non-empty list of levels")
            else:
                for j, lv in enumerate(levels):
                    if lv not in LEVELS:
                        self.fault(f"{path}.levels[{j}]", f"unknown level {lv!r} (one of {', '.join(LEVELS)})")
                out["levels"] = levels
        if "skills" in data:
            skills = data["skills"]
            if not isinstance(skills, list) or not skills or not all(isinstance(s, str) for s in skills):
                self.fault(f"{path}.skills", "expected a non-empty list of skill names")
            else:
                for j, s in enumerate(skills):
                    if self.known.skills is not None and s not in self.known.skills:
                        self.fault(f"{path}.skills[{j}]", f"skill {s!r} does not exist")
                out["skills"] = skills
        if "territory" in data:
            if not isinstance(data["territory"], bool):
                self.fault(f"{path}.territory", "expected true or false")
            elif data["territory"]:
                out["territory"] = True
        if not out and not self.faults_under(path):
            self.fault(path, "no filter given: name reps, a team, levels, skills or territory")
        return out

    def faults_under(self, path: str) -> bool:
        return any(f.startswith(path + ".") or f.startswith(path + ":") for f in self.faults)

    def escalate_to(self, data: Any, path: str) -> Any:
        if isinstance(data, dict):
            self.unknown_keys(data, ("levels",), path)
            levels = data.get("levels")
            if not isinstance(levels, list) or not levels:
                self.fault(f"{path}.levels", "expected a non-empty list of levels")
            else:
                for j, lv in enumerate(levels):
                    if lv not in LEVELS:
                        self.fault(f"{path}.levels[{j}]", f"unknown level {lv!r}")
            return {"levels": levels}
        if not isinstance(data, list) or not all(isinstance(u, str) for u in data):
            self.fault(path, 'expected usernames or {"levels": [...]}')
            return data
        for j, u in enumerate(data):
            if self.known.users is not None and u not in self.known.users:
                self.fault(f"{path}[{j}]", f"unknown user {u!r}")
        return data

    # -- one condition -----------------------------------------------------------------------

    def condition(self, data: Any, path: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fault(path, 'expected {"field", "op", "value"}')
            return {}
        self.unknown_keys(data, ("field", "op", "value"), path)
        name, op = data.get("field"), data.get("op")
        out: dict[str, Any] = {"field": name, "op": op}
        ok = True
        if not isinstance(name, str) or not name:
            self.fault(f"{path}.field", "expected a lead field name")
            ok = False
        elif not (name in LEAD_FIELDS or (name.startswith("extra.") and len(name) > 6)):
            self.fault(f"{path}.field", f"unknown field {name!r} (a lead field or extra.NAME)")
            ok = False
        if op not in OPS:
            self.fault(f"{path}.op", f"unknown op {op!r}")
            ok = False
        if op in ("is_empty", "is_not_empty"):
            if data.get("value") is not None:
                self.fault(f"{path}.value", f"op {op!r} takes no value")
            return out
        if "value" not in data:
            self.fault(f"{path}.value", f"op {op!r} needs a value")
            return out
        value = data["value"]
        out["value"] = value
        if ok:
            problem = _value_problem(name, op, value)
            if problem:
                self.fault(f"{path}.value", problem)
        return out


def _value_problem(name: str, op: str, value: Any) -> str | None:
    """Why `name op value` is malformed or could never match, else None."""
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            return f"op {op!r} needs a non-empty list"
        for j, item in enumerate(value):
            problem = _scalar_problem(name, item)
            if problem:
                return f"[{j}] {problem}"
        return None
    if op in ("eq", "ne"):
        return _scalar_problem(name, value)
    if op in ORDER_OPS:
        if name == "received_at":
            return None if _is_moment(value) else f"op {op!r} on received_at needs an ISO 8601 time, got {value!r}"
        if name in NUMERIC_FIELDS or name.startswith("extra."):
            if not _is_number(value):
                return f"op {op!r} on {name} needs a number, got {value!r}"
            if name == "score" and ((op == "gt" and value >= 100) or (op == "gte" and value > 100)
                                    or (op == "lt" and value <= 0) or (op == "lte" and value < 0)):
                return f"score is 0–100: {name} {op} {value} can never match"
            return None
        return f"op {op!r} compares numbers or times; {name} is text"
    if op in TEXT_OPS:
        if not isinstance(value, str):
            return f"op {op!r} needs a string, got {value!r}"
        if name in NUMERIC_FIELDS and op != "regex":
            return f"op {op!r} does not apply to numeric field {name}"
        if op == "regex":
            try:
                re.compile(value)
            except re.error as exc:
                return f"regex does not compile: {exc}"
        return None
    return None


def _scalar_problem(name: str, value: Any) -> str | None:
    if name in NUMERIC_FIELDS:
        if not _is_number(value):
            return f"{name} is a number, got {value!r}"
        if name == "score" and not 0 <= value <= 100:
            return f"score is 0–100, got {value!r}"
        return None
    if name == "received_at":
        return None if _is_moment(value) else f"expected an ISO 8601 time, got {value!r}"
    if name.startswith("extra."):
        if value is not None and not isinstance(value, str | int | float | bool):
            return f"expected a string, number or boolean, got {value!r}"
        return None
    if not isinstance(value, str):
        return f"{name} is text, got {value!r}"
    if name == "priority" and value.casefold() not in PRIORITIES:
        return f"priority is {' or '.join(PRIORITIES)}, got {value!r}"
    if name == "country" and len(value) != 2:
        return f"country is an ISO 3166 alpha-2 code, got {value!r}"
    return None

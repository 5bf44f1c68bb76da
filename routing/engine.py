"""The routing engine: a pure function from plain data to a Decision.

`decide(lead, rule_set, roster, cursors, now, rng)` looks at no database, no clock and no
randomness it was not handed, so live routing, "explain", previews and replays share one code
path and hypothesis can hammer it. Everything it needs is prepared elsewhere:

- `compile_ruleset(data)` turns a validated rule-set dict (see routing.rulefile) into RuleSpecs
  whose conditions are closures, once per batch;
- `Roster` wraps the CandidateStates (routing.selectors builds them from the database) and caches
  what does not change between leads of a batch (scopes, availability at one instant);
- `CursorState` is the persisted rotation state of one rule (RuleCursor row).

The Decision carries the winning rule, the chosen rep or pool, a trace with one reason per rule
tried and per candidate considered, and the new cursor state for the caller to persist.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from reps.availability import Schedule
from reps.models import territory_covers

OPS = (
    "eq", "ne", "in", "not_in", "contains", "icontains", "startswith", "endswith",
    "gt", "gte", "lt", "lte", "regex", "is_empty", "is_not_empty",
)
STRATEGIES = ("round_robin", "weighted", "load_balanced", "first_available", "predictive")
FALLBACK = "fallback"
FALLBACK_KEY = "__fallback__"


# -- input -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TerritoryData:
    name: str
    countries: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    postcodes: tuple[str, ...] = ()

    def covers(self, country: str, region: str, postcode: str) -> bool:
        return territory_covers(list(self.countries), list(self.regions), list(self.postcodes),
                                country, region, postcode)


@dataclass
class CandidateState:
    """One rep as the engine sees it. `open_count`/`given_24h` change as a batch assigns."""

    username: str
    team: str = ""
    level: str = "junior"
    skills: frozenset[str] = frozenset()
    territories: tuple[TerritoryData, ...] = ()
    weight: int = 1
    capacity: int | None = None
    open_count: int = 0
    daily_cap: int | None = None
    given_24h: int = 0
    schedule: Schedule = field(default_factory=Schedule)
    active: bool = True
    rep_id: int | None = None

    def cap_reason(self) -> str | None:
        if self.capacity is not None and self.open_count >= self.capacity:
            return f"at capacity {self.open_count}/{self.capacity}"
        if self.daily_cap is not None and self.given_24h >= self.daily_cap:
            return f"daily cap {self.daily_cap} reached"
        return None


@dataclass
class CursorState:
    """Rotation state of one rule: last rep given a lead (round robin), smooth-weighted credits."""

    last: str | None = None
    credits: dict[str, int] = field(default_factory=dict)

    def copy(self) -> CursorState:
        return CursorState(self.last, dict(self.credits))

    def to_json(self) -> dict[str, Any]:
        return {"last": self.last, "credits": dict(self.credits)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> CursorState:
        data = data or {}
        return cls(data.get("last"), {str(k): int(v) for k, v in (data.get("credits") or {}).items()})


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any
    test: Callable[[Any], bool]
    get: Callable[[Mapping[str, Any]], Any] = field(default=lambda lead: None, compare=False)
    text: str = field(default="", compare=False)

    def holds(self, lead: Mapping[str, Any]) -> bool:
        return self.test(self.get(lead))

    def describe(self) -> str:
        if self.text:
            return self.text
        if self.op in ("is_empty", "is_not_empty"):
            return f"{self.field} {self.op}"
        return f"{self.field} {self.op} {_show(self.value)}"


@dataclass(frozen=True)
class CandidateFilter:
    reps: tuple[str, ...] = ()
    team: str | None = None
    levels: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()
    territory: bool = False


_ANYONE = CandidateFilter()  # a rule without `candidates`: everyone


@dataclass(frozen=True)
class RuleSpec:
    name: str
    index: int | None  # None for the fallback
    when: tuple[Condition, ...] = ()
    match_any: bool = False
    candidates: CandidateFilter | None = None
    strategy: str = ""
    pool: str | None = None
    sla_minutes: int | None = None
    escalate_to: Any = ()

    @property
    def key(self) -> str:
        """Cursor key: by name, so that publishing a new version keeps the rotation going."""
        return FALLBACK_KEY if self.index is None else self.name

    @property
    def label(self) -> int | str:
        return FALLBACK if self.index is None else self.index

    def first_failure(self, lead: Mapping[str, Any]) -> Condition | None:
        """None when the rule's `when` matches the lead, else the condition that did not hold
        (for `when_any`, the first one). Only the hot path: the words come later, if asked."""
        if self.match_any:
            for cond in self.when:
                if cond.test(cond.get(lead)):
                    return None
            return self.when[0] if self.when else None
        for cond in self.when:
            if not cond.test(cond.get(lead)):
                return cond
        return None

    def failure(self, lead: Mapping[str, Any]) -> list[Any] | None:
        """None when the rule's `when` matches the lead, else why not in the compact stored form:
        [index, condition index, the lead's value], worded later by `expand_tried`. A value JSON
        would not give back as it was (a Decimal, a date, a list) is stored already worded, with
        condition index None; `when_any` stores every condition's value under index -1."""
        if self.match_any:
            values = [c.get(lead) for c in self.when]
            for cond, value in zip(self.when, values, strict=True):
                if cond.test(value):
                    return None
            if not self.when:
                return None
            if all(type(v) in _PLAIN for v in values):
                return [self.label, -1, values]
            return [self.label, None, self.describe_failure(lead)]
        for i, cond in enumerate(self.when):
            value = cond.get(lead)
            if not cond.test(value):
                return [self.label, i, value] if type(value) in _PLAIN else [self.label, None, _worded(cond, value)]
        return None

    def describe_failure(self, lead: Mapping[str, Any]) -> str | None:
        cond = self.first_failure(lead)
        if cond is None:
            return None
        if self.match_any:
            return "none of: " + "; ".join(_worded(c, c.get(lead)) for c in self.when)
        return _worded(cond, cond.get(lead))


# Lead values that survive a JSON round trip unchanged (so they can be worded after reading back).
_PLAIN = frozenset({str, int, float, bool, type(None)})

# Stored explanations word the same failed condition for thousands of leads ("country in [...]
# (lead: 'FR')"); remembering the words keeps route_pending's explanations cheap.
_WORDED: dict[tuple[str, type, Any], str] = {}


def _worded(cond: Condition, value: Any) -> str:
    try:
        return _WORDED[(cond.describe(), type(value), value)]
    except KeyError:
        pass
    except TypeError:  # an unhashable custom-field value
        return f"{cond.describe()} (lead: {_show(value)})"
    if len(_WORDED) > 50_000:
        _WORDED.clear()
    text = _WORDED[(cond.describe(), type(value), value)] = f"{cond.describe()} (lead: {_show(value)})"
    return text


@dataclass(frozen=True)
class CompiledRuleSet:
    name: str
    rules: tuple[RuleSpec, ...]
    fallback: RuleSpec | None = None
    version: int | None = None

    def all_rules(self) -> tuple[RuleSpec, ...]:
        return (*self.rules, self.fallback) if self.fallback else self.rules


# -- output ------------------------------------------------------------------------------------


@dataclass(slots=True)
class CandidateTrace:
    username: str
    chosen: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"rep": self.username, "chosen": self.chosen, "reason": self.reason}


@dataclass(slots=True)
class RuleTrace:
    rule: str
    index: int | str
    matched: bool
    strategy: str = ""
    outcome: str = ""
    note: str = ""
    excluded: dict[str, int] = field(default_factory=dict)
    # The candidates considered (the rule's Scope, shared by every lead of a batch), one reason per
    # candidate in the same order, and the chosen one's position: deciding writes no per-candidate
    # record (an object per candidate cost a tenth of deciding a lead); `ranked` and `candidates`
    # give them when someone reads the trace.
    scope: Scope | None = None
    reasons: list[str | None] = field(default_factory=list)
    chosen: int | None = None
    # A rule that did not match keeps what is needed to say why, worded only when asked.
    spec: RuleSpec | None = None
    lead: Mapping[str, Any] | None = None

    @property
    def ranked(self) -> list[list[Any]]:
        """Every candidate as [username, chosen, reason]."""
        if self.scope is None:
            return []
        pairs = zip(self.scope.names, self.reasons, strict=True)
        return [[name, i == self.chosen, why] for i, (name, why) in enumerate(pairs)]

    @property
    def candidates(self) -> list[CandidateTrace]:
        return [CandidateTrace(*c) for c in self.ranked]

    @property
    def failed(self) -> str | None:
        if self.matched or self.spec is None or self.lead is None:
            return None
        return self.spec.describe_failure(self.lead)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "index": self.index, "matched": self.matched}
        if not self.matched:
            out["failed"] = self.failed
            return out
        if self.strategy:
            out["strategy"] = self.strategy
        out["outcome"] = self.outcome
        if self.note:
            out["note"] = self.note
        if self.reasons:
            out["candidates"] = [c.to_json() for c in self.candidates]
        if self.excluded:
            out["excluded"] = dict(self.excluded)
        return out

    def to_compact(self) -> dict[str, Any]:
        """A matched rule as stored by batch routing: short keys; the candidates' usernames ("c") and
        their reason numbers ("v"), each a space-separated string, with each distinct reason written
        once ("w") and the chosen one's position ("k"). Twenty candidates share two or three reasons
        ("higher load 79 open"): written out, they were half of every routed lead's timeline row. As
        a list of [rep, number] pairs, jsonb stored each pair as an array of its own: 135 MB for 94k
        routed events against 92 MB as two strings, and a third longer to COPY. (`expand_tried` also
        reads those pairs, kept for a username with a space in it, and the older [rep, chosen,
        reason] form.)"""
        out: dict[str, Any] = {"r": self.rule, "i": self.index, "o": self.outcome}
        if self.strategy:
            out["s"] = self.strategy
        if self.note:
            out["n"] = self.note
        if self.reasons:
            words = list(dict.fromkeys(self.reasons))
            scope = self.scope
            assert scope is not None
            if scope.names_text is None:
                number = {why: n for n, why in enumerate(words)}
                out["c"] = [[name, number[why]] for name, why in zip(scope.names, self.reasons, strict=True)]
            else:
                out["c"] = scope.names_text
                code = {why: str(n) for n, why in enumerate(words)}
                out["v"] = " ".join(map(code.__getitem__, self.reasons))
            out["w"] = words
            if self.chosen is not None:
                out["k"] = self.chosen
        if self.excluded:
            out["x"] = dict(self.excluded)
        return out


def iso_text(moment: dt.datetime) -> str:
    """`moment.isoformat()`, made once per instant: the leads of a batch share a few (its `now`, its
    SLA deadlines), which every explanation, event row and assignment array writes out again."""
    return _iso_text(moment, moment.tzinfo)


@functools.lru_cache(maxsize=256)
def _iso_text(moment: dt.datetime, zone: dt.tzinfo | None) -> str:
    # Equal instants in different zones are equal keys: `zone` keeps each one's own offset in its text.
    return moment.isoformat()


@dataclass
class Decision:
    rule: RuleSpec | None
    rep_username: str | None
    pool_name: str | None
    # Rules tried in order: a RuleTrace for those that matched, (RuleSpec, compact failure record)
    # for those that did not (worded only when someone reads `trace`: most rules fail fast).
    steps: list[RuleTrace | tuple[RuleSpec, list[Any]]]
    cursors: dict[str, CursorState] = field(default_factory=dict)
    now: dt.datetime | None = None
    version: int | None = None
    note: str = ""
    # Filled in by routing.services once applied: the Rep / Pool instances.
    owner: Any = None
    pool: Any = None
    lead: Mapping[str, Any] | None = None

    @property
    def trace(self) -> list[RuleTrace]:
        return [
            s if isinstance(s, RuleTrace) else RuleTrace(s[0].name, s[0].label, False, spec=s[0], lead=self.lead)
            for s in self.steps
        ]

    def _tried_json(self) -> list[dict[str, Any]]:
        lead = self.lead or {}
        return [
            s.to_json() if isinstance(s, RuleTrace)
            else {"rule": s[0].name, "index": s[0].label, "matched": False, "failed": s[0].describe_failure(lead)}
            for s in self.steps
        ]

    @property
    def outcome(self) -> str:
        if self.rep_username:
            return "assigned"
        if self.pool_name:
            return "pooled"
        return "unassigned"

    @property
    def rule_label(self) -> int | str | None:
        return self.rule.label if self.rule else None

    def summary(self) -> str:
        if self.rep_username:
            return f"assigned to {self.rep_username} by rule {self.rule.name!r}"  # type: ignore[union-attr]
        if self.pool_name:
            return f"sent to pool {self.pool_name} by rule {self.rule.name!r}"  # type: ignore[union-attr]
        return self.note or "no rule found an available rep"

    def explanation(self) -> dict[str, Any]:
        """JSON-serialisable: what was decided and why, rule by rule and candidate by candidate."""
        return {**self._header(), "tried": self._tried_json()}

    def _header(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "rule": self.rule.name if self.rule else None,
            "rule_index": self.rule_label,
            "rep": self.rep_username,
            "pool": self.pool_name,
            "summary": self.summary(),
            "ruleset_version": self.version,
            "at": iso_text(self.now) if self.now else None,
        }

    def compact_explanation(self) -> dict[str, Any]:
        """What `explanation()` says, in the form stored on timeline events: the same top-level
        fields, and "trace" instead of "tried" — per rule a short record that names every candidate
        and its reason, while the conditions that failed are kept as (rule, condition, lead value)
        and worded only when someone reads them (`expand_tried`). Storing the words for every lead
        of a 100,000-lead batch cost more than routing it."""
        return {
            **self._header(),
            "trace": [s.to_compact() if isinstance(s, RuleTrace) else s[1] for s in self.steps],
        }


def expand_tried(trace: Sequence[Any], rules: Mapping[int | str, RuleSpec]) -> list[dict[str, Any]]:
    """The "tried" list of `Decision.explanation()` from a stored compact "trace", worded with the
    rule set version that made the decision (`rules` by label; empty when that version is gone)."""
    out: list[dict[str, Any]] = []
    for step in trace:
        if isinstance(step, dict):
            item: dict[str, Any] = {"rule": step.get("r"), "index": step.get("i"), "matched": True}
            if step.get("s"):
                item["strategy"] = step["s"]
            item["outcome"] = step.get("o", "")
            if step.get("n"):
                item["note"] = step["n"]
            if step.get("c"):
                if "w" in step:
                    words, chosen = step["w"], step.get("k")
                    pairs = (zip(step["c"].split(" "), map(int, step["v"].split(" ")), strict=True)
                             if isinstance(step["c"], str) else step["c"])
                    item["candidates"] = [{"rep": r, "chosen": i == chosen, "reason": words[n]}
                                          for i, (r, n) in enumerate(pairs)]
                else:  # stored before the reasons were numbered
                    item["candidates"] = [{"rep": r, "chosen": bool(c), "reason": why} for r, c, why in step["c"]]
            if step.get("x"):
                item["excluded"] = dict(step["x"])
            out.append(item)
            continue
        label, ci, value = step
        spec = rules.get(label)
        name = spec.name if spec else (FALLBACK if label == FALLBACK else f"rule {label + 1}")
        if ci is None:
            failed = value
        elif spec is None or ci >= len(spec.when):
            failed = f"condition {ci + 1} (lead: {_show(value)})" if ci >= 0 else "none of the conditions held"
        elif ci == -1:
            failed = "none of: " + "; ".join(_worded(c, v) for c, v in zip(spec.when, value, strict=False))
        else:
            failed = _worded(spec.when[ci], value)
        out.append({"rule": name, "index": label, "matched": False, "failed": failed})
    return out


# -- lead values and conditions ------------------------------------------------------------------


def lead_value(lead: Mapping[str, Any], name: str) -> Any:
    if name.startswith("extra."):
        extra = lead.get("extra")
        return extra.get(name[6:]) if isinstance(extra, dict) else None
    return lead.get(name)


def _show(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return repr(value)


def _is_empty(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, list | dict | tuple) and not v)


def _fold(v: Any) -> Any:
    return v.casefold() if isinstance(v, str) else v


def _number(v: Any) -> int | float | Decimal | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, int | float | Decimal):
        return v
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _moment(v: Any) -> dt.datetime | None:
    if isinstance(v, dt.datetime):
        return v if v.tzinfo else v.replace(tzinfo=dt.UTC)
    if isinstance(v, str):
        try:
            parsed = dt.datetime.fromisoformat(v)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return v if isinstance(v, str) else str(v)


def compile_condition(cond: Mapping[str, Any]) -> Condition:
    """A closure per condition. Values were type-checked by routing.rulefile at load time;
    a lead value of the wrong type simply does not match."""
    name, op, value = cond["field"], cond["op"], cond.get("value")
    get: Callable[[Mapping[str, Any]], Any]
    if name.startswith("extra."):
        key = name[6:]

        def get(lead: Mapping[str, Any]) -> Any:
            extra = lead.get("extra")
            return extra.get(key) if isinstance(extra, dict) else None
    else:

        def get(lead: Mapping[str, Any]) -> Any:
            return lead.get(name)

    test: Callable[[Any], bool]
    if op in ("eq", "ne"):
        want = _moment(value) if name == "received_at" else _fold(value)
        numeric = isinstance(value, int | float) and not isinstance(value, bool)

        def same(v: Any) -> bool:
            if numeric:
                n = _number(v)
                return n is not None and n == value
            if name == "received_at":
                return _moment(v) == want
            return _fold(v) == want

        test = same if op == "eq" else (lambda v: not same(v))
    elif op in ("in", "not_in"):
        numbers = {x for x in value if isinstance(x, int | float) and not isinstance(x, bool)}
        words = {_fold(x) for x in value if isinstance(x, str)}

        def member(v: Any) -> bool:
            if isinstance(v, str):
                return v.casefold() in words
            n = _number(v)
            return n is not None and n in numbers

        test = member if op == "in" else (lambda v: not member(v))
    elif op in ("contains", "icontains", "startswith", "endswith"):
        fold = op == "icontains"
        needle = value.casefold() if fold else value

        def text_test(v: Any) -> bool:
            if isinstance(v, list | tuple):
                return any(_fold(x) == needle if fold else x == needle for x in v)
            s = _text(v)
            if s is None:
                return False
            if fold:
                s = s.casefold()
            if op in ("contains", "icontains"):
                return needle in s
            return s.startswith(needle) if op == "startswith" else s.endswith(needle)

        test = text_test
    elif op in ("gt", "gte", "lt", "lte"):
        cmp = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
               "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}[op]
        if name == "received_at":
            bound = _moment(value)

            def when_test(v: Any) -> bool:
                m = _moment(v)
                return m is not None and cmp(m, bound)

            test = when_test
        else:

            def num_test(v: Any) -> bool:
                n = _number(v)
                return n is not None and cmp(n, value)

            test = num_test
    elif op == "regex":
        pattern = re.compile(value)

        def regex_test(v: Any) -> bool:
            s = _text(v)
            return s is not None and pattern.search(s) is not None

        test = regex_test
    elif op == "is_empty":
        test = _is_empty
    elif op == "is_not_empty":
        test = lambda v: not _is_empty(v)  # noqa: E731
    else:  # pragma: no cover - rulefile rejects unknown ops before this
        raise ValueError(f"unknown op {op!r}")
    plain = Condition(name, op, value, test, get)
    # Worded once here: explanations repeat it for every lead the rule does not match.
    return Condition(name, op, value, test, get, plain.describe())


def compile_rule(data: Mapping[str, Any], index: int | None) -> RuleSpec:
    when = data.get("when_any") or data.get("when") or ()
    cands = data.get("candidates")
    cfilter = None
    if cands:
        cfilter = CandidateFilter(
            reps=tuple(cands.get("reps") or ()),
            team=cands.get("team") or None,
            levels=tuple(cands.get("levels") or ()),
            skills=tuple(cands.get("skills") or ()),
            territory=bool(cands.get("territory")),
        )
    return RuleSpec(
        name=data.get("name") or (FALLBACK if index is None else f"rule {index + 1}"),
        index=index,
        when=tuple(compile_condition(c) for c in when),
        match_any=bool(data.get("when_any")),
        candidates=cfilter,
        strategy=data.get("strategy") or ("" if data.get("pool") else "round_robin"),
        pool=data.get("pool") or None,
        sla_minutes=data.get("sla_minutes"),
        escalate_to=data.get("escalate_to") or (),
    )


def compile_ruleset(data: Mapping[str, Any], *, version: int | None = None) -> CompiledRuleSet:
    rules = tuple(compile_rule(r, i) for i, r in enumerate(data.get("rules") or ()))
    fallback = compile_rule(data["fallback"], None) if data.get("fallback") else None
    return CompiledRuleSet(name=data.get("name") or "", rules=rules, fallback=fallback, version=version)


# -- roster --------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Scope:
    """The reps one rule considers, in its order, and counts of those it leaves out by team/level.

    It also keeps what every lead of a batch would otherwise work out again:
    - `names`, and `names_text` joined by spaces: the stored "c" (None if a username has a space);
    - `fixed`: each member's reason to be passed over whatever the lead and the moment (a rule's own
      list naming someone of another team or level, a missing skill);
    - `blocked`: those reasons, or else unavailability at one instant (`Roster.blocked`)."""

    members: list[CandidateState]
    excluded: dict[str, int]
    fixed: list[str | None]
    names: list[str] = field(init=False)
    names_text: str | None = field(init=False)
    # Positions of the members with a capacity or a daily cap, and of those with no weight.
    capped: list[int] = field(init=False)
    weightless: list[int] = field(init=False)
    blocked_at: dt.datetime | None = None
    blocked: list[str | None] = field(default_factory=list)  # Roster.blocked at blocked_at

    def __post_init__(self) -> None:
        self.names = [c.username for c in self.members]
        self.names_text = None if any(" " in name for name in self.names) else " ".join(self.names)
        self.capped = [i for i, c in enumerate(self.members) if c.capacity is not None or c.daily_cap is not None]
        self.weightless = [i for i, c in enumerate(self.members) if c.weight <= 0]


class Roster:
    """The candidates of one batch, with caches for what does not depend on the lead.

    Availability is memoised per instant: a batch routes hundreds of leads at one `now`, and a
    replay moves `now` forward lead by lead (the cache then simply refills).
    """

    def __init__(self, candidates: Iterable[CandidateState]):
        self.candidates = sorted(candidates, key=lambda c: c.username)
        self.by_name = {c.username: c for c in self.candidates}
        self.names = [c.username for c in self.candidates]
        self.by_team: dict[str, list[CandidateState]] = {}
        for c in self.candidates:
            self.by_team.setdefault(c.team, []).append(c)
        self._scopes: dict[CandidateFilter, Scope] = {}
        # The same by the filter object's identity: hashing a frozen dataclass hashes all its fields,
        # for every lead.
        self._scope_of: dict[int, tuple[CandidateFilter, Scope]] = {}
        self._avail_at: dt.datetime | None = None
        self._avail: dict[str, str | None] = {}

    def unavailable_reason(self, c: CandidateState, now: dt.datetime) -> str | None:
        if now != self._avail_at:
            self._avail_at, self._avail = now, {}
        try:
            return self._avail[c.username]
        except KeyError:
            reason = "inactive" if not c.active else c.schedule.unavailable_reason(now)
            self._avail[c.username] = reason
            return reason

    def blocked(self, scope: Scope, now: dt.datetime) -> list[str | None]:
        """Each member's reason to be passed over at `now` whatever the lead (`Scope.fixed`, else
        `unavailable_reason`); None for those a rule without territories may give a lead to, caps
        aside. Worked out once per instant: a batch decides all its leads at one."""
        if scope.blocked_at is not now and scope.blocked_at != now:
            scope.blocked = [fixed or self.unavailable_reason(c, now)
                             for c, fixed in zip(scope.members, scope.fixed, strict=True)]
            scope.blocked_at = now
        return scope.blocked

    def scope(self, f: CandidateFilter) -> Scope:
        """The reps a rule considers, in its order, and counts of those it leaves out by team/level.

        With `reps` the list is the rule's own (team/level mismatches are then given as reasons);
        without, the team/level filter narrows the roster and only counts are kept, so an
        explanation stays readable in a 500-rep organisation.
        """
        hit = self._scope_of.get(id(f))
        if hit is not None and hit[0] is f:
            return hit[1]
        scope = self._scopes.get(f) or self._new_scope(f)
        self._scope_of[id(f)] = (f, scope)
        return scope

    def _new_scope(self, f: CandidateFilter) -> Scope:
        excluded: dict[str, int] = {}
        if f.reps:
            members = [self.by_name[u] for u in f.reps if u in self.by_name]
            missing = len(f.reps) - len(members)
            if missing:
                excluded["unknown or deleted rep"] = missing
        else:
            pool = self.candidates
            if f.team is not None:
                pool = self.by_team.get(f.team, [])
                if len(self.candidates) > len(pool):
                    excluded[f"not in team {f.team}"] = len(self.candidates) - len(pool)
            members = pool
            if f.levels:
                levels = set(f.levels)
                members = [c for c in pool if c.level in levels]
                if len(pool) > len(members):
                    excluded[f"level not {'/'.join(f.levels)}"] = len(pool) - len(members)
        scope = self._scopes[f] = Scope(members, excluded, [_fixed_reason(f, c) for c in members])
        return scope


def _fixed_reason(f: CandidateFilter, c: CandidateState) -> str | None:
    """Why a rule passes `c` over whatever the lead and the moment, if it does."""
    if f.reps and f.team is not None and c.team != f.team:
        return f"not in team {f.team}"
    if f.reps and f.levels and c.level not in f.levels:
        return f"level {c.level} not {'/'.join(f.levels)}"
    if f.skills and not c.skills.issuperset(f.skills):
        missing = [s for s in f.skills if s not in c.skills]
        return f"lacks skill {', '.join(missing)}"
    return None


# -- the decision ------------------------------------------------------------------------------


def decide(
    lead: Mapping[str, Any],
    rule_set: CompiledRuleSet,
    roster: Roster,
    cursors: Mapping[str, CursorState],
    now: dt.datetime,
    rng: random.Random,
    *,
    exclude: Iterable[str] = (),
) -> Decision:
    """Try the rules in order; the first that matches and finds an available candidate wins.

    `cursors` is read, never mutated: the new state of the winning rule is in `Decision.cursors`,
    which may share the credits dict of the state read — replace a state, never edit it in place.
    `exclude` (usernames) are left out, e.g. the current owner when an SLA reassigns.
    """
    excluded = frozenset(exclude)
    steps: list[RuleTrace | tuple[RuleSpec, list[Any]]] = []
    for spec in rule_set.all_rules():
        if spec.index is not None and spec.when:
            failed = spec.failure(lead)
            if failed is not None:
                steps.append((spec, failed))
                continue
        rt = RuleTrace(spec.name, spec.label, True, strategy=spec.strategy if not spec.pool else "")
        steps.append(rt)
        if spec.pool:
            rt.outcome = f"sent to pool {spec.pool}"
            return Decision(spec, None, spec.pool, steps, now=now, version=rule_set.version, lead=lead)
        chosen, new_cursor = _pick(spec, lead, roster, cursors.get(spec.key), now, rng, excluded, rt)
        if chosen is not None:
            rt.outcome = f"assigned to {chosen.username}"
            return Decision(spec, chosen.username, None, steps, cursors={spec.key: new_cursor},
                            now=now, version=rule_set.version, lead=lead)
        rt.outcome = "skipped: no available candidate"
    if any(isinstance(s, RuleTrace) for s in steps):
        note = "no available rep in any matching rule"
    else:
        note = "no rule matched and there is no fallback"
    return Decision(None, None, None, steps, now=now, version=rule_set.version, note=note, lead=lead)


def _pick(
    spec: RuleSpec,
    lead: Mapping[str, Any],
    roster: Roster,
    cursor: CursorState | None,
    now: dt.datetime,
    rng: random.Random,
    excluded: frozenset[str],
    rt: RuleTrace,
) -> tuple[CandidateState | None, CursorState]:
    f = spec.candidates or _ANYONE
    scope = roster.scope(f)
    members = scope.members
    rt.scope, rt.excluded = scope, scope.excluded
    # One reason per member, by position; None for those available until the strategy words it.
    territory = f.territory
    weighted = spec.strategy == "weighted"
    if not excluded and not territory:
        # What keeps a member out does not depend on the lead: a copy of the batch's list at `now`,
        # then the caps, which move as the batch assigns.
        reasons = rt.reasons = roster.blocked(scope, now).copy()
        for i in scope.capped:
            if reasons[i] is None:
                reasons[i] = members[i].cap_reason()
        if weighted:
            for i in scope.weightless:
                if reasons[i] is None:
                    reasons[i] = "weight 0"
        available = [i for i, why in enumerate(reasons) if why is None]
    else:
        reasons = rt.reasons = [None] * len(members)
        available = []
        fixed = scope.fixed
        country = lead.get("country") or ""
        region = lead.get("region") or ""
        postcode = lead.get("postcode") or ""
        for i, c in enumerate(members):
            # In this order: the current owner, the rule's own filters, the lead's territory, then
            # the moment (availability, caps).
            if excluded and c.username in excluded:
                reasons[i] = "excluded (current owner)"
                continue
            reason = fixed[i]
            if reason is None and territory and not any(t.covers(country, region, postcode) for t in c.territories):
                where = " ".join(x for x in (country, region, postcode) if x) or "no location"
                names = ", ".join(t.name for t in c.territories) or "none"
                reason = f"not in territory for {where} (covers: {names})"
            if reason is None:
                reason = roster.unavailable_reason(c, now) or c.cap_reason()
                if reason is None and weighted and c.weight <= 0:
                    reason = "weight 0"
            if reason is None:
                available.append(i)
            else:
                reasons[i] = reason

    if not available:
        return None, cursor.copy() if cursor else CursorState()
    strategy = spec.strategy
    if strategy == "round_robin":
        chosen = _round_robin(scope, available, cursor, bool(f.reps), reasons)
    elif strategy == "weighted":
        cursor = cursor.copy() if cursor else CursorState()
        chosen = _weighted(members, available, cursor, rng, reasons)
    elif strategy == "first_available":
        chosen = available[0]
        first = members[chosen].username
        reasons[chosen] = "chosen: first available"
        later = f"not first available ({first} comes first)"
        for i in available[1:]:
            reasons[i] = later
    else:
        if strategy == "predictive":
            rt.note = "predictive routing is not available yet: used load_balanced"
        chosen = _load_balanced(members, available, rng, reasons)
    rt.chosen = chosen
    # Only the rotation's last rep changes (weighted credits were copied above): the credits of the
    # state read are shared, never changed in place.
    return members[chosen], CursorState(members[chosen].username, cursor.credits if cursor else {})



def _round_robin(
    scope: Scope,
    available: list[int],
    cursor: CursorState | None,
    explicit_order: bool,
    reasons: list[str | None],
) -> int:
    """The position of the first available rep after the last one served, in the rule's order.

    The pointer is the last rep *served*, so an unavailable rep is passed over this time and
    gets their turn again on the next lap — nobody is skipped forever.
    """
    order = scope.names
    last = cursor.last if cursor else None
    start = 0
    if last is not None:
        try:
            start = order.index(last) + 1
        except ValueError:
            # The last rep left the rule: carry on from where they stood in username order.
            start = 0 if explicit_order else bisect.bisect_right(order, last)
    # `available` is in the rule's order: the first at or after `start`, else the first of all.
    chosen = next((i for i in available if i >= start), available[0])
    after = f"after {last}" if last else "first turn of this rule"
    for i in available:
        reasons[i] = "not next in turn"
    reasons[chosen] = f"chosen: next in turn ({after})"
    return chosen


def _weighted(
    members: list[CandidateState], available: list[int], cursor: CursorState, rng: random.Random,
    reasons: list[str | None],
) -> int:
    """Smooth weighted round robin (nginx): everyone earns their weight, the richest is served and
    pays the total. Shares converge within one cycle instead of drifting like random draws."""
    credits = cursor.credits
    total = 0
    for i in available:
        c = members[i]
        credits[c.username] = credits.get(c.username, 0) + c.weight
        total += c.weight
    best = max(credits[members[i].username] for i in available)
    top = [i for i in available if credits[members[i].username] == best]
    chosen = top[0] if len(top) == 1 else rng.choice(top)
    winner = members[chosen]
    credits[winner.username] -= total
    for i in available:
        c = members[i]
        if credits[c.username] == best:
            reasons[i] = "lost the tie"
        else:
            reasons[i] = f"weighted turn not yet (weight {c.weight}, credit {credits[c.username]} < {best})"
    reasons[chosen] = f"chosen: weighted turn (weight {winner.weight}, credit {best})"
    return chosen


def _load_balanced(
    members: list[CandidateState], available: list[int], rng: random.Random, reasons: list[str | None]
) -> int:
    """Lowest open leads ÷ capacity. Unlimited capacity counts as the largest capacity present
    (or 1 when nobody has one), so unlimited reps still share by open count."""
    cands = [members[i] for i in available]
    caps = [c.capacity for c in cands]
    if any(caps):
        default_cap = max([cap for cap in caps if cap])
        loads = [c.open_count / (c.capacity or default_cap) for c in cands]
    else:  # nobody has a capacity: the open counts compare as they are
        loads = [c.open_count for c in cands]
    low = min(loads)
    top = [k for k, load in enumerate(loads) if load == low]
    won = top[0] if len(top) == 1 else rng.choice(top)
    for k, c in enumerate(cands):
        reasons[available[k]] = "lost the tie" if loads[k] == low else _higher_load(c.open_count, c.capacity)
    c = cands[won]
    load = _load_text(c.open_count, c.capacity)
    reasons[available[won]] = f"chosen: lowest load {load}" + (" (won the tie)" if len(top) > 1 else "")
    return available[won]


@functools.lru_cache(maxsize=4096)
def _higher_load(open_count: int, capacity: int | None) -> str:
    # Worded once per load: a batch gives the same few loads to every lead's other candidates.
    return f"higher load {_load_text(open_count, capacity)}"


def _load_text(open_count: int, capacity: int | None) -> str:
    return f"{open_count}/{capacity}" if capacity else f"{open_count} open"


def lead_data(obj: Any, fields: Sequence[str]) -> dict[str, Any]:
    """A lead's routing fields as a plain dict (from a model instance or a mapping)."""
    if isinstance(obj, Mapping):
        return {f: obj.get(f) for f in fields}
    return {f: getattr(obj, f, None) for f in fields}

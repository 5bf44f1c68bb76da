"""Plain-data builders for engine tests (no database)."""

from __future__ import annotations

import datetime as dt
import random

from reps.availability import Schedule
from routing.engine import CandidateState, CursorState, Roster, compile_ruleset, decide
from routing.rulefile import ruleset_validate

# A Wednesday, 10:00 UTC.
NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
NINE_TO_FIVE = Schedule(shifts={d: ((dt.time(9), dt.time(17)),) for d in range(5)})


def rep(username: str, **kw) -> CandidateState:
    return CandidateState(username=username, **kw)


def rules(*rule_list, fallback=None, name="Test rules"):
    return compile_ruleset(ruleset_validate({"name": name, "rules": list(rule_list), "fallback": fallback}))


def rr_rule(name="RR", strategy="round_robin", **cands):
    return {"name": name, "candidates": cands or {"levels": ["junior"]}, "strategy": strategy}


class Router:
    """Routes leads one after another, persisting cursor state and counts like the service does."""

    def __init__(self, rule_set, candidates, *, seed=0, now=NOW):
        self.rule_set = rule_set
        self.roster = Roster(candidates)
        self.cursors: dict[str, CursorState] = {}
        self.rng = random.Random(seed)
        self.now = now

    def route(self, lead=None, **kw):
        d = decide(lead or {"country": "DE"}, self.rule_set, self.roster, self.cursors, kw.pop("now", self.now),
                   self.rng, **kw)
        self.cursors.update(d.cursors)
        if d.rep_username:
            c = self.roster.by_name[d.rep_username]
            c.open_count += 1
            c.given_24h += 1
        return d

    def names(self, n, lead=None):
        return [self.route(lead).rep_username for _ in range(n)]

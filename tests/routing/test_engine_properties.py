"""Properties of the engine over generated teams (hypothesis)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from reps.availability import Schedule
from routing.engine import STRATEGIES, CandidateState, CursorState, Roster, decide, expand_tried
from tests.routing.engine_helpers import NOW, Router, rules

ALL_LEVELS = {"levels": ["junior", "senior", "director", "manager"]}
HOUR = dt.timedelta(hours=1)


@st.composite
def candidate(draw, name: str) -> CandidateState:
    shifts = draw(st.sampled_from([{}, {d: ((dt.time(9), dt.time(17)),) for d in range(5)},
                                   {d: ((dt.time(20), dt.time(2)),) for d in range(7)}]))
    off = draw(st.sampled_from([(), ((NOW - HOUR, NOW + HOUR),), ((NOW + HOUR, NOW + 3 * HOUR),)]))
    capacity = draw(st.none() | st.integers(0, 5))
    daily_cap = draw(st.none() | st.integers(0, 5))
    return CandidateState(
        username=name,
        level=draw(st.sampled_from(["junior", "senior", "director", "manager"])),
        weight=draw(st.integers(0, 4)),
        capacity=capacity,
        open_count=draw(st.integers(0, 6)),
        daily_cap=daily_cap,
        given_24h=draw(st.integers(0, 6)),
        schedule=Schedule(timezone=draw(st.sampled_from(["UTC", "Europe/Berlin", "Asia/Tokyo"])), shifts=shifts,
                          time_off=off),
        active=draw(st.booleans()),
    )


@st.composite
def team(draw) -> list[CandidateState]:
    n = draw(st.integers(1, 8))
    return [draw(candidate(f"rep{i}")) for i in range(n)]


moments = st.integers(0, 7 * 24 * 4).map(lambda q: NOW + dt.timedelta(minutes=15 * q))


@settings(max_examples=150, deadline=None)
@given(team(), st.sampled_from(STRATEGIES), moments, st.integers(0, 2**32), st.integers(1, 12))
def test_the_engine_never_picks_an_unavailable_or_capped_rep(cands, strategy, now, seed, leads):
    rs = rules({"name": "R", "candidates": ALL_LEVELS, "strategy": strategy})
    router = Router(rs, cands, seed=seed, now=now)
    for _ in range(leads):
        before = {c.username: (c.open_count, c.given_24h) for c in router.roster.candidates}
        d = router.route()
        if d.rep_username is None:
            continue
        c = router.roster.by_name[d.rep_username]
        open_count, given_24h = before[c.username]
        assert c.active and c.schedule.is_available(now)
        assert c.capacity is None or open_count < c.capacity
        assert c.daily_cap is None or given_24h < c.daily_cap


@settings(max_examples=150, deadline=None)
@given(team(), st.sampled_from(STRATEGIES), moments, st.integers(0, 2**32))
def test_explanations_name_every_candidate_exactly_once_with_a_reason(cands, strategy, now, seed):
    rs = rules({"name": "R", "candidates": ALL_LEVELS, "strategy": strategy},
               fallback={"candidates": {"levels": ["junior"]}, "strategy": "round_robin"})
    d = decide({"country": "DE"}, rs, Roster(cands), {}, now, random.Random(seed))
    first = d.trace[0]
    assert sorted(c.username for c in first.candidates) == sorted(c.username for c in cands)
    assert all(c.reason for c in first.candidates)
    assert sum(c.chosen for t in d.trace for c in t.candidates) == (1 if d.rep_username else 0)


@settings(max_examples=150, deadline=None)
@given(team(), st.sampled_from(STRATEGIES), moments, st.integers(0, 2**32), st.booleans())
def test_excluding_someone_outside_the_rule_changes_nothing(cands, strategy, now, seed, skills):
    # Excluding anyone sends the engine down its member-by-member path; without, it copies the reasons
    # the batch worked out at `now`. Both must say and decide the same.
    rule = {"name": "R", "candidates": {**ALL_LEVELS, **({"skills": ["de"]} if skills else {})}, "strategy": strategy}
    cands[0] = replace(cands[0], skills=frozenset({"de"}))
    rs = rules(rule)
    cursors = {"R": CursorState(last=cands[-1].username, credits={c.username: 1 for c in cands[:2]})}
    plain = decide({"country": "DE"}, rs, Roster(cands), cursors, now, random.Random(seed))
    member_by_member = decide({"country": "DE"}, rs, Roster([replace(c) for c in cands]), cursors, now,
                              random.Random(seed), exclude=["nobody"])
    assert member_by_member.explanation() == plain.explanation()
    assert {k: v.to_json() for k, v in member_by_member.cursors.items()} == \
        {k: v.to_json() for k, v in plain.cursors.items()}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=2, max_size=5), st.integers(0, 2**32))
def test_weighted_shares_converge_to_the_weights(weights, seed):
    cands = [CandidateState(username=f"r{i}", weight=w) for i, w in enumerate(weights)]
    router = Router(rules({"name": "W", "candidates": ALL_LEVELS, "strategy": "weighted"}), cands, seed=seed)
    total = sum(weights)
    n = 40 * total
    counts = Counter(router.names(n))
    for i, w in enumerate(weights):
        assert abs(counts[f"r{i}"] - n * w / total) <= len(weights)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 8), st.integers(1, 40), st.integers(0, 7))
def test_round_robin_never_serves_anyone_twice_in_a_row_and_keeps_counts_level(n, leads, start):
    cands = [CandidateState(username=f"r{i}") for i in range(n)]
    router = Router(rules({"name": "RR", "candidates": ALL_LEVELS, "strategy": "round_robin"}), cands)
    router.cursors = {"RR": CursorState(last=f"r{start % n}")}
    names = router.names(leads)
    assert all(a != b for a, b in itertools.pairwise(names))
    counts = Counter(names)
    assert max(counts.values()) - min(counts.get(c.username, 0) for c in cands) <= 1


lead_values = st.fixed_dictionaries({
    "country": st.sampled_from(["DE", "FR", "", None]),
    "company_size": st.none() | st.integers(0, 5000),
    "score": st.none() | st.integers(0, 100) | st.decimals(0, 100, places=1),
    "industry": st.sampled_from(["fintech", "Retail", None]),
    "extra": st.sampled_from([{}, {"plan": "pro"}, {"plan": ["a", "b"]}, None]),
})


@settings(max_examples=150, deadline=None)
@given(team(), st.sampled_from(STRATEGIES), moments, st.integers(0, 2**32), lead_values)
def test_the_stored_compact_explanation_reads_back_as_the_full_one(cands, strategy, now, seed, lead):
    rs = rules(
        {"name": "DE big", "when": [{"field": "country", "op": "eq", "value": "DE"},
                                    {"field": "company_size", "op": "gte", "value": 1000}],
         "candidates": ALL_LEVELS, "strategy": strategy},
        {"name": "Any", "when_any": [{"field": "score", "op": "gt", "value": 90},
                                     {"field": "extra.plan", "op": "eq", "value": "enterprise"}],
         "candidates": {"levels": ["senior"]}, "strategy": "round_robin"},
        {"name": "Fintech", "when": [{"field": "industry", "op": "icontains", "value": "fin"}],
         "candidates": ALL_LEVELS, "strategy": strategy},
        fallback={"candidates": {"levels": ["junior"]}, "strategy": "load_balanced"},
    )
    d = decide(lead, rs, Roster(cands), {}, now, random.Random(seed))
    stored = json.loads(json.dumps(d.compact_explanation()))
    full = d.explanation()
    expanded = {k: v for k, v in stored.items() if k != "trace"}
    expanded["tried"] = expand_tried(stored["trace"], {spec.label: spec for spec in rs.all_rules()})
    assert expanded == full


def test_a_shared_reason_is_stored_once_per_rule():
    """Twenty reps with the same load: "lost the tie" is written once, not twenty times."""
    cands = [CandidateState(username=f"rep{i:02d}", level="junior", open_count=3) for i in range(20)]
    rs = rules({"name": "All", "candidates": ALL_LEVELS, "strategy": "load_balanced"})
    d = decide({"country": "DE"}, rs, Roster(cands), {}, dt.datetime(2026, 12, 2, 10, tzinfo=dt.UTC),
               random.Random(1))

    text = json.dumps(d.compact_explanation())

    assert text.count("lost the tie") == 1 and text.count("rep07") == 1


def test_explanations_stored_before_the_reasons_were_numbered_still_read_back():
    old = [{"r": "All", "i": 0, "o": "assigned to ann", "s": "round_robin",
            "c": [["ann", True, "chosen: next in turn (first turn of this rule)"], ["bob", False, "not next in turn"]]}]

    (step,) = expand_tried(old, {})

    assert step["candidates"] == [
        {"rep": "ann", "chosen": True, "reason": "chosen: next in turn (first turn of this rule)"},
        {"rep": "bob", "chosen": False, "reason": "not next in turn"},
    ]


def test_candidates_are_stored_as_two_strings_and_read_back():
    """The candidates of a stored rule are two short strings (usernames, reason numbers): jsonb keeps
    a list of pairs as one array per pair, which made every routed lead's row half as big again."""
    cands = [CandidateState(username=f"rep{i:02d}", level="junior", open_count=i % 3) for i in range(12)]
    rs = rules({"name": "All", "candidates": ALL_LEVELS, "strategy": "load_balanced"})
    d = decide({"country": "DE"}, rs, Roster(cands), {}, dt.datetime(2026, 12, 2, 10, tzinfo=dt.UTC),
               random.Random(1))

    (step,) = json.loads(json.dumps(d.compact_explanation()))["trace"]

    assert step["c"] == " ".join(c.username for c in cands)
    reasons = [c["reason"] for c in d.explanation()["tried"][0]["candidates"]]
    assert [step["w"][int(n)] for n in step["v"].split(" ")] == reasons
    assert len(step["w"]) == 4  # chosen, lost the tie, higher load 1 open, higher load 2 open
    assert expand_tried([step], {}) == d.explanation()["tried"]


def test_a_username_with_a_space_is_stored_as_pairs_and_read_back():
    cands = [CandidateState(username="ann lee", level="junior"), CandidateState(username="bob", level="junior")]
    rs = rules({"name": "All", "candidates": ALL_LEVELS, "strategy": "round_robin"})
    d = decide({"country": "DE"}, rs, Roster(cands), {}, dt.datetime(2026, 12, 2, 10, tzinfo=dt.UTC),
               random.Random(1))

    (step,) = json.loads(json.dumps(d.compact_explanation()))["trace"]

    assert step["c"] == [["ann lee", 0], ["bob", 1]] and "v" not in step
    assert expand_tried([step], {}) == d.explanation()["tried"]

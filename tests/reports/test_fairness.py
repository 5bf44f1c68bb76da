import datetime as dt

import pytest

from reports import selectors
from routing.pools import hoarded_counts
from tests.factories import LeadFactory, PoolFactory, RepFactory, weekday_hours
from tests.reports.conftest import NOW, minutes

pytestmark = pytest.mark.django_db
RECEIVED = NOW - dt.timedelta(days=1)


def _given(rep, n, **fields):
    for _ in range(n):
        LeadFactory(received_at=RECEIVED, owner=rep, assigned_at=RECEIVED, status="assigned", **fields)


def test_it_expects_shares_in_proportion_to_weight(scope_for):
    one, three = RepFactory(weight=1), RepFactory(weight=3)
    _given(one, 2)
    _given(three, 2)
    rows = {r["key"]: r for r in selectors.fairness(scope_for())}
    assert (rows[one.pk]["expected_share"], rows[three.pk]["expected_share"]) == (0.25, 0.75)
    assert (rows[one.pk]["share"], rows[one.pk]["share_gap"]) == (0.5, 0.25)


def test_it_expects_less_from_a_rep_with_fewer_working_hours(scope_for):
    # Thu 12 Nov 00:00 → Wed 18 Nov 12:00: office hours give 4 × 8 h + 3 h; always-on gives 156 h.
    office, always = RepFactory(hours=weekday_hours()), RepFactory()
    rows = {r["key"]: r for r in selectors.fairness(scope_for())}
    assert (rows[office.pk]["available_hours"], rows[always.pk]["available_hours"]) == (35, 156)
    assert rows[office.pk]["expected_share"] == pytest.approx(35 / 191)


def test_it_sums_value_and_score_received(scope_for):
    rep = RepFactory()
    _given(rep, 2, value=1500, score=40)
    row = selectors.fairness(scope_for())[0]
    assert (row["value"], row["score"]) == (3000, 80)


def test_it_compares_open_load_with_capacity(scope_for):
    rep = RepFactory(capacity=4)
    _given(rep, 3)
    LeadFactory(owner=rep, status="won", received_at=RECEIVED)  # closed work is not load
    row = selectors.fairness(scope_for())[0]
    assert (row["open_load"], row["load_ratio"]) == (3, 0.75)


def test_it_tells_claims_from_pushes(scope_for):
    rep = RepFactory()
    _given(rep, 2)
    _given(rep, 1, claimed_at=RECEIVED + minutes(3))
    row = selectors.fairness(scope_for())[0]
    assert (row["claims"], row["pushes"]) == (1, 2)


def test_it_scores_an_even_week_as_fair_and_a_lopsided_one_as_not(scope_for):
    a, b = RepFactory(), RepFactory()
    scope = scope_for(days=14)  # two weekly buckets: 5–11 Nov and 12–18 Nov
    for rep in (a, b):
        LeadFactory(received_at=NOW - dt.timedelta(days=10), owner=rep, value=100)
    LeadFactory(received_at=NOW - dt.timedelta(days=2), owner=a, value=100)
    assert [round(w["gini"], 2) for w in selectors.fairness_index(scope)] == [0, 0.5]


def test_it_flags_a_member_at_the_claim_limit(scope_for):
    pool = PoolFactory(name="smb", claim_limit=2)
    rep = RepFactory(user__username="hoarder")
    pool.memberships.create(rep=rep)
    _given(rep, 2, pool=pool, claimed_at=NOW - minutes(10), first_touch_at=NOW - minutes(5))
    flags = selectors.hoarding_flags(scope_for())
    assert [(f["pool"], f["reason"]) for f in flags] == [("smb", "at the claim limit (2/2)")]


def test_it_flags_claimed_leads_left_untouched(scope_for):
    pool = PoolFactory(name="smb")
    rep = RepFactory()
    pool.memberships.create(rep=rep)
    _given(rep, 3, pool=pool, claimed_at=NOW - minutes(10))
    assert selectors.hoarding_flags(scope_for())[0]["reason"] == "3 claimed leads not yet touched"


def test_hoarding_in_the_report_is_what_the_pool_pages_count(scope_for):
    """One definition: claimed and not touched within the SLA. A member at the limit who works their
    leads is listed as an early sign, with nothing hoarded."""
    pool = PoolFactory(name="smb", claim_limit=3)
    hoarder, worker = RepFactory(user__username="hoarder"), RepFactory(user__username="worker")
    pool.memberships.create(rep=hoarder)
    pool.memberships.create(rep=worker)
    _given(hoarder, 2, pool=pool, claimed_at=NOW - minutes(90), sla_due_at=NOW - minutes(30))
    _given(hoarder, 1, pool=pool, claimed_at=NOW - minutes(10), sla_due_at=NOW + minutes(50))
    _given(worker, 3, pool=pool, claimed_at=NOW - minutes(90), first_touch_at=NOW - minutes(80))

    flags = {f["label"]: f for f in selectors.hoarding_flags(scope_for())}

    assert flags[hoarder.display_name]["hoarded"] == 2 == hoarded_counts(NOW)[pool.pk]
    assert flags[hoarder.display_name]["reason"].startswith("2 claimed leads not touched within the SLA")
    assert flags[worker.display_name]["hoarded"] == 0
    assert flags[worker.display_name]["reason"] == "at the claim limit (3/3)"


def test_it_does_not_flag_a_member_who_works_their_claims(scope_for):
    pool = PoolFactory(name="smb", claim_limit=5)
    rep = RepFactory()
    pool.memberships.create(rep=rep)
    _given(rep, 1, pool=pool, claimed_at=NOW - minutes(10), first_touch_at=NOW - minutes(5))
    assert selectors.hoarding_flags(scope_for()) == []

import pytest

from reports import selectors
from tests.factories import LeadFactory, RepFactory
from tests.reports.conftest import NOW, minutes

pytestmark = pytest.mark.django_db
RECEIVED = NOW - minutes(600)


def _assigned(status, **fields):
    return LeadFactory(received_at=RECEIVED, assigned_at=RECEIVED, status=status, **fields)


def test_it_divides_won_and_qualified_by_assigned(scope_for):
    for status in ("won", "qualified", "contacted", "lost"):
        _assigned(status)
    LeadFactory(received_at=RECEIVED, status="unassigned")  # never given to anyone: not in the denominator
    total = selectors.conversion_total(scope_for())
    assert (total["assigned"], total["won"], total["qualified"]) == (4, 1, 2)
    assert (total["won_rate"], total["qualified_rate"]) == (0.25, 0.5)


def test_it_shows_how_unsure_a_small_sample_is(scope_for):
    for status in ("won", "won", "won", "lost"):
        _assigned(status)
    total = selectors.conversion_total(scope_for())
    assert total["won_low"] == pytest.approx(0.3006, abs=1e-3)
    assert total["won_high"] == pytest.approx(0.9544, abs=1e-3)


def test_it_compares_reps_by_rate(scope_for):
    a, b = RepFactory(user__username="a"), RepFactory(user__username="b")
    _assigned("won", owner=a)
    _assigned("lost", owner=a)
    for _ in range(4):
        _assigned("won", owner=b)
    rows = {r["key"]: r for r in selectors.conversion_by(scope_for(), "rep")}
    assert (rows[a.pk]["won_rate"], rows[b.pk]["won_rate"]) == (0.5, 1.0)


def test_it_bands_company_sizes(scope_for):
    _assigned("won", company_size=30)
    _assigned("lost", company_size=30)
    _assigned("won", company_size=12000)
    _assigned("won", company_size=None)
    rows = {r["label"]: r["assigned"] for r in selectors.conversion_by(scope_for(), "size")}
    assert rows == {"10–49": 2, "5,000+": 1, "unknown": 1}


def test_it_splits_by_industry_and_country(scope_for):
    _assigned("won", industry="fintech", country="DE")
    _assigned("lost", industry="retail", country="FR")
    assert {r["label"] for r in selectors.conversion_by(scope_for(), "industry")} == {"fintech", "retail"}
    assert {r["label"]: r["won_rate"] for r in selectors.conversion_by(scope_for(), "country")} == {"DE": 1, "FR": 0}

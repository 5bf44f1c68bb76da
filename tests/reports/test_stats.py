import pytest

from reports.stats import gini, percentile, wilson_interval


def test_it_interpolates_the_median_between_the_middle_two():
    assert percentile([1, 3, 10, 60], 0.5) == 6.5


def test_it_interpolates_the_90th_percentile_like_percentile_cont():
    # pos = 0.9 * 3 = 2.7 → 10 + 0.7 * (60 - 10)
    assert percentile([60, 1, 10, 3], 0.9) == pytest.approx(45.0)


def test_it_has_no_percentile_of_nothing():
    assert percentile([], 0.5) is None


def test_it_gives_a_wide_wilson_interval_for_three_of_four():
    low, high = wilson_interval(3, 4)
    assert low == pytest.approx(0.3006, abs=1e-3)
    assert high == pytest.approx(0.9544, abs=1e-3)


def test_it_gives_a_narrow_wilson_interval_for_many_leads():
    low, high = wilson_interval(300, 400)
    assert high - low < 0.09


def test_it_has_no_interval_without_leads():
    assert wilson_interval(0, 0) is None


def test_it_scores_an_even_split_as_perfectly_fair():
    assert gini([5, 5, 5, 5]) == 0


def test_it_scores_one_taker_of_everything_as_unfair():
    assert gini([0, 0, 0, 4]) == pytest.approx(0.75)

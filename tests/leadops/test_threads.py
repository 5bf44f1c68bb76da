import sys

import pytest

from leadops.threads import responsive_threads


def test_pipelines_shorten_the_switch_interval_and_give_it_back_even_after_an_error():
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), responsive_threads(0.0005):
        assert sys.getswitchinterval() == pytest.approx(0.0005, rel=0.05)
        raise RuntimeError("writer failed")
    assert sys.getswitchinterval() == before


def test_a_process_already_switching_faster_is_not_slowed_down():
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.0001)
    try:
        with responsive_threads(0.0005):
            assert sys.getswitchinterval() == pytest.approx(0.0001, rel=0.05)
    finally:
        sys.setswitchinterval(before)


def test_overlapping_pipelines_ending_out_of_order_restore_the_interval_once_both_are_done():
    before = sys.getswitchinterval()
    first, second = responsive_threads(0.0005), responsive_threads(0.0005)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first to start ends first: the second still runs
    assert sys.getswitchinterval() == pytest.approx(0.0005, rel=0.05)
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == before

import gc
import sys

import pytest

from leadops.threads import fewer_collections, responsive_threads


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


def test_bulk_work_collects_less_often_and_gives_the_threshold_back_even_after_an_error():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), fewer_collections(20_000):
        assert gc.get_threshold() == (max(before[0], 20_000), *before[1:])
        raise RuntimeError("route failed")
    assert gc.get_threshold() == before


def test_overlapping_bulk_blocks_restore_the_threshold_once_both_are_done():
    before = gc.get_threshold()
    first, second = fewer_collections(20_000), fewer_collections(5_000)
    first.__enter__()
    second.__enter__()  # asks for less than the first already set: nothing is lowered
    assert gc.get_threshold()[0] == max(before[0], 20_000)
    first.__exit__(None, None, None)
    assert gc.get_threshold()[0] == max(before[0], 20_000)
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before

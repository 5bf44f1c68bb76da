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

"""The report template tags: how figures and their trends read."""

import pytest
from django.template import Context, Template


@pytest.mark.parametrize(("delta", "kind", "shown"), [
    (0.004, "pct", "no change"),  # rounds to 0 pts: not a red "▼ 0 pts"
    (-0.003, "pct", "no change"),
    (0.2, "dur", "no change"),
    (-0.05, "pct", "▼ 5 pts"),
    (120, "dur", "▲ 2 min"),
])
def test_a_trend_too_small_to_show_reads_as_no_change(delta, kind, shown):
    html = Template("{% load reports_tags %}{% trend delta kind %}").render(Context({"delta": delta, "kind": kind}))

    assert shown in " ".join(html.split())

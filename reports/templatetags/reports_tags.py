"""Formatting of report cells and trends, shared by every report page."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma
from django.utils import timezone

register = template.Library()


def duration(seconds: float | None) -> str:
    if seconds is None or seconds == "":
        return "–"
    s = float(seconds)
    if abs(s) < 90:
        return f"{s:.0f} s"
    if abs(s) < 90 * 60:
        return f"{s / 60:.1f} min".replace(".0 min", " min")
    if abs(s) < 48 * 3600:
        return f"{s / 3600:.1f} h".replace(".0 h", " h")
    return f"{s / 86400:.1f} d".replace(".0 d", " d")


def pct(value: float | None, digits: int = 0) -> str:
    return "–" if value is None or value == "" else f"{value * 100:.{digits}f}%"


@register.filter
def cell(row: dict[str, Any], column) -> str:
    value = row.get(column.key)
    kind = column.kind
    if kind == "rate_ci":
        if value is None:
            return "–"
        stem = column.key.removesuffix("_rate")
        return f"{pct(value)} ({pct(row.get(f'{stem}_low'))}–{pct(row.get(f'{stem}_high'))})"
    if value is None or value == "":
        return "–"
    if kind == "int":
        return intcomma(value)
    if kind in ("num", "hours"):
        return f"{value:,.1f}"
    if kind == "money":
        return f"{value:,.0f}"
    if kind == "pct":
        return pct(value)
    if kind == "pct_delta":
        return f"{value * 100:+.0f} pts"
    if kind == "gini":
        return f"{value:.2f}"
    if kind == "dur":
        return duration(value)
    if kind == "date" and isinstance(value, dt.datetime):
        return timezone.localtime(value, timezone.get_current_timezone()).strftime("%Y-%m-%d")
    if kind == "dt" and isinstance(value, dt.datetime):
        return timezone.localtime(value, timezone.get_current_timezone()).strftime("%Y-%m-%d %H:%M")
    return str(value)


@register.filter
def dur(seconds: float | None) -> str:
    return duration(seconds)


@register.filter
def percent(value: float | None) -> str:
    return pct(value)


@register.inclusion_tag("reports/_trend.html")
def trend(delta: float | None, kind: str = "int", lower_is_better: bool = False):
    """An arrow for the direction, coloured for good (.up) or bad (.down) news. A change too small to
    show (under half a point, half a second) is no change: "▼ 0 pts" in red would be news of nothing."""
    if delta is not None and ((kind == "pct" and round(abs(delta) * 100) == 0)
                              or (kind == "dur" and round(abs(delta)) == 0)):
        delta = 0
    if delta is None or delta == 0:
        return {"text": "no change" if delta == 0 else "", "css": "", "arrow": "→" if delta == 0 else ""}
    better = delta < 0 if lower_is_better else delta > 0
    if kind == "dur":
        text = duration(abs(delta))
    elif kind == "pct":
        text = f"{abs(delta) * 100:.0f} pts"
    else:
        text = intcomma(abs(delta))
    return {"text": text, "css": "up" if better else "down", "arrow": "▲" if delta > 0 else "▼"}

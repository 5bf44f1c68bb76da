"""Portable SQL building blocks and the small statistics the reports need.

Durations are computed in the database in seconds, percentiles with PostgreSQL's
`percentile_cont`; SQLite has no ordered-set aggregates, so there the percentiles are computed
from the fetched durations with the same linear interpolation (`percentile`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from django.db import connection
from django.db.models import Aggregate, FloatField, Func


class Seconds(Func):
    """Seconds from `start` to `end` (NULL when either is NULL)."""

    output_field = FloatField()
    arity = 2

    def __init__(self, end, start, **extra):
        super().__init__(end, start, **extra)

    def as_postgresql(self, compiler, conn, **extra):
        return self.as_sql(compiler, conn, template="EXTRACT(EPOCH FROM (%(expressions)s))", arg_joiner=" - ")

    def as_sqlite(self, compiler, conn, **extra):
        end_sql, end_params = compiler.compile(self.source_expressions[0])
        start_sql, start_params = compiler.compile(self.source_expressions[1])
        # julianday() arithmetic carries float noise (3600 s comes out as 3600.00002): round to the millisecond.
        sql = f"ROUND((julianday({end_sql}) - julianday({start_sql})) * 86400.0, 3)"
        return sql, [*end_params, *start_params]


class PercentileCont(Aggregate):
    """PostgreSQL only: the continuous percentile `fraction` of the expression (NULLs ignored)."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, output_field=None, **extra):
        # The fraction is our own float, formatted, never user input.
        super().__init__(expression, fraction=f"{float(fraction):.4f}", output_field=output_field or FloatField(),
                         **extra)


def has_percentile_cont() -> bool:
    return connection.vendor == "postgresql"


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Same definition as percentile_cont: linear interpolation between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    pos = fraction * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 0.5)


def rate(part: int | None, whole: int | None) -> float | None:
    return (part or 0) / whole if whole else None


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95% Wilson score interval: honest about small samples (3 of 4 is not "75%")."""
    if not n:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def gini(values: Sequence[float]) -> float | None:
    """0 = everyone got the same, 1 = one person got everything."""
    xs = [max(0.0, float(v)) for v in values]
    n = len(xs)
    total = sum(xs)
    if n == 0 or total == 0:
        return None
    xs.sort()
    # Sorted form of sum|xi - xj| / (2 n^2 mean): O(n log n) instead of O(n^2).
    weighted = sum((2 * (i + 1) - n - 1) * x for i, x in enumerate(xs))
    return weighted / (n * total)

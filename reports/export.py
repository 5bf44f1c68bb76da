"""CSV export: spreadsheet-safe text, machine-readable numbers and ISO 8601 dates."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
from collections.abc import Iterator
from typing import Any

from reports.tables import Table

# A cell starting with one of these is run as a formula by Excel/LibreOffice/Sheets (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """Numbers stay numbers (a negative number is data, not a formula); text that a spreadsheet would
    run as a formula gets a leading apostrophe; datetimes become ISO 8601."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | decimal.Decimal):
        return value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    text = str(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def table_rows(table: Table) -> Iterator[list[Any]]:
    yield table.csv_header()
    for row in table.rows:
        out = []
        for col in table.columns:
            out.append(csv_safe(row.get(col.key)))
            if col.kind == "rate_ci":
                out += [csv_safe(row.get(f"{col.key.removesuffix('_rate')}_low")),
                        csv_safe(row.get(f"{col.key.removesuffix('_rate')}_high"))]
        yield out


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(table: Table) -> Iterator[str]:
    writer = csv.writer(_Echo())
    for row in table_rows(table):
        yield writer.writerow(row)

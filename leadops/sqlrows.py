"""Model instances from rows of hand-written SQL, with every value converted as the ORM's own
queries convert it (on SQLite a datetime comes back as text, a boolean as 0/1; JSON needs decoding).

For the reads every API call makes (its token and user, the published rule set): compiling the ORM's
query cost more CPU than PostgreSQL took to run it, and the API's latency under load is its CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connection, models


def columns(model: type[models.Model], alias: str) -> str:
    """The select list of `model`'s concrete fields in `alias`, in the order `instance` reads them."""
    q = connection.ops.quote_name
    return ", ".join(f"{q(alias)}.{q(f.column)}" for f in model._meta.concrete_fields)


def width(model: type[models.Model]) -> int:
    return len(model._meta.concrete_fields)


def instance(model: type[models.Model], values: Sequence[Any]) -> models.Model:
    """`model` as the ORM builds it from a row of `columns(model, …)` (loaded from the database:
    `_state.adding` is False, so saving it updates the row)."""
    attnames, converters = _converters(model, connection.vendor)
    values = list(values)
    for i, chain in converters:
        for convert, expression in chain:
            values[i] = convert(values[i], expression, connection)
    return model.from_db(connection.alias, attnames, values)


@functools.cache
def _converters(
    model: type[models.Model], vendor: str
) -> tuple[list[str], list[tuple[int, list[tuple[Callable, Any]]]]]:
    """The field names, and for each column that needs them the backend's and the field's converters
    (what SQLCompiler.get_converters finds for a plain column)."""
    fields = model._meta.concrete_fields
    chains = []
    for i, field in enumerate(fields):
        col = field.get_col(model._meta.db_table)
        found = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
        if found:
            chains.append((i, [(convert, col) for convert in found]))
    return [f.attname for f in fields], chains

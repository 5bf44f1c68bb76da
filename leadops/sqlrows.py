"""Model instances from rows of hand-written SQL, with every value converted as the ORM's own
queries convert it (on SQLite a datetime comes back as text, a boolean as 0/1; JSON needs decoding).

For the reads every API call makes (its token and user, the published rule set): compiling the ORM's
query cost more CPU than PostgreSQL took to run it, and the API's latency under load is its CPU.
Only for models whose fields all live in their own table (no multi-table inheritance).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import connection, models

M = TypeVar("M", bound=models.Model)


def columns(model: type[models.Model], alias: str) -> str:
    """The select list of `model`'s concrete fields in `alias`, in the order `instance` reads them."""
    q = connection.ops.quote_name
    return ", ".join(f"{q(alias)}.{q(f.column)}" for f in _fields(model)[0])


def column(model: type[models.Model], name: str) -> str:
    """The quoted column of `model`'s field `name` (a foreign key's `_id` column for its name)."""
    return connection.ops.quote_name(model._meta.get_field(name).column)


def width(model: type[models.Model]) -> int:
    return len(_fields(model)[0])


def instance(model: type[M], values: Sequence[Any]) -> M:
    """`model` as the ORM builds it from a row of `columns(model, …)` (loaded from the database:
    `_state.adding` is False, so saving it updates the row)."""
    fields, cols, field_converters = _fields(model)
    values = list(values)
    for i, col in enumerate(cols):
        # The backend's converters from this thread's connection (they are its methods); the field's own
        # are the same for every connection.
        for convert in (*connection.ops.get_db_converters(col), *field_converters[i]):
            values[i] = convert(values[i], col, connection)
    return model.from_db(connection.alias, [f.attname for f in fields], values)


@functools.cache
def _fields(model: type[models.Model]) -> tuple[list[models.Field], list[Any], list[list[Callable]]]:
    """The concrete fields, their columns and each field's converters (SQLCompiler.get_converters for
    a plain column, less the backend's, which `instance` asks the current connection for)."""
    if model._meta.parents:
        raise TypeError(f"{model.__name__} keeps fields in its parents' tables: read it with the ORM")
    fields = list(model._meta.concrete_fields)
    cols = [f.get_col(model._meta.db_table) for f in fields]
    return fields, cols, [col.get_db_converters(connection) for col in cols]

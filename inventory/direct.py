"""Hot statements run on the driver's own connection (psycopg, sqlite3).

SQLAlchemy's execution machinery costs about 0.15-0.25 ms a statement on a 2-core machine
(an execution context, the cursor's description turned into result metadata, a Result
and its rows), which for the enrollment ceremony is more than PostgreSQL's own time for a
statement and ten times SQLite's. Here a statement is still built with SQLAlchemy Core
and compiled by it, once per dialect; its parameters and results are converted by its
columns' own types (``bind_processor`` and ``result_processor``, what SQLAlchemy itself
applies), so it reads and writes exactly what the rest of the inventory does. What is
skipped is the per-execution bookkeeping.

On PostgreSQL the SQL is given to psycopg with the server's own ``$1, $2...``
placeholders (a ``RawCursor``), numbered once here: psycopg would otherwise parse every
statement longer than 4 KB for its ``%(name)s`` ones on each execution (about 0.3 ms for
the enrollment's), as it caches only shorter ones.

Errors come out as SQLAlchemy's (``DBAPIError.instance``), with a connection the database
dropped invalidated, as an engine would: ``once_more_if_dropped`` and the service's 503
treat them alike.
"""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.selectable import ReturnsRows

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class Compiled:
    """A statement's SQL for one dialect, and how to convert its parameters and rows."""

    sql: str
    positions: tuple[str, ...] | None  # parameter names in order (qmark, $n), else named
    numbered: bool  # PostgreSQL's $n placeholders: run on a RawCursor
    construct: Callable[[Mapping[str, Any]], dict[str, Any]]
    binds: tuple[tuple[str, Processor], ...]  # the parameters that need converting
    row: type | None  # a named tuple of the result's columns; None: no rows
    results: tuple[tuple[int, Processor], ...]  # the columns that need converting

    def parameters(self, values: Mapping[str, Any]) -> Any:
        params = self.construct(values)
        for name, process in self.binds:
            params[name] = process(params[name])
        if self.positions is None:
            return params
        return tuple(params[name] for name in self.positions)

    def rows(self, fetched: Sequence[Sequence[Any]]) -> list[Any]:
        assert self.row is not None
        if not self.results:
            return [self.row._make(r) for r in fetched]  # type: ignore[attr-defined]
        rows = []
        for fetched_row in fetched:
            values = list(fetched_row)
            for i, process in self.results:
                values[i] = process(values[i])
            rows.append(self.row._make(values))  # type: ignore[attr-defined]
        return rows


_compiled: dict[tuple[int, str], tuple[Executable, Compiled]] = {}


def compiled(statement: Executable, dialect: Dialect) -> Compiled:
    """``statement`` compiled for ``dialect``, once (statements are built once, at import)."""
    key = (id(statement), dialect.name)
    found = _compiled.get(key)
    if found is not None and found[0] is statement:
        return found[1]
    result = _compile(statement, dialect)
    _compiled[key] = (statement, result)  # holding the statement keeps its id its own
    return result


def _compile(statement: Executable, dialect: Dialect) -> Compiled:
    sql_compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    if "POSTCOMPILE" in sql_compiled.string:
        raise ValueError(
            "parameters rendered per execution (expanding IN lists, literal_execute) "
            "need a Session: run the statement through db.uow()"
        )
    binds = []
    for name, bind in sql_compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            binds.append((name, process))
    row_type: type | None = None
    results: list[tuple[int, Processor]] = []
    if isinstance(statement, ReturnsRows) and statement.exported_columns:
        columns = list(statement.exported_columns)
        keys = [column.key for column in columns]
        twice = sorted({k for k in keys if k is not None and keys.count(k) > 1})
        if twice:
            raise ValueError(f"columns {', '.join(twice)} are selected twice: label them")
        # An unnamed column (a bare function) gets a positional name, _0, _1...
        row_type = _row_type([str(key) for key in keys])
        for i, column in enumerate(columns):
            process = column.type.dialect_impl(dialect).result_processor(dialect, None)
            if process is not None:
                results.append((i, process))
    sql = sql_compiled.string
    positions = tuple(sql_compiled.positiontup) if sql_compiled.positional else None
    numbered = dialect.driver == "psycopg" and dialect.paramstyle == "pyformat"
    if numbered:
        sql, positions = _numbered(sql)
    return Compiled(
        sql=sql,
        positions=positions,
        numbered=numbered,
        construct=sql_compiled.construct_params,
        binds=tuple(binds),
        row=row_type,
        results=tuple(results),
    )


_PYFORMAT = re.compile(r"%\((\w+)\)s|%%")


def _numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` with pyformat placeholders (``%(name)s``; ``%%`` for a literal %) in
    PostgreSQL's ``$1, $2...`` instead, a name keeping its number; and the names in order."""
    numbers: dict[str, int] = {}

    def placeholder(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return "%"
        return f"${numbers.setdefault(match.group(1), len(numbers) + 1)}"

    return _PYFORMAT.sub(placeholder, sql), tuple(numbers)


def _row_type(names: list[str]) -> type:
    return namedtuple("Row", names, rename=True)


def run(
    driver_connection: Any,
    dialect: Dialect,
    statement: Executable,
    params: Mapping[str, Any],
    *,
    on_error: Callable[[BaseException], bool],
) -> list[Any]:
    """Run ``statement`` with ``params`` on ``driver_connection``; its rows (named tuples,
    none for a statement without RETURNING). ``on_error`` says whether the driver's error
    means the connection was dropped (and has invalidated it)."""
    c = compiled(statement, dialect)
    params_out = c.parameters(params)
    try:
        if c.numbered:
            # Imported here, so that a command on SQLite never loads psycopg (0.07 s).
            from psycopg import RawCursor

            cursor = RawCursor(driver_connection).execute(c.sql, params_out)
        else:
            cursor = driver_connection.execute(c.sql, params_out)
        fetched = cursor.fetchall() if c.row is not None else []
    except dialect.loaded_dbapi.Error as exc:
        dropped = on_error(exc)
        raise DBAPIError.instance(
            c.sql, params_out, exc, dialect.loaded_dbapi.Error, connection_invalidated=dropped
        ) from exc
    return c.rows(fetched) if c.row is not None else []

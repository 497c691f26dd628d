"""Core statements compiled once per dialect and run straight on a DBAPI cursor.

SQLAlchemy still writes every statement (FR-016: no hand-written SQL); what is skipped on the
hot path is its per-call machinery (Connection, execution context, events, Row objects),
about two thirds of a call's client CPU (benchmarks.md). Bind and result type processing is
kept: each column's own processors, taken from the compiled statement, are applied here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.base import _NoArg

__all__ = ["Compiled", "compile_for", "execute"]

Processor = Callable[[Any], Any]


class Compiled:
    """A statement's SQL for one dialect and what it takes to bind and read it."""

    __slots__ = ("binds", "columns", "defaults", "positional", "results", "sql")

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled: Any = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        self.positional: tuple[str, ...] | None = (
            tuple(compiled.positiontup) if compiled.positiontup is not None else None
        )
        defaults = {
            name: value
            for name, value in compiled.params.items()
            if value is not None and not isinstance(value, _NoArg) and not _required(value)
        }
        for column in getattr(compiled, "insert_prefetch", ()) or ():
            default = column.default
            if default is None or not default.is_scalar:
                raise TypeError(f"column {column.key} has a default taskcore cannot prefetch")
            defaults[column.key] = default.arg
        self.defaults: dict[str, Any] = defaults
        self.binds: tuple[tuple[str, Processor], ...] = tuple(
            (name, processor)
            for name, processor in compiled._bind_processors.items()
            if processor is not None
        )
        self.columns: tuple[str, ...] = tuple(entry.keyname for entry in compiled._result_columns)
        results = []
        for index, entry in enumerate(compiled._result_columns):
            if dialect.name in getattr(entry.type, "aware_from_driver", ()):
                continue  # its reader converts to UTC itself (see models.UTCDateTime)
            processor = entry.type._cached_result_processor(dialect, None)
            if processor is not None:
                results.append((index, processor))
        self.results: tuple[tuple[int, Processor], ...] = tuple(results)


def _required(value: Any) -> bool:
    return repr(value) == "symbol('REQUIRED')"


#: (id(statement), dialect name) -> (statement, its Compiled); read lock-free.
_cache: dict[tuple[int, str], tuple[ClauseElement, Compiled]] = {}
_lock = threading.Lock()


def compile_for(statement: ClauseElement, dialect: Dialect) -> Compiled:
    """The compiled form of ``statement`` (a cached, reused shape) for ``dialect``."""
    key = (id(statement), dialect.name)
    hit = _cache.get(key)
    if hit is not None and hit[0] is statement:
        return hit[1]
    compiled = Compiled(statement, dialect)
    with _lock:
        _cache[key] = (statement, compiled)  # the statement is kept alive: its id stays unique
    return compiled


def _arguments(compiled: Compiled, params: Mapping[str, Any]) -> Any:
    if compiled.defaults:
        params = {**compiled.defaults, **params}
    if compiled.binds:
        params = dict(params)
        for name, processor in compiled.binds:
            if name in params:
                params[name] = processor(params[name])
    if compiled.positional is not None:
        return tuple(params[name] for name in compiled.positional)
    return params


def _processed(compiled: Compiled, rows: list[Any]) -> list[Any]:
    if not compiled.results:
        return rows
    out = []
    for row in rows:
        values = list(row)
        for index, processor in compiled.results:
            values[index] = processor(values[index])
        out.append(values)
    return out


def execute(cursor: Any, compiled: Compiled, params: Mapping[str, Any]) -> list[Any]:
    """Run ``compiled`` with ``params``; the rows (sequences in ``compiled.columns`` order)."""
    if compiled.defaults or compiled.binds or compiled.positional is not None:
        params = _arguments(compiled, params)
    cursor.execute(compiled.sql, params)
    if cursor.description is None:
        return []
    rows: list[Any] = cursor.fetchall()
    return _processed(compiled, rows) if compiled.results else rows

"""The repository's SQL, built once per shape and bound by parameters on every call.

Building a SQLAlchemy statement costs more CPU than running it on a warm connection (profiles
in specs/.../benchmarks.md), so each shape is built on first use and cached; calls only bind
values. Names of bound parameters: ``task_id``, ``owner``, ``op_key``, and ``v_<column>``.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    Table,
    bindparam,
    delete,
    exists,
    insert,
    not_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from taskcore.models import Task, task_operations, utcnow

__all__ = [
    "OPERATION_KEY_RETENTION",
    "TASKS",
    "delete_one",
    "insert_task",
    "key_recorded",
    "select_applied",
    "select_by_key",
    "select_list",
    "select_one",
    "update_one",
    "upsert_task",
]

TASKS: Table = Task.metadata.tables[Task.__tablename__]
#: How long operation keys are kept (a write purges older ones now and then).
OPERATION_KEY_RETENTION = timedelta(days=1)
_C = TASKS.c


def _matching(scoped: bool) -> list[ColumnElement[bool]]:
    clauses = [_C.id == bindparam("task_id")]
    if scoped:
        clauses.append(_C.user_id == bindparam("owner"))
    return clauses


@functools.cache
def select_one(scoped: bool) -> Select[Any]:
    """One task by id (and owner)."""
    return select(TASKS).where(*_matching(scoped))


@functools.cache
def select_list(scoped: bool, by_completed: bool, paged: bool) -> Select[Any]:
    """Tasks ordered by id; binds ``owner``, ``completed``, ``limit``, ``offset`` as used."""
    statement = select(TASKS).order_by(_C.id)
    if scoped:
        statement = statement.where(_C.user_id == bindparam("owner"))
    if by_completed:
        statement = statement.where(_C.completed == bindparam("completed"))
    if paged:
        statement = statement.limit(bindparam("limit")).offset(bindparam("offset"))
    return statement


@functools.cache
def insert_task() -> Insert:
    """INSERT ... RETURNING every column (executemany-capable, input order kept)."""
    return insert(TASKS).returning(*TASKS.c, sort_by_parameter_order=True)


@functools.cache
def upsert_task(dialect: str) -> Insert:
    """INSERT ... ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING every column."""
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        dialect_insert(TASKS)
        .on_conflict_do_nothing(index_elements=["user_id", "idempotency_key"])
        .returning(*TASKS.c)
    )


@functools.cache
def select_by_key() -> Select[Any]:
    """The task an idempotency key created."""
    return select(TASKS).where(
        _C.user_id == bindparam("owner"), _C.idempotency_key == bindparam("v_idempotency_key")
    )


def _keyed(statement: Any, scoped: bool, purge: bool) -> Any:
    """Record ``op_key`` in the write's own statement; the write runs only if the key is new.

    The key is inserted only if the task matches; a re-run of the same statement after a lost
    reply conflicts on the key and writes nothing (contracts/exactly-once.md).
    """
    op = (
        postgresql.insert(task_operations)
        .from_select(["key"], select(bindparam("op_key")).where(exists().where(*_matching(scoped))))
        .on_conflict_do_nothing()
        .returning(task_operations.c.key)
        .cte("op")
    )
    statement = statement.where(exists(select(op.c.key))).add_cte(op)
    if purge:
        old = task_operations.c.created_at < utcnow() - OPERATION_KEY_RETENTION
        statement = statement.add_cte(delete(task_operations).where(old).cte("purge"))
    return statement


@functools.cache
def update_one(
    fields: frozenset[str], toggle: bool, scoped: bool, keyed: bool, purge: bool = False
) -> Any:
    """UPDATE one task: set ``v_<field>`` for each field (or flip completed), RETURNING it."""
    values: dict[str, Any] = {name: bindparam(f"v_{name}") for name in sorted(fields)}
    if toggle:
        values["completed"] = not_(_C.completed)
    values["updated_at"] = utcnow()
    statement = update(TASKS).where(*_matching(scoped)).values(values)
    if keyed:
        statement = _keyed(statement, scoped, purge)
    return statement.returning(*TASKS.c)


@functools.cache
def delete_one(scoped: bool, keyed: bool, purge: bool = False) -> Any:
    """DELETE one task, RETURNING its id."""
    statement = delete(TASKS).where(*_matching(scoped))
    if keyed:
        statement = _keyed(statement, scoped, purge)
    return statement.returning(_C.id)


@functools.cache
def key_recorded() -> Select[Any]:
    """Whether ``op_key`` was recorded (its write committed)."""
    return select(exists().where(task_operations.c.key == bindparam("op_key")))


@functools.cache
def select_applied(scoped: bool) -> Select[Any]:
    """The task, if ``op_key`` was recorded for it."""
    return select(TASKS).where(
        *_matching(scoped), exists().where(task_operations.c.key == bindparam("op_key"))
    )

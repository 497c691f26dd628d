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
    ARRAY,
    ColumnElement,
    Insert,
    Select,
    Table,
    any_,
    bindparam,
    cast,
    delete,
    exists,
    false,
    func,
    insert,
    not_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from taskcore.models import Task, task_operations, utcnow, utcnow_after

__all__ = [
    "BATCH",
    "CALL_KEY_RETENTION",
    "GENERATED_KEY",
    "MANY_NAMES",
    "OPERATION_KEY_RETENTION",
    "PURGE_BATCH",
    "TASKS",
    "claim_key",
    "delete_one",
    "insert_many",
    "insert_task",
    "key_recorded",
    "purge_keys",
    "select_applied",
    "select_by_key",
    "select_list",
    "select_one",
    "update_one",
    "upsert_task",
]

TASKS: Table = Task.metadata.tables[Task.__tablename__]
#: How long keys derived from callers' keys (operation_key=, claims) are kept.
OPERATION_KEY_RETENTION = timedelta(days=1)
#: How long keys generated for one call are kept: far beyond any call's deadline.
CALL_KEY_RETENTION = timedelta(minutes=10)
#: Most keys one purge deletes: a purge costs a caller about a millisecond, never more.
PURGE_BATCH = 100
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
def select_list(scoped: bool, by_completed: bool, paged: bool, after: bool = False) -> Select[Any]:
    """Tasks ordered by id; binds ``owner``, ``completed``, ``after_id``, ``limit``, ``offset``.

    With ``owner`` the (user_id, id) index returns rows already in id order: a page reads only
    its own rows (plus the skipped ones for an offset), never sorts a user's whole list.
    """
    statement = select(TASKS).order_by(_C.id)
    if scoped:
        statement = statement.where(_C.user_id == bindparam("owner"))
    if after:
        statement = statement.where(_C.id > bindparam("after_id"))
    if by_completed:
        statement = statement.where(_C.completed == bindparam("completed"))
    if paged:
        statement = statement.limit(bindparam("limit")).offset(bindparam("offset"))
    return statement


_INSERTED = ("title", "description", "user_id", "idempotency_key")


def _values() -> dict[str, Any]:
    return {name: bindparam(name) for name in _INSERTED}


@functools.cache
def insert_task() -> Insert:
    """INSERT ... RETURNING every column."""
    return insert(TASKS).values(_values()).returning(*TASKS.c)


#: Rows per multi-row INSERT of create_many (one round trip each).
BATCH = 1000


@functools.lru_cache(maxsize=64)
def insert_many(rows: int) -> Insert:
    """One INSERT ... VALUES of ``rows`` rows RETURNING every column.

    Binds ``owner`` once for every row and ``title_<i>``, ``description_<i>`` per row
    (:data:`MANY_NAMES`); ``completed`` is the literal false (no per-row default to bind).
    """
    values: list[dict[str, Any]] = [
        {
            "title": bindparam(title),
            "description": bindparam(description),
            "completed": false(),
            "user_id": bindparam("owner"),
        }
        for title, description in MANY_NAMES[:rows]
    ]
    return insert(TASKS).values(values).returning(*TASKS.c)


#: The bind names of row i of :func:`insert_many`, made once.
MANY_NAMES = tuple((f"title_{i}", f"description_{i}") for i in range(BATCH))


@functools.cache
def claim_key(dialect: str) -> Insert:
    """Record ``op_key`` unless present; RETURNING it only when it was new."""
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        dialect_insert(task_operations)
        .values(key=bindparam("op_key"))
        .on_conflict_do_nothing()
        .returning(task_operations.c.key)
    )


@functools.cache
def upsert_task(dialect: str) -> Insert:
    """INSERT ... ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING every column."""
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        dialect_insert(TASKS)
        .values(_values())
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
        statement = statement.add_cte(_purge_batch())
    return statement


def _purge_batch() -> Any:
    """The bounded purge as a CTE of a keyed write (no extra round trip)."""
    return _purge_delete(postgres=True).cte("purge")


@functools.cache
def purge_keys(dialect: str) -> Any:
    """The same bounded purge as a statement of its own (claims; SQLite has no DML in CTEs)."""
    return _purge_delete(postgres=dialect == "postgresql")


#: Keys the library generates per call: UUIDv4 text (version digit 4). Caller keys are UUIDv5.
GENERATED_KEY = task_operations.c.key.like("________-____-4%")


def _purge_delete(*, postgres: bool) -> Any:
    """DELETE at most PURGE_BATCH expired keys of each retention, oldest first.

    Keys the library generates per call (UUIDv4) are only needed while that call retries, so
    they go after CALL_KEY_RETENTION; keys derived from callers' keys (UUIDv5: claims, job
    ids) are kept for OPERATION_KEY_RETENTION, to match redeliveries. Each part is one index
    range scan that stops after PURGE_BATCH rows: generated keys through the partial index
    ``ix_task_operations_call_keys`` (only they are in it, so the caller keys younger than
    their retention are never walked past), every key older than OPERATION_KEY_RETENTION
    through the ``created_at`` index. On PostgreSQL the keys found are deleted through the
    primary key (``= ANY(array)``: one probe each, whatever the planner thinks of the table's
    size), so a purge reads about 4 x PURGE_BATCH index entries however many live keys there are.

    SQLite stores UTC text and has no interval arithmetic: it binds ``key_cutoff`` (computed by
    the caller) instead of using server time. It never stores generated keys (its one-shot
    writes record none), so only the caller keys' part runs there.
    """
    ops = task_operations.c
    key_cutoff: Any = utcnow() - OPERATION_KEY_RETENTION
    if not postgres:
        key_cutoff = bindparam("key_cutoff", type_=ops.created_at.type)

    def oldest(*where: Any) -> Select[Any]:
        batch = select(ops.key).where(*where).order_by(ops.created_at).limit(PURGE_BATCH)
        return select(batch.subquery().c.key)  # a subquery: SQLite's compounds take no LIMIT

    expired = oldest(ops.created_at < key_cutoff)
    if not postgres:
        return delete(task_operations).where(ops.key.in_(expired))
    call_cutoff = utcnow() - CALL_KEY_RETENTION
    found = union_all(oldest(GENERATED_KEY, ops.created_at < call_cutoff), expired).subquery()
    keys = select(func.array_agg(found.c.key)).scalar_subquery()  # an InitPlan: run once
    # The CAST makes ANY take the array (ANY (subquery) would compare with each row instead).
    return delete(task_operations).where(ops.key == any_(cast(keys, ARRAY(ops.key.type))))


@functools.cache
def update_one(
    fields: frozenset[str], toggle: bool, scoped: bool, keyed: bool, purge: bool = False
) -> Any:
    """UPDATE one task: set ``v_<field>`` for each field (or flip completed), RETURNING it."""
    values: dict[str, Any] = {name: bindparam(f"v_{name}") for name in sorted(fields)}
    if toggle:
        values["completed"] = not_(_C.completed)
    values["updated_at"] = utcnow_after(_C.updated_at)
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

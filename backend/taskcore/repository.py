"""The task repository: one SQL statement per operation, run by the unit of work it belongs to."""

from __future__ import annotations

import builtins
import operator
import os
import random
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.sql import ClauseElement

from taskcore import _statements as sql
from taskcore._rows import task_from_row, tasks_from_rows
from taskcore.errors import ConflictError, NotFoundError, ValidationError
from taskcore.models import (
    Task,
    TaskCreate,
    TaskUpdate,
    check_idempotency_key,
    check_task_id,
    check_user_id,
)

__all__ = ["StatementRunner", "TaskRepository", "call_key", "caller_key"]

#: One keyed write in this many also purges a bounded batch of expired operation keys (in the
#: same statement); sql.PURGE_BATCH rows per purge keeps up with any write rate.
_PURGE_ONE_IN = 64
_CLAIM_NAMESPACE = uuid.UUID("6f1c1d1e-3b7a-5c44-9a51-5b0c3f7e2a10")


class StatementRunner(Protocol):
    """What a repository needs from its unit of work (or a one-shot call)."""

    #: "postgresql" or "sqlite".
    dialect_name: str
    #: Set for one-shot writes: recorded atomically with the write, so that after a lost reply
    #: re-running the call cannot apply it twice (PostgreSQL only; SQLite has no network).
    operation_key: str | None

    def fetch(
        self,
        statement: ClauseElement,
        params: Mapping[str, Any],
        *,
        writes: bool,
        idempotent: bool = False,
    ) -> list[Any]:
        """Run a cached statement shape; its rows as sequences."""
        ...


_first = operator.itemgetter(0)


class TaskRepository:
    """Task operations inside a unit of work. It never begins, commits or rolls back.

    Every method validates its input first (a refused call sends nothing), then costs one
    statement: writes use ``RETURNING`` so no second read is needed. ``user_id=None`` means
    unscoped (admin use); any string, ``""`` included, restricts the operation to that owner.
    Returned tasks are plain objects, not tied to a session.
    """

    def __init__(self, runner: StatementRunner) -> None:
        self._runner = runner

    def create(self, data: TaskCreate, *, user_id: str, idempotency_key: str | None = None) -> Task:
        """Store a new task for ``user_id`` and return it with its id and timestamps.

        With an ``idempotency_key``, a second create with the same (user_id, key), from any
        process, returns the task the first one stored instead of a duplicate (the first
        write wins; later data is ignored).
        """
        if not isinstance(data, TaskCreate):
            raise ValidationError("create() takes a TaskCreate", fields=("data",))
        owner = check_user_id(user_id, required=True)
        key = check_idempotency_key(idempotency_key)
        data = data.validated()
        values = {
            "title": data.title,
            "description": data.description,
            "user_id": owner,
            "idempotency_key": key,
        }
        if key is None:
            return task_from_row(self._runner.fetch(sql.insert_task(), values, writes=True)[0])
        upsert = sql.upsert_task(self._runner.dialect_name)
        rows = self._runner.fetch(upsert, values, writes=True, idempotent=True)
        if rows:
            return task_from_row(rows[0])
        existing = self._runner.fetch(
            sql.select_by_key(), {"owner": owner, "v_idempotency_key": key}, writes=False
        )
        if not existing:
            # The conflicting row exists but this transaction's snapshot cannot see it
            # (REPEATABLE READ / SERIALIZABLE): a conflict, safe to re-run whole.
            raise ConflictError("a concurrent create with the same idempotency key")
        return task_from_row(existing[0])

    def create_many(self, items: Iterable[TaskCreate], *, user_id: str) -> builtins.list[Task]:
        """Store many tasks for ``user_id`` in order; one statement per 1,000 rows.

        Every item is validated before anything is sent, so one bad item stores nothing.
        """
        owner = check_user_id(user_id, required=True)
        rows = []
        for data in items:
            if not isinstance(data, TaskCreate):
                raise ValidationError("create_many() takes TaskCreate items", fields=("items",))
            checked = data.validated()
            rows.append((checked.title, checked.description))
        created: builtins.list[Task] = []
        for start in range(0, len(rows), sql.BATCH):
            chunk = rows[start : start + sql.BATCH]
            params: dict[str, Any] = {"owner": owner}
            for (title, description), (title_name, description_name) in zip(
                chunk, sql.MANY_NAMES, strict=False
            ):
                params[title_name] = title
                params[description_name] = description
            stored = self._runner.fetch(sql.insert_many(len(chunk)), params, writes=True)
            # One INSERT ... VALUES assigns ids in VALUES order: sorting by id is input order.
            stored.sort(key=_first)
            created.extend(tasks_from_rows(stored))
        return created

    def get(self, task_id: int, *, user_id: str | None = None) -> Task | None:
        """The task, or None when it does not exist or belongs to another user."""
        params = _target(task_id, user_id)
        rows = self._runner.fetch(sql.select_one("owner" in params), params, writes=False)
        return task_from_row(rows[0]) if rows else None

    def list(
        self,
        *,
        user_id: str | None = None,
        completed: bool | None = None,
        limit: int | None = None,
        offset: int = 0,
        after_id: int | None = None,
    ) -> builtins.list[Task]:
        """Tasks ordered by id, optionally for one owner and completion state, paginated.

        ``after_id`` (the last id of the previous page) is a keyset cursor: the (user_id, id)
        index serves the page however deep it is, unlike ``offset``.
        """
        owner = check_user_id(user_id, required=False)
        params: dict[str, Any] = {}
        if owner is not None:
            params["owner"] = owner
        if completed is not None:
            if not isinstance(completed, bool):
                raise ValidationError(
                    "completed must be true, false or None", fields=("completed",)
                )
            params["completed"] = completed
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise ValidationError("limit must be a non-negative integer", fields=("limit",))
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValidationError("offset must be a non-negative integer", fields=("offset",))
        if after_id is not None:
            params["after_id"] = check_task_id(after_id, field="after_id")
        paged = limit is not None or offset > 0
        if paged:
            params["limit"] = limit  # LIMIT NULL means no limit
            params["offset"] = offset
        statement = sql.select_list(
            owner is not None, completed is not None, paged, after_id is not None
        )
        return tasks_from_rows(self._runner.fetch(statement, params, writes=False))

    def update(self, task_id: int, data: TaskUpdate, *, user_id: str | None = None) -> Task:
        """Change the fields set in ``data``; raise NotFoundError if there is no such task.

        One UPDATE setting only those fields: concurrent updates of other fields are never
        overwritten, and the same field is last-writer-wins.
        """
        if not isinstance(data, TaskUpdate):
            raise ValidationError("update() takes a TaskUpdate", fields=("data",))
        params = _target(task_id, user_id)
        changes = data.validated().changes()
        params.update({f"v_{name}": value for name, value in changes.items()})
        return self._write_one(task_id, params, frozenset(changes), toggle=False)

    def toggle_complete(self, task_id: int, *, user_id: str | None = None) -> Task:
        """Flip ``completed`` atomically in SQL (no read-modify-write race)."""
        return self._write_one(task_id, _target(task_id, user_id), frozenset(), toggle=True)

    def delete(self, task_id: int, *, user_id: str | None = None) -> bool:
        """Delete the task; True if it existed (and belonged to ``user_id``), else False."""
        params = _target(task_id, user_id)
        key = self._key(params)
        statement = sql.delete_one("owner" in params, key is not None, _purge(key))
        if self._runner.fetch(statement, params, writes=True, idempotent=key is not None):
            return True
        if key is None:
            return False
        # Nothing deleted now: did an earlier attempt of this same call delete it?
        recorded = self._runner.fetch(sql.key_recorded(), params, writes=False)
        return bool(recorded[0][0])

    def _write_one(
        self, task_id: int, params: dict[str, Any], fields: frozenset[str], *, toggle: bool
    ) -> Task:
        """Run an UPDATE of one task returning it; NotFoundError when it matched nothing."""
        key = self._key(params)
        scoped = "owner" in params
        statement = sql.update_one(fields, toggle, scoped, key is not None, _purge(key))
        rows = self._runner.fetch(statement, params, writes=True, idempotent=key is not None)
        if rows:
            return task_from_row(rows[0])
        if key is not None:
            # Nothing updated now: if an earlier attempt of this same call applied the write
            # (its key is recorded), the call succeeded; return the task as it is now.
            applied = self._runner.fetch(sql.select_applied(scoped), params, writes=False)
            if applied:
                return task_from_row(applied[0])
        raise NotFoundError(task_id)

    def claim(self, key: str) -> bool:
        """Record ``key`` (any length: stored as its UUIDv5) in this transaction; False if a
        committed transaction already recorded it."""
        params = {"op_key": caller_key(key, field="key")}
        dialect = self._runner.dialect_name
        rows = self._runner.fetch(sql.claim_key(dialect), params, writes=True)
        if _purge(params["op_key"]):  # claims purge too: a claims-only workload stays bounded
            # PostgreSQL computes the cutoffs from server time; SQLite (UTC text) binds its one.
            cutoff = {"key_cutoff": datetime.now(UTC) - sql.OPERATION_KEY_RETENTION}
            self._runner.fetch(
                sql.purge_keys(dialect), cutoff if dialect == "sqlite" else {}, writes=True
            )
        return bool(rows)

    def _key(self, params: dict[str, Any]) -> str | None:
        """The runner's operation key, bound into ``params`` (PostgreSQL only)."""
        key = self._runner.operation_key
        if key is None or self._runner.dialect_name != "postgresql":
            return None
        params["op_key"] = key
        return key


def call_key() -> str:
    """A fresh key for one call: a random UUIDv4 in its text form (the purge keeps it only for
    CALL_KEY_RETENTION), built from 16 random bytes without ``uuid.UUID``'s Python-level work."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


#: RFC 4122 variant: the top two bits of the 17th hex digit are 10 (so 8, 9, a or b).
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def caller_key(key: object, *, field: str = "operation_key") -> str:
    """The stored form of a caller's key: its UUIDv5 (fits the 36-character column, and its
    version digit tells the purge to keep it for the longer retention)."""
    if not isinstance(key, str) or not key:
        raise ValidationError(f"{field} must be a non-empty string", fields=(field,))
    return str(uuid.uuid5(_CLAIM_NAMESPACE, key))


def _purge(key: str | None) -> bool:
    return key is not None and random.random() * _PURGE_ONE_IN < 1.0


def _target(task_id: int, user_id: str | None) -> dict[str, Any]:
    """Bound parameters selecting one task, scoped to its owner when ``user_id`` is given."""
    params: dict[str, Any] = {"task_id": check_task_id(task_id)}
    owner = check_user_id(user_id, required=False)
    if owner is not None:
        params["owner"] = owner
    return params

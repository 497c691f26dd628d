"""The task repository: one SQL statement per operation, run by the unit of work it belongs to."""

from __future__ import annotations

import builtins
import functools
import random
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from sqlalchemy import Executable, Row
from sqlalchemy.orm import configure_mappers
from sqlalchemy.orm.instrumentation import manager_of_class

from taskcore import _statements as sql
from taskcore.errors import ConflictError, NotFoundError, ValidationError
from taskcore.models import (
    Task,
    TaskCreate,
    TaskUpdate,
    check_idempotency_key,
    check_task_id,
    check_user_id,
)

__all__ = ["StatementRunner", "TaskRepository"]

#: One keyed write in this many also purges operation keys older than a day (same statement).
_PURGE_ONE_IN = 512
Parameters = dict[str, Any] | builtins.list[dict[str, Any]]


class StatementRunner(Protocol):
    """What a repository needs from its unit of work."""

    #: "postgresql" or "sqlite".
    dialect_name: str
    #: Set for one-shot writes: recorded atomically with the write, so that after a lost reply
    #: re-running the call cannot apply it twice (PostgreSQL only; SQLite has no network).
    operation_key: str | None

    def run_statement(
        self,
        statement: Executable,
        parameters: Parameters | None = None,
        *,
        writes: bool,
        idempotent: bool = False,
    ) -> Sequence[Row[Any]]: ...


_TASK_MANAGER = manager_of_class(Task)


@functools.cache
def _mappers_ready() -> None:
    """Configure SQLAlchemy's mappers once: Core statements alone never trigger it, and an
    instance of an unconfigured mapper has no working attributes."""
    configure_mappers()


def _task(row: Row[Any]) -> Task:
    """A Task from a row of the tasks table, built the way SQLAlchemy's ORM loads one.

    No re-validation (the database is the source) and no per-attribute instrumented setattr:
    about 13x cheaper than ``Task(**row)``, which matters when listing many tasks.
    """
    _mappers_ready()
    values = row._mapping
    task: Task = _TASK_MANAGER.new_instance()
    task.__dict__.update(values)
    object.__setattr__(task, "__pydantic_fields_set__", set(values.keys()))
    return task


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
            return _task(self._runner.run_statement(sql.insert_task(), values, writes=True)[0])
        upsert = sql.upsert_task(self._runner.dialect_name)
        rows = self._runner.run_statement(upsert, values, writes=True, idempotent=True)
        if rows:
            return _task(rows[0])
        existing = self._runner.run_statement(
            sql.select_by_key(), {"owner": owner, "v_idempotency_key": key}, writes=False
        )
        if not existing:
            # The conflicting row exists but this transaction's snapshot cannot see it
            # (REPEATABLE READ / SERIALIZABLE): a conflict, safe to re-run whole.
            raise ConflictError("a concurrent create with the same idempotency key")
        return _task(existing[0])

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
            rows.append(
                {"title": checked.title, "description": checked.description, "user_id": owner}
            )
        if not rows:
            return []
        # SQLAlchemy's insertmanyvalues batches this into multi-row INSERT ... RETURNING
        # statements of insertmanyvalues_page_size (1,000) rows, keeping the input order.
        created = self._runner.run_statement(sql.insert_task(), rows, writes=True)
        return [_task(row) for row in created]

    def get(self, task_id: int, *, user_id: str | None = None) -> Task | None:
        """The task, or None when it does not exist or belongs to another user."""
        params = _target(task_id, user_id)
        rows = self._runner.run_statement(sql.select_one("owner" in params), params, writes=False)
        return _task(rows[0]) if rows else None

    def list(
        self,
        *,
        user_id: str | None = None,
        completed: bool | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[Task]:
        """Tasks ordered by id, optionally for one owner and completion state, paginated."""
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
        paged = limit is not None or offset > 0
        if paged:
            params["limit"] = limit  # LIMIT NULL means no limit
            params["offset"] = offset
        statement = sql.select_list(owner is not None, completed is not None, paged)
        return [_task(row) for row in self._runner.run_statement(statement, params, writes=False)]

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
        if self._runner.run_statement(statement, params, writes=True, idempotent=key is not None):
            return True
        if key is None:
            return False
        # Nothing deleted now: did an earlier attempt of this same call delete it?
        recorded = self._runner.run_statement(sql.key_recorded(), params, writes=False)
        return bool(recorded[0][0])

    def _write_one(
        self, task_id: int, params: dict[str, Any], fields: frozenset[str], *, toggle: bool
    ) -> Task:
        """Run an UPDATE of one task returning it; NotFoundError when it matched nothing."""
        key = self._key(params)
        scoped = "owner" in params
        statement = sql.update_one(fields, toggle, scoped, key is not None, _purge(key))
        rows = self._runner.run_statement(
            statement, params, writes=True, idempotent=key is not None
        )
        if rows:
            return _task(rows[0])
        if key is not None:
            # Nothing updated now: if an earlier attempt of this same call applied the write
            # (its key is recorded), the call succeeded; return the task as it is now.
            applied = self._runner.run_statement(sql.select_applied(scoped), params, writes=False)
            if applied:
                return _task(applied[0])
        raise NotFoundError(task_id)

    def _key(self, params: dict[str, Any]) -> str | None:
        """The runner's operation key, bound into ``params`` (PostgreSQL only)."""
        key = self._runner.operation_key
        if key is None or self._runner.dialect_name != "postgresql":
            return None
        params["op_key"] = key
        return key


def _purge(key: str | None) -> bool:
    return key is not None and random.randrange(_PURGE_ONE_IN) == 0


def _target(task_id: int, user_id: str | None) -> dict[str, Any]:
    """Bound parameters selecting one task, scoped to its owner when ``user_id`` is given."""
    params: dict[str, Any] = {"task_id": check_task_id(task_id)}
    owner = check_user_id(user_id, required=False)
    if owner is not None:
        params["owner"] = owner
    return params

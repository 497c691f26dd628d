"""The task repository: one SQL statement per operation, run by the unit of work it belongs to."""

from __future__ import annotations

import builtins
import random
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Executable,
    delete,
    exists,
    insert,
    literal,
    not_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from taskcore.errors import ConflictError, NotFoundError, ValidationError
from taskcore.models import (
    Task,
    TaskCreate,
    TaskUpdate,
    check_idempotency_key,
    check_task_id,
    check_user_id,
    task_operations,
    utcnow,
)

__all__ = ["StatementRunner", "TaskRepository"]

#: How long operation keys are kept, and how often a write also purges older ones.
OPERATION_KEY_RETENTION = timedelta(days=1)
_PURGE_PROBABILITY = 1 / 512


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
        *,
        writes: bool,
        idempotent: bool = False,
        parameters: builtins.list[dict[str, Any]] | None = None,
    ) -> builtins.list[Any]: ...


class TaskRepository:
    """Task operations inside a unit of work. It never begins, commits or rolls back.

    Every method validates its input first (a refused call sends nothing), then costs one
    statement: writes use ``RETURNING`` so no second read is needed. ``user_id=None`` means
    unscoped (admin use); any string, ``""`` included, restricts the operation to that owner.
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
            rows: list[Task] = self._runner.run_statement(
                insert(Task).values(**values).returning(Task), writes=True
            )
            return rows[0]
        dialect_insert = (
            postgresql.insert if self._runner.dialect_name == "postgresql" else (sqlite.insert)
        )
        statement = (
            dialect_insert(Task)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["user_id", "idempotency_key"])
            .returning(Task)
        )
        rows = self._runner.run_statement(statement, writes=True, idempotent=True)
        if rows:
            return rows[0]
        existing = self._runner.run_statement(
            select(Task)
            .where(col(Task.user_id) == owner, col(Task.idempotency_key) == key)
            .execution_options(populate_existing=True),
            writes=False,
        )
        if not existing:
            # The conflicting row exists but this transaction's snapshot cannot see it
            # (REPEATABLE READ / SERIALIZABLE): a conflict, safe to re-run whole.
            raise ConflictError("a concurrent create with the same idempotency key")
        found: Task = existing[0]
        return found

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
        statement = insert(Task).returning(Task, sort_by_parameter_order=True)
        created: builtins.list[Task] = self._runner.run_statement(
            statement, writes=True, parameters=rows
        )
        return created

    def get(self, task_id: int, *, user_id: str | None = None) -> Task | None:
        """The task, or None when it does not exist or belongs to another user."""
        statement = select(Task).where(*_matching(task_id, user_id))
        rows: list[Task] = self._runner.run_statement(
            statement.execution_options(populate_existing=True), writes=False
        )
        return rows[0] if rows else None

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
        statement = select(Task).order_by(col(Task.id))
        if owner is not None:
            statement = statement.where(col(Task.user_id) == owner)
        if completed is not None:
            if not isinstance(completed, bool):
                raise ValidationError(
                    "completed must be true, false or None", fields=("completed",)
                )
            statement = statement.where(col(Task.completed) == completed)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ValidationError("limit must be a non-negative integer", fields=("limit",))
            statement = statement.limit(limit)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValidationError("offset must be a non-negative integer", fields=("offset",))
        if offset:
            statement = statement.offset(offset)
        rows: builtins.list[Task] = self._runner.run_statement(
            statement.execution_options(populate_existing=True), writes=False
        )
        return rows

    def update(self, task_id: int, data: TaskUpdate, *, user_id: str | None = None) -> Task:
        """Change the fields set in ``data``; raise NotFoundError if there is no such task.

        One UPDATE setting only those fields: concurrent updates of other fields are never
        overwritten, and the same field is last-writer-wins.
        """
        if not isinstance(data, TaskUpdate):
            raise ValidationError("update() takes a TaskUpdate", fields=("data",))
        where = _matching(task_id, user_id)
        values = data.validated().changes()
        return self._write_one(task_id, update(Task).values(**values), where)

    def toggle_complete(self, task_id: int, *, user_id: str | None = None) -> Task:
        """Flip ``completed`` atomically in SQL (no read-modify-write race)."""
        where = _matching(task_id, user_id)
        statement = update(Task).values(completed=not_(col(Task.completed)))
        return self._write_one(task_id, statement, where)

    def delete(self, task_id: int, *, user_id: str | None = None) -> bool:
        """Delete the task; True if it existed (and belonged to ``user_id``), else False."""
        where = _matching(task_id, user_id)
        statement, key = self._keyed(delete(Task), where)
        deleted = self._runner.run_statement(
            statement.returning(col(Task.id)).execution_options(synchronize_session=False),
            writes=True,
            idempotent=key is not None,
        )
        if deleted:
            return True
        if key is None:
            return False
        # Nothing deleted now: did an earlier attempt of this same call delete it?
        return bool(
            self._runner.run_statement(
                select(exists().where(task_operations.c.key == key)), writes=False
            )[0]
        )

    def _write_one(self, task_id: int, statement: Any, where: builtins.list[Any]) -> Task:
        """Run an UPDATE of one task returning it; NotFoundError when it matched nothing."""
        statement, key = self._keyed(statement.values(updated_at=utcnow()), where)
        rows: builtins.list[Task] = self._runner.run_statement(
            statement.returning(Task).execution_options(
                synchronize_session=False, populate_existing=True
            ),
            writes=True,
            idempotent=key is not None,
        )
        if rows:
            return rows[0]
        if key is not None:
            # Nothing updated now: if an earlier attempt of this same call applied the write
            # (its key is recorded), the call succeeded; return the task as it is now.
            applied = self._runner.run_statement(
                select(Task)
                .where(*where, exists().where(task_operations.c.key == key))
                .execution_options(populate_existing=True),
                writes=False,
            )
            if applied:
                found: Task = applied[0]
                return found
        raise NotFoundError(task_id)

    def _keyed(self, statement: Any, where: builtins.list[Any]) -> tuple[Any, str | None]:
        """Add WHERE clauses, and on PostgreSQL record the runner's operation key atomically.

        The key is inserted only if the task matches, in a CTE of the same statement, and the
        write runs only if the key was new: re-running the statement after a lost reply can
        never apply the write twice, and a recorded key proves the write committed.
        """
        key = self._runner.operation_key
        if key is None or self._runner.dialect_name != "postgresql":
            return statement.where(*where), None
        op = (
            postgresql.insert(task_operations)
            .from_select(["key"], select(literal(key)).where(exists().where(*where)))
            .on_conflict_do_nothing()
            .returning(task_operations.c.key)
            .cte("op")
        )
        statement = statement.where(*where, exists(select(op.c.key))).add_cte(op)
        if random.random() < _PURGE_PROBABILITY:
            purge = (
                delete(task_operations)
                .where(task_operations.c.created_at < utcnow() - OPERATION_KEY_RETENTION)
                .cte("purge")
            )
            statement = statement.add_cte(purge)
        return statement, key


def _matching(task_id: int, user_id: str | None) -> builtins.list[ColumnElement[bool]]:
    """WHERE clauses selecting one task, scoped to its owner when ``user_id`` is given."""
    clauses = [col(Task.id) == check_task_id(task_id)]
    owner = check_user_id(user_id, required=False)
    if owner is not None:
        clauses.append(col(Task.user_id) == owner)
    return clauses

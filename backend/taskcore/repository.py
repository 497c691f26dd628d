"""The task repository: one SQL statement per operation, run by the unit of work it belongs to."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Executable, delete, insert, not_, select, update
from sqlmodel import col

from taskcore.errors import NotFoundError, ValidationError
from taskcore.models import Task, TaskCreate, TaskUpdate, check_task_id, check_user_id, utcnow

__all__ = ["StatementRunner", "TaskRepository"]


class StatementRunner(Protocol):
    """What a repository needs from its unit of work: run one statement, get its scalars."""

    def run_statement(
        self,
        statement: Executable,
        *,
        writes: bool,
        parameters: builtins.list[dict[str, Any]] | None = None,
    ) -> builtins.list[Any]: ...


class TaskRepository:
    """Task operations inside a unit of work. It never begins, commits or rolls back.

    Every method validates its input first (a refused call sends nothing), then costs exactly
    one statement: writes use ``RETURNING`` so no second read is needed. ``user_id=None`` means
    unscoped (admin use); any string, ``""`` included, restricts the operation to that owner.
    """

    def __init__(self, runner: StatementRunner) -> None:
        self._runner = runner

    def create(self, data: TaskCreate, *, user_id: str) -> Task:
        """Store a new task for ``user_id`` and return it with its id and timestamps."""
        if not isinstance(data, TaskCreate):
            raise ValidationError("create() takes a TaskCreate", fields=("data",))
        owner = check_user_id(user_id, required=True)
        data = data.validated()
        statement = (
            insert(Task)
            .values(title=data.title, description=data.description, user_id=owner)
            .returning(Task)
        )
        rows: list[Task] = self._runner.run_statement(statement, writes=True)
        return rows[0]

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
            rows.append({"title": checked.title, "description": checked.description,
                         "user_id": owner})
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
        """Change the fields set in ``data``; raise NotFoundError if there is no such task."""
        if not isinstance(data, TaskUpdate):
            raise ValidationError("update() takes a TaskUpdate", fields=("data",))
        where = _matching(task_id, user_id)
        values = data.validated().changes()
        return self._write_one(task_id, update(Task).where(*where).values(**values))

    def toggle_complete(self, task_id: int, *, user_id: str | None = None) -> Task:
        """Flip ``completed`` atomically in SQL (no read-modify-write race)."""
        where = _matching(task_id, user_id)
        return self._write_one(
            task_id, update(Task).where(*where).values(completed=not_(col(Task.completed)))
        )

    def delete(self, task_id: int, *, user_id: str | None = None) -> bool:
        """Delete the task; True if it existed (and belonged to ``user_id``), else False."""
        statement = delete(Task).where(*_matching(task_id, user_id)).returning(col(Task.id))
        return bool(self._runner.run_statement(statement, writes=True))

    def _write_one(self, task_id: int, statement: Any) -> Task:
        rows: builtins.list[Task] = self._runner.run_statement(
            statement.values(updated_at=utcnow())
            .returning(Task)
            .execution_options(synchronize_session=False, populate_existing=True),
            writes=True,
        )
        if not rows:
            raise NotFoundError(task_id)
        return rows[0]


def _matching(task_id: int, user_id: str | None) -> builtins.list[ColumnElement[bool]]:
    """WHERE clauses selecting one task, scoped to its owner when ``user_id`` is given."""
    clauses = [col(Task.id) == check_task_id(task_id)]
    owner = check_user_id(user_id, required=False)
    if owner is not None:
        clauses.append(col(Task.user_id) == owner)
    return clauses

"""The spec's one-shot operations on the default handle (see :class:`taskcore.Database`).

Arguments are validated before the first statement, and nothing connects before it, so bad
input never waits for (or touches) a database.
"""

from __future__ import annotations

from collections.abc import Iterable

from taskcore._default import default_database
from taskcore.diagnostics import ConnectionReport
from taskcore.models import Task, TaskCreate, TaskUpdate

__all__ = [
    "check_connection",
    "create_many",
    "create_task",
    "delete_task",
    "get_task",
    "get_tasks",
    "init_db",
    "toggle_complete",
    "update_task",
]


def init_db() -> None:
    """Create the tables and indexes if missing: idempotent, no migrations."""
    default_database().init_db()


def create_task(data: TaskCreate, user_id: str, *, idempotency_key: str | None = None) -> Task:
    """Store a new task for ``user_id``; one round trip (see ``Database.create_task``)."""
    return default_database().create_task(data, user_id, idempotency_key=idempotency_key)


def get_task(task_id: int, user_id: str | None = None) -> Task | None:
    """The task, or None if it does not exist or belongs to another user; one round trip."""
    return default_database().get_task(task_id, user_id)


def get_tasks(
    user_id: str | None = None,
    *,
    completed: bool | None = None,
    limit: int | None = None,
    offset: int = 0,
    after_id: int | None = None,
) -> list[Task]:
    """Tasks of ``user_id`` (all users' when None), ordered by id; one round trip."""
    return default_database().get_tasks(
        user_id, completed=completed, limit=limit, offset=offset, after_id=after_id
    )


def update_task(
    task_id: int, data: TaskUpdate, user_id: str | None = None, *, operation_key: str | None = None
) -> Task:
    """Apply a partial update; NotFoundError if there is no such task; one round trip."""
    return default_database().update_task(task_id, data, user_id, operation_key=operation_key)


def delete_task(
    task_id: int, user_id: str | None = None, *, operation_key: str | None = None
) -> bool:
    """Delete the task; True if it was deleted, False if there was none; one round trip."""
    return default_database().delete_task(task_id, user_id, operation_key=operation_key)


def toggle_complete(
    task_id: int, user_id: str | None = None, *, operation_key: str | None = None
) -> Task:
    """Flip the task's completed flag; NotFoundError if there is none; one round trip."""
    return default_database().toggle_complete(task_id, user_id, operation_key=operation_key)


def create_many(items: Iterable[TaskCreate], user_id: str) -> list[Task]:
    """Store many tasks for ``user_id`` atomically, in order; one statement per 1,000 rows."""
    return default_database().create_many(items, user_id)


def check_connection() -> ConnectionReport:
    """Open a fresh connection once, time it, and ask the server its version."""
    return default_database().check_connection()

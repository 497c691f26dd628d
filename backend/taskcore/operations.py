"""The spec's one-shot operations and table creation, each its own retried unit of work.

Arguments are validated by the repository before the first statement, and a unit of work
connects only at its first statement, so bad input never waits for (or touches) a database.
"""

from __future__ import annotations

import uuid

from taskcore._statements import TASKS
from taskcore._translate import Phase, guarded
from taskcore.engine import current_settings, get_engine
from taskcore.errors import DatabaseError, TransientError
from taskcore.models import Task, TaskCreate, TaskUpdate, task_operations
from taskcore.retry import RetryPolicy, call_with_retries
from taskcore.unit_of_work import run_unit

__all__ = [
    "create_task",
    "delete_task",
    "get_task",
    "get_tasks",
    "init_db",
    "toggle_complete",
    "update_task",
]

# Concurrent CREATE TABLE IF NOT EXISTS can collide in the catalog (duplicate type or table);
# the loser simply finds the table on its next try.
_CREATE_RACE_SQLSTATES = {"23505", "42P07", "42710"}


def init_db() -> None:
    """Create the tables (tasks, task_operations) if missing: idempotent, no migrations."""

    def attempt() -> None:
        engine = get_engine()
        try:
            guarded(
                lambda: TASKS.metadata.create_all(engine, tables=[TASKS, task_operations]),
                Phase.STATEMENT,
            )
        except DatabaseError as error:
            if error.sqlstate not in _CREATE_RACE_SQLSTATES:
                raise
            race = TransientError(  # the other creator won: the next attempt finds the table
                "a concurrent init_db created the tables first", sqlstate=error.sqlstate
            )
        else:
            return
        raise race

    call_with_retries("init_db", attempt, RetryPolicy.from_settings(current_settings()))


def create_task(data: TaskCreate, user_id: str, *, idempotency_key: str | None = None) -> Task:
    """Store a new task for ``user_id``; one round trip (an autocommit INSERT ... RETURNING).

    Exactly once: the call carries an idempotency key (yours, or a generated one), so a retry
    after a lost reply returns the task the first attempt stored. Pass your own key (e.g. a
    job id) to make redelivered jobs return the existing task, across processes and restarts.
    """
    key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
    return run_unit(
        "create_task",
        lambda uow: uow.tasks.create(data, user_id=user_id, idempotency_key=key),
        single_statement=True,
    )


def get_task(task_id: int, user_id: str | None = None) -> Task | None:
    """The task, or None if it does not exist or belongs to another user; one round trip."""
    return run_unit(
        "get_task", lambda uow: uow.tasks.get(task_id, user_id=user_id), single_statement=True
    )


def get_tasks(
    user_id: str | None = None,
    *,
    completed: bool | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[Task]:
    """Tasks of ``user_id`` (all users' when None), ordered by id; one round trip.

    ``completed`` filters on the flag; ``limit``/``offset`` page through the result.
    """
    return run_unit(
        "get_tasks",
        lambda uow: uow.tasks.list(
            user_id=user_id, completed=completed, limit=limit, offset=offset
        ),
        single_statement=True,
    )


# The writes below carry a fresh operation key per call (the same one on every retry of that
# call): on PostgreSQL the key is recorded in the write's own statement, so a retry after a
# lost reply finds it and does not apply the write again. Still one round trip.


def update_task(task_id: int, data: TaskUpdate, user_id: str | None = None) -> Task:
    """Apply a partial update; NotFoundError if there is no such task; one round trip."""
    return run_unit(
        "update_task",
        lambda uow: uow.tasks.update(task_id, data, user_id=user_id),
        single_statement=True,
        operation_key=str(uuid.uuid4()),
    )


def delete_task(task_id: int, user_id: str | None = None) -> bool:
    """Delete the task; True if it was deleted, False if there was none; one round trip."""
    return run_unit(
        "delete_task",
        lambda uow: uow.tasks.delete(task_id, user_id=user_id),
        single_statement=True,
        operation_key=str(uuid.uuid4()),
    )


def toggle_complete(task_id: int, user_id: str | None = None) -> Task:
    """Flip the task's completed flag; NotFoundError if there is none; one round trip."""
    return run_unit(
        "toggle_complete",
        lambda uow: uow.tasks.toggle_complete(task_id, user_id=user_id),
        single_statement=True,
        operation_key=str(uuid.uuid4()),
    )

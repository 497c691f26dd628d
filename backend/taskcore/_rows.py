"""Task objects from rows of the tasks table, at about the cost of a dict update.

The repository's rows come from the database, which already enforced every constraint, so a
Task is built without validation and without SQLAlchemy's per-attribute instrumentation:
``object.__new__``, the column values into ``__dict__``, pydantic's three slots. SQLAlchemy's
per-instance state (needed only if the task is later added to a Session or has an attribute
set) is created on first use by :class:`_StateOnFirstUse`, as SQLAlchemy itself would create
it, so a task that is only read never pays for it (nor for its weakref callback).

Timestamps: on PostgreSQL psycopg2 returns aware datetimes in the session's time zone; they
are converted to UTC here (usually a no-op: ``timezone(timedelta(0))`` *is* ``UTC``), which is
why the hot path skips ``UTCDateTime``'s per-value processor there (``_sql.Compiled``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import configure_mappers
from sqlalchemy.orm.instrumentation import manager_of_class
from sqlalchemy.orm.state import InstanceState

from taskcore._statements import TASKS
from taskcore.models import Task

__all__ = ["task_from_row", "tasks_from_rows"]

_COLUMNS = tuple(TASKS.c.keys())
_FIELDS = frozenset(_COLUMNS)
_CREATED, _UPDATED = _COLUMNS.index("created_at"), _COLUMNS.index("updated_at")
_new = object.__new__
_set_fields = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_STATE = "_sa_instance_state"


_configured = False


def _configure_mappers() -> None:
    """Configure SQLAlchemy's mappers once: Core statements alone never trigger it, and the
    instrumented attributes of an unconfigured mapper cannot be read."""
    global _configured  # noqa: PLW0603 - set once; configure_mappers is idempotent
    configure_mappers()
    _configured = True


class _StateOnFirstUse:
    """Task's ``_sa_instance_state`` until an instance has its own: made on first access."""

    def __get__(self, instance: Task | None, owner: type[Task]) -> Any:
        if instance is None:
            return self
        manager = manager_of_class(owner)
        state: InstanceState[Task] = manager._state_constructor(instance, manager)
        instance.__dict__[_STATE] = state  # found before this (non-data) descriptor from now on
        return state


# Set on the class after it was built (a class-body name with an underscore would be a pydantic
# private attribute), bypassing the declarative metaclass's own attribute handling.
type.__setattr__(Task, _STATE, _StateOnFirstUse())


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def task_from_row(row: Sequence[Any]) -> Task:
    """A Task from a row of the tasks table (all columns, in table order)."""
    return tasks_from_rows((row,))[0]


def tasks_from_rows(rows: Iterable[Sequence[Any]]) -> list[Task]:
    """Tasks from rows of the tasks table (all columns, in table order), one loop for all."""
    if not _configured:
        _configure_mappers()
    tasks: list[Task] = []
    append = tasks.append
    for row in rows:
        task: Task = _new(Task)
        values = task.__dict__
        values.update(zip(_COLUMNS, row, strict=True))
        _set_fields(task, set(_FIELDS))
        _set_extra(task, None)
        _set_private(task, None)
        if row[_CREATED].tzinfo is not UTC:
            values["created_at"] = _utc(row[_CREATED])
        if row[_UPDATED].tzinfo is not UTC:
            values["updated_at"] = _utc(row[_UPDATED])
        append(task)
    return tasks

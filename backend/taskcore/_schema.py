"""Creating the tables and indexes if missing (no migrations: that is out of scope)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Index

from taskcore import _sqlalchemy
from taskcore._statements import TASKS
from taskcore.errors import DatabaseError, TransientError
from taskcore.models import task_operations

if TYPE_CHECKING:
    from taskcore.unit_of_work import UnitOfWork

__all__ = ["USER_ID_INDEX", "create_schema"]

#: Serves a user's tasks in id order (keyset pages, LIMIT/OFFSET) without sorting them all.
#: Declared here, not on the model, so it is also created on a tasks table that predates it.
USER_ID_INDEX = Index("ix_tasks_user_id_id", TASKS.c.user_id, TASKS.c.id)

# Concurrent CREATE TABLE IF NOT EXISTS can collide in the catalog (duplicate type or table);
# the loser simply finds the table on its next try.
_CREATE_RACE_SQLSTATES = {"23505", "42P07", "42710"}


def create_schema(uow: UnitOfWork) -> None:
    """Create tasks, task_operations and the (user_id, id) index in the unit's transaction."""
    uow._ready(writes=True)
    connection = _sqlalchemy.connection(uow)
    try:
        _sqlalchemy.within_deadline(
            uow, lambda: TASKS.metadata.create_all(connection, tables=[TASKS, task_operations])
        )
        _sqlalchemy.within_deadline(uow, lambda: USER_ID_INDEX.create(connection, checkfirst=True))
    except DatabaseError as error:
        if error.sqlstate not in _CREATE_RACE_SQLSTATES:
            raise
        race = TransientError(  # the other creator won: the next attempt finds the tables
            "a concurrent init_db created the tables first", sqlstate=error.sqlstate
        )
    else:
        return
    uow._doom(race)
    raise race

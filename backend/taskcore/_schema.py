"""Creating the tables and indexes if missing (no migrations: that is out of scope)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from sqlalchemy import Index

from taskcore import _sqlalchemy
from taskcore._statements import GENERATED_KEY, TASKS
from taskcore.errors import DatabaseError, TransientError
from taskcore.models import task_operations

if TYPE_CHECKING:
    from taskcore.unit_of_work import UnitOfWork

__all__ = ["CALL_KEYS_INDEX", "USER_ID_INDEX", "create_schema"]

#: Serves a user's tasks in id order (keyset pages, LIMIT/OFFSET) without sorting them all.
#: Declared here, not on the model, so it is also created on a tasks table that predates it.
USER_ID_INDEX = Index("ix_tasks_user_id_id", TASKS.c.user_id, TASKS.c.id)
#: The keys generated per call, oldest first, so that purging them never walks past the caller
#: keys that are kept longer (_statements._purge_delete). Partial: only generated keys are in it
#: (SQLite stores none, so there it stays empty).
CALL_KEYS_INDEX = Index(
    "ix_task_operations_call_keys",
    task_operations.c.created_at,
    postgresql_where=GENERATED_KEY,
    sqlite_where=GENERATED_KEY,
)

# Concurrent CREATE TABLE IF NOT EXISTS can collide in the catalog (duplicate type or table);
# the loser simply finds the table on its next try.
_CREATE_RACE_SQLSTATES = {"23505", "42P07", "42710"}


def create_schema(uow: UnitOfWork) -> None:
    """Create the tables and the indexes that are missing, in the unit's transaction."""
    uow._ready(writes=True)
    connection = _sqlalchemy.connection(uow)
    try:
        _sqlalchemy.within_deadline(
            uow, lambda: TASKS.metadata.create_all(connection, tables=[TASKS, task_operations])
        )
        for index in (USER_ID_INDEX, CALL_KEYS_INDEX):  # on tables that predate them
            _sqlalchemy.within_deadline(
                uow, functools.partial(index.create, connection, checkfirst=True)
            )
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

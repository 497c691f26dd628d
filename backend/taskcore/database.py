"""The Database handle: one database's pool, settings, retry budget and events, and its calls."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any, Self, TypeVar, Unpack

from taskcore._handle import HandleCore
from taskcore._isolation import isolated
from taskcore._oneshot import run_keyed, run_oneshot
from taskcore._pool import PoolStats
from taskcore.config import load_settings, settings_for
from taskcore.diagnostics import ConnectionReport, check_connection
from taskcore.errors import NotFoundError
from taskcore.events import Event
from taskcore.models import Task, TaskCreate, TaskUpdate
from taskcore.repository import TaskRepository, call_key
from taskcore.unit_of_work import Isolation, RunOptions, UnitOfWork

__all__ = ["Database"]

T = TypeVar("T")


class Database(HandleCore):
    """A handle on one database. It never reads the environment or a ``.env`` file.

    ``Database("postgresql://...", deadline=10, pool_size=20)`` takes the URL and settings
    (names as in :class:`taskcore.Settings`). Several handles live side by side, each with its
    own pool, retry budget and event subscribers; a forked child opens its own connections.
    Nothing connects until the first call.
    """

    def __init__(self, url: str, **settings: Any) -> None:
        self._setup(settings_for(url, **settings))

    @classmethod
    def from_environment(cls, **overrides: Any) -> Database:
        """A handle configured like the default: DATABASE_URL, TASKCORE_*, ./.env, overrides."""
        return cls._from_settings(load_settings(**overrides))

    @classmethod
    def _from_settings(cls, settings: Any) -> Database:
        database = cls.__new__(cls)
        database._setup(settings)
        return database

    def __repr__(self) -> str:
        state = " isolated" if self.is_isolated else ""
        return f"<Database {self.settings.masked_url}{state}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    # -- the public calls --------------------------------------------------------------------

    def unit(
        self,
        *,
        read_only: bool = False,
        isolation: Isolation | None = None,
        statement_timeout: float | None = None,
        deadline: float | None = None,
    ) -> UnitOfWork:
        """A unit of work on this database (use it in a ``with`` block)."""
        return UnitOfWork(
            self,
            read_only=read_only,
            isolation=isolation,
            statement_timeout=statement_timeout,
            deadline=deadline,
        )

    def run(self, fn: Callable[[UnitOfWork], T], **options: Unpack[RunOptions]) -> T:
        """Run ``fn`` in a fresh unit of work, re-running it whole on a transient failure.

        A transient failure is one raised before COMMIT was sent (disconnect, cold start,
        serialization failure, deadlock, exhausted pool): nothing was applied. A lost COMMIT
        reply is resolved through the server; if that fails, CommitOutcomeUnknownError.
        Everything, re-runs included, happens within one deadline.
        """
        name = getattr(fn, "__qualname__", type(fn).__name__)
        return self._run(f"UnitOfWork.run({name})", fn, **options)

    def create_task(
        self,
        data: TaskCreate,
        user_id: str,
        *,
        idempotency_key: str | None = None,
        deadline: float | None = None,
    ) -> Task:
        """Store a new task for ``user_id``; one round trip (an autocommit INSERT ... RETURNING).

        Exactly once: the call carries an idempotency key (yours, or a generated one), so a
        retry after a lost reply returns the task the first attempt stored. Pass your own key
        (e.g. a job id) to make redelivered jobs return the existing task.
        """
        key = idempotency_key if idempotency_key is not None else call_key()
        return run_oneshot(
            self,
            "create_task",
            lambda tasks: tasks.create(data, user_id=user_id, idempotency_key=key),
            deadline=deadline,
        )

    def get_task(
        self, task_id: int, user_id: str | None = None, *, deadline: float | None = None
    ) -> Task | None:
        """The task, or None if it does not exist or belongs to another user; one round trip."""
        return run_oneshot(
            self, "get_task", lambda tasks: tasks.get(task_id, user_id=user_id), deadline=deadline
        )

    def get_tasks(
        self,
        user_id: str | None = None,
        *,
        completed: bool | None = None,
        limit: int | None = None,
        offset: int = 0,
        after_id: int | None = None,
        deadline: float | None = None,
    ) -> list[Task]:
        """Tasks of ``user_id`` (all users' when None), ordered by id; one round trip.

        ``completed`` filters on the flag. Page with ``limit`` and ``after_id`` (the last id of
        the previous page: served by the (user_id, id) index however deep), or ``offset``.
        """
        return run_oneshot(
            self,
            "get_tasks",
            lambda tasks: tasks.list(
                user_id=user_id, completed=completed, limit=limit, offset=offset, after_id=after_id
            ),
            deadline=deadline,
        )

    # The writes below carry an operation key (a fresh one per call, the same on every retry of
    # that call, or yours): on PostgreSQL it is recorded in the write's own statement, so a
    # retry after a lost reply finds it and does not apply the write again. Still 1 round trip.

    def update_task(
        self,
        task_id: int,
        data: TaskUpdate,
        user_id: str | None = None,
        *,
        operation_key: str | None = None,
        deadline: float | None = None,
    ) -> Task:
        """Apply a partial update; NotFoundError if there is no such task; one round trip."""
        return run_keyed(
            self,
            "update_task",
            lambda tasks: tasks.update(task_id, data, user_id=user_id),
            lambda tasks: _existing(tasks, task_id, user_id),
            operation_key,
            deadline,
        )

    def delete_task(
        self,
        task_id: int,
        user_id: str | None = None,
        *,
        operation_key: str | None = None,
        deadline: float | None = None,
    ) -> bool:
        """Delete the task; True if it was deleted, False if there was none; one round trip."""
        return run_keyed(
            self,
            "delete_task",
            lambda tasks: tasks.delete(task_id, user_id=user_id),
            lambda tasks: True,
            operation_key,
            deadline,
        )

    def toggle_complete(
        self,
        task_id: int,
        user_id: str | None = None,
        *,
        operation_key: str | None = None,
        deadline: float | None = None,
    ) -> Task:
        """Flip the task's completed flag; NotFoundError if there is none; one round trip."""
        return run_keyed(
            self,
            "toggle_complete",
            lambda tasks: tasks.toggle_complete(task_id, user_id=user_id),
            lambda tasks: _existing(tasks, task_id, user_id),
            operation_key,
            deadline,
        )

    def create_many(
        self, items: Iterable[TaskCreate], user_id: str, *, deadline: float | None = None
    ) -> list[Task]:
        """Store many tasks for ``user_id`` atomically, in order; one statement per 1,000."""
        batch = list(items)
        return self._run(
            "create_many",
            lambda uow: uow.tasks.create_many(batch, user_id=user_id),
            deadline=deadline,
        )

    def init_db(self, *, deadline: float | None = None) -> None:
        """Create the tables and indexes if missing: idempotent, no migrations."""
        from taskcore._schema import create_schema

        self._run("init_db", create_schema, deadline=deadline)

    def check_connection(self, *, deadline: float | None = None) -> ConnectionReport:
        """Open a fresh connection once, time it, and ask the server its version."""
        return check_connection(self, deadline=deadline)

    def subscribe(self, callback: Callable[[Event], object]) -> Callable[[], None]:
        """Call ``callback(event)`` for this handle's events; returns an unsubscribe function."""
        return self.events.subscribe(callback)

    def counters(self) -> dict[str, int]:
        """This handle's event counters (``retries``, ``units_committed``, ...)."""
        return self.events.counters()

    def stats(self) -> PoolStats:
        """The pool's counters: connections open, idle, in use, waiting, opened so far."""
        return self._connections().stats()

    def dispose(self) -> None:
        """Close the pooled connections; the next call opens new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.dispose()

    close = dispose

    def isolated(self) -> contextlib.AbstractContextManager[Database]:
        """A handle whose every call runs inside one transaction rolled back at the end.

        For tests (see docs/testing-your-app.md): units commit by releasing a savepoint,
        one-shots run in savepoints, so the code under test sees its own writes and leaves
        nothing behind. Calls share one connection; units' isolation levels and read-only
        mode are not applied (the outer transaction's are).
        """
        return isolated(self)


def _existing(tasks: TaskRepository, task_id: int, user_id: str | None) -> Task:
    """The task as it is now (after an earlier delivery applied the write), or NotFoundError."""
    task = tasks.get(task_id, user_id=user_id)
    if task is None:
        raise NotFoundError(task_id)
    return task

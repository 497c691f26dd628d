"""The Database handle: one database's pool, settings, retry budget and events, and its calls."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Self, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import Dialect

from taskcore import events
from taskcore._connect import connector
from taskcore._deadline import Deadline
from taskcore._link import Link, lending_engine
from taskcore._oneshot import run_oneshot
from taskcore._pool import ConnectionSource, Pool, Pooled, PoolStats
from taskcore._translate import Phase, guarded, translate
from taskcore.budget import RetryBudget
from taskcore.config import Settings, load_settings, settings_for
from taskcore.diagnostics import ConnectionReport, check_connection
from taskcore.errors import PoolExhaustedError, TaskcoreError
from taskcore.events import Event, EventHub
from taskcore.models import Task, TaskCreate, TaskUpdate
from taskcore.repository import caller_key
from taskcore.retry import RetryPolicy, call_with_retries
from taskcore.unit_of_work import Isolation, UnitOfWork

__all__ = [
    "Database",
    "configure",
    "default_database",
    "dispose",
    "set_default_database",
    "use_database",
]

T = TypeVar("T")
_log = logging.getLogger("taskcore")


class Database:
    """A handle on one database. It never reads the environment or a ``.env`` file.

    ``Database("postgresql://...", deadline=10, pool_size=20)`` takes the URL and settings
    (names as in :class:`taskcore.Settings`). Several handles live side by side, each with its
    own pool, retry budget and event subscribers; a forked child opens its own connections.
    Nothing connects until the first call.
    """

    settings: Settings
    #: True for the handle ``isolated()`` yields: everything runs in one rolled-back transaction.
    is_isolated: bool

    def __init__(self, url: str, **settings: Any) -> None:
        self._setup(settings_for(url, **settings))

    @classmethod
    def from_environment(cls, **overrides: Any) -> Database:
        """A handle configured like the default: DATABASE_URL, TASKCORE_*, ./.env, overrides."""
        return cls._from_settings(load_settings(**overrides))

    @classmethod
    def _from_settings(cls, settings: Settings) -> Database:
        database = cls.__new__(cls)
        database._setup(settings)
        return database

    def _setup(self, settings: Settings) -> None:
        self.settings = settings
        self.dialect: Dialect = settings.url.get_dialect()()
        self.policy = RetryPolicy.from_settings(settings)
        self.events = EventHub(parent=events.process)
        self.is_isolated = False
        self._lock = threading.Lock()
        self._pool: ConnectionSource | None = None
        self._engine: Engine | None = None
        self._budget: tuple[int, RetryBudget] | None = None
        self._savepoints = itertools.count(1)

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

    def run(
        self,
        fn: Callable[[UnitOfWork], T],
        *,
        read_only: bool = False,
        isolation: Isolation | None = None,
        statement_timeout: float | None = None,
        deadline: float | None = None,
        policy: RetryPolicy | None = None,
    ) -> T:
        """Run ``fn`` in a fresh unit of work, re-running it whole on a transient failure.

        A transient failure is one raised before COMMIT was sent (disconnect, cold start,
        serialization failure, deadlock, exhausted pool): nothing was applied. A lost COMMIT
        reply is resolved through the server; if that fails, CommitOutcomeUnknownError.
        Everything, re-runs included, happens within one deadline.
        """
        name = getattr(fn, "__qualname__", type(fn).__name__)
        return self._run(
            f"UnitOfWork.run({name})",
            fn,
            read_only=read_only,
            isolation=isolation,
            statement_timeout=statement_timeout,
            deadline=deadline,
            policy=policy,
        )

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
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
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
        return run_oneshot(
            self,
            "update_task",
            lambda tasks: tasks.update(task_id, data, user_id=user_id),
            operation_key=_key(operation_key),
            deadline=deadline,
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
        return run_oneshot(
            self,
            "delete_task",
            lambda tasks: tasks.delete(task_id, user_id=user_id),
            operation_key=_key(operation_key),
            deadline=deadline,
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
        return run_oneshot(
            self,
            "toggle_complete",
            lambda tasks: tasks.toggle_complete(task_id, user_id=user_id),
            operation_key=_key(operation_key),
            deadline=deadline,
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

    @contextlib.contextmanager
    def isolated(self) -> Iterator[Database]:
        """A handle whose every call runs inside one transaction rolled back at the end.

        For tests: units commit by releasing a savepoint, one-shots run in savepoints, so the
        code under test sees its own writes and leaves nothing behind. All calls share one
        connection (calls from other threads wait their turn). Isolation levels and read-only
        mode of units are not applied (the outer transaction's are).
        """
        deadline = Deadline(self.settings.deadline)
        link = self._open_link(deadline)
        inner = Database._from_settings(self.settings)
        inner.is_isolated = True
        inner._pool = _Pinned(link.pooled)
        try:
            link.begin(isolation=None, read_only=False, deadline=deadline, savepoint=False)
            yield inner
        finally:
            with contextlib.suppress(TaskcoreError):
                link.rollback(Deadline(self.settings.deadline))
            link.close()

    # -- what units of work and one-shots use --------------------------------------------------

    @property
    def budget(self) -> RetryBudget | None:
        """This process's retry budget for the handle (None when turned off)."""
        if not self.settings.retry_budget:
            return None
        held = self._budget
        if held is None or held[0] != os.getpid():  # each process has its own budget
            s = self.settings
            held = (
                os.getpid(),
                RetryBudget(
                    ratio=s.retry_budget_ratio,
                    floor=s.retry_budget_floor,
                    window=s.retry_budget_window,
                    probe_interval=s.retry_probe_interval,
                ),
            )
            self._budget = held
        return held[1]

    def _connections(self) -> ConnectionSource:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    s = self.settings
                    self._pool = Pool(
                        connector(s),
                        size=s.pool_size,
                        idle_timeout=s.pool_idle_timeout,
                        recycle=s.pool_recycle,
                        on_stale=self._stale_replaced,
                    )
                pool = self._pool
        return pool

    def _stale_replaced(self) -> None:
        _log.info(
            "replacing a pooled connection the server closed",
            extra={"taskcore_event": "stale_connection_replaced"},
        )
        self.events.emit(events.StaleConnectionReplaced())

    def _open_link(self, deadline: Deadline, *, oneshot: bool = False) -> Link:
        """A connection from the pool; for a one-shot, in autocommit (or a savepoint)."""
        pool = self._connections()
        try:
            pooled = pool.acquire(deadline)
        except PoolExhaustedError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated below, outside the except block
            error = translate(exc, Phase.CONNECT)
        else:
            link = Link(pool, pooled, self.dialect)
            if oneshot:
                if self.is_isolated:
                    name = link.savepoint_name = self._savepoint_name()
                    self._guard(link, lambda: link.savepoint(name, deadline))
                else:
                    link.autocommit()
            return link
        raise error

    def _guard(self, link: Link, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException:
            link.close(reuse=False)
            raise

    def _begin(self, unit: UnitOfWork, deadline: Deadline, *, retry: bool) -> Link:
        """Check out a connection and begin the unit's transaction (connecting is retried)."""

        def attempt() -> Link:
            link = self._open_link(deadline)
            savepoint = self.is_isolated
            if savepoint:
                link.savepoint_name = self._savepoint_name()
            self._guard(
                link,
                lambda: link.begin(
                    isolation=unit.isolation,
                    read_only=unit.read_only,
                    deadline=deadline,
                    savepoint=savepoint,
                ),
            )
            return link

        if not retry:
            return attempt()
        return call_with_retries(
            "connect", attempt, self.policy, deadline, budget=self.budget, hub=self.events
        )

    def _end(self, link: Link, *, commit: bool, deadline: Deadline) -> None:
        """COMMIT or ROLLBACK (on an isolated handle: release or undo the unit's savepoint)."""
        name = link.savepoint_name
        if name is None:
            link.commit(Phase.STATEMENT, deadline) if commit else link.rollback(deadline)
            return
        if not commit:
            link.rollback_to(name, deadline)
        link.release(name, deadline)

    def _oneshot_done(self, link: Link, *, ok: bool, deadline: Deadline) -> None:
        try:
            if link.savepoint_name is not None and not link.broken:
                self._end(link, commit=ok, deadline=deadline)
        finally:
            link.close()

    def _savepoint_name(self) -> str:
        return f"taskcore_{next(self._savepoints)}"

    def _lending_engine(self, deadline: Deadline) -> Engine:
        """The SQLAlchemy Engine for ORM sessions and arbitrary Core statements (built once)."""
        if self._engine is None:
            fresh = guarded(lambda: connector(self.settings)(deadline), Phase.CONNECT)
            try:
                engine = guarded(lambda: lending_engine(self.settings.url, fresh), Phase.CONNECT)
            finally:
                with contextlib.suppress(Exception):
                    fresh.close()
            with self._lock:
                self._engine = self._engine or engine
        return self._engine

    def _unit_started(self, unit: UnitOfWork) -> None:
        unit._started = time.monotonic()

    def _unit_finished(self, unit: UnitOfWork) -> None:
        self.events.emit(
            events.UnitFinished(
                unit._operation,
                unit.status.value,
                time.monotonic() - unit._started,
                unit._attempt,
                unit.read_only,
            )
        )

    def _run(
        self,
        operation: str,
        fn: Callable[[UnitOfWork], T],
        *,
        read_only: bool = False,
        isolation: Isolation | None = None,
        statement_timeout: float | None = None,
        deadline: float | None = None,
        policy: RetryPolicy | None = None,
    ) -> T:
        clock = Deadline(deadline or self.settings.deadline)
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            unit = UnitOfWork(
                self, read_only=read_only, isolation=isolation, statement_timeout=statement_timeout
            )
            unit._deadline, unit._operation, unit._attempt = clock, operation, attempts
            with unit:
                return fn(unit)

        return call_with_retries(
            operation, attempt, policy or self.policy, clock, budget=self.budget, hub=self.events
        )


def _key(operation_key: str | None) -> str:
    """A fresh key for this call (UUIDv4), or the stored form of the caller's."""
    return str(uuid.uuid4()) if operation_key is None else caller_key(operation_key)


class _Pinned:
    """The one connection of an isolated handle, lent to one call at a time."""

    def __init__(self, pooled: Pooled) -> None:
        self._pooled = pooled
        self._lock = threading.RLock()

    def acquire(self, deadline: Deadline) -> Pooled:
        if not self._lock.acquire(timeout=deadline.remaining()):
            raise PoolExhaustedError("the isolated test connection stayed busy until the deadline")
        return self._pooled

    def release(self, pooled: Pooled, *, reuse: bool) -> None:
        self._lock.release()

    def stats(self) -> PoolStats:
        return PoolStats(1, 1, 0, 1, 0, 0, 0)

    def dispose(self) -> None:
        pass


# -- the default handle ------------------------------------------------------------------------

_default_lock = threading.Lock()
_default: Database | None = None
_routed: list[Database] = []


def default_database() -> Database:
    """The handle module-level calls use: built on first use from DATABASE_URL / .env."""
    global _default  # noqa: PLW0603 - the one process-wide default, built lazily
    if _routed:
        return _routed[-1]
    database = _default
    if database is None:
        with _default_lock:
            if _default is None:
                _default = Database.from_environment()
            database = _default
    return database


def configure(**overrides: Any) -> Settings:
    """Replace the default handle's settings (keyword overrides win over the environment).

    Validates at once and disposes the current default handle's pool; the next call builds a
    new one. With no arguments it re-reads the environment.
    """
    global _default
    database = Database.from_environment(**overrides)
    with _default_lock:
        old, _default = _default, database
    if old is not None:
        old.dispose()
    return database.settings


def set_default_database(database: Database) -> None:
    """Make ``database`` the default handle (module-level calls and ``UnitOfWork()`` use it)."""
    global _default
    with _default_lock:
        old, _default = _default, database
    if old is not None and old is not database:
        old.dispose()


@contextlib.contextmanager
def use_database(database: Database) -> Iterator[Database]:
    """Route every default-handle call to ``database`` while the block runs (process-wide)."""
    _routed.append(database)
    try:
        yield database
    finally:
        _routed.remove(database)


def dispose() -> None:
    """Close the default handle's pooled connections (it stays usable)."""
    database = _routed[-1] if _routed else _default
    if database is not None:
        database.dispose()

"""The unit of work: one connection, one transaction, declared states, whole-unit retries."""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypedDict, TypeVar, Unpack

from sqlalchemy import Connection, Executable
from sqlalchemy.sql import ClauseElement
from sqlmodel import Session

from taskcore import _sqlalchemy
from taskcore._commit import commit_protected, release, rollback_quietly, set_statement_timeout
from taskcore._deadline import Deadline
from taskcore._link import Link
from taskcore._translate import Phase
from taskcore.errors import TaskcoreError, UsageError
from taskcore.repository import TaskRepository
from taskcore.retry import RetryPolicy

if TYPE_CHECKING:
    from taskcore.database import Database

__all__ = ["Isolation", "Status", "UnitOfWork"]

T = TypeVar("T")
_log = logging.getLogger("taskcore")
Isolation = Literal["read committed", "repeatable read", "serializable"]
_ISOLATIONS = ("read committed", "repeatable read", "serializable")


class Status(enum.Enum):
    """Where a unit of work is in its life (allowed moves: ``_MOVES``)."""

    NEW = "new"
    ACTIVE = "active"
    DOOMED = "doomed"  # a statement failed: the unit can only roll back (or a savepoint undoes it)
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"  # COMMIT failed: see the exception for whether the outcome is known


_MOVES: dict[Status, frozenset[Status]] = {
    Status.NEW: frozenset({Status.ACTIVE}),
    Status.ACTIVE: frozenset({Status.DOOMED, Status.COMMITTED, Status.FAILED, Status.ROLLED_BACK}),
    Status.DOOMED: frozenset({Status.ACTIVE, Status.ROLLED_BACK}),
    Status.COMMITTED: frozenset(),
    Status.ROLLED_BACK: frozenset(),
    Status.FAILED: frozenset(),
}


def _check_options(
    isolation: str | None, statement_timeout: float | None, deadline: float | None
) -> None:
    if isolation is not None and isolation not in _ISOLATIONS:
        raise UsageError(f"isolation must be one of {sorted(_ISOLATIONS)}")
    if statement_timeout is not None and not 0 < statement_timeout < 2**31 / 1000:
        raise UsageError("statement_timeout must be a positive number of seconds")
    if deadline is not None and not 0 < deadline < float("inf"):
        raise UsageError("deadline must be a positive number of seconds")


class RunOptions(TypedDict, total=False):
    """Keyword options of ``run``: as for ``UnitOfWork``, plus a RetryPolicy."""

    read_only: bool
    isolation: Isolation | None
    statement_timeout: float | None
    deadline: float | None
    policy: RetryPolicy | None


class UnitOfWork:
    """One transaction: commits when the ``with`` block ends cleanly, rolls back when it raises.

    The caller's own exception comes out unchanged; database errors raised inside the block are
    already taskcore errors. A unit of work is used once. The connection is taken at the first
    statement, so a block that refuses its input sends nothing. Each statement and the COMMIT
    is bounded by the deadline (``deadline`` seconds, default the ``deadline`` setting); use
    :meth:`run` (or ``Database.run``) to re-run a whole unit on a transient failure.
    """

    def __init__(
        self,
        database: Database | None = None,
        *,
        read_only: bool = False,
        isolation: Isolation | None = None,
        statement_timeout: float | None = None,
        deadline: float | None = None,
    ) -> None:
        _check_options(isolation, statement_timeout, deadline)
        self.read_only = read_only
        self.isolation = isolation
        #: Seconds any one statement may run (PostgreSQL; SET LOCAL, so pooler-safe).
        self.statement_timeout = statement_timeout
        self.status = Status.NEW
        #: Not used by units (one-shot writes carry keys); part of the repository's protocol.
        self.operation_key: str | None = None
        self.dialect_name = ""
        self._database = database
        self._seconds = deadline
        self._deadline: Deadline | None = None  # set for a whole call by Database.run
        self._operation = "UnitOfWork"
        self._attempt = 1
        self._link: Link | None = None
        self._sa: Connection | None = None
        self._session: Session | None = None
        self._failure: TaskcoreError | None = None
        self._callbacks: list[Callable[[], object]] = []
        self._tasks: TaskRepository | None = None
        self._wrote = False
        self._started = 0.0

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"<UnitOfWork status={self.status.value} {mode} isolation={self.isolation}>"

    def _move(self, to: Status) -> None:
        if to not in _MOVES[self.status]:
            raise UsageError(
                f"the unit of work is {self.status.value}; it cannot become {to.value}"
            )
        self.status = to

    def _require_active(self) -> None:
        if self.status is not Status.ACTIVE and self.status is not Status.DOOMED:
            raise UsageError(f"the unit of work is {self.status.value}, not active")

    @property
    def database(self) -> Database:
        """The handle this unit runs on."""
        if self._database is None:
            from taskcore._default import default_database

            self._database = default_database()
        return self._database

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self.status is not Status.NEW:
            raise UsageError(f"a unit of work is used once; this one is {self.status.value}")
        self.dialect_name = self.database.dialect.name
        self._move(Status.ACTIVE)
        self.database._unit_started(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None and self.status is Status.ACTIVE:
            try:
                self._commit()
            finally:
                self.database._unit_finished(self)
            callbacks, self._callbacks = self._callbacks, []
            for callback in callbacks:
                callback()
            return
        rollback_quietly(self)
        self.database._unit_finished(self)
        if exc is None and self._failure is not None:
            raise self._failure  # the block swallowed a database error: committing would be wrong

    def _time(self) -> Deadline:
        if self._deadline is not None:
            return self._deadline
        return Deadline(self._seconds or self.database.settings.deadline)

    def _commit(self) -> None:
        link = self._link
        try:
            if link is not None:
                deadline = self._time()
                _sqlalchemy.flush(self)
                commit_protected(self, link, deadline, wrote=self._wrote)
        except TaskcoreError:
            self._move(Status.FAILED)
            release(self, reuse=False)
            raise
        self._move(Status.COMMITTED)
        release(self)

    # -- what the block uses -----------------------------------------------------------------

    @property
    def tasks(self) -> TaskRepository:
        """The task repository bound to this unit of work."""
        self._require_active()
        if self._tasks is None:
            self._tasks = TaskRepository(self)
        return self._tasks

    @property
    def session(self) -> Session:
        """A SQLModel session inside this unit's transaction, for ORM use.

        It joins the unit's transaction (its commit does not end it) and is flushed before the
        unit's own statements and COMMIT. Errors raised through it are not translated: use
        :meth:`run_statement` for taskcore's error handling.
        """
        return _sqlalchemy.session(self)

    def on_commit(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` after a successful COMMIT (in order; never after a rollback).

        If a callback raises, the work is already committed: the exception propagates and the
        remaining callbacks are skipped.
        """
        self._require_active()
        self._callbacks.append(callback)

    def claim(self, key: str) -> bool:
        """Record ``key`` with this unit: True if new, False if a committed unit recorded it.

        Makes a redelivered job's unit a no-op: ``if uow.claim(job_id): ...``. Keys are kept
        for the operation-key retention (contracts/exactly-once.md).
        """
        return self.tasks.claim(key)

    def savepoint(self) -> contextlib.AbstractContextManager[None]:
        """A nested block: an exception inside rolls back only that block's changes, then
        propagates; catch it outside the ``with`` to carry on with the rest of the unit."""
        return _sqlalchemy.savepoint(self)

    # -- running statements ------------------------------------------------------------------

    def fetch(
        self,
        statement: ClauseElement,
        params: Mapping[str, Any],
        *,
        writes: bool,
        idempotent: bool = False,
    ) -> list[Any]:
        """Run a cached statement shape of the repository (the hot path); rows as sequences."""
        link = self._ready(writes)
        try:
            return link.fetch(statement, params, Phase.STATEMENT, self._time())
        except TaskcoreError as error:
            self._doom(error)
            raise

    def columns(self, statement: ClauseElement) -> tuple[str, ...]:
        """Column names of ``statement``'s rows."""
        return self._open().columns(statement)

    def run_statement(
        self,
        statement: Executable,
        parameters: dict[str, Any] | list[dict[str, Any]] | None = None,
        *,
        writes: bool,
    ) -> Sequence[Any]:
        """Run any SQLAlchemy Core statement in this unit; its rows ([] if it returns none).

        Errors come out as taskcore errors. A list of ``parameters`` runs it as executemany.
        """
        return _sqlalchemy.run_statement(self, statement, parameters, writes=writes)

    def _ready(self, writes: bool) -> Link:
        self._require_active()
        if writes and self.read_only:
            raise UsageError("this unit of work is read-only")
        if self._failure is not None:
            raise UsageError("an earlier statement in this unit of work failed; it must roll back")
        link = self._open()
        _sqlalchemy.flush(self)
        self._wrote = self._wrote or writes
        return link

    def _doom(self, error: TaskcoreError) -> None:
        self._failure = error
        if self.status is Status.ACTIVE:
            self._move(Status.DOOMED)

    def _open(self) -> Link:
        """Check out a connection and begin (first statement only)."""
        if self._link is None:
            self._require_active()
            self._link = self.database._begin(self, self._time(), retry=self._deadline is None)
            if self.statement_timeout is not None:
                set_statement_timeout(self._link, self.statement_timeout, self._time())
        return self._link

    # -- re-running a whole unit -------------------------------------------------------------

    @classmethod
    def run(cls, fn: Callable[[UnitOfWork], T], **options: Unpack[RunOptions]) -> T:
        """Run ``fn`` in a fresh unit of work on the default handle, re-running it whole on a
        transient failure (see ``Database.run``)."""
        from taskcore._default import default_database

        return default_database().run(fn, **options)

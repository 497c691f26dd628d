"""The unit of work's SQLAlchemy side: ORM sessions, arbitrary Core statements, savepoints.

The repository's own statements take the hot path (taskcore._sql on the DBAPI cursor); these
take SQLAlchemy's Connection, lent the unit's same DBAPI connection and transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Executable
from sqlmodel import Session

from taskcore._deadline import bounded
from taskcore._translate import Phase, guarded
from taskcore.errors import TaskcoreError

if TYPE_CHECKING:
    from taskcore.unit_of_work import UnitOfWork

__all__ = ["connection", "flush", "run_statement", "savepoint", "session", "within_deadline"]

T = TypeVar("T")


def session(uow: UnitOfWork) -> Session:
    """The unit's SQLModel session (made on first use)."""
    uow._require_active()
    uow._wrote = True  # whatever the caller does through the session may write
    if uow._session is None:
        uow._session = Session(bind=connection(uow), expire_on_commit=False)
    return uow._session


def flush(uow: UnitOfWork) -> None:
    """Send the session's pending changes (before the unit's own statements and COMMIT)."""
    if uow._session is not None:
        within_deadline(uow, uow._session.flush)


def within_deadline(uow: UnitOfWork, fn: Callable[[], T]) -> T:
    """Run ``fn`` (SQLAlchemy I/O on the unit's connection) bounded by the unit's deadline;
    errors translated, and a connection psycopg2 closed on the way marked broken."""
    try:
        with bounded(uow._time()):
            return guarded(fn, Phase.STATEMENT)
    except TaskcoreError:
        link = uow._link
        if link is not None and getattr(link.dbapi, "closed", False):
            link.broken = True
        raise


def connection(uow: UnitOfWork) -> Connection:
    """A SQLAlchemy Connection joined to the unit's transaction (no statement is sent)."""
    if uow._sa is None:
        link = uow._open()
        engine = uow.database._lending_engine()
        # The engine's first connection runs SQLAlchemy's dialect set-up queries: bounded too.
        uow._sa = within_deadline(uow, lambda: link.sa_connection(engine))
        uow._sa.begin()  # joins the transaction the Link began
    return uow._sa


def run_statement(
    uow: UnitOfWork,
    statement: Executable,
    parameters: dict[str, Any] | list[dict[str, Any]] | None,
    *,
    writes: bool,
) -> Sequence[Any]:
    """Run any Core statement in the unit; its rows, or [] for a statement without rows."""
    uow._ready(writes)
    sa = connection(uow)

    def run() -> Sequence[Any]:
        result = sa.execute(statement, parameters)
        return result.all() if result.returns_rows else []

    try:
        return within_deadline(uow, run)
    except TaskcoreError as error:
        uow._doom(error)
        raise


@contextlib.contextmanager
def savepoint(uow: UnitOfWork) -> Iterator[None]:
    """SAVEPOINT ... RELEASE, or ROLLBACK TO on an exception (which then propagates)."""
    uow._require_active()
    link = uow._open()
    flush(uow)
    name = uow.database._savepoint_name()
    link.savepoint(name, uow._time())
    failure_before, status_before = uow._failure, uow.status
    try:
        yield
        flush(uow)
    except BaseException:
        try:
            link.rollback_to(name, uow._time())
        except TaskcoreError as rollback_error:
            uow._failure = uow._failure or rollback_error
        else:
            uow._failure = failure_before  # the savepoint undid the failed statement
            if uow.status is not status_before:
                uow._move(status_before)
            if uow._session is not None:
                uow._session.expire_all()  # objects may hold undone changes
        raise
    link.release(name, uow._time())

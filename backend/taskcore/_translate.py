"""Turns driver and SQLAlchemy exceptions into taskcore's sanitised ones, aware of the phase."""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Callable
from typing import TypeVar

import psycopg2
from sqlalchemy import exc as sa_exc

from taskcore._classify import Kind, classify
from taskcore._deadline import DeadlineExpired
from taskcore.errors import (
    CommitOutcomeUnknownError,
    ConflictError,
    ConnectionRejectedError,
    DatabaseError,
    TaskcoreError,
    TransientError,
    ValidationError,
)

__all__ = ["Phase", "guarded", "translate"]

T = TypeVar("T")


class Phase(enum.Enum):
    """Where in a unit of work a failure happened; it decides what a disconnect means."""

    CONNECT = "connect"  # no statement was sent: always safe to retry
    STATEMENT = "statement"  # before COMMIT was sent: the server rolls the transaction back
    COMMIT = "commit"  # COMMIT (or an autocommit write) was in flight: the outcome is unknown
    KEYED_COMMIT = "keyed_commit"  # a keyed autocommit write was in flight: a re-run resolves it


def translate(error: BaseException, phase: Phase, *, broken: bool = False) -> TaskcoreError:
    """Map ``error`` to a TaskcoreError carrying no driver text, SQL or parameter values.

    ``broken`` says the DBAPI connection is closed after the error (psycopg2 sets ``closed``
    when libpq reports the link dead): a disconnect even when the text is unfamiliar.
    """
    if isinstance(error, TaskcoreError):
        return error
    if isinstance(error, DeadlineExpired):
        return _deadline_passed(phase)
    if isinstance(error, ValueError):
        # psycopg2 refuses NUL and unencodable text before sending (its args hold the value)
        return ValidationError(
            "a value could not be sent to the database: it contains a NUL character or text "
            "that is not valid Unicode"
        )
    orig: BaseException | None = error
    invalidated = broken
    if isinstance(error, sa_exc.DBAPIError):
        orig = error.orig
        invalidated = invalidated or bool(error.connection_invalidated)
    elif isinstance(error, sa_exc.SQLAlchemyError):
        # Not from the driver (e.g. a failed bind, or a session already rolled back).
        return DatabaseError(
            f"the unit of work could not run a statement ({type(error).__name__})",
            driver_error=type(error).__name__,
        )
    if isinstance(orig, psycopg2.InterfaceError):
        # psycopg2 raises InterfaceError before sending anything ("connection already closed"),
        # so even a COMMIT that failed this way was never in flight.
        phase = Phase.STATEMENT if phase in (Phase.COMMIT, Phase.KEYED_COMMIT) else phase
    sqlstate = getattr(orig, "pgcode", None)
    if not isinstance(sqlstate, str):
        sqlstate = None
    # str(orig) is used for matching only; it can hold SQL, parameters and the host name.
    verdict = classify(sqlstate, str(orig), invalidated=invalidated)
    sqlstate = getattr(verdict, "sqlstate", None) or sqlstate  # a FATAL's code read from its text
    driver = type(orig).__name__
    detail = f"{verdict.reason} [sqlstate {sqlstate or 'none'}, {driver}]"
    if verdict.kind in (Kind.DISCONNECT, Kind.BACKPRESSURE):
        if phase is Phase.COMMIT:
            return CommitOutcomeUnknownError(
                "the connection failed while COMMIT was in flight; the work may or may not have "
                f"been applied: {detail}",
                sqlstate=sqlstate,
                driver_error=driver,
            )
        transient = TransientError(detail, sqlstate=sqlstate, driver_error=driver)
        transient.backpressure = verdict.kind is Kind.BACKPRESSURE
        transient.maybe_applied = phase is Phase.KEYED_COMMIT
        return transient
    if verdict.kind is Kind.CONFLICT:
        return ConflictError(detail, sqlstate=sqlstate, driver_error=driver)
    if verdict.kind is Kind.REJECTED:
        return ConnectionRejectedError(
            f"could not connect: {detail}", sqlstate=sqlstate, driver_error=driver
        )
    return DatabaseError(detail, sqlstate=sqlstate, driver_error=driver)


def _deadline_passed(phase: Phase) -> TaskcoreError:
    """The call's deadline passed while waiting on the network; the connection was dropped."""
    detail = "the call's deadline passed while waiting for the database [sqlstate none, timeout]"
    if phase is Phase.COMMIT:
        return CommitOutcomeUnknownError(
            "the call's deadline passed while COMMIT was in flight; the work may or may not "
            "have been applied",
            driver_error="timeout",
        )
    transient = TransientError(detail, driver_error="timeout")
    transient.maybe_applied = phase is Phase.KEYED_COMMIT
    return transient


# ValueError (UnicodeError included): refused parameter values, raised by the driver unwrapped.
_DRIVER_ERRORS = (
    sa_exc.SQLAlchemyError,
    psycopg2.Error,
    sqlite3.Error,
    ValueError,
    DeadlineExpired,
)


def guarded(fn: Callable[[], T], phase: Phase) -> T:
    """Call ``fn``; re-raise any database error as a TaskcoreError with no exception chain.

    The translated error is raised outside the ``except`` block on purpose: raising inside it
    would attach the driver exception as ``__context__``, and with it the SQL and parameters.
    """
    try:
        return fn()
    except _DRIVER_ERRORS as exc:
        error = translate(exc, phase)
    raise error

"""How a unit of work ends: COMMIT protected against a lost reply, rollback, release."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, select

from taskcore._deadline import Deadline
from taskcore._link import Link
from taskcore._resolve import CommitTicket, Outcome, resolve_commit, ticket_statement
from taskcore._translate import Phase
from taskcore.errors import CommitOutcomeUnknownError, TaskcoreError, TransientError

if TYPE_CHECKING:
    from taskcore.unit_of_work import UnitOfWork

_log = logging.getLogger("taskcore")

__all__ = ["commit_protected", "release", "rollback_quietly", "set_statement_timeout"]

#: pg_current_xact_id() / pg_xact_status() arrived in PostgreSQL 13.
_TICKETS_SINCE = 130000
_statement_timeout = select(func.set_config("statement_timeout", bindparam("ms"), True))


def set_statement_timeout(link: Link, seconds: float, deadline: Deadline) -> None:
    """``SET LOCAL statement_timeout``: it ends with the transaction, so pooler-safe."""
    if link.postgres:
        link.fetch(
            _statement_timeout, {"ms": str(round(seconds * 1000))}, Phase.STATEMENT, deadline
        )


def commit_protected(unit: UnitOfWork, link: Link, deadline: Deadline, *, wrote: bool) -> None:
    """COMMIT the unit; if its reply is lost, find out from the server what happened.

    Nothing is lost with the reply of a read-only COMMIT, SQLite has no network to lose a reply
    on, and an isolated (test) handle only releases a savepoint: those commit plainly.
    """
    database = unit.database
    if unit.read_only or not wrote or not link.postgres or database.is_isolated:
        database._end(link, commit=True, deadline=deadline)
        return
    ticket = _take_ticket(link, deadline) if database.settings.commit_protection else None
    try:
        link.commit(Phase.COMMIT, deadline)
    except CommitOutcomeUnknownError:
        if ticket is None:
            raise
        link.broken = True
    else:
        return
    outcome = resolve_commit(
        database._open_link, ticket, deadline, database.policy, database.events
    )
    if outcome is Outcome.COMMITTED:
        return
    if outcome is Outcome.ABORTED:
        raise TransientError(
            "the connection failed during COMMIT and the server rolled the transaction back: "
            "nothing was applied"
        )
    raise CommitOutcomeUnknownError(
        "the connection failed during COMMIT and the server could not say whether it was "
        "applied (transaction status no longer retained, or no answer before the deadline)"
    )


def _take_ticket(link: Link, deadline: Deadline) -> CommitTicket | None:
    """The transaction id and backend pid, read just before COMMIT (+1 round trip)."""
    if getattr(link.dbapi, "server_version", 0) < _TICKETS_SINCE:
        return None
    xid, pid = link.fetch(ticket_statement(), {}, Phase.STATEMENT, deadline)[0]
    return None if xid is None else CommitTicket(xid=str(xid), backend_pid=int(pid))


def rollback_quietly(uow: UnitOfWork) -> None:
    """Roll back; a failure here is logged and never hides the exception already leaving."""
    uow._require_active()
    link = uow._link
    if link is not None:
        try:
            uow.database._end(link, commit=False, deadline=uow._time())
        except TaskcoreError as error:
            _log.warning(
                "error ignored in rollback (%s); the server rolls back a transaction whose "
                "connection is gone",
                type(error).__name__,
                extra={"taskcore_event": "rollback_failed", "error": type(error).__name__},
            )
            link.broken = True
    from taskcore.unit_of_work import Status

    uow._move(Status.ROLLED_BACK)
    release(uow)


def release(uow: UnitOfWork, *, reuse: bool = True) -> None:
    """Close the unit's session and SQLAlchemy connection, and give its connection back."""
    session, uow._session = uow._session, None
    sa, uow._sa = uow._sa, None
    link, uow._link = uow._link, None
    with contextlib.suppress(Exception):
        if session is not None:
            session.close()
        if sa is not None:
            sa.close()  # after COMMIT/ROLLBACK: its own rollback finds nothing to undo
    if link is not None:
        link.close(reuse=reuse)

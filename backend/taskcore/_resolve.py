"""Finds out whether a COMMIT whose reply was lost was applied, by asking the server."""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Select, Text, cast, column, exists, func, literal, select, table
from sqlalchemy.types import UserDefinedType

from taskcore import events
from taskcore._translate import Phase, guarded
from taskcore.retry import RetryPolicy, call_with_retries, pause

__all__ = ["CommitTicket", "Outcome", "resolve_commit", "ticket_statement"]

_log = logging.getLogger("taskcore")
_pg_stat_activity = table("pg_stat_activity", column("pid"), column("backend_xid"))


class _XID8(UserDefinedType[str]):
    """PostgreSQL's 64-bit transaction id (epoch included, so it never wraps around)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


class Outcome(enum.Enum):
    """What the server says happened to a transaction."""

    COMMITTED = "committed"
    ABORTED = "aborted"
    UNKNOWN = "unknown"  # status discarded (too old), or still undecided at the deadline


@dataclass(frozen=True, slots=True)
class CommitTicket:
    """Taken just before COMMIT: the transaction's id and the backend that runs it."""

    xid: str
    backend_pid: int


def ticket_statement() -> Select[Any]:
    """One statement returning (xid or NULL when nothing was written, backend pid)."""
    return select(cast(func.pg_current_xact_id_if_assigned(), Text), func.pg_backend_pid())


def resolve_commit(engine: Engine, ticket: CommitTicket, policy: RetryPolicy) -> Outcome:
    """Ask ``pg_xact_status`` about the ticket's transaction on a fresh connection.

    "in progress" means the server has not yet noticed the dead connection: if that backend
    still holds our transaction and has not started committing, ending it makes the answer
    final ("aborted"); a commit already under way completes first. The check must reach the
    same primary (not a replica, not another Neon branch) while the status is retained.
    """
    xid = cast(literal(ticket.xid), _XID8())
    status_query = select(func.pg_xact_status(xid))
    xid32 = str(int(ticket.xid) % 2**32)  # pg_stat_activity shows the 32-bit xid
    end_stuck_backend = select(func.pg_terminate_backend(ticket.backend_pid)).where(
        exists().where(
            _pg_stat_activity.c.pid == ticket.backend_pid,
            cast(_pg_stat_activity.c.backend_xid, Text) == xid32,
        )
    )
    started = time.monotonic()

    def ask() -> str | None:
        with guarded(engine.connect, Phase.CONNECT) as connection:
            status = guarded(lambda: connection.scalar(status_query), Phase.STATEMENT)
            if status == "in progress":
                guarded(lambda: connection.execute(end_stuck_backend), Phase.STATEMENT)
            guarded(connection.commit, Phase.STATEMENT)
        return None if status is None else str(status)

    attempt = 0
    while True:
        attempt += 1
        status = call_with_retries("resolve commit", ask, policy)
        if status == "committed":
            outcome = Outcome.COMMITTED
        elif status == "aborted":
            outcome = Outcome.ABORTED
        elif status is None or time.monotonic() - started > policy.deadline:
            outcome = Outcome.UNKNOWN
        else:  # in progress: the server is finishing our COMMIT or rolling it back
            pause(policy.wait(attempt, None))
            continue
        events.emit(events.CommitResolved(outcome.value))
        _log.warning(
            "lost COMMIT reply resolved: %s",
            outcome.value,
            extra={"taskcore_event": "commit_resolved", "outcome": outcome.value},
        )
        return outcome

"""Finds out whether a COMMIT whose reply was lost was applied, by asking the server."""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Text, bindparam, cast, column, exists, func, select, table
from sqlalchemy.types import UserDefinedType

from taskcore import events
from taskcore._deadline import Deadline
from taskcore._link import Link
from taskcore._translate import Phase
from taskcore.errors import TaskcoreError
from taskcore.events import EventHub
from taskcore.retry import RetryPolicy, pause

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


@functools.cache
def _status_statements() -> tuple[Select[Any], Select[Any]]:
    """pg_xact_status(:xid), and ending :pid if it still runs that transaction (:xid32)."""
    status_query = select(func.pg_xact_status(cast(bindparam("xid", type_=Text), _XID8())))
    end_stuck_backend = select(func.pg_terminate_backend(bindparam("pid"))).where(
        exists().where(
            _pg_stat_activity.c.pid == bindparam("pid"),
            cast(_pg_stat_activity.c.backend_xid, Text) == bindparam("xid32", type_=Text),
        )
    )
    return status_query, end_stuck_backend


@functools.cache
def ticket_statement() -> Select[Any]:
    """One statement returning (xid or NULL when nothing was written, backend pid)."""
    return select(cast(func.pg_current_xact_id_if_assigned(), Text), func.pg_backend_pid())


def resolve_commit(
    open_link: Callable[[Deadline], Link],
    ticket: CommitTicket,
    deadline: Deadline,
    policy: RetryPolicy,
    hub: EventHub,
) -> Outcome:
    """Ask ``pg_xact_status`` about the ticket's transaction on fresh connections.

    It polls within the call's own deadline (no loop of its own beyond it). "in progress"
    means the server has not yet noticed the dead connection: if that backend still holds
    our transaction and has not started committing, ending it makes the answer final
    ("aborted"); a commit already under way completes first. The check must reach the same
    primary (not a replica, not another Neon branch) while the status is retained.
    """
    params = {
        "xid": ticket.xid,
        "pid": ticket.backend_pid,
        "xid32": str(int(ticket.xid) % 2**32),  # pg_stat_activity shows the 32-bit xid
    }
    status_query, end_stuck_backend = _status_statements()
    asked = 0
    outcome = Outcome.UNKNOWN
    while not deadline.expired and asked < policy.attempts:
        asked += 1
        status: str | None = "in progress"
        try:
            link = open_link(deadline)
            try:
                link.autocommit()
                status = link.fetch(status_query, params, Phase.STATEMENT, deadline)[0][0]
                if status == "in progress":
                    link.fetch(end_stuck_backend, params, Phase.STATEMENT, deadline)
            finally:
                link.close()
        except TaskcoreError:
            status = "in progress"  # the server could not be asked: ask again while time lasts
        if status == "committed":
            outcome = Outcome.COMMITTED
        elif status == "aborted":
            outcome = Outcome.ABORTED
        elif status is None:
            outcome = Outcome.UNKNOWN  # too old: the server no longer knows
        else:
            pause(min(policy.wait(asked, None), deadline.remaining()))
            continue
        break
    hub.emit(events.CommitResolved(outcome.value))
    _log.warning(
        "lost COMMIT reply resolved: %s",
        outcome.value,
        extra={"taskcore_event": "commit_resolved", "outcome": outcome.value},
    )
    return outcome

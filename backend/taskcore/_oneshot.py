"""The one-shot runner: one autocommit statement per call (1 round trip), keyed for retries."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.sql import ClauseElement

from taskcore import events
from taskcore._deadline import Deadline
from taskcore._link import Link
from taskcore._translate import Phase
from taskcore.repository import TaskRepository, call_key, caller_key
from taskcore.retry import call_with_retries

if TYPE_CHECKING:
    from taskcore.database import Database

__all__ = ["run_keyed", "run_oneshot"]

T = TypeVar("T")


class _OneShot:
    """The repository's statement runner for one call's attempt: autocommit, no BEGIN."""

    __slots__ = ("_database", "_deadline", "_link", "dialect_name", "operation_key")

    def __init__(self, database: Database, deadline: Deadline, operation_key: str | None) -> None:
        self._database = database
        self._deadline = deadline
        self._link: Link | None = None
        self.dialect_name = database.dialect.name
        self.operation_key = operation_key

    def fetch(
        self,
        statement: ClauseElement,
        params: Mapping[str, Any],
        *,
        writes: bool,
        idempotent: bool = False,
    ) -> list[Any]:
        link = self._link
        if link is None:
            link = self._link = self._database._open_link(self._deadline, oneshot=True)
        # An autocommit write commits as it runs: losing its reply loses the outcome, unless the
        # statement is keyed so that running it again is harmless. SQLite runs in this process
        # and an isolated (test) handle works inside one transaction: no reply to lose.
        phase = Phase.STATEMENT
        if writes and link.postgres and not self._database.is_isolated:
            phase = Phase.KEYED_COMMIT if idempotent else Phase.COMMIT
        return link.fetch(statement, params, phase, self._deadline)

    def columns(self, statement: ClauseElement) -> tuple[str, ...]:
        link = self._link
        if link is None:
            link = self._link = self._database._open_link(self._deadline, oneshot=True)
        return link.columns(statement)

    def close(self, ok: bool) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        if link.savepoint_name is None:  # autocommit: nothing to end; the connection goes back
            link.pool.release(link.pooled, reuse=not link.broken)
        else:
            self._database._oneshot_done(link, ok=ok, deadline=self._deadline)


def run_oneshot(
    database: Database,
    operation: str,
    fn: Callable[[TaskRepository], T],
    *,
    operation_key: str | None = None,
    deadline: float | None = None,
) -> T:
    """Run ``fn`` on a repository whose statements autocommit, under the call's one deadline."""
    clock = Deadline(deadline or database.settings.deadline)
    numbers = itertools.count(1)
    return call_with_retries(
        operation,
        lambda: _attempt(database, operation, fn, clock, operation_key, next(numbers)),
        database.policy,
        clock,
        budget=database.budget,
        hub=database.events,
    )


def _attempt(
    database: Database,
    operation: str,
    fn: Callable[[TaskRepository], T],
    clock: Deadline,
    operation_key: str | None,
    number: int,
) -> T:
    """One attempt: a connection from the pool, ``fn``'s statements, the connection back."""
    started = clock.clock()
    shot = _OneShot(database, clock, operation_key)
    outcome = "rolled_back"
    try:
        result = fn(TaskRepository(shot))
        outcome = "committed"
        return result
    finally:
        shot.close(ok=outcome == "committed")
        hub = database.events
        if not hub.counted("units_" + outcome):  # the event is only built for a listener
            duration = clock.clock() - started
            hub.emit(events.UnitFinished(operation, outcome, duration, number, False))


def run_keyed(
    database: Database,
    operation: str,
    write: Callable[[TaskRepository], T],
    replay: Callable[[TaskRepository], T],
    operation_key: str | None,
    deadline: float | None,
) -> T:
    """A one-shot write under its operation key (PostgreSQL: in the statement itself).

    SQLite has no data-modifying CTEs: there a caller's key is claimed in the write's own
    transaction, and a repeated key returns ``replay`` (the task as it is now) instead.
    """
    if operation_key is None or database.dialect.name == "postgresql":
        key = call_key() if operation_key is None else caller_key(operation_key)
        return run_oneshot(database, operation, write, operation_key=key, deadline=deadline)
    return database._run(
        operation,
        lambda uow: write(uow.tasks) if uow.claim(operation_key) else replay(uow.tasks),
        deadline=deadline,
    )

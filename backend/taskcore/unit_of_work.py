"""The unit of work: one connection, one transaction, an explicit lifecycle, whole-unit retries."""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from sqlalchemy import Connection, Engine, Executable, RootTransaction, Row, func, select
from sqlmodel import Session

from taskcore import events
from taskcore._resolve import CommitTicket, Outcome, resolve_commit, ticket_statement
from taskcore._translate import Phase, guarded
from taskcore.engine import current_budget, current_settings, get_engine
from taskcore.errors import CommitOutcomeUnknownError, TaskcoreError, TransientError, UsageError
from taskcore.repository import TaskRepository
from taskcore.retry import RetryPolicy, call_with_retries

__all__ = ["Isolation", "Status", "UnitOfWork"]

T = TypeVar("T")
_log = logging.getLogger("taskcore")

Isolation = Literal["read committed", "repeatable read", "serializable"]
_ISOLATIONS: dict[str, str] = {
    "read committed": "READ COMMITTED",
    "repeatable read": "REPEATABLE READ",
    "serializable": "SERIALIZABLE",
}


class Status(enum.Enum):
    """Where a unit of work is in its life; it only ever moves forward."""

    NEW = "new"
    ACTIVE = "active"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"  # COMMIT failed: see the exception for whether the outcome is known


class UnitOfWork:
    """One transaction: commits when the ``with`` block ends cleanly, rolls back when it raises.

    The caller's own exception comes out unchanged; database errors raised inside the block are
    already taskcore errors. A unit of work is used once: entering it again, or touching
    ``tasks``/``session`` outside the block, raises UsageError.

    The connection is taken at the first statement, not on entry: a block that refuses its
    input sends nothing. Connecting is retried (it is always safe); statements are not: use
    :meth:`run` to re-run the whole unit on a transient failure.
    """

    def __init__(
        self,
        *,
        read_only: bool = False,
        isolation: Isolation | None = None,
        statement_timeout: float | None = None,
        _single_statement: bool = False,
        _retry_connect: bool = True,
        _operation_key: str | None = None,
        _operation: str = "UnitOfWork",
        _attempt: int = 1,
    ) -> None:
        if isolation is not None and isolation not in _ISOLATIONS:
            raise UsageError(f"isolation must be one of {sorted(_ISOLATIONS)}")
        if statement_timeout is not None and not 0 < statement_timeout < 2**31 / 1000:
            raise UsageError("statement_timeout must be a positive number of seconds")
        self.read_only = read_only
        self.isolation = isolation
        #: Seconds any one statement may run (PostgreSQL; SET LOCAL, so pooler-safe).
        self.statement_timeout = statement_timeout
        self.status = Status.NEW
        #: For one-shot writes: recorded with the write so a re-run cannot apply it twice.
        self.operation_key = _operation_key
        self.dialect_name = ""
        # Internal: one-shot operations run one autocommit statement (1 round trip, no BEGIN).
        self._single_statement = _single_statement
        self._retry_connect = _retry_connect
        self._operation = _operation
        self._attempt = _attempt
        self._engine: Engine | None = None
        self._connection: Connection | None = None
        self._transaction: RootTransaction | None = None
        self._session: Session | None = None
        self._failure: TaskcoreError | None = None
        self._callbacks: list[Callable[[], object]] = []
        self._tasks: TaskRepository | None = None
        self._wrote = False
        self._started = 0.0

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"<UnitOfWork status={self.status.value} {mode} isolation={self.isolation}>"

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self.status is not Status.NEW:
            raise UsageError(f"a unit of work is used once; this one is {self.status.value}")
        self._engine = get_engine()
        self.dialect_name = self._engine.dialect.name
        self._started = time.monotonic()
        self.status = Status.ACTIVE
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None and self._failure is None:
            try:
                self._commit()
            finally:
                self._finished()
            self._run_callbacks()
            return
        self._rollback_quietly()
        self._finished()
        if exc is None and self._failure is not None:
            # The block swallowed a database error; committing what is left would be wrong.
            raise self._failure

    def _finished(self) -> None:
        events.emit(
            events.UnitFinished(
                self._operation,
                self.status.value,
                time.monotonic() - self._started,
                self._attempt,
                self.read_only,
            )
        )

    def _commit(self) -> None:
        try:
            if self._transaction is not None:
                if self._session is not None:
                    guarded(self._session.flush, Phase.STATEMENT)
                # Nothing is lost with a read-only COMMIT's reply, an autocommit statement has
                # already committed (or not), and SQLite has no network to lose a reply on.
                harmless = self.read_only or self._single_statement or self.dialect_name == "sqlite"
                phase = Phase.STATEMENT if harmless else Phase.COMMIT
                ticket = self._take_ticket()
                try:
                    guarded(self._transaction.commit, phase)
                except CommitOutcomeUnknownError:
                    if ticket is None:
                        raise
                    self._resolve(ticket)
        except TaskcoreError:
            self.status = Status.FAILED
            self._close_quietly()
            raise
        self.status = Status.COMMITTED
        self._close_quietly()

    def _take_ticket(self) -> CommitTicket | None:
        """Record the transaction id before COMMIT, when a lost reply would need resolving."""
        connection = self._connection
        if connection is None or not self._wrote or self.read_only or self._single_statement:
            return None
        server_version = connection.dialect.server_version_info or (0,)
        if (
            self.dialect_name != "postgresql"
            or server_version < (13,)  # pg_current_xact_id() / pg_xact_status() arrived in 13
            or not current_settings().commit_protection
        ):
            return None
        row = guarded(lambda: connection.execute(ticket_statement()).one(), Phase.STATEMENT)
        xid, pid = row[0], row[1]
        return None if xid is None else CommitTicket(xid=str(xid), backend_pid=int(pid))

    def _resolve(self, ticket: CommitTicket) -> None:
        """Turn a lost COMMIT reply into success, a safe re-run, or an honest 'unknown'."""
        self._close_quietly()  # the connection is dead; resolution uses a fresh one
        policy = RetryPolicy.from_settings(current_settings())
        try:
            outcome = resolve_commit(get_engine(), ticket, policy)
        except TaskcoreError:
            outcome = Outcome.UNKNOWN  # the server could not be asked
        if outcome is Outcome.COMMITTED:
            return
        if outcome is Outcome.ABORTED:
            raise TransientError(
                "the connection failed during COMMIT and the server rolled the transaction "
                "back: nothing was applied"
            )
        raise CommitOutcomeUnknownError(
            "the connection failed during COMMIT and the server could not say whether it was "
            "applied (transaction status no longer retained, or still undecided)"
        )

    def _rollback_quietly(self) -> None:
        """Roll back; a failure here is logged and never hides the exception already leaving."""
        self._require_active()
        try:
            if self._session is not None:
                self._session.rollback()
            if self._transaction is not None:
                self._transaction.rollback()
        except Exception as exc:  # noqa: BLE001 - the original error matters more
            _log.warning(
                "error ignored in rollback (%s); the server rolls back a transaction whose "
                "connection is gone",
                type(exc).__name__,
                extra={"taskcore_event": "rollback_failed", "error": type(exc).__name__},
            )
        self.status = Status.ROLLED_BACK
        self._close_quietly()

    def _close_quietly(self) -> None:
        """Give the connection back to the pool (a dead one is discarded)."""
        session, self._session = self._session, None
        connection, self._connection = self._connection, None
        self._transaction = None
        try:
            if session is not None:
                session.close()
            if connection is not None:
                connection.close()
        except Exception as exc:  # noqa: BLE001 - closing must not mask the outcome
            _log.warning(
                "error ignored in close (%s)",
                type(exc).__name__,
                extra={"taskcore_event": "close_failed", "error": type(exc).__name__},
            )

    def _run_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

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

        It joins the unit's transaction (its commit does not end it) and is flushed before
        the unit's own statements and COMMIT. Errors raised through it are not translated:
        use :meth:`run_statement` for taskcore's error handling.
        """
        self._require_active()
        if self._single_statement:
            raise UsageError("a one-shot operation has no session")
        connection = self._connect()
        self._wrote = True  # whatever the caller does through the session may write
        if self._session is None:
            self._session = Session(bind=connection, expire_on_commit=False)
        return self._session

    def on_commit(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` after a successful COMMIT (in order; never after a rollback).

        If a callback raises, the work is already committed: the exception propagates and the
        remaining callbacks are skipped.
        """
        self._require_active()
        self._callbacks.append(callback)

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested block: an exception inside rolls back only that block's changes, then
        propagates; catch it outside the ``with`` to carry on with the rest of the unit."""
        self._require_active()
        if self._single_statement:
            raise UsageError("savepoints need a transaction")
        connection = self._connect()
        self._flush_session()
        nested = guarded(connection.begin_nested, Phase.STATEMENT)
        failure_before = self._failure
        try:
            yield
            self._flush_session()
        except BaseException:
            if nested.is_active:
                try:
                    guarded(nested.rollback, Phase.STATEMENT)
                except TaskcoreError as rollback_error:
                    self._failure = self._failure or rollback_error
                else:
                    self._failure = failure_before  # the savepoint undid the failed statement
                    if self._session is not None:
                        self._session.expire_all()  # objects may hold undone changes
            raise
        guarded(nested.commit, Phase.STATEMENT)

    def _flush_session(self) -> None:
        if self._session is not None:
            guarded(self._session.flush, Phase.STATEMENT)

    # -- running statements (the repository's StatementRunner) -------------------------------

    def run_statement(
        self,
        statement: Executable,
        parameters: dict[str, Any] | list[dict[str, Any]] | None = None,
        *,
        writes: bool,
        idempotent: bool = False,
    ) -> Sequence[Row[Any]]:
        """Run one SQLAlchemy Core statement in this unit of work; return its rows.

        Errors come out as taskcore errors. A list of ``parameters`` runs it as executemany.
        ``idempotent`` says re-running the statement after a lost reply cannot apply it twice
        (it carries an operation or idempotency key), so a one-shot may retry it.
        """
        self._require_active()
        if writes and self.read_only:
            raise UsageError("this unit of work is read-only")
        if self._failure is not None:
            raise UsageError("an earlier statement in this unit of work failed; it must roll back")
        connection = self._connect()
        self._flush_session()
        self._wrote = self._wrote or writes
        # In autocommit mode a write commits as it runs: losing its reply loses the outcome,
        # unless the statement is keyed so that running it again is harmless. SQLite runs in
        # this process: an error there is never a lost reply.
        phase = Phase.STATEMENT
        if writes and self._single_statement and self.dialect_name != "sqlite":
            phase = Phase.KEYED_COMMIT if idempotent else Phase.COMMIT
        try:
            return guarded(lambda: connection.execute(statement, parameters).all(), phase)
        except TaskcoreError as error:
            self._failure = error
            raise

    def _connect(self) -> Connection:
        """Check out a connection and begin (mode changes are client-side: no round trip)."""
        if self._connection is not None:
            return self._connection
        engine = self._engine
        assert engine is not None  # set on entry; _require_active ran before

        def checkout() -> None:
            connection = engine.connect()
            try:
                dbapi = connection.connection.dbapi_connection
                if dbapi is not None and self.dialect_name == "postgresql":
                    if self._single_statement:
                        dbapi.autocommit = True
                    else:
                        dbapi.set_session(
                            isolation_level=_ISOLATIONS.get(self.isolation or "", "DEFAULT"),
                            readonly=self.read_only or "DEFAULT",
                        )
                transaction = connection.begin()
                if self.statement_timeout is not None and self.dialect_name == "postgresql":
                    # set_config(..., is_local => true) is SET LOCAL: it ends with the
                    # transaction, so it is safe behind PgBouncer's transaction pooling.
                    milliseconds = str(round(self.statement_timeout * 1000))
                    connection.execute(
                        select(func.set_config("statement_timeout", milliseconds, True))
                    )
            except BaseException:
                connection.close()
                raise
            self._connection, self._transaction = connection, transaction

        def attempt() -> None:
            guarded(checkout, Phase.CONNECT)

        if self._retry_connect:
            policy = RetryPolicy.from_settings(current_settings())
            call_with_retries("connect", attempt, policy, budget=current_budget())
        else:
            attempt()
        assert self._connection is not None
        return self._connection

    def _require_active(self) -> None:
        if self.status is not Status.ACTIVE:
            raise UsageError(f"the unit of work is {self.status.value}, not active")

    # -- re-running a whole unit -------------------------------------------------------------

    @classmethod
    def run(
        cls,
        fn: Callable[[UnitOfWork], T],
        *,
        read_only: bool = False,
        isolation: Isolation | None = None,
        statement_timeout: float | None = None,
        policy: RetryPolicy | None = None,
    ) -> T:
        """Run ``fn`` in a fresh unit of work, re-running it whole on a transient failure.

        A transient failure is one raised before COMMIT was sent (disconnect, cold start,
        serialization failure, deadlock): nothing was applied, so re-running is safe. A
        failure while COMMIT was in flight raises CommitOutcomeUnknownError and is never re-run.
        """
        name = getattr(fn, "__qualname__", type(fn).__name__)
        return run_unit(
            f"UnitOfWork.run({name})",
            fn,
            policy=policy,
            read_only=read_only,
            isolation=isolation,
            statement_timeout=statement_timeout,
        )


def run_unit(
    operation: str,
    fn: Callable[[UnitOfWork], T],
    *,
    policy: RetryPolicy | None = None,
    read_only: bool = False,
    isolation: Isolation | None = None,
    statement_timeout: float | None = None,
    single_statement: bool = False,
    operation_key: str | None = None,
) -> T:
    """Run ``fn`` in a fresh unit of work per attempt under the retry policy.

    ``operation_key`` is given to every attempt's unit: the same key across attempts is what
    makes a re-run after a lost reply find the first attempt's write instead of repeating it.
    """
    retry_policy = policy or RetryPolicy.from_settings(current_settings())
    attempts = 0

    def attempt() -> T:
        nonlocal attempts
        attempts += 1
        with UnitOfWork(
            read_only=read_only,
            isolation=isolation,
            statement_timeout=statement_timeout,
            _single_statement=single_statement,
            _retry_connect=False,  # this loop retries the connect too: one layer of retries
            _operation_key=operation_key,
            _operation=operation,
            _attempt=attempts,
        ) as uow:
            return fn(uow)

    return call_with_retries(operation, attempt, retry_policy, budget=current_budget())

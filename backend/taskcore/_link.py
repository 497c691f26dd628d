"""One checked-out connection: statements and transaction control, every error translated."""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import Dialect
from sqlalchemy.pool import ConnectionPoolEntry, Pool
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import (
    ReleaseSavepointClause,
    RollbackToSavepointClause,
    SavepointClause,
)

from taskcore._deadline import Deadline, bounded
from taskcore._deadline import _local as _deadline_local
from taskcore._pool import ConnectionSource, Pooled
from taskcore._sql import compile_for, execute
from taskcore._translate import _DRIVER_ERRORS, Phase, translate
from taskcore.errors import TaskcoreError

__all__ = ["Link", "lending_engine"]

_ISOLATIONS = {
    "read committed": "READ COMMITTED",
    "repeatable read": "REPEATABLE READ",
    "serializable": "SERIALIZABLE",
}


class Link:
    """A pooled connection lent to one unit of work or one-shot call."""

    __slots__ = (
        "broken",
        "dbapi",
        "dialect",
        "pool",
        "pooled",
        "postgres",
        "savepoint_name",
    )

    def __init__(self, pool: ConnectionSource, pooled: Pooled, dialect: Dialect) -> None:
        self.pool = pool
        self.pooled = pooled
        self.dbapi: Any = pooled.dbapi
        self.dialect = dialect
        self.postgres = dialect.name == "postgresql"
        self.broken = False
        #: On an isolated (test) handle: the savepoint standing in for this call's transaction.
        self.savepoint_name: str | None = None

    def fetch(
        self, statement: ClauseElement, params: Mapping[str, Any], phase: Phase, deadline: Deadline
    ) -> list[Any]:
        """Run a cached Core statement shape; its rows (columns: ``columns(statement)``)."""
        compiled = compile_for(statement, self.dialect)
        local = _deadline_local.__dict__
        previous = local.get("deadline")
        local["deadline"] = deadline  # what the wait callback honours (see _deadline)
        try:
            cursor = self.pooled.cursor
            if cursor is None:
                cursor = self.pooled.cursor = self.dbapi.cursor()
            return execute(cursor, compiled, params)
        except _DRIVER_ERRORS as exc:
            error = self._failed(exc, phase)
        finally:
            local["deadline"] = previous
        raise error

    def columns(self, statement: ClauseElement) -> tuple[str, ...]:
        """Names of the columns ``statement`` returns, in order."""
        return compile_for(statement, self.dialect).columns

    def autocommit(self) -> None:
        """One statement, committed as it runs (client-side switch: no round trip)."""
        if self.postgres:
            self.dbapi.autocommit = True

    def begin(
        self, *, isolation: str | None, read_only: bool, deadline: Deadline, savepoint: bool
    ) -> None:
        """Start the transaction (psycopg2 sends BEGIN with the first statement)."""
        if savepoint:
            assert self.savepoint_name is not None
            self.savepoint(self.savepoint_name, deadline)
        elif self.postgres:
            self.dbapi.set_session(
                isolation_level=_ISOLATIONS.get(isolation or "", "DEFAULT"),
                readonly=read_only or "DEFAULT",
                autocommit=False,
            )
        else:
            self._run(lambda: self.dbapi.execute("BEGIN"), Phase.STATEMENT, deadline)

    def commit(self, phase: Phase, deadline: Deadline) -> None:
        """COMMIT; ``phase`` says what a lost reply means."""
        self._run(self.dbapi.commit, phase, deadline)

    def rollback(self, deadline: Deadline) -> None:
        """ROLLBACK (psycopg2 sends nothing when no transaction is open)."""
        self._run(self.dbapi.rollback, Phase.STATEMENT, deadline)

    def savepoint(self, name: str, deadline: Deadline) -> None:
        """SAVEPOINT name."""
        self.fetch(_clause(SavepointClause, name), {}, Phase.STATEMENT, deadline)

    def release(self, name: str, deadline: Deadline) -> None:
        """RELEASE SAVEPOINT name."""
        self.fetch(_clause(ReleaseSavepointClause, name), {}, Phase.STATEMENT, deadline)

    def rollback_to(self, name: str, deadline: Deadline) -> None:
        """ROLLBACK TO SAVEPOINT name."""
        self.fetch(_clause(RollbackToSavepointClause, name), {}, Phase.STATEMENT, deadline)

    def _run(self, fn: Any, phase: Phase, deadline: Deadline) -> None:
        try:
            with bounded(deadline):
                fn()
        except _DRIVER_ERRORS as exc:
            error = self._failed(exc, phase)
        else:
            return
        raise error

    def _failed(self, exc: BaseException, phase: Phase) -> TaskcoreError:
        self.broken = self.broken or bool(getattr(self.dbapi, "closed", False))
        return translate(exc, phase, broken=self.broken)

    def close(self, *, reuse: bool = True) -> None:
        """Give the connection back (a broken or abandoned one is closed instead)."""
        self.pool.release(self.pooled, reuse=reuse and not self.broken)

    def sa_connection(self, engine: Engine) -> Connection:
        """A SQLAlchemy Connection over this same DBAPI connection (ORM and arbitrary Core)."""
        _lent.dbapi = self.dbapi
        try:
            return engine.connect()
        finally:
            _lent.dbapi = None


@functools.cache
def _clause(kind: Any, name: str) -> ClauseElement:
    """SAVEPOINT / RELEASE / ROLLBACK TO for ``name``, built once (a cached statement shape)."""
    clause: ClauseElement = kind(name)
    return clause


_lent = threading.local()


class _LendingPool(Pool):
    """A SQLAlchemy pool that hands out the connection a Link lends it, and never closes it."""

    def _do_get(self) -> ConnectionPoolEntry:
        return self._create_connection()

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        pass  # the Link owns the DBAPI connection

    def dispose(self) -> None:
        pass

    def recreate(self) -> _LendingPool:
        return self

    def status(self) -> str:
        return "lending pool"


def lending_engine(url: Any) -> Engine:
    """An Engine whose connections are the Links' own (no pool, no reset, no pre-ping).

    SQLAlchemy only borrows a unit's transaction: it must never end it. It sets its dialect up
    on the engine's first connection (a unit's, inside its transaction: a few read-only
    queries, once per handle) and then ROLLs it BACK, and closing a SQLAlchemy Connection
    "rolls back" too; either would silently undo the unit's work (on an isolated test handle,
    the whole outer transaction). So COMMIT and ROLLBACK are no-ops here: the unit of work alone
    ends its transaction. (Setting the dialect up on a second connection instead would need a
    second server connection while the unit holds one: a pooler with one server connection
    would make it wait.)
    """
    extra = {"use_native_hstore": False} if url.get_backend_name() == "postgresql" else {}
    engine = create_engine(
        url,
        creator=lambda: _lent.dbapi,
        poolclass=_LendingPool,
        pool_reset_on_return=None,
        hide_parameters=True,  # bound values (task contents) never reach SQLAlchemy's messages
        **extra,
    )
    setattr(engine.dialect, "do_rollback", _leave_transaction_alone)  # noqa: B010
    setattr(engine.dialect, "do_commit", _leave_transaction_alone)  # noqa: B010
    return engine


def _leave_transaction_alone(dbapi_connection: Any) -> None:
    """What the lent engine does instead of COMMIT or ROLLBACK: nothing."""


# SQLAlchemy names a pool's logger after its class's module; keep its DEBUG chatter out of the
# "taskcore" logger tree that applications configure for our records.
_LendingPool.__module__ = "sqlalchemy.pool"

"""Builds and holds one engine per process: lazily, fork-aware, tuned for Neon."""

from __future__ import annotations

import logging
import os
import select
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, PoolProxiedConnection

from taskcore import events
from taskcore.budget import RetryBudget
from taskcore.config import Settings, load_settings
from taskcore.errors import ConfigurationError

__all__ = [
    "configure",
    "current_budget",
    "current_settings",
    "dispose",
    "get_engine",
    "make_engine",
]

_log = logging.getLogger("taskcore")


@dataclass(slots=True)
class _State:
    pid: int
    overrides: dict[str, Any]
    settings: Settings | None = None
    engine: Engine | None = None
    budget: RetryBudget | None = None


_lock = threading.Lock()
_state = _State(pid=os.getpid(), overrides={})


def configure(**overrides: Any) -> Settings:
    """Replace this process's settings (keyword overrides win over the environment).

    Validates at once and disposes the current engine; the next operation builds a new one.
    With no arguments it re-reads the environment.
    """
    settings = load_settings(**overrides)
    with _lock:
        _dispose_locked()
        _state.overrides = dict(overrides)
        _state.settings = settings
        _state.budget = None
    return settings


def current_settings() -> Settings:
    """The settings in force, read from the environment on first use."""
    with _lock:
        _forget_if_forked()
        if _state.settings is None:
            _state.settings = load_settings(**_state.overrides)
        return _state.settings


def get_engine() -> Engine:
    """This process's engine, built on first use (never at import)."""
    settings = current_settings()
    with _lock:
        _forget_if_forked()
        if _state.engine is None:
            _state.engine = make_engine(settings)
        return _state.engine


def current_budget() -> RetryBudget | None:
    """This process's retry budget (None when TASKCORE_RETRY_BUDGET is off)."""
    settings = current_settings()
    if not settings.retry_budget:
        return None
    with _lock:
        if _state.budget is None:
            _state.budget = RetryBudget(
                ratio=settings.retry_budget_ratio,
                floor=settings.retry_budget_floor,
                window=settings.retry_budget_window,
                probe_interval=settings.retry_probe_interval,
            )
        return _state.budget


def dispose() -> None:
    """Close this process's pooled connections; the next operation opens new ones."""
    with _lock:
        _dispose_locked()


def _dispose_locked() -> None:
    if _state.engine is not None:
        _state.engine.dispose()
        _state.engine = None


def _forget_if_forked() -> None:
    # A pooled connection must never cross a fork: two processes on one socket garble the
    # protocol. The child drops the parent's pool without closing it (close=False), so the
    # parent's connections stay usable in the parent.
    if _state.pid != os.getpid():
        if _state.engine is not None:
            _state.engine.dispose(close=False)
        _state.engine = None
        _state.budget = None  # each process has its own budget
        _state.pid = os.getpid()


def _after_fork_in_child() -> None:
    global _lock  # noqa: PLW0603 - a lock held by another thread at fork time is never released
    _lock = threading.Lock()
    _forget_if_forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def make_engine(settings: Settings, *, fresh_connections: bool = False) -> Engine:
    """Build an engine for ``settings``; ``fresh_connections`` disables pooling (diagnostics)."""
    if settings.backend == "sqlite":
        return _make_sqlite_engine(settings, fresh_connections)
    pool_args: dict[str, Any] = (
        {"poolclass": NullPool}
        if fresh_connections
        else {
            "pool_size": settings.pool_size,
            "max_overflow": settings.pool_max_overflow,
            "pool_timeout": settings.pool_timeout,
            "pool_recycle": settings.pool_recycle,
            "pool_use_lifo": True,  # surplus connections go idle and get closed server-side
        }
    )
    engine = create_engine(
        settings.url,
        pool_pre_ping=False,  # a ping costs a round trip per checkout; see _reject_dead_connection
        hide_parameters=True,  # bound values (task contents) never reach SQLAlchemy's messages
        use_native_hstore=False,  # skips the hstore probe queries on first connect
        connect_args={
            "connect_timeout": settings.connect_timeout,
            "application_name": "taskcore",
            # Find a peer that vanished without a FIN (NAT timeout, suspended compute) in ~1 min
            # instead of the OS default of hours.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
        **pool_args,
    )
    event.listen(engine, "checkout", _reject_dead_connection)
    event.listen(engine, "checkin", _restore_session_defaults)
    return engine


def _reject_dead_connection(
    dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
) -> None:
    """Replace a pooled connection the server already closed, at no round-trip cost.

    An idle connection has nothing to read. When Neon suspends a compute (or the server
    restarts) the server sends a FATAL 57P01 and closes the socket, which makes it readable:
    a zero-timeout poll sees that locally. Raising DisconnectionError makes the pool discard
    it and connect afresh, before any statement ran, so nothing needs retrying.
    """
    if dbapi_connection.closed:
        raise DisconnectionError("connection closed")
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        _log.info(
            "replacing a pooled connection the server closed",
            extra={"taskcore_event": "stale_connection_replaced"},
        )
        events.emit(events.StaleConnectionReplaced())
        raise DisconnectionError("server closed an idle pooled connection")


def _restore_session_defaults(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    """Return connections to the pool in the default mode (client-side only for psycopg2)."""
    if dbapi_connection is None or dbapi_connection.closed:
        return
    dbapi_connection.set_session(isolation_level="DEFAULT", readonly="DEFAULT", autocommit=False)


def _make_sqlite_engine(settings: Settings, fresh_connections: bool) -> Engine:
    database = settings.url.database
    if database and database != ":memory:":
        folder = Path(database).expanduser().parent
        problem: str | None
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = exc.strerror or type(exc).__name__
        else:
            problem = None
        if problem is not None:
            raise ConfigurationError(
                f"cannot create the folder for the SQLite file ({folder}): {problem}; "
                "set TASKCORE_SQLITE_PATH or DATABASE_URL"
            )
    engine = create_engine(
        settings.url,
        hide_parameters=True,
        connect_args={"timeout": 30},  # wait for another writer's lock instead of failing at once
        **({"poolclass": NullPool} if fresh_connections else {}),
    )

    # pysqlite's legacy transaction handling breaks SAVEPOINT; let SQLAlchemy emit BEGIN itself
    # (the recipe in SQLAlchemy's SQLite dialect docs, "Serializable isolation / Savepoints").
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine

"""Connection diagnostics for operators: which database, is it reachable, how fast."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from taskcore._connect import connector
from taskcore._deadline import Deadline, bounded
from taskcore._sql import compile_for, execute
from taskcore._translate import Phase, guarded

if TYPE_CHECKING:
    from taskcore.database import Database

__all__ = ["ConnectionReport", "check_connection"]

_VERSION = {"postgresql": select(func.version()), "sqlite": select(func.sqlite_version())}


@dataclass(frozen=True, slots=True)
class ConnectionReport:
    """What :func:`check_connection` found; every field is safe to print."""

    backend: str
    url: str  # password masked
    server_version: str
    connect_seconds: float
    round_trip_seconds: float


def check_connection(database: Database, *, deadline: float | None = None) -> ConnectionReport:
    """Open a fresh (unpooled) connection, time it, and ask the server for its version.

    It tries once, within the deadline: a diagnosis should show the failure, not hide it
    behind retries.
    """
    settings = database.settings
    clock = Deadline(deadline or settings.deadline)
    connect = connector(settings)
    started = time.perf_counter()
    dbapi = guarded(lambda: connect(clock), Phase.CONNECT)
    connected = time.perf_counter()
    try:
        if settings.backend == "postgresql":
            # No BEGIN: one round trip, and a pooler never sees a client leave mid-transaction
            # (PgBouncer would have to throw its server connection away).
            dbapi.autocommit = True
        compiled = compile_for(_VERSION[settings.backend], database.dialect)

        def ask() -> str:
            with bounded(clock):
                return str(execute(dbapi.cursor(), compiled, {})[0][0])

        version = guarded(ask, Phase.STATEMENT)
        answered = time.perf_counter()
    finally:
        with contextlib.suppress(Exception):
            dbapi.close()
    return ConnectionReport(
        backend=settings.backend,
        url=settings.masked_url,
        server_version=version,
        connect_seconds=connected - started,
        round_trip_seconds=answered - connected,
    )

"""Connection diagnostics for operators: which database, is it reachable, how fast."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, select

from taskcore._translate import Phase, guarded
from taskcore.engine import current_settings, make_engine

__all__ = ["ConnectionReport", "check_connection"]


@dataclass(frozen=True, slots=True)
class ConnectionReport:
    """What :func:`check_connection` found; every field is safe to print."""

    backend: str
    url: str  # password masked
    server_version: str
    connect_seconds: float
    round_trip_seconds: float


def check_connection() -> ConnectionReport:
    """Open a fresh (unpooled) connection, time it, and ask the server for its version.

    It tries once: a diagnosis should show the failure, not hide it behind retries.
    """
    settings = current_settings()
    engine = make_engine(settings, fresh_connections=True)
    try:
        # The first connection of an engine also runs SQLAlchemy's dialect set-up queries;
        # open one first so the timed connection measures only connecting.
        guarded(lambda: engine.connect().close(), Phase.CONNECT)
        started = time.perf_counter()
        connection = guarded(engine.connect, Phase.CONNECT)
        connected = time.perf_counter()
        with connection:
            version_fn = (
                func.version() if settings.backend == "postgresql" else func.sqlite_version()
            )
            version = guarded(lambda: connection.scalar(select(version_fn)), Phase.STATEMENT)
            answered = time.perf_counter()
    finally:
        engine.dispose()
    return ConnectionReport(
        backend=settings.backend,
        url=settings.masked_url,
        server_version=str(version),
        connect_seconds=connected - started,
        round_trip_seconds=answered - connected,
    )

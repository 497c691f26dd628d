"""The suite's PostgreSQL: taskcore.testing._pgserver (shipped) with the suite's known password.

The sanitisation tests scan output for :data:`APP_PASSWORD`, so the suite's app role always
gets this exact value; everything else lives in the shipped module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from taskcore.testing._pgserver import (
    APP_DB,
    APP_USER,
    ENV_URL,
    SUPERUSER,
    SYSTEM_USER,
    PgServer,
    PgTarget,
    app_target,
    clean_environment,
    free_port,
    unprivileged,
)
from taskcore.testing._pgserver import pg_target as _shipped_pg_target

APP_PASSWORD = "Kn0wn-Secr3t-pw!42"  # the sanitisation tests scan output for this exact value

__all__ = [
    "APP_DB",
    "APP_PASSWORD",
    "APP_USER",
    "ENV_URL",
    "SUPERUSER",
    "SYSTEM_USER",
    "PgServer",
    "PgTarget",
    "app_target",
    "clean_environment",
    "free_port",
    "pg_target",
    "skip_unless_tcp",
    "unprivileged",
]


@contextlib.contextmanager
def pg_target() -> Iterator[PgTarget]:
    """The suite's app role (known password) and fresh taskcore_test, on its own server."""
    with _shipped_pg_target(password=APP_PASSWORD) as target:
        yield target


def skip_unless_tcp(pg: PgTarget) -> None:
    """Skip the test when the server listens on a unix socket: FlakyProxy relays TCP only."""
    if pg.host.startswith("/"):
        pytest.skip("FlakyProxy relays TCP; the suite's server is on a unix socket")

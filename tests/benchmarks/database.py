"""The PostgreSQL server under test, and how implementations reach it (directly or via a proxy)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from psycopg2.extensions import connection
from sqlalchemy.engine import URL

import taskcore

from .link import Endpoint
from .load import LoadTarget

__all__ = ["Database", "open_database", "pgbouncer_target", "psycopg2_params"]


@dataclass(frozen=True)
class Database:
    """A PostgreSQL database reachable over TCP, named by a normalised SQLAlchemy URL."""

    url: URL = field(repr=False)  # holds the password
    source: str

    @classmethod
    def from_url(cls, raw: str, source: str) -> Database:
        """Normalise ``raw`` as taskcore does; refuse anything but PostgreSQL over TCP."""
        url = taskcore.load_settings(database_url=raw).url
        if url.get_backend_name() != "postgresql":
            raise SystemExit("bench: the benchmark needs PostgreSQL (DATABASE_URL is SQLite)")
        if not url.host or url.host.startswith("/") or "host" in url.query:
            raise SystemExit("bench: the benchmark needs a TCP host in the URL (no unix socket)")
        return cls(url=url, source=source)

    @property
    def host(self) -> str:
        """The server's host name or address."""
        assert self.url.host is not None
        return self.url.host

    @property
    def port(self) -> int:
        """The server's port."""
        return self.url.port or 5432

    def link_url(self, proxy: Endpoint | None = None) -> URL:
        """The URL, pointed at ``proxy`` when given (libpq's host/port overrides dropped)."""
        if proxy is None:
            return self.url
        return self.url.set(host=proxy.host, port=proxy.port).difference_update_query(
            ("host", "hostaddr", "port")
        )

    def sa_url(self, proxy: Endpoint | None = None) -> str:
        """The URL as a string with its password, for taskcore.configure / create_engine."""
        return self.link_url(proxy).render_as_string(hide_password=False)

    def connect_params(self, proxy: Endpoint | None = None) -> dict[str, Any]:
        """Keyword arguments of psycopg2.connect for the URL (through ``proxy`` when given)."""
        return psycopg2_params(self.link_url(proxy))

    def connect(self, proxy: Endpoint | None = None, *, autocommit: bool = True) -> connection:
        """A plain psycopg2 connection (autocommit unless told otherwise)."""
        conn: connection = psycopg2.connect(**self.connect_params(proxy))
        conn.autocommit = autocommit
        return conn

    def describe(self, server_version: str) -> str:
        """One line naming the server (never the password)."""
        return (
            f"PostgreSQL {server_version} ({self.source}) at "
            f"{self.host}:{self.port}/{self.url.database}"
        )


def psycopg2_params(url: URL) -> dict[str, Any]:
    """psycopg2.connect keyword arguments for a SQLAlchemy URL."""
    params: dict[str, Any] = url.translate_connect_args(username="user", database="dbname")
    params.update({k: v for k, v in url.query.items() if isinstance(v, str)})
    return params


@contextlib.contextmanager
def pgbouncer_target(db: Database, *, default_pool_size: int, clients: int) -> Iterator[LoadTarget]:
    """A private PgBouncer (transaction pool mode, tests/_pgbouncer.py) in front of ``db``.

    Yields a skipped target, with the reason, when the binary is missing or the URL has no
    password (PgBouncer authenticates clients from its own SCRAM auth file).
    """
    from _pgbouncer import MISSING_REASON, find_pgbouncer, pgbouncer_in_front_of
    from _pgserver import PgTarget

    binary = find_pgbouncer()
    if binary is None:
        yield LoadTarget("pgbouncer", skipped=MISSING_REASON)
        return
    url = db.url
    if not url.password or not url.username or not url.database:
        yield LoadTarget(
            "pgbouncer", skipped="PgBouncer needs a user, password and database in the URL"
        )
        return
    target = PgTarget(
        host=db.host,
        port=db.port,
        dbname=url.database,
        user=url.username,
        password=url.password,
        admin_dsn="",
        server_version=0,
        password_auth_enforced=True,
        embedded=False,
    )
    with pgbouncer_in_front_of(
        target, binary, default_pool_size=default_pool_size, max_client_conn=clients + 100
    ) as bouncer:
        through = Database.from_url(bouncer.url, f"PgBouncer in front of {db.source}")
        yield LoadTarget(
            "pgbouncer",
            url=through.sa_url(),
            connect_params=through.connect_params(),
            description=bouncer.describe(),
        )


@contextlib.contextmanager
def open_database() -> Iterator[Database]:
    """DATABASE_URL when set; else a throwaway embedded PostgreSQL (tests/_pgserver.py)."""
    raw = os.environ.get("DATABASE_URL", "").strip()
    if raw:
        yield Database.from_url(raw, "DATABASE_URL")
        return
    import _pgserver  # tests/ helper, imported only when no DATABASE_URL is given

    with _pgserver.pg_target() as target:
        source = "embedded, tests/_pgserver.py" if target.embedded else "TEST_DATABASE_URL"
        yield Database.from_url(target.url, source)

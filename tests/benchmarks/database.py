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

__all__ = ["Database", "open_database"]


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

    def connect(self, proxy: Endpoint | None = None, *, autocommit: bool = True) -> connection:
        """A plain psycopg2 connection (autocommit unless told otherwise)."""
        url = self.link_url(proxy)
        params: dict[str, Any] = url.translate_connect_args(username="user", database="dbname")
        params.update({k: v for k, v in url.query.items() if isinstance(v, str)})
        conn: connection = psycopg2.connect(**params)
        conn.autocommit = autocommit
        return conn

    def describe(self, server_version: str) -> str:
        """One line naming the server (never the password)."""
        return (
            f"PostgreSQL {server_version} ({self.source}) at "
            f"{self.host}:{self.port}/{self.url.database}"
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

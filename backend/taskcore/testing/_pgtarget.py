"""Databases, roles and URLs on a running PostgreSQL: :class:`PgServer` and :class:`PgTarget`.

:func:`external_server` describes a server you already run; :func:`app_target` makes an
application role and a fresh database it owns on any :class:`PgServer`.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection, make_dsn, parse_dsn

SUPERUSER = "postgres"
ENV_URL = "TEST_DATABASE_URL"
APP_USER = "taskcore_app"
APP_DB = "taskcore_test"


def url_for(user: str, password: str, host: str, port: int, dbname: str) -> str:
    """A libpq/SQLAlchemy URL (parts percent-encoded); a host starting with '/' is a socket dir."""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    db = quote(dbname, safe="")
    if host.startswith("/"):
        return f"postgresql://{auth}/{db}?host={quote(host, safe='')}&port={port}"
    netloc = f"[{host}]" if ":" in host else host
    return f"postgresql://{auth}{netloc}:{port}/{db}"


@dataclass(frozen=True)
class PgServer:
    """A running PostgreSQL server and an administrative way in (never shown in reprs)."""

    host: str
    port: int
    #: A DSN of a role that may create databases (the embedded server's superuser).
    admin_dsn: str = field(repr=False)
    server_version: int
    embedded: bool
    startup_seconds: float = 0.0  # time to initdb + start an embedded server; 0 for external

    def admin_connect(self, dbname: str | None = None) -> connection:
        """An autocommit admin connection (to ``dbname``, else the admin DSN's database)."""
        dsn = self.admin_dsn if dbname is None else make_dsn(self.admin_dsn, dbname=dbname)
        conn = psycopg2.connect(dsn, connect_timeout=10)
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
        return conn

    def url(self, dbname: str) -> str:
        """The admin role's URL for ``dbname`` (what a test's taskcore.Database connects with)."""
        params = parse_dsn(self.admin_dsn)
        return url_for(
            params.get("user") or SUPERUSER,
            params.get("password") or "",
            self.host,
            self.port,
            dbname,
        )

    def describe(self, dbname: str | None = None) -> str:
        """One line naming the server (and database), for reports; never a password."""
        kind = "embedded" if self.embedded else f"${ENV_URL}"
        where = f"{self.host}:{self.port}" + (f"/{dbname}" if dbname else "")
        major, minor = divmod(self.server_version, 10000)
        return f"PostgreSQL {major}.{minor} ({kind}) at {where}"

    def create_database(self, name: str, *, template: str | None = None, owner: str = "") -> None:
        """Drop ``name`` if it exists and create it afresh (as a copy of ``template`` if given)."""
        with contextlib.closing(self.admin_connect()) as conn, conn.cursor() as cur:
            _drop(cur, name, self.server_version)
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            if owner:
                statement += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
            cur.execute(statement)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, disconnecting whoever is still connected to it."""
        with contextlib.closing(self.admin_connect()) as conn, conn.cursor() as cur:
            _drop(cur, name, self.server_version)

    def databases_like(self, prefix: str) -> list[str]:
        """Names of the server's databases that start with ``prefix``."""
        with contextlib.closing(self.admin_connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,))
            return sorted(row[0] for row in cur.fetchall())


def _drop(cur: Any, name: str, version: int) -> None:
    """DROP DATABASE IF EXISTS, forcing other sessions off (terminating them before PG 13)."""
    if version >= 130000:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        return
    cur.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
    )
    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def external_server(url: str) -> PgServer:
    """Describe the server ``url`` names (it is not started or stopped; it is yours)."""
    params = parse_dsn(url)
    conn = psycopg2.connect(url, connect_timeout=10)
    try:
        version: int = conn.server_version
    finally:
        conn.close()
    return PgServer(
        host=params.get("host") or "127.0.0.1",
        port=int(params.get("port") or 5432),
        admin_dsn=make_dsn(url),
        server_version=version,
        embedded=False,
    )


@dataclass(frozen=True)
class PgTarget:
    """An application role and its fresh database on a :class:`PgServer`."""

    host: str
    port: int
    dbname: str
    user: str
    password: str = field(repr=False)  # kept out of pytest's failure reports
    admin_dsn: str = field(repr=False)  # holds the superuser password
    server_version: int
    password_auth_enforced: bool
    embedded: bool
    startup_seconds: float = 0.0  # time to initdb + start an embedded server; 0 for external

    @property
    def url(self) -> str:
        """The application role's URL (password percent-encoded), as taskcore is configured."""
        return url_for(self.user, self.password, self.host, self.port, self.dbname)

    def admin_connect(self) -> connection:
        """Open an independent autocommit superuser connection to the test database."""
        conn = psycopg2.connect(self.admin_dsn, connect_timeout=10)
        conn.autocommit = True
        return conn

    def describe(self) -> str:
        """One line naming the server, for reports (never includes a password)."""
        kind = "embedded" if self.embedded else f"${ENV_URL}"
        return f"PostgreSQL {self.server_version} ({kind}) at {self.host}:{self.port}/{self.dbname}"


def _probe_password_auth(host: str, port: int, user: str, dbname: str) -> bool:
    """True when the server refuses ``user`` with a wrong password (False on a trust server)."""
    try:
        conn = psycopg2.connect(
            host=host,
            port=port,
            user=user,
            password="definitely-" + "not-the-password",
            dbname=dbname,
            connect_timeout=10,
        )
    except psycopg2.OperationalError as exc:
        if "password authentication failed" in str(exc):
            return True
        raise
    conn.close()
    return False


def app_target(
    server: PgServer, *, dbname: str = APP_DB, user: str = APP_USER, password: str | None = None
) -> PgTarget:
    """(Re)create login role ``user`` and a fresh database ``dbname`` it owns, on ``server``."""
    password = password if password is not None else secrets.token_urlsafe(18)
    with contextlib.closing(server.admin_connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
        verb = "ALTER" if cur.fetchone() else "CREATE"
        cur.execute(
            sql.SQL("{} ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(user), sql.Literal(password)
            )
        )
    server.create_database(dbname, owner=user)
    return PgTarget(
        host=server.host,
        port=server.port,
        dbname=dbname,
        user=user,
        password=password,
        admin_dsn=make_dsn(server.admin_dsn, dbname=dbname),
        server_version=server.server_version,
        password_auth_enforced=_probe_password_auth(server.host, server.port, user, dbname),
        embedded=server.embedded,
        startup_seconds=server.startup_seconds,
    )

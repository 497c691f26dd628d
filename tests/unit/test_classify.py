"""The classification table: what is retried and what is not (contracts/errors-and-retries.md)."""

from __future__ import annotations

import pytest

from taskcore._classify import (
    _FATAL_TEXTS,
    _FATAL_VERDICTS,
    _SQLSTATE_RULES,
    Kind,
    Verdict,
    classify,
)

CONNECT_MESSAGES = [
    # (libpq/proxy text at connect time, no SQLSTATE, expected kind)
    (
        'connection to server at "h" (1.2.3.4), port 5432 failed: FATAL:  password authentication '
        'failed for user "alex"',
        Kind.REJECTED,
    ),
    (
        'connection to server at "h", port 5432 failed: FATAL:  database "nope" does not exist',
        Kind.REJECTED,
    ),
    (
        'could not translate host name "ep-x.neon.tech" to address: Name or service not known',
        Kind.REJECTED,
    ),
    (
        'could not translate host name "h" to address: Temporary failure in name resolution',
        Kind.DISCONNECT,
    ),
    ("ERROR:  Couldn't connect to compute node", Kind.DISCONNECT),
    ("ERROR:  Console request failed: endpoint is disabled", Kind.REJECTED),
    ("ERROR:  Your account or project has exceeded the compute time quota", Kind.REJECTED),
    ("ERROR:  Too many connections attempts", Kind.BACKPRESSURE),
    (
        "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
        Kind.BACKPRESSURE,
    ),
    (
        'connection to server at "127.0.0.1", port 6 failed: Connection refused\n\tIs the server '
        "running on that host and accepting TCP/IP connections?",
        Kind.DISCONNECT,
    ),
    ('connection to server at "h", port 5432 failed: timeout expired', Kind.DISCONNECT),
    ("FATAL:  the database system is starting up", Kind.DISCONNECT),
    ("ERROR:  unsupported startup parameter in options: statement_timeout", Kind.REJECTED),
    (
        "ERROR:  Endpoint ID is not specified. Either please upgrade the postgres client",
        Kind.REJECTED,
    ),
    (
        "server closed the connection unexpectedly\n\tThis probably means the server terminated "
        "abnormally",
        Kind.DISCONNECT,
    ),
    ("SSL connection has been closed unexpectedly", Kind.DISCONNECT),
    ("SSL SYSCALL error: EOF detected", Kind.DISCONNECT),
    ("pgbouncer cannot connect to server", Kind.DISCONNECT),
    ("no more connections allowed (max_client_conn)", Kind.BACKPRESSURE),
    ("something nobody has seen before", Kind.PERMANENT),
]


@pytest.mark.parametrize(("message", "kind"), CONNECT_MESSAGES)
def test_connect_time_errors_are_classified_by_their_text(message: str, kind: Kind) -> None:
    """Errors without a SQLSTATE are classified by message text; unknown text is permanent."""
    assert classify(None, message).kind is kind


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [
        ("57P01", Kind.DISCONNECT),
        ("57P02", Kind.DISCONNECT),
        ("57P03", Kind.DISCONNECT),
        ("08006", Kind.DISCONNECT),
        ("08001", Kind.DISCONNECT),
        ("08P01", Kind.DISCONNECT),
        ("40001", Kind.CONFLICT),
        ("40P01", Kind.CONFLICT),
        ("53300", Kind.BACKPRESSURE),
        ("28P01", Kind.REJECTED),
        ("3D000", Kind.REJECTED),
        ("23505", Kind.PERMANENT),
        ("22001", Kind.PERMANENT),
        ("57014", Kind.PERMANENT),
        ("25P03", Kind.PERMANENT),
        ("42P01", Kind.PERMANENT),
        ("0A000", Kind.PERMANENT),
    ],
)
def test_sqlstates_decide_before_text(sqlstate: str, kind: Kind) -> None:
    """A SQLSTATE decides the class, whatever the text says."""
    assert classify(sqlstate, "connection refused").kind is kind


def test_neon_proxy_xx000_is_read_by_its_text() -> None:
    """The Neon proxy sends everything as XX000, so its text is what counts."""
    assert classify("XX000", "Couldn't connect to compute node").kind is Kind.DISCONNECT
    assert classify("XX000", "endpoint is disabled").kind is Kind.REJECTED


def test_sqlalchemy_invalidation_marks_an_unknown_error_as_a_disconnect() -> None:
    """When SQLAlchemy invalidated the connection, an unrecognised text still means disconnect."""
    assert classify(None, "weird", invalidated=True).kind is Kind.DISCONNECT


def test_only_transient_kinds_are_retryable() -> None:
    """Disconnects, back-pressure and conflicts are retryable; rejections and permanent are not."""
    assert {k for k in Kind if k.retryable} == {Kind.DISCONNECT, Kind.BACKPRESSURE, Kind.CONFLICT}


# --- TLS: configuration, never retried (libpq fe-secure-openssl.c, fe-secure-common.c, fe-auth.c)

_AT = 'connection to server at "db.example.com" (10.0.0.7), port 5432 failed: '

TLS_REJECTIONS = [
    # (libpq's text, a fragment the safe reason must contain)
    (_AT + "SSL error: certificate verify failed\n", "not signed by the CA in sslrootcert"),
    (
        _AT + "SSL error: certificate verify failed: unable to get local issuer certificate\n",
        "not signed by the CA in sslrootcert",
    ),
    (
        _AT + 'root certificate file "/home/alex/.postgresql/root.crt" does not exist\nEither '
        "provide the file, use the system's trusted roots with sslrootcert=system, or change "
        "sslmode to disable server certificate verification.\n",
        "root certificate file named by sslrootcert does not exist",
    ),
    (
        _AT + 'could not read root certificate file "/tmp/ca.pem": no certificate or crl found\n',
        "root certificate",
    ),
    (
        _AT + 'server certificate for "localhost" does not match host name "db.example.com"\n',
        "does not match the host name",
    ),
    (
        _AT + 'server certificate for "*.neon.tech" (and 2 other names) does not match host name '
        '"db.example.com"\n',
        "does not match the host name",
    ),
    (_AT + "could not get server's host name from server certificate\n", "host name"),
    (
        _AT + "channel binding required, but server authenticated client without channel binding\n",
        "channel_binding=require",
    ),
    (
        _AT + "channel binding is required, but client does not support it\n",
        "channel_binding=require",
    ),
    (_AT + "channel binding required, but SSL not in use\n", "encrypted connection"),
    (
        _AT + "channel binding is required, but server did not offer an authentication method "
        "that supports channel binding\n",
        "channel_binding=require",
    ),
    (
        _AT + "channel binding required but not supported by server's authentication request\n",
        "channel_binding=require",
    ),
    (
        _AT + "server offered SCRAM-SHA-256-PLUS authentication over a non-SSL connection\n",
        "unencrypted",
    ),
    (
        _AT + "SSL error: tlsv1 alert protocol version\nThis may indicate that the server does not "
        "support any SSL protocol version between TLSv1.3 and TLSv1.3.\n",
        "TLS protocol version",
    ),
    (_AT + "SSL error: unsupported protocol\n", "TLS protocol version"),
    (_AT + "SSL error: sslv3 alert handshake failure\n", "cipher"),
    (_AT + "SSL error: tlsv13 alert certificate required\n", "client certificate"),
    (_AT + "SSL error: tlsv1 alert unknown ca\n", "client certificate"),
    (
        _AT + 'private key file "/home/alex/.postgresql/postgresql.key" has group or world '
        "access; file must have permissions u=rw (0600) or less if owned by the current user\n",
        "sslcert/sslkey",
    ),
    (
        _AT + 'certificate present, but not private key file "/home/alex/.postgresql/'
        'postgresql.key"\n',
        "sslcert/sslkey",
    ),
    ("server does not support SSL, but SSL was required\n", "does not accept TLS"),
    ('invalid "sslmode" value: "verify_full"\n', "invalid TLS setting"),
    ('invalid sslmode value: "verify_full"\n', "invalid TLS setting"),
    ('invalid "ssl_min_protocol_version" value: "TLSv9"\n', "invalid TLS setting"),
    ("invalid SSL protocol version range\n", "invalid TLS setting"),
    (
        'weak sslmode "require" may not be used with sslrootcert=system (use "verify-full")\n',
        "verify-full",
    ),
]


@pytest.mark.parametrize(("message", "reason"), TLS_REJECTIONS)
def test_tls_configuration_failures_are_rejected_with_a_tls_reason(
    message: str, reason: str
) -> None:
    """A TLS failure that configuration causes is rejected (never retried), with a TLS reason."""
    verdict = classify(None, message)
    assert verdict.kind is Kind.REJECTED
    assert not verdict.kind.retryable
    assert verdict.reason.startswith("TLS: ")
    assert reason in verdict.reason
    for secret in ("/home/alex", "/tmp/ca.pem", "db.example.com", "10.0.0.7", "localhost"):
        assert secret not in verdict.reason


def test_a_missing_root_certificate_is_not_taken_for_a_missing_database() -> None:
    """'root certificate file ... does not exist' is TLS, not 'database or role does not exist'."""
    verdict = classify(None, 'root certificate file "/x/root.crt" does not exist\n')
    assert "database" not in verdict.reason
    assert "root certificate" in verdict.reason


@pytest.mark.parametrize(
    "message",
    [
        "SSL connection has been closed unexpectedly\n",
        "SSL SYSCALL error: EOF detected\n",
        "SSL SYSCALL error: Connection reset by peer\n",
        "SSL error: unexpected eof while reading\n",
        "SSL error: decryption failed or bad record mac\n",
    ],
)
def test_a_dropped_tls_link_stays_a_disconnect(message: str) -> None:
    """A TLS link that dies under an established session is a lost connection: retryable."""
    assert classify(None, message).kind is Kind.DISCONNECT


def test_tls_rules_win_over_a_transient_error_from_another_host() -> None:
    """With several hosts, libpq lists every failure; a TLS misconfiguration decides."""
    message = (
        'connection to server at "localhost" (::1), port 5432 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?\n"
        'connection to server at "localhost" (127.0.0.1), port 5432 failed: SSL error: '
        "certificate verify failed\n"
    )
    assert classify(None, message).kind is Kind.REJECTED


# --- FATALs that closed the connection: the SQLSTATE is read back from the server's text

_CLOSED = (
    "server closed the connection unexpectedly\n\tThis probably means the server terminated "
    "abnormally\n\tbefore or while processing the request.\n"
)

FATAL_TEXTS = [
    # (psycopg2's text with no pgcode, as libpq reports it, inferred SQLSTATE, kind)
    ("FATAL:  terminating connection due to administrator command\n" + _CLOSED, "57P01",
     Kind.DISCONNECT),
    ("FATAL:  terminating connection due to unexpected postmaster exit\n" + _CLOSED, "57P01",
     Kind.DISCONNECT),
    ("FATAL:  terminating connection due to idle-in-transaction timeout\n" + _CLOSED, "25P03",
     Kind.PERMANENT),
    ("FATAL:  terminating connection due to idle-session timeout\n" + _CLOSED, "57P05",
     Kind.DISCONNECT),
    ("FATAL:  terminating connection due to transaction timeout\n" + _CLOSED, "25P04",
     Kind.PERMANENT),
    ("WARNING:  terminating connection because of crash of another server process\n" + _CLOSED,
     "57P02", Kind.DISCONNECT),
    ('connection to server at "h" (1.2.3.4), port 5432 failed: FATAL:  the database system is '
     "shutting down\n", "57P03", Kind.DISCONNECT),
    ('connection to server at "h" (1.2.3.4), port 5432 failed: FATAL:  the database system is '
     "starting up\n", "57P03", Kind.DISCONNECT),
    ('connection to server at "h" (1.2.3.4), port 5432 failed: FATAL:  the database system is '
     "not yet accepting connections\nDETAIL:  Consistent recovery state has not been yet "
     "reached.\n", "57P03", Kind.DISCONNECT),
    ("FATAL:  terminating connection due to conflict with recovery\nDETAIL:  User query might "
     "have needed to see row versions that must be removed.\nHINT:  In a moment you should be "
     "able to reconnect to the database and repeat your command.\n" + _CLOSED, "40001",
     Kind.CONFLICT),
    ("FATAL:  terminating connection due to conflict with recovery\nDETAIL:  User was connected "
     "to a database that must be dropped.\n" + _CLOSED, "57P04", Kind.REJECTED),
    ('connection to server at "h" (1.2.3.4), port 5432 failed: FATAL:  sorry, too many clients '
     "already\n", "53300", Kind.BACKPRESSURE),
    ('connection to server at "h" (1.2.3.4), port 5432 failed: FATAL:  remaining connection '
     "slots are reserved for roles with the SUPERUSER attribute\n", "53300", Kind.BACKPRESSURE),
]  # fmt: skip


@pytest.mark.parametrize(("message", "sqlstate", "kind"), FATAL_TEXTS)
def test_the_sqlstate_of_a_fatal_that_closed_the_connection_is_kept(
    message: str, sqlstate: str, kind: Kind
) -> None:
    """A FATAL reported as text only gets its SQLSTATE back, and is classified by it."""
    verdict = classify(None, message, invalidated=True)
    assert verdict.sqlstate == sqlstate
    assert verdict.kind is kind


def test_idle_in_transaction_timeout_is_not_re_run_and_names_the_setting() -> None:
    """25P03, given or read from the text, is permanent and names the server setting."""
    for sqlstate in ("25P03", None):
        message = "FATAL:  terminating connection due to idle-in-transaction timeout\n" + _CLOSED
        verdict = classify(sqlstate, message, invalidated=True)
        assert verdict.kind is Kind.PERMANENT
        assert not verdict.kind.retryable
        assert "idle_in_transaction_session_timeout" in verdict.reason


def test_idle_session_timeout_is_safe_to_retry() -> None:
    """57P05 ended a session that was idle, outside any transaction: a retry is safe."""
    verdict = classify(None, "FATAL:  terminating connection due to idle-session timeout\n")
    assert verdict.kind.retryable
    assert "idle_session_timeout" in verdict.reason


def test_lock_timeout_has_its_own_reason() -> None:
    """55P03 says that a lock was held past lock_timeout, and is not retried."""
    verdict = classify("55P03", "canceling statement due to lock timeout")
    assert verdict.kind is Kind.PERMANENT
    assert (
        verdict.reason == "lock timeout: another transaction held a lock longer than lock_timeout"
    )
    assert verdict.sqlstate == "55P03"


def test_a_given_sqlstate_wins_over_the_text_and_is_reported() -> None:
    """The driver's SQLSTATE decides and is reported as is, whatever FATAL text comes along."""
    verdict = classify("57P01", "terminating connection due to idle-in-transaction timeout")
    assert verdict.sqlstate == "57P01"
    assert verdict.kind is Kind.DISCONNECT


def test_no_sqlstate_and_no_known_fatal_reports_none() -> None:
    """Without a SQLSTATE or a known server FATAL, the verdict reports no SQLSTATE."""
    assert classify(None, "connection refused").sqlstate is None
    assert classify(None, "something nobody has seen before").sqlstate is None
    assert classify("XX000", "Couldn't connect to compute node").sqlstate == "XX000"


def test_a_neon_proxy_xx000_carrying_a_server_fatal_reports_the_fatal_s_code() -> None:
    """XX000 says nothing; a FATAL text inside it gives the real SQLSTATE."""
    verdict = classify("XX000", "terminating connection due to administrator command")
    assert verdict.sqlstate == "57P01"


def test_a_verdict_built_the_old_way_has_no_sqlstate() -> None:
    """Verdict(kind, reason) still works; its SQLSTATE defaults to None."""
    assert Verdict(Kind.PERMANENT, "x").sqlstate is None


def test_every_inferred_sqlstate_has_a_rule_of_its_own() -> None:
    """No SQLSTATE read from a FATAL's text falls through to 'the database reported an error'."""
    for _, code in _FATAL_TEXTS:
        assert code in _SQLSTATE_RULES or code in _FATAL_VERDICTS, code

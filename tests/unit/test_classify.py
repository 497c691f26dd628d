"""The classification table: what is retried and what is not (contracts/errors-and-retries.md)."""

from __future__ import annotations

import pytest

from taskcore._classify import Kind, classify

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

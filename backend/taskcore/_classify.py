"""Decides, in one place, whether a driver error is transient, back-pressure or permanent."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Kind", "Verdict", "classify"]


class Kind(enum.Enum):
    """What a failure means for retrying (table: specs/.../contracts/errors-and-retries.md)."""

    DISCONNECT = "disconnect"  # the link died or could not be made; nothing ran after it
    BACKPRESSURE = "backpressure"  # the server or pooler is shedding load: retry, but slowly
    CONFLICT = "conflict"  # serialization failure or deadlock: re-run the whole transaction
    REJECTED = "rejected"  # the connection was refused for good (credentials, TLS, unknown db)
    PERMANENT = "permanent"  # the statement itself is wrong, or retrying will not help

    @property
    def retryable(self) -> bool:
        """Whether re-running a unit of work that failed this way before COMMIT may succeed."""
        return self in (Kind.DISCONNECT, Kind.BACKPRESSURE, Kind.CONFLICT)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A classification plus a safe, actionable explanation (never the driver's text).

    ``sqlstate`` is the SQLSTATE the driver gave or, when it gave none, the one read from the
    text of a server FATAL that closed the connection (libpq keeps the text, not the code).
    """

    kind: Kind
    reason: str
    sqlstate: str | None = None


_AUTH = "authentication failed: check the user name and password in DATABASE_URL"
_OLD_SCHEMA = (
    "the tasks table was created by an older taskcore and lacks a column; taskcore has no "
    "migrations: recreate the table (or add the column by hand)"
)
_IDLE_IN_TRANSACTION = (
    "the transaction sat idle longer than idle_in_transaction_session_timeout and the server "
    "ended the session (not re-run: the same unit would idle as long again)"
)
_TLS_SETTING = (
    "TLS: DATABASE_URL has an invalid TLS setting (sslmode, sslnegotiation, sslcertmode, "
    "channel_binding or ssl_min/max_protocol_version)"
)
_TLS_CA = "TLS: the server's certificate is not signed by the CA in sslrootcert (or has expired)"
_TLS_HOST = "TLS: the server's certificate does not match the host name"
_TLS_ROOT_MISSING = "TLS: the root certificate file named by sslrootcert does not exist"
_TLS_VERSION = "TLS: client and server share no TLS protocol version (ssl_min/max_protocol_version)"
_TLS_CIPHER = "TLS: client and server share no cipher suite"
_TLS_CLIENT_CERT = "TLS: the server refused the client certificate (sslcert/sslkey)"
_TLS_CLIENT_FILES = (
    "TLS: the client certificate or key (sslcert/sslkey) is missing, unreadable, too widely "
    "readable, or the two do not match"
)
_TLS_CHANNEL_BINDING_AUTH = (
    "TLS: channel_binding=require, but the server authenticated without channel binding "
    "(an authentication method other than SCRAM, or a pooler that cannot bind)"
)

# TLS failures that configuration causes, checked before every other text: libpq prefixes them
# with the same "connection to server ... failed" as transient errors, a root certificate's
# "does not exist" must not read as an unknown database, and no retry can fix any of them.
# Real drops of an established TLS link ("SSL connection has been closed unexpectedly",
# "SSL SYSCALL error", other "SSL error"s) are not here: they stay disconnects below.
_TLS_RULES: tuple[tuple[str, str], ...] = (
    # fe-secure-openssl.c: the CA file; verify_cb keeps OpenSSL's verdict.
    ("certificate verify failed", _TLS_CA),
    ("root certificate file", _TLS_ROOT_MISSING),  # '... "%s" does not exist', 'could not read'
    (
        "could not get home directory to locate root certificate file",
        "TLS: sslmode=verify-ca/verify-full needs sslrootcert (no home directory to look in)",
    ),
    (
        "could not load system root certificate paths",
        "TLS: the system's root certificates cannot be loaded (sslrootcert=system)",
    ),
    # fe-secure-common.c: verify-full's host-name check.
    ("does not match host name", _TLS_HOST),
    ("could not get server's host name from server certificate", _TLS_HOST),
    ("host name must be specified for a verified ssl connection", _TLS_HOST),
    ("ssl certificate's name", _TLS_HOST),  # "contains embedded null", "entry is missing"
    ("ssl certificate's address entry is missing", _TLS_HOST),
    ("certificate contains ip address with invalid length", _TLS_HOST),
    ("certificate could not be obtained", "TLS: the server sent no certificate"),
    # fe-auth.c: channel binding (SCRAM-SHA-256-PLUS).
    ("server authenticated client without channel binding", _TLS_CHANNEL_BINDING_AUTH),
    ("not supported by server's authentication request", _TLS_CHANNEL_BINDING_AUTH),
    (
        "server did not offer an authentication method that supports channel binding",
        _TLS_CHANNEL_BINDING_AUTH,
    ),
    (
        "channel binding is required, but client does not support it",
        "TLS: channel_binding=require, but this libpq cannot do channel binding",
    ),
    (
        "channel binding required, but ssl not in use",
        "TLS: channel_binding=require needs an encrypted connection (sslmode=require or stricter)",
    ),
    (
        "scram-sha-256-plus authentication over a non-ssl connection",
        "TLS: the server offered channel binding over an unencrypted link (TLS stripped?)",
    ),
    ("channel binding", "TLS: channel binding failed: check channel_binding and sslmode"),
    # Client certificate and key files (initialize_SSL).
    ("certificate file", _TLS_CLIENT_FILES),  # "could not open/read certificate file"
    ("private key file", _TLS_CLIENT_FILES),  # missing, not regular, group/world access
    ("private ssl key", _TLS_CLIENT_FILES),
    ("ssl engine", _TLS_CLIENT_FILES),
    # Settings libpq refuses before connecting (connectOptions2).
    ("does not support any ssl protocol version", _TLS_VERSION),  # libpq's hint line
    ("ssl protocol version", _TLS_SETTING),  # invalid value or range; could not set
    ('invalid "ssl', _TLS_SETTING),  # libpq 17: invalid "sslmode" value: "x"
    ("invalid ssl", _TLS_SETTING),  # older: invalid sslmode value: "x"
    ('invalid "channel_binding"', _TLS_SETTING),
    ("invalid channel_binding", _TLS_SETTING),
    ("when ssl support is not compiled in", "TLS: this libpq was built without TLS support"),
    (
        "may not be used with sslrootcert=system",
        "TLS: sslrootcert=system needs sslmode=verify-full",
    ),
    (
        "may not be used with sslnegotiation=direct",
        "TLS: sslnegotiation=direct needs sslmode=require or stricter",
    ),
    ("server does not support ssl", "TLS: the server does not accept TLS, but sslmode requires it"),
    # OpenSSL's reasons for a refused handshake ("SSL error: <reason>"): configuration.
    ("unsupported protocol", _TLS_VERSION),
    ("no protocols available", _TLS_VERSION),
    ("alert protocol version", _TLS_VERSION),
    ("wrong version number", _TLS_VERSION),
    ("wrong ssl version", _TLS_VERSION),
    ("unknown protocol", _TLS_VERSION),
    ("version too low", _TLS_VERSION),
    ("version too high", _TLS_VERSION),
    ("no shared cipher", _TLS_CIPHER),
    ("no cipher match", _TLS_CIPHER),
    ("no ciphers available", _TLS_CIPHER),
    ("alert handshake failure", _TLS_CIPHER),
    ("certificate required", _TLS_CLIENT_CERT),
    ("connection requires a valid client certificate", _TLS_CLIENT_CERT),  # server, clientcert
    ("certificate authentication failed", _TLS_CLIENT_CERT),  # server, auth method "cert"
    ("alert unknown ca", _TLS_CLIENT_CERT),
    ("alert bad certificate", _TLS_CLIENT_CERT),
    ("alert certificate", _TLS_CLIENT_CERT),  # expired, revoked, unknown
    ("alert unsupported certificate", _TLS_CLIENT_CERT),
    ("alert access denied", _TLS_CLIENT_CERT),
    ("unrecognized name", "TLS: the server does not serve the host name sent (SNI)"),
    ("key too small", "TLS: a certificate key is too weak for this OpenSSL's security level"),
    ("md too weak", "TLS: a certificate signature is too weak for this OpenSSL's security level"),
)

# Server FATALs that close the connection. libpq reports them as text with no SQLSTATE when
# the link dies with them (psycopg2 then raises OperationalError, pgcode None), so the code is
# read back from the message (errcodes from PostgreSQL's own ereport calls). The first match
# wins: the dropped-database detail refines "conflict with recovery".
_FATAL_TEXTS: tuple[tuple[str, str], ...] = (
    ("user was connected to a database that must be dropped", "57P04"),
    ("terminating connection due to conflict with recovery", "40001"),
    ("terminating connection due to administrator command", "57P01"),
    ("terminating connection due to unexpected postmaster exit", "57P01"),
    ("terminating connection due to immediate shutdown command", "57P01"),
    ("terminating connection because of crash of another server process", "57P02"),
    ("terminating connection due to idle-in-transaction timeout", "25P03"),
    ("terminating connection due to idle-session timeout", "57P05"),
    ("terminating connection due to transaction timeout", "25P04"),
    ("the database system is shutting down", "57P03"),
    ("the database system is starting up", "57P03"),
    ("the database system is not yet accepting connections", "57P03"),
    ("the database system is not accepting connections", "57P03"),
    ("the database system is in recovery mode", "57P03"),
    ("sorry, too many clients already", "53300"),
    ("remaining connection slots are reserved", "53300"),
)

# What an inferred code means when it differs from the plain SQLSTATE rule below.
_FATAL_VERDICTS: dict[str, tuple[Kind, str]] = {
    "40001": (
        Kind.CONFLICT,
        "a standby ended the session to replay changes (conflict with recovery)",
    ),
}

# Message fragments, matched case-insensitively. Connect-time errors carry no SQLSTATE (libpq
# reports them as text) and Neon's proxy reports everything as XX000, so text is all there is.
# Order matters: permanent causes are checked first, because libpq prefixes them with the same
# "connection to server ... failed" text that transient ones have.
_MESSAGE_RULES: tuple[tuple[str, Kind, str], ...] = (
    ("password authentication failed", Kind.REJECTED, _AUTH),
    ("authentication failed", Kind.REJECTED, _AUTH),
    (
        "no pg_hba.conf entry",
        Kind.REJECTED,
        "the server does not accept this user/database/client address (pg_hba.conf)",
    ),
    ("does not exist", Kind.REJECTED, "the database or role named in DATABASE_URL does not exist"),
    ("temporary failure in name resolution", Kind.DISCONNECT, "DNS lookup failed temporarily"),
    ("name or service not known", Kind.REJECTED, "the host in DATABASE_URL is unknown"),
    ("nodename nor servname", Kind.REJECTED, "the host in DATABASE_URL is unknown"),
    ("could not translate host name", Kind.REJECTED, "the host in DATABASE_URL is unknown"),
    ("endpoint is disabled", Kind.REJECTED, "the Neon endpoint is disabled"),
    ("could not be found", Kind.REJECTED, "the Neon project, branch or endpoint does not exist"),
    ("cannot be found", Kind.REJECTED, "the Neon project, branch or endpoint does not exist"),
    ("quota", Kind.REJECTED, "a Neon quota is exhausted (or the endpoint is under maintenance)"),
    ("active endpoints limit", Kind.REJECTED, "the Neon limit of active computes is reached"),
    (
        "limit of concurrently active endpoints",
        Kind.REJECTED,
        "the Neon limit of active computes is reached",
    ),
    (
        "endpoint id is not specified",
        Kind.REJECTED,
        "the server needs the endpoint id (SNI): use libpq >= 14 or options=endpoint%3D<id>",
    ),
    ("is not allowed", Kind.REJECTED, "the server's IP allow list refuses this client"),
    (
        "unsupported startup parameter",
        Kind.REJECTED,
        "the pooled endpoint refuses startup options: remove options= or use the direct endpoint",
    ),
    ("connection is insecure", Kind.REJECTED, "the server requires TLS: set sslmode=require"),
    ("invalid connection option", Kind.REJECTED, "DATABASE_URL carries an option libpq rejects"),
    ("invalid dsn", Kind.REJECTED, "DATABASE_URL is not a valid connection string"),
    ("invalid integer value", Kind.REJECTED, "DATABASE_URL carries an invalid number"),
    ("unable to open database file", Kind.REJECTED, "the SQLite file cannot be opened or created"),
    ("no such table", Kind.PERMANENT, "the tasks table does not exist: run taskcore.init_db()"),
    ("no such column", Kind.PERMANENT, _OLD_SCHEMA),
    ("has no column named", Kind.PERMANENT, _OLD_SCHEMA),
    ("constraint failed", Kind.PERMANENT, "the database refused the change (constraint violation)"),
    # Back-pressure: the Neon proxy's rate limiter, PgBouncer limits, max_connections.
    ("too many connection", Kind.BACKPRESSURE, "the server is limiting new connections"),
    ("failed to acquire permit", Kind.BACKPRESSURE, "the server is limiting new connections"),
    ("no more connections allowed", Kind.BACKPRESSURE, "the pooler has no free client slots"),
    (
        "query_wait_timeout",
        Kind.BACKPRESSURE,
        "the pooler queue timed out: the server is overloaded",
    ),
    ("database is locked", Kind.BACKPRESSURE, "the SQLite file is locked by another writer"),
    # Transient: cold starts, restarts, suspends, dropped links.
    ("couldn't connect to compute node", Kind.DISCONNECT, "the Neon compute is waking up"),
    ("could not connect to compute node", Kind.DISCONNECT, "the Neon compute is waking up"),
    ("control plane request failed", Kind.DISCONNECT, "the Neon control plane did not answer"),
    ("the database system is", Kind.DISCONNECT, "the server is starting up or shutting down"),
    ("not yet accepting connections", Kind.DISCONNECT, "the server is starting up"),
    ("pgbouncer cannot connect to server", Kind.DISCONNECT, "the pooler cannot reach the server"),
    ("server login has been failing", Kind.DISCONNECT, "the pooler cannot log in to the server"),
    ("terminating connection", Kind.DISCONNECT, "the server ended the connection"),
    ("closed the connection", Kind.DISCONNECT, "the server closed the connection"),
    ("connection has been closed unexpectedly", Kind.DISCONNECT, "the connection was closed"),
    ("ssl syscall error", Kind.DISCONNECT, "the connection was lost"),
    ("ssl error", Kind.DISCONNECT, "the connection was lost"),
    ("eof detected", Kind.DISCONNECT, "the connection was lost"),
    ("early eof", Kind.DISCONNECT, "the connection was lost"),
    ("connection not open", Kind.DISCONNECT, "the connection was lost"),
    ("connection already closed", Kind.DISCONNECT, "the connection was lost"),
    ("could not receive data", Kind.DISCONNECT, "the connection was lost"),
    ("could not send data", Kind.DISCONNECT, "the connection was lost"),
    ("connection reset", Kind.DISCONNECT, "the connection was reset"),
    ("connection refused", Kind.DISCONNECT, "the server refused the connection (down or waking)"),
    ("timeout expired", Kind.DISCONNECT, "connecting timed out (a cold start can take seconds)"),
    ("timed out", Kind.DISCONNECT, "the network timed out"),
    ("network is unreachable", Kind.DISCONNECT, "the network is unreachable"),
    ("no route to host", Kind.DISCONNECT, "the network is unreachable"),
    ("could not connect to server", Kind.DISCONNECT, "the server could not be reached"),
)

# SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html) with a fixed meaning.
_SQLSTATE_RULES: dict[str, tuple[Kind, str]] = {
    "40001": (Kind.CONFLICT, "serialization failure: a concurrent transaction conflicted"),
    "40P01": (Kind.CONFLICT, "deadlock detected"),
    "57P01": (Kind.DISCONNECT, "the server ended the connection (suspend, restart)"),
    "57P02": (Kind.DISCONNECT, "the server crashed and ended the connection"),
    "57P03": (Kind.DISCONNECT, "the server is starting up or shutting down"),
    "57P05": (Kind.DISCONNECT, "the server ended a session left idle (idle_session_timeout)"),
    "53300": (Kind.BACKPRESSURE, "the server has no free connection slots"),
    "3D000": (Kind.REJECTED, "the database named in DATABASE_URL does not exist"),
    "57P04": (Kind.REJECTED, "the database named in DATABASE_URL was dropped"),
    "57014": (Kind.PERMANENT, "the statement was cancelled (statement timeout)"),
    "55P03": (
        Kind.PERMANENT,
        "lock timeout: another transaction held a lock longer than lock_timeout",
    ),
    "25P03": (Kind.PERMANENT, _IDLE_IN_TRANSACTION),
    "25P04": (
        Kind.PERMANENT,
        "the transaction ran longer than transaction_timeout and the server ended the session",
    ),
    "25006": (Kind.PERMANENT, "a write was attempted in a read-only transaction"),
    "42P01": (Kind.PERMANENT, "the tasks table does not exist: run taskcore.init_db()"),
    "42703": (Kind.PERMANENT, _OLD_SCHEMA),
    "42501": (Kind.PERMANENT, "the database role lacks a privilege for this statement"),
}

# SQLSTATE classes (first two characters).
_CLASS_RULES: dict[str, tuple[Kind, str]] = {
    "08": (Kind.DISCONNECT, "the connection failed"),
    "28": (Kind.REJECTED, _AUTH),
    "22": (Kind.PERMANENT, "the database refused a value (data exception)"),
    "23": (Kind.PERMANENT, "the database refused the change (constraint violation)"),
    "42": (Kind.PERMANENT, "the statement does not match the schema"),
    "53": (Kind.PERMANENT, "the server ran out of a resource (disk, memory)"),
}

_UNKNOWN = (Kind.PERMANENT, "the database reported an error")
# XX000 is all the Neon proxy ever sends: its text says more than its code.
_NEON_PROXY_CODE = "XX000"


def classify(sqlstate: str | None, message: str, *, invalidated: bool = False) -> Verdict:
    """Classify a driver error by SQLSTATE, then message text; unknown errors are permanent.

    ``message`` is the driver's text. It is only matched here, never stored or logged.
    ``invalidated`` says the connection is dead (SQLAlchemy's verdict, or psycopg2's
    ``closed``): an unrecognised text then means a disconnect.
    """
    if sqlstate and sqlstate != _NEON_PROXY_CODE:
        return _by_sqlstate(sqlstate)
    text = message.lower()
    for fragment, reason in _TLS_RULES:
        if fragment in text:
            return Verdict(Kind.REJECTED, reason, sqlstate or None)
    for fragment, code in _FATAL_TEXTS:
        if fragment in text:
            kind, reason = _FATAL_VERDICTS.get(code) or _rule_for(code)
            return Verdict(kind, reason, code)
    for fragment, kind, reason in _MESSAGE_RULES:
        if fragment in text:
            return Verdict(kind, reason, sqlstate or None)
    if invalidated:
        return Verdict(Kind.DISCONNECT, "the connection was lost", sqlstate or None)
    return Verdict(*_UNKNOWN, sqlstate or None)


def _rule_for(sqlstate: str) -> tuple[Kind, str]:
    """The (kind, reason) of a SQLSTATE: exact code first, then its class, else unknown."""
    return _SQLSTATE_RULES.get(sqlstate) or _CLASS_RULES.get(sqlstate[:2]) or _UNKNOWN


def _by_sqlstate(sqlstate: str) -> Verdict:
    """The verdict for an error that carries a real SQLSTATE."""
    kind, reason = _rule_for(sqlstate)
    return Verdict(kind, reason, sqlstate)

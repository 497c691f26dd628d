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
    REJECTED = "rejected"  # the connection was refused for good (credentials, unknown db/host)
    PERMANENT = "permanent"  # the statement itself is wrong, or retrying will not help

    @property
    def retryable(self) -> bool:
        """Whether re-running a unit of work that failed this way before COMMIT may succeed."""
        return self in (Kind.DISCONNECT, Kind.BACKPRESSURE, Kind.CONFLICT)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A classification plus a safe, actionable explanation (never the driver's text)."""

    kind: Kind
    reason: str


_AUTH = "authentication failed: check the user name and password in DATABASE_URL"
_OLD_SCHEMA = (
    "the tasks table was created by an older taskcore and lacks a column; taskcore has no "
    "migrations: recreate the table (or add the column by hand)"
)
_TLS = "the TLS settings do not match the server: check sslmode/channel_binding in DATABASE_URL"

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
    ("server does not support ssl", Kind.REJECTED, _TLS),
    ("channel binding", Kind.REJECTED, _TLS),
    ("invalid sslmode", Kind.REJECTED, _TLS),
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
    (
        "remaining connection slots are reserved",
        Kind.BACKPRESSURE,
        "the server has no free connection slots",
    ),
    ("too many clients already", Kind.BACKPRESSURE, "the server has no free connection slots"),
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
_SQLSTATE_RULES: dict[str, Verdict] = {
    "40001": Verdict(Kind.CONFLICT, "serialization failure: a concurrent transaction conflicted"),
    "40P01": Verdict(Kind.CONFLICT, "deadlock detected"),
    "57P01": Verdict(Kind.DISCONNECT, "the server ended the connection (suspend, restart)"),
    "57P02": Verdict(Kind.DISCONNECT, "the server crashed and ended the connection"),
    "57P03": Verdict(Kind.DISCONNECT, "the server is starting up or shutting down"),
    "57P05": Verdict(Kind.DISCONNECT, "the server ended an idle session"),
    "53300": Verdict(Kind.BACKPRESSURE, "the server has no free connection slots"),
    "3D000": Verdict(Kind.REJECTED, "the database named in DATABASE_URL does not exist"),
    "57014": Verdict(Kind.PERMANENT, "the statement was cancelled (statement timeout)"),
    "25P03": Verdict(
        Kind.PERMANENT, "the transaction sat idle past idle_in_transaction_session_timeout"
    ),
    "25006": Verdict(Kind.PERMANENT, "a write was attempted in a read-only transaction"),
    "42P01": Verdict(Kind.PERMANENT, "the tasks table does not exist: run taskcore.init_db()"),
    "42703": Verdict(Kind.PERMANENT, _OLD_SCHEMA),
    "42501": Verdict(Kind.PERMANENT, "the database role lacks a privilege for this statement"),
}

# SQLSTATE classes (first two characters).
_CLASS_RULES: dict[str, Verdict] = {
    "08": Verdict(Kind.DISCONNECT, "the connection failed"),
    "28": Verdict(Kind.REJECTED, _AUTH),
    "22": Verdict(Kind.PERMANENT, "the database refused a value (data exception)"),
    "23": Verdict(Kind.PERMANENT, "the database refused the change (constraint violation)"),
    "42": Verdict(Kind.PERMANENT, "the statement does not match the schema"),
    "53": Verdict(Kind.PERMANENT, "the server ran out of a resource (disk, memory)"),
}

_UNKNOWN = Verdict(Kind.PERMANENT, "the database reported an error")


def classify(sqlstate: str | None, message: str, *, invalidated: bool = False) -> Verdict:
    """Classify a driver error by SQLSTATE, then message text; unknown errors are permanent.

    ``message`` is the driver's text. It is only matched here, never stored or logged.
    ``invalidated`` is SQLAlchemy's verdict that the connection is dead.
    """
    if sqlstate and sqlstate != "XX000":  # XX000 is all the Neon proxy ever sends: read the text
        rule = _SQLSTATE_RULES.get(sqlstate) or _CLASS_RULES.get(sqlstate[:2])
        if rule is not None:
            return rule
        return _UNKNOWN
    text = message.lower()
    for fragment, kind, reason in _MESSAGE_RULES:
        if fragment in text:
            return Verdict(kind, reason)
    if invalidated:
        return Verdict(Kind.DISCONNECT, "the connection was lost")
    return _UNKNOWN

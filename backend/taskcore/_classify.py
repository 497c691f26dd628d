"""Decides, in one place, whether a driver error is transient, back-pressure or permanent."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from taskcore import _classify_texts as texts

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


# The message texts (TLS, server FATALs, connect-time and proxy messages): _classify_texts.
_TLS_RULES = texts.TLS_RULES
_FATAL_TEXTS = texts.FATAL_TEXTS
_MESSAGE_RULES: tuple[tuple[str, Kind, str], ...] = tuple(
    (fragment, Kind(kind), reason) for fragment, kind, reason in texts.MESSAGE_RULES
)

# What an inferred code means when it differs from the plain SQLSTATE rule below.
_FATAL_VERDICTS: dict[str, tuple[Kind, str]] = {
    "40001": (
        Kind.CONFLICT,
        "a standby ended the session to replay changes (conflict with recovery)",
    ),
}

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
    "25P03": (Kind.PERMANENT, texts.IDLE_IN_TRANSACTION),
    "25P04": (
        Kind.PERMANENT,
        "the transaction ran longer than transaction_timeout and the server ended the session",
    ),
    "25006": (Kind.PERMANENT, "a write was attempted in a read-only transaction"),
    "42P01": (Kind.PERMANENT, "the tasks table does not exist: run taskcore.init_db()"),
    "42703": (Kind.PERMANENT, texts.OLD_SCHEMA),
    "42501": (Kind.PERMANENT, "the database role lacks a privilege for this statement"),
}

# SQLSTATE classes (first two characters).
_CLASS_RULES: dict[str, tuple[Kind, str]] = {
    "08": (Kind.DISCONNECT, "the connection failed"),
    "28": (Kind.REJECTED, texts.AUTH),
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
    lowered = message.lower()
    for fragment, reason in _TLS_RULES:
        if fragment in lowered:
            return Verdict(Kind.REJECTED, reason, sqlstate or None)
    for fragment, code in _FATAL_TEXTS:
        if fragment in lowered:
            kind, reason = _FATAL_VERDICTS.get(code) or _rule_for(code)
            return Verdict(kind, reason, code)
    for fragment, kind, reason in _MESSAGE_RULES:
        if fragment in lowered:
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

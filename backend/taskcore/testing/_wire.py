"""PostgreSQL wire framing over bytes: message boundaries, startup and encryption negotiation."""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Iterator
from typing import Final, NamedTuple

__all__ = [
    "CANCEL_REQUEST",
    "DATA_ROW",
    "ERROR_RESPONSE",
    "GSSENC_REQUEST",
    "MAX_STARTUP_LENGTH",
    "QUERY",
    "READY_FOR_QUERY",
    "SSL_REQUEST",
    "SYNC",
    "Conversation",
    "Event",
    "Framer",
    "Mode",
    "Part",
    "is_commit",
]

# First-message request codes from the PostgreSQL protocol ("Message Formats").
SSL_REQUEST: Final = 80877103
GSSENC_REQUEST: Final = 80877104
CANCEL_REQUEST: Final = 80877102
# The server rejects longer startup packets (MAX_STARTUP_PACKET_LENGTH), so anything
# longer is not PostgreSQL framing at all (for example a direct TLS ClientHello).
MAX_STARTUP_LENGTH: Final = 10_000

QUERY: Final = ord("Q")
SYNC: Final = ord("S")
DATA_ROW: Final = ord("D")
READY_FOR_QUERY: Final = ord("Z")
ERROR_RESPONSE: Final = ord("E")
# Messages that open or close a row set, so the per-result DataRow count restarts.
_RESULT_BOUNDARY: Final = frozenset(b"TCEZsI")
_COMMIT_RE: Final = re.compile(rb"\s*(?:COMMIT|END)\b", re.IGNORECASE)


def is_commit(query: bytes) -> bool:
    """Whether a simple Query's text (the body of a 'Q' message) starts with COMMIT or END."""
    return _COMMIT_RE.match(query) is not None


class Mode(enum.Enum):
    """How a direction's next bytes are framed."""

    UNTYPED = "untyped"  # int32 length + int32 code, no type byte (startup phase)
    TYPED = "typed"  # type byte + int32 length
    ENC_REPLY = "enc-reply"  # server's one-byte answer to SSLRequest/GSSENCRequest
    ENC_WAIT = "enc-wait"  # client waits for that answer
    OPAQUE = "opaque"  # encrypted or unrecognised: pass bytes, parse nothing


class Part(enum.Enum):
    """What an Event's bytes are."""

    HEADER = "header"  # a message's type byte and length (startup: its length and code)
    BODY = "body"  # the next bytes of the current message's body
    END = "end"  # the current message is complete (carries no bytes)
    RAW = "raw"  # bytes outside any message: an encryption answer, ciphertext, garbage


class Event(NamedTuple):
    """One step of a framed stream; concatenating every ``data`` gives the stream back."""

    part: Part
    kind: int  # the message's type byte, or its request code when ``startup``; 0 for RAW
    data: bytes
    startup: bool = False  # an untyped (startup-phase) message


class Framer:
    """Incremental framing of one direction; any split of the stream yields the same messages."""

    __slots__ = ("_conversation", "_head", "_remaining", "_startup", "kind", "mode", "rows")

    def __init__(self, conversation: Conversation, mode: Mode) -> None:
        self._conversation = conversation
        self.mode = mode
        self.kind = 0  # type byte (or request code) of the message being read
        self.rows = 0  # DataRows so far in the current result (server direction)
        self._head = bytearray()
        self._remaining = 0
        self._startup = False

    def feed(self, data: bytes) -> Iterator[Event]:
        """Frame a received chunk lazily: stop iterating and the rest stays unparsed."""
        i, n = 0, len(data)
        while i < n:
            if self.mode is Mode.OPAQUE:
                yield Event(Part.RAW, 0, data[i:])
                return
            if self._remaining:
                take = min(self._remaining, n - i)
                piece = data[i : i + take]
                i += take
                self._remaining -= take
                yield Event(Part.BODY, self.kind, piece, self._startup)
                if self._remaining == 0:
                    yield self._end()
                continue
            if self.mode is Mode.ENC_REPLY:
                if self._answer(data[i]):
                    i += 1
                    yield Event(Part.RAW, 0, data[i - 1 : i])
                continue
            if self.mode is Mode.ENC_WAIT:
                # The client did not wait for the answer: not a conversation we understand.
                self._conversation.go_opaque()
                continue
            need = 8 if self.mode is Mode.UNTYPED else 5
            take = min(need - len(self._head), n - i)
            self._head += data[i : i + take]
            i += take
            if len(self._head) < need:
                return
            header = bytes(self._head)
            self._head.clear()
            yield from self._header(header)

    def _answer(self, answer: int) -> bool:
        """Act on the server's answer to an encryption request; True if it was one byte."""
        conversation = self._conversation
        if answer in b"SG":
            # Encryption accepted: from here on the bytes are ciphertext.
            conversation.go_opaque()
            return True
        if answer == ord("N"):
            conversation.client.mode = Mode.UNTYPED
            self.mode = Mode.TYPED
            return True
        # Typically an ErrorResponse from a server that predates the request: frame it
        # as a message; the server closes afterwards.
        self.mode = Mode.TYPED
        conversation.client.mode = Mode.OPAQUE
        return False

    def _header(self, header: bytes) -> Iterator[Event]:
        self._startup = self.mode is Mode.UNTYPED
        if self._startup:
            length, code = struct.unpack("!ii", header)
            if not 8 <= length <= MAX_STARTUP_LENGTH:
                self._conversation.go_opaque()
                yield Event(Part.RAW, 0, header)
                return
            self.kind, self._remaining = code, length - 8
        else:
            (length,) = struct.unpack_from("!i", header, 1)
            if length < 4:
                self._conversation.go_opaque()
                yield Event(Part.RAW, 0, header)
                return
            self.kind, self._remaining = header[0], length - 4
            if self is self._conversation.server:
                self._server_header(self.kind)
        yield Event(Part.HEADER, self.kind, header, self._startup)
        if self._remaining == 0:
            yield self._end()

    def _server_header(self, kind: int) -> None:
        if kind == DATA_ROW:
            self.rows += 1
        elif kind in _RESULT_BOUNDARY:
            self.rows = 0
        if kind == READY_FOR_QUERY:
            self._conversation.ready = True

    def _end(self) -> Event:
        if self._startup:
            if self.kind in (SSL_REQUEST, GSSENC_REQUEST):
                self.mode = Mode.ENC_WAIT
                self._conversation.server.mode = Mode.ENC_REPLY
            elif self.kind >> 16 == 3:  # StartupMessage, protocol 3.x
                self.mode = Mode.TYPED
            else:  # CancelRequest or an unknown protocol: relay without looking
                self.mode = Mode.OPAQUE
        return Event(Part.END, self.kind, b"", self._startup)


class Conversation:
    """Framing of one client-server connection: each direction's state steers the other's."""

    __slots__ = ("client", "ready", "server")

    def __init__(self) -> None:
        self.client = Framer(self, Mode.UNTYPED)
        self.server = Framer(self, Mode.TYPED)
        self.ready = False  # the server sent a ReadyForQuery: authentication is over

    def go_opaque(self) -> None:
        """Stop parsing both directions (encryption started, or bytes we cannot frame)."""
        self.client.mode = self.server.mode = Mode.OPAQUE

    def ends_round_trip(self, event: Event) -> bool:
        """Whether a client event completes a round trip: a Query or Sync after authentication."""
        return (
            self.ready
            and event.part is Part.END
            and not event.startup
            and event.kind in (QUERY, SYNC)
        )

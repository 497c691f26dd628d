"""PostgreSQL wire framing on bytes alone: message boundaries, startup, encryption, round trips."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable

import pytest

from taskcore.testing import _wire
from taskcore.testing._faults import FaultPlan
from taskcore.testing._intercept import Interceptor
from taskcore.testing._wire import Conversation, Event, Framer, Mode, Part

# ---------------------------------------------------------------------- byte builders


def msg(kind: bytes, body: bytes = b"") -> bytes:
    """A typed protocol message: type byte, int32 length (itself included), body."""
    return kind + struct.pack("!i", len(body) + 4) + body


def untyped(code: int, body: bytes = b"") -> bytes:
    """A startup-phase message: int32 length, int32 request code, body."""
    return struct.pack("!ii", len(body) + 8, code) + body


STARTUP = untyped(196608, b"user\0alex\0database\0tasks\0\0")  # protocol 3.0
SSL_REQUEST = untyped(_wire.SSL_REQUEST)
GSSENC_REQUEST = untyped(_wire.GSSENC_REQUEST)
CANCEL = untyped(_wire.CANCEL_REQUEST, struct.pack("!ii", 4242, 99))
AUTH_OK = msg(b"R", struct.pack("!i", 0))
PARAMETER = msg(b"S", b"server_version\x0015.0\0")
KEY_DATA = msg(b"K", struct.pack("!ii", 4242, 99))
IDLE = msg(b"Z", b"I")
ERROR = msg(b"E", b"SERROR\0C42P01\0Mrelation does not exist\0\0")
PARSE = msg(b"P", b"s1\0SELECT $1\0" + struct.pack("!h", 0))
BIND = msg(b"B", b"\0s1\0" + struct.pack("!hhih", 0, 1, 1, 0) + b"7" + struct.pack("!h", 0))
DESCRIBE = msg(b"D", b"P\0")
EXECUTE = msg(b"E", b"\0" + struct.pack("!i", 0))
SYNC = msg(b"S")
ROW_DESCRIPTION = msg(b"T", struct.pack("!h", 0))


def row(value: bytes) -> bytes:
    """A one-column DataRow."""
    return msg(b"D", struct.pack("!hi", 1, len(value)) + value)


def complete(tag: bytes) -> bytes:
    """A CommandComplete with its tag."""
    return msg(b"C", tag + b"\0")


# ---------------------------------------------------------------------- framing helpers


def frame(framer: Framer, chunks: Iterable[bytes]) -> list[Event]:
    """Every event the framer yields for the chunks, fed in order."""
    return [event for chunk in chunks for event in framer.feed(chunk)]


def messages(events: Iterable[Event]) -> list[tuple[int, bytes]]:
    """Complete messages (kind, raw bytes) reassembled from HEADER/BODY/END events."""
    found: list[tuple[int, bytes]] = []
    current = bytearray()
    for event in events:
        if event.part in (Part.HEADER, Part.BODY):
            current += event.data
        elif event.part is Part.END:
            found.append((event.kind, bytes(current)))
            current.clear()
    return found


def bytewise(data: bytes) -> list[bytes]:
    """The stream split into one-byte chunks."""
    return [data[i : i + 1] for i in range(len(data))]


def modes(conversation: Conversation) -> tuple[Mode, Mode]:
    """The (client, server) framing modes."""
    return conversation.client.mode, conversation.server.mode


def authenticated() -> Conversation:
    """A conversation past startup and authentication."""
    conversation = Conversation()
    frame(conversation.client, [STARTUP])
    frame(conversation.server, [AUTH_OK + PARAMETER + KEY_DATA + IDLE])
    return conversation


# ---------------------------------------------------------------------- message boundaries


def test_a_complete_message_is_header_body_end() -> None:
    """A whole message in one chunk yields its header, its body and its end, bytes intact."""
    query = msg(b"Q", b"SELECT 1\0")
    events = frame(authenticated().client, [query])
    assert [e.part for e in events] == [Part.HEADER, Part.BODY, Part.END]
    assert {e.kind for e in events} == {ord("Q")}
    assert events[0].data == query[:5]
    assert events[1].data == b"SELECT 1\0"
    assert events[2].data == b""


def test_a_partial_message_is_not_ended_until_its_last_byte() -> None:
    """A message cut short yields no END until the rest arrives, and an incomplete header yields nothing."""
    query = msg(b"Q", b"SELECT 1\0")
    framer = authenticated().client
    assert frame(framer, [query[:3]]) == []
    partial = frame(framer, [query[3:8]])
    assert [e.part for e in partial] == [Part.HEADER, Part.BODY]
    rest = frame(framer, [query[8:]])
    assert [e.part for e in rest] == [Part.BODY, Part.END]
    assert messages(partial + rest) == [(ord("Q"), query)]


def test_any_split_of_the_stream_yields_the_same_messages() -> None:
    """Coalesced, byte-by-byte and randomly split chunks frame into the same messages and bytes."""
    stream = (
        STARTUP + msg(b"Q", b"BEGIN\0") + PARSE + BIND + EXECUTE + SYNC + msg(b"Q", b"COMMIT\0")
    )
    whole = frame(Conversation().client, [stream])
    rng = random.Random(7)
    splits = [bytewise(stream)]
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 12)))
        splits.append([stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)])
    for chunks in splits:
        events = frame(Conversation().client, chunks)
        assert messages(events) == messages(whole)
        assert b"".join(e.data for e in events) == stream
    kinds = [kind for kind, _ in messages(whole)]
    assert kinds == [196608, *b"QPBESQ"]


def test_stopping_after_an_event_leaves_the_rest_unparsed() -> None:
    """Abandoning feed() after a message's END leaves the framer at that boundary, ready for new bytes."""
    first, second = msg(b"Q", b"SELECT 1\0"), msg(b"Q", b"SELECT 2\0")
    framer = authenticated().client
    for event in framer.feed(first + second[:2]):
        if event.part is Part.END:
            break
    assert messages(frame(framer, [second])) == [(ord("Q"), second)]


def test_a_length_below_four_makes_the_link_opaque() -> None:
    """A typed header whose length cannot hold itself is not PostgreSQL: both directions stop parsing."""
    conversation = authenticated()
    bogus = b"Q" + struct.pack("!i", 3)
    events = frame(conversation.client, [bogus + b"more"])
    assert [(e.part, e.data) for e in events] == [(Part.RAW, bogus), (Part.RAW, b"more")]
    assert modes(conversation) == (Mode.OPAQUE, Mode.OPAQUE)


# ---------------------------------------------------------------------- startup and encryption


def test_startup_packet_is_framed_untyped_then_typed() -> None:
    """The StartupMessage is an untyped message with the protocol code; typed framing follows it."""
    conversation = Conversation()
    events = frame(conversation.client, [STARTUP + SYNC])
    assert messages(events) == [(196608, STARTUP), (ord("S"), SYNC)]
    assert [e.startup for e in events if e.part is Part.END] == [True, False]
    assert conversation.client.mode is Mode.TYPED
    assert not conversation.ready


@pytest.mark.parametrize("request_bytes", [SSL_REQUEST, GSSENC_REQUEST], ids=["ssl", "gssenc"])
def test_refused_encryption_request_returns_to_startup(request_bytes: bytes) -> None:
    """After SSLRequest/GSSENCRequest answered 'N', the server's byte is relayed raw and a StartupMessage follows."""
    conversation = Conversation()
    frame(conversation.client, [request_bytes])
    assert modes(conversation) == (Mode.ENC_WAIT, Mode.ENC_REPLY)
    answer = frame(conversation.server, [b"N"])
    assert [(e.part, e.data) for e in answer] == [(Part.RAW, b"N")]
    assert messages(frame(conversation.client, [STARTUP])) == [(196608, STARTUP)]
    assert modes(conversation) == (Mode.TYPED, Mode.TYPED)


@pytest.mark.parametrize("answer", [b"S", b"G"])
def test_accepted_encryption_makes_both_directions_opaque(answer: bytes) -> None:
    """Once the server accepts encryption every later byte, either way, is relayed as RAW."""
    conversation = Conversation()
    frame(conversation.client, [SSL_REQUEST])
    server = frame(conversation.server, [answer + b"\x16\x03\x01ciphertext"])
    assert [(e.part, e.data) for e in server] == [
        (Part.RAW, answer),
        (Part.RAW, b"\x16\x03\x01ciphertext"),
    ]
    client = frame(conversation.client, [msg(b"Q", b"SELECT 1\0")])
    assert [e.part for e in client] == [Part.RAW]


def test_error_answer_to_ssl_request_is_framed_as_a_message() -> None:
    """A server that predates SSLRequest answers with an ErrorResponse: framed whole, the client side goes opaque."""
    conversation = Conversation()
    frame(conversation.client, [SSL_REQUEST])
    assert messages(frame(conversation.server, [ERROR])) == [(_wire.ERROR_RESPONSE, ERROR)]
    assert conversation.client.mode is Mode.OPAQUE


def test_client_not_waiting_for_the_encryption_answer_goes_opaque() -> None:
    """Bytes from the client before the server answered SSLRequest are not a conversation we frame."""
    conversation = Conversation()
    events = frame(conversation.client, [SSL_REQUEST + STARTUP])
    assert events[-1] == Event(Part.RAW, 0, STARTUP)
    assert conversation.server.mode is Mode.OPAQUE


def test_cancel_request_is_relayed_without_looking() -> None:
    """A CancelRequest is framed as one untyped message, after which the client side is opaque."""
    conversation = Conversation()
    events = frame(conversation.client, [CANCEL + b"anything"])
    assert messages(events) == [(_wire.CANCEL_REQUEST, CANCEL)]
    assert events[-1] == Event(Part.RAW, 0, b"anything")


@pytest.mark.parametrize(
    "first_bytes",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # direct TLS ClientHello
        struct.pack("!ii", 4, 196608),  # shorter than a startup header
        struct.pack("!ii", _wire.MAX_STARTUP_LENGTH + 1, 196608),  # longer than the server allows
    ],
    ids=["tls-hello", "too-short", "too-long"],
)
def test_unrecognised_first_bytes_are_raw(first_bytes: bytes) -> None:
    """A first header outside the startup length limits is relayed verbatim and nothing after it is parsed."""
    conversation = Conversation()
    events = frame(conversation.client, [first_bytes])
    assert all(e.part is Part.RAW for e in events)
    assert b"".join(e.data for e in events) == first_bytes
    assert modes(conversation) == (Mode.OPAQUE, Mode.OPAQUE)


# ---------------------------------------------------------------------- queries and round trips


@pytest.mark.parametrize(
    ("text", "commit"),
    [
        (b"COMMIT\0", True),
        (b"  commit;\0", True),
        (b"END\0", True),
        (b"end transaction\0", True),
        (b"COMMITTED\0", False),
        (b"SELECT 'COMMIT'\0", False),
        (b"ROLLBACK\0", False),
        (b"BEGIN\0", False),
    ],
)
def test_commit_is_recognised_by_the_query_text(text: bytes, commit: bool) -> None:
    """A simple Query counts as a COMMIT when its text starts with the word COMMIT or END."""
    assert _wire.is_commit(text) is commit


def test_simple_query_is_one_round_trip_after_authentication() -> None:
    """Each 'Q' completes a round trip once the server has sent ReadyForQuery, never before."""
    conversation = Conversation()
    early = frame(conversation.client, [STARTUP, msg(b"Q", b"SELECT 1\0")])
    assert not any(conversation.ends_round_trip(e) for e in early)
    frame(conversation.server, [AUTH_OK + IDLE])
    later = frame(conversation.client, [msg(b"Q", b"SELECT 1\0") + msg(b"Q", b"COMMIT\0")])
    assert sum(conversation.ends_round_trip(e) for e in later) == 2


def test_extended_protocol_batch_is_one_round_trip_at_sync() -> None:
    """Parse/Bind/Describe/Execute/Sync frame as five messages and count one round trip, at the Sync."""
    conversation = authenticated()
    events = frame(conversation.client, bytewise(PARSE + BIND + DESCRIBE + EXECUTE + SYNC))
    assert messages(events) == [
        (ord("P"), PARSE),
        (ord("B"), BIND),
        (ord("D"), DESCRIBE),
        (ord("E"), EXECUTE),
        (ord("S"), SYNC),
    ]
    ends = [e for e in events if conversation.ends_round_trip(e)]
    assert ends == [Event(Part.END, ord("S"), b"")]


@pytest.mark.parametrize("status", [b"I", b"T", b"E"], ids=["idle", "in-transaction", "failed"])
def test_ready_for_query_with_each_status_ends_authentication_and_the_result(status: bytes) -> None:
    """ReadyForQuery (idle, in transaction or failed) is framed with its status byte, marks the end of authentication and restarts the row count."""
    conversation = Conversation()
    frame(conversation.client, [STARTUP])
    frame(conversation.server, [AUTH_OK + row(b"x")])
    assert not conversation.ready
    ready = msg(b"Z", status)
    events = frame(conversation.server, [ready])
    assert messages(events) == [(_wire.READY_FOR_QUERY, ready)]
    assert [e.data for e in events if e.part is Part.BODY] == [status]
    assert conversation.ready
    assert conversation.server.rows == 0


def test_data_rows_are_counted_per_result() -> None:
    """The server framer counts DataRows in the current result and restarts at each result boundary."""
    server = authenticated().server
    seen: list[int] = []
    stream = ROW_DESCRIPTION + row(b"a") + row(b"b") + row(b"c") + complete(b"SELECT 3")
    stream += ROW_DESCRIPTION + row(b"d") + complete(b"SELECT 1") + IDLE
    for event in server.feed(stream):
        if event.part is Part.HEADER and event.kind == _wire.DATA_ROW:
            seen.append(server.rows)
    assert seen == [1, 2, 3, 1]
    assert server.rows == 0


def test_error_response_is_framed_whole_and_ends_the_result() -> None:
    """An ErrorResponse mid-result is one message with its fields intact, and the next result counts rows from one."""
    server = authenticated().server
    events = frame(server, bytewise(ROW_DESCRIPTION + row(b"a") + ERROR + msg(b"Z", b"E")))
    assert messages(events)[2] == (_wire.ERROR_RESPONSE, ERROR)
    assert b"C42P01\0" in messages(events)[2][1]
    frame(server, [ROW_DESCRIPTION + row(b"b")])
    assert server.rows == 1


# ---------------------------------------------------------------------- the fault plan on bytes


def intercepted(plan: FaultPlan) -> Interceptor:
    """An interceptor past startup and authentication."""
    intercept = Interceptor(plan)
    intercept.from_client(STARTUP)
    intercept.from_server(AUTH_OK + IDLE)
    return intercept


def test_query_is_held_back_until_complete_then_counted() -> None:
    """A split 'Q' is forwarded only once whole (so a cut lands after it), and counted as a statement."""
    plan = FaultPlan(seed=1)
    intercept = intercepted(plan)
    query = msg(b"Q", b"COMMIT\0")
    assert intercept.from_client(query[:7]) == (b"", False)
    assert intercept.from_client(query[7:]) == (query, False)
    stats = plan.counters.snapshot()
    assert (stats.round_trips, stats.statements, stats.commits) == (1, 1, 1)


def test_cut_after_commit_forwards_the_commit_and_withholds_its_reply() -> None:
    """An armed COMMIT goes up whole; the server's reply is dropped and the cut comes at its ReadyForQuery."""
    plan = FaultPlan(seed=1)
    plan.cut_after_commit(1)
    intercept = intercepted(plan)
    commit = msg(b"Q", b"COMMIT\0")
    assert intercept.from_client(commit + msg(b"Q", b"SELECT 1\0")) == (commit, False)
    assert intercept.from_server(complete(b"COMMIT")) == (b"", False)
    assert intercept.from_server(IDLE) == (b"", True)


def test_cut_mid_result_forwards_exactly_after_rows() -> None:
    """With cut_mid_result(2) the client gets the row description and two rows, then the link is cut."""
    plan = FaultPlan(seed=1)
    plan.cut_mid_result(2)
    intercept = intercepted(plan)
    head = ROW_DESCRIPTION + row(b"a") + row(b"b")
    assert intercept.from_server(head + row(b"c") + complete(b"SELECT 3")) == (head, True)

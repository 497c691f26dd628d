"""FlakyProxy: protocol-aware counting and fault injection, against a real PostgreSQL."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.pool
import pytest
from psycopg2 import sql
from psycopg2.extensions import connection

from _pgserver import PgTarget, skip_unless_tcp
from taskcore.testing._proxy import FlakyProxy, ProxyStats

DEADLINE_S = 10.0  # upper bound for any wait on a condition; tests finish far sooner

postgres = pytest.mark.postgres


# ---------------------------------------------------------------------- helpers


def connect(url: str, **kwargs: Any) -> connection:
    """A psycopg2 connection that cannot hang the suite."""
    kwargs.setdefault("connect_timeout", 5)
    conn: connection = psycopg2.connect(url, **kwargs)
    return conn


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until true; fail after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)  # poll interval only; the loop waits on the condition


def scalar(conn: connection, query: str, params: tuple[Any, ...] = ()) -> Any:
    """First column of the first row."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        row = cur.fetchone()
        assert row is not None
        return row[0]


@pytest.fixture
def table(pg: PgTarget) -> Iterator[sql.Identifier]:
    """A fresh one-column table the app role may write, dropped afterwards."""
    name = sql.Identifier(f"proxy_{uuid.uuid4().hex[:12]}")
    with contextlib.closing(pg.admin_connect()) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(name))
        cur.execute(sql.SQL("GRANT ALL ON {} TO {}").format(name, sql.Identifier(pg.user)))
    yield name
    with contextlib.closing(pg.admin_connect()) as admin, admin.cursor() as cur:
        # A backend whose link was cut may still be finishing; never wait forever on it.
        cur.execute("SET lock_timeout = '10s'")
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))


def committed_ids(pg: PgTarget, table: sql.Identifier) -> list[int]:
    """Ids visible to an independent superuser connection straight to the server."""
    with contextlib.closing(pg.admin_connect()) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(table))
        return [row[0] for row in cur.fetchall()]


# ---------------------------------------------------------------------- fake server


def msg(kind: bytes, body: bytes = b"") -> bytes:
    """A typed protocol message."""
    return kind + struct.pack("!i", len(body) + 4) + body


AUTH_OK = msg(b"R", struct.pack("!i", 0))
READY = msg(b"Z", b"I")
SSL_REQUEST = struct.pack("!ii", 8, 80877103)
_STARTUP_BODY = struct.pack("!i", 196608) + b"user\0fake\0\0"
STARTUP = struct.pack("!i", 4 + len(_STARTUP_BODY)) + _STARTUP_BODY
# What the proxy relays down during a fake startup: 'N', AuthenticationOk, ReadyForQuery.
STARTUP_BYTES_DOWN = 1 + len(AUTH_OK) + len(READY)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly n bytes or raise EOFError."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def recv_msg(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read one typed message: (type, body)."""
    head = recv_exact(sock, 5)
    (length,) = struct.unpack("!i", head[1:])
    return head[:1], recv_exact(sock, length - 4)


def send_bytewise(sock: socket.socket, data: bytes) -> None:
    """Send one byte per send() so the relay sees messages split every which way."""
    for i in range(len(data)):
        sock.sendall(data[i : i + 1])


class FakeServer:
    """A scripted single-connection 'PostgreSQL' on a thread, for framing edge cases."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        """Listen on a free port; `handler` talks to the one connection."""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, args=(handler,), daemon=True)
        self.thread.start()

    def _serve(self, handler: Callable[[socket.socket], None]) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                handler(conn)
        except (EOFError, ConnectionError):
            pass  # the client or the proxy went away: that is what the tests provoke
        except BaseException as exc:  # noqa: BLE001 - reported by close()
            self.error = exc

    def close(self) -> None:
        """Join the thread and re-raise anything the handler hit."""
        self.listener.close()
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def through_proxy(
    serve: Callable[[socket.socket], None],
) -> Iterator[tuple[FlakyProxy, socket.socket]]:
    """A FakeServer running ``serve``, a FlakyProxy in front of it and a client socket through
    the proxy; afterwards the server's thread is joined and anything it raised re-raised."""
    server = FakeServer(serve)
    try:
        with (
            FlakyProxy("127.0.0.1", server.port) as proxy,
            socket.create_connection((proxy.host, proxy.port), timeout=DEADLINE_S) as sock,
        ):
            yield proxy, sock
    finally:
        server.close()


def fake_startup(conn: socket.socket) -> None:
    """Answer an optional SSLRequest with 'N', then authenticate at once, byte by byte."""
    head = recv_exact(conn, 8)
    length, code = struct.unpack("!ii", head)
    if code == 80877103:
        conn.sendall(b"N")
        length, code = struct.unpack("!ii", recv_exact(conn, 8))
    recv_exact(conn, length - 8)
    send_bytewise(conn, AUTH_OK + READY)


def client_startup(sock: socket.socket) -> None:
    """SSLRequest (answered 'N'), startup sent byte by byte, wait for ReadyForQuery."""
    sock.sendall(SSL_REQUEST)
    assert recv_exact(sock, 1) == b"N"
    send_bytewise(sock, STARTUP)
    while recv_msg(sock)[0] != b"Z":
        pass


# ---------------------------------------------------------------------- counting


@postgres
def test_round_trips_are_counted_exactly(
    proxy: FlakyProxy, pg: PgTarget, table: sql.Identifier
) -> None:
    """Connection set-up counts as a connection only; each psycopg2 query is one round trip."""
    with contextlib.closing(connect(proxy.url(pg.url))) as conn:
        assert proxy.stats.connections == 1
        assert proxy.stats.statements == 0
        conn.autocommit = True
        assert scalar(conn, "SELECT 1") == 1
        assert proxy.stats.round_trips == 1
        assert proxy.stats.statements == 1
        assert proxy.stats.commits == 0

        proxy.reset_stats()
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))  # BEGIN + INSERT
        conn.commit()
        stats = proxy.stats
        assert (stats.round_trips, stats.statements, stats.commits) == (3, 3, 1)
        assert stats.bytes_up > 0
        assert stats.bytes_down > 0
        assert stats.faults == 0


@postgres
def test_sslmode_prefer_negotiation_is_parsed_and_counted(pg: PgTarget) -> None:
    """An SSLRequest answered 'N' leaves the link parsed: statements still count."""
    skip_unless_tcp(pg)
    with contextlib.closing(pg.admin_connect()) as admin:
        if scalar(admin, "SHOW ssl") == "on":
            pytest.skip("the server accepts TLS, so a prefer link is opaque by design")
    sizes = {}
    for mode in ("disable", "prefer"):
        # One proxy per mode: a closing link's Terminate must not land in the other's count.
        with (
            FlakyProxy(pg.host, pg.port) as proxy,
            contextlib.closing(
                connect(proxy.url(pg.url), sslmode=mode, gssencmode="disable")
            ) as conn,
        ):
            conn.autocommit = True
            sizes[mode] = proxy.stats.bytes_up
            assert scalar(conn, "SELECT 41 + 1") == 42
            assert proxy.stats.round_trips == 1
            assert proxy.stats.statements == 1
    # The only extra client bytes with sslmode=prefer are the 8-byte SSLRequest.
    assert sizes["prefer"] - sizes["disable"] == 8


def test_split_and_coalesced_messages_are_framed_exactly() -> None:
    """Messages split across reads and several per read are each counted once, with Sync too."""

    def serve(conn: socket.socket) -> None:
        fake_startup(conn)
        while True:
            kind, _ = recv_msg(conn)
            if kind == b"Q":
                send_bytewise(conn, msg(b"C", b"SELECT 1\0") + READY)
            elif kind == b"S":
                conn.sendall(READY)
            elif kind == b"X":
                return

    with through_proxy(serve) as (proxy, sock):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client_startup(sock)
        assert proxy.stats.statements == 0
        batch = msg(b"Q", b"SELECT 1\0") + msg(b"Q", b"  commit;\0") + msg(b"Q", b"END\0")
        sock.sendall(batch)
        for _ in range(3):
            while recv_msg(sock)[0] != b"Z":
                pass
        send_bytewise(sock, msg(b"Q", b"select 'COMMIT'\0"))
        while recv_msg(sock)[0] != b"Z":
            pass
        extended = msg(b"P", b"\0SELECT 1\0\0\0") + msg(b"B", b"\0\0" + b"\0" * 6)
        sock.sendall(extended + msg(b"E", b"\0\0\0\0\0") + msg(b"S"))
        assert recv_msg(sock)[0] == b"Z"
        stats = proxy.stats
        assert (stats.statements, stats.commits, stats.round_trips) == (4, 2, 5)
        sock.sendall(msg(b"X"))


def test_link_becomes_opaque_once_encryption_is_accepted() -> None:
    """After the server answers 'S' the bytes are relayed and counted but never parsed."""
    payload = msg(b"Q", b"COMMIT\0") * 3 + bytes(range(256)) * 40

    def serve(conn: socket.socket) -> None:
        assert recv_exact(conn, 8) == SSL_REQUEST
        conn.sendall(b"S")
        conn.sendall(recv_exact(conn, len(payload)))

    with through_proxy(serve) as (proxy, sock):
        proxy.cut_after_commit()
        sock.sendall(SSL_REQUEST)
        assert recv_exact(sock, 1) == b"S"
        sock.sendall(payload)
        assert recv_exact(sock, len(payload)) == payload
        expected = ProxyStats(connections=1, bytes_up=8 + len(payload), bytes_down=1 + len(payload))
        # The proxy counts a chunk once send() returns, which can be after we read it.
        wait_until(lambda: proxy.stats == expected, "the byte counters to settle")


def test_unrecognised_first_bytes_are_relayed_verbatim() -> None:
    """A stream that is not PostgreSQL framing (a direct TLS hello) passes through untouched."""
    payload = b"\x16\x03\x01\x02\x00" + bytes(range(256)) * 8

    def serve(conn: socket.socket) -> None:
        conn.sendall(recv_exact(conn, len(payload)))

    with through_proxy(serve) as (proxy, sock):
        send_bytewise(sock, payload[:7])
        sock.sendall(payload[7:])
        assert recv_exact(sock, len(payload)) == payload
        assert proxy.stats.statements == 0


def test_unreachable_upstream_fails_the_client_fast() -> None:
    """With nothing listening upstream the client's connect fails at once instead of hanging."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    with FlakyProxy("127.0.0.1", free_port) as proxy:
        started = time.monotonic()
        with pytest.raises(psycopg2.OperationalError):
            connect(f"postgresql://nobody@{proxy.host}:{proxy.port}/none")
        assert time.monotonic() - started < 2.0
        assert proxy.stats.connections >= 1


# ---------------------------------------------------------------------- cuts


@postgres
def test_cut_after_commit_commits_on_server_but_client_sees_error(
    proxy: FlakyProxy, pg: PgTarget, table: Any
) -> None:
    """The COMMIT reaches the server and commits, yet the client only sees a broken link."""
    with contextlib.closing(connect(proxy.url(pg.url))) as conn:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("INSERT INTO {} VALUES (7)").format(table))
        proxy.cut_after_commit()
        with pytest.raises(psycopg2.OperationalError):
            conn.commit()
        assert proxy.wait_for_fault(DEADLINE_S)
        assert conn.closed
    assert committed_ids(pg, table) == [7]
    assert proxy.stats.commits == 1
    assert proxy.faults_fired == 1


@postgres
def test_cut_after_commit_fires_the_given_number_of_times(
    proxy: FlakyProxy, pg: PgTarget, table: Any
) -> None:
    """cut_after_commit(times=2) cuts two COMMITs, then commits go through again."""
    url = proxy.url(pg.url)
    proxy.cut_after_commit(times=2)
    outcomes = []
    for row in (1, 2, 3):
        with contextlib.closing(connect(url)) as conn:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(table), (row,))
            try:
                conn.commit()
                outcomes.append("ok")
            except psycopg2.OperationalError:
                outcomes.append("cut")
    assert outcomes == ["cut", "cut", "ok"]
    assert committed_ids(pg, table) == [1, 2, 3]
    assert proxy.faults_fired == 2


@postgres
def test_cut_after_statements_cuts_during_that_statement_and_nothing_commits(
    proxy: FlakyProxy, pg: PgTarget, table: Any
) -> None:
    """With cut_after_statements(2) the INSERT after BEGIN breaks and its row never commits."""
    with contextlib.closing(connect(proxy.url(pg.url))) as conn:
        proxy.cut_after_statements(2)
        with pytest.raises(psycopg2.OperationalError), conn.cursor() as cur:
            cur.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))  # BEGIN, INSERT
        assert proxy.wait_for_fault(DEADLINE_S)
    assert proxy.stats.statements == 2
    assert committed_ids(pg, table) == []
    # The fault was one-shot: the next link works normally.
    with contextlib.closing(connect(proxy.url(pg.url))) as conn:
        conn.autocommit = True
        assert scalar(conn, "SELECT 1") == 1
    assert proxy.faults_fired == 1


@postgres
def test_cut_mid_result_breaks_the_result(proxy: FlakyProxy, pg: PgTarget) -> None:
    """The next result with more rows than allowed is cut; smaller results pass untouched."""
    with contextlib.closing(connect(proxy.url(pg.url))) as conn:
        conn.autocommit = True
        proxy.cut_mid_result(after_rows=10)
        with conn.cursor() as cur:
            cur.execute("SELECT generate_series(1, 10)")  # exactly 10 rows: not "more than"
            assert len(cur.fetchall()) == 10
        assert proxy.faults_fired == 0
        with pytest.raises(psycopg2.OperationalError), conn.cursor() as cur:
            cur.execute("SELECT generate_series(1, 1000)")
        assert proxy.wait_for_fault(DEADLINE_S)


def test_cut_mid_result_forwards_exactly_after_rows() -> None:
    """The client gets the row description and `after_rows` rows, then the link is reset."""
    description = msg(b"T", b"\0\0")
    rows = [msg(b"D", struct.pack("!hi", 1, 1) + bytes([48 + i])) for i in range(5)]

    def serve(conn: socket.socket) -> None:
        fake_startup(conn)
        assert recv_msg(conn)[0] == b"Q"
        conn.sendall(description + b"".join(rows) + msg(b"C", b"SELECT 5\0") + READY)
        recv_exact(conn, 1)  # until the proxy resets the link

    with through_proxy(serve) as (proxy, sock):
        client_startup(sock)
        wait_until(
            lambda: proxy.stats.bytes_down == STARTUP_BYTES_DOWN, "the startup bytes to count"
        )
        proxy.cut_mid_result(after_rows=2)
        sock.sendall(msg(b"Q", b"SELECT\0"))
        assert proxy.wait_for_fault(DEADLINE_S)
        relayed = proxy.stats.bytes_down - STARTUP_BYTES_DOWN
        assert relayed == len(description) + len(rows[0]) * 2
        received = bytearray()
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                received += chunk
        assert bytes(received) in (description + rows[0] + rows[1], b"")


# ---------------------------------------------------------------------- resets and refusals


@postgres
def test_reset_all_breaks_idle_pooled_connections_and_new_ones_work(
    proxy: FlakyProxy, pg: PgTarget
) -> None:
    """After reset_all an idle pooled connection fails on next use; a fresh one works."""
    pool = psycopg2.pool.SimpleConnectionPool(1, 2, proxy.url(pg.url), connect_timeout=5)
    try:
        conn = pool.getconn()
        conn.autocommit = True
        assert scalar(conn, "SELECT 1") == 1
        pool.putconn(conn)

        proxy.reset_all()
        assert proxy.faults_fired == 1

        conn = pool.getconn()
        with pytest.raises(psycopg2.OperationalError):
            scalar(conn, "SELECT 1")
        pool.putconn(conn, close=True)

        fresh = pool.getconn()
        fresh.autocommit = True
        assert scalar(fresh, "SELECT 2") == 2
        pool.putconn(fresh)
        assert proxy.stats.connections == 2
    finally:
        pool.closeall()


@postgres
def test_refuse_connections_refuses_new_links_and_keeps_live_ones(
    proxy: FlakyProxy, pg: PgTarget
) -> None:
    """While refusing, connects fail at once but an open connection keeps working."""
    url = proxy.url(pg.url)
    with contextlib.closing(connect(url)) as live:
        live.autocommit = True
        proxy.refuse_connections()
        with pytest.raises(psycopg2.OperationalError):
            connect(url)
        assert proxy.wait_for_fault(DEADLINE_S)
        assert scalar(live, "SELECT 3") == 3
        proxy.accept_connections()
        with contextlib.closing(connect(url)) as fresh:
            fresh.autocommit = True
            assert scalar(fresh, "SELECT 4") == 4


@postgres
def test_refuse_for_refuses_during_the_window_and_accepts_after(
    proxy: FlakyProxy, pg: PgTarget
) -> None:
    """refuse_for(0.5) returns at once; connects fail inside the window and succeed after it."""
    url = proxy.url(pg.url)
    started = time.monotonic()
    proxy.refuse_for(0.5)
    assert time.monotonic() - started < 0.25  # it does not sleep in the caller
    try:
        connect(url).close()
    except psycopg2.OperationalError:
        pass
    else:
        # Only possible if this machine stalled past the window before connecting.
        assert time.monotonic() - started >= 0.5

    def connects() -> bool:
        try:
            connect(url).close()
        except psycopg2.OperationalError:
            return False
        return True

    wait_until(connects, "the refusal window to end")
    assert time.monotonic() - started >= 0.5


# ---------------------------------------------------------------------- latency


@postgres
def test_latency_adds_at_least_two_one_way_delays_per_round_trip(
    proxy: FlakyProxy, pg: PgTarget
) -> None:
    """With one-way latency L every round trip takes at least 2L (and not absurdly more)."""
    one_way = 0.05
    with contextlib.closing(connect(proxy.url(pg.url))) as conn:
        conn.autocommit = True
        proxy.set_latency(one_way)
        for _ in range(3):
            started = time.monotonic()
            assert scalar(conn, "SELECT 1") == 1
            elapsed = time.monotonic() - started
            assert elapsed >= 2 * one_way
            assert elapsed < 2 * one_way + 2.0  # generous: only catches runaway delays
        proxy.set_latency(0.0)
        started = time.monotonic()
        assert scalar(conn, "SELECT 1") == 1
        assert time.monotonic() - started < 2 * one_way + 2.0


@postgres
def test_jitter_never_reorders_the_stream(proxy: FlakyProxy, pg: PgTarget) -> None:
    """A many-chunk result relayed with jitter arrives complete and in order."""
    with contextlib.closing(connect(proxy.url(pg.url))) as conn:
        conn.autocommit = True
        proxy.set_latency(0.001, jitter=0.02)
        with conn.cursor() as cur:
            cur.execute("SELECT i, repeat('x', 100) FROM generate_series(1, 20000) AS i")
            assert [row[0] for row in cur.fetchall()] == list(range(1, 20001))
        assert proxy.stats.bytes_down > 20000 * 100


# ---------------------------------------------------------------------- chaos


def chaos_run(pg: PgTarget, seed: int) -> list[str]:
    """A fixed sequential workload under seeded random faults; returns what happened."""
    log: list[str] = []
    with FlakyProxy(pg.host, pg.port, seed=seed) as proxy:
        proxy.set_random_faults(
            p_reset_per_statement=0.25, p_cut_mid_result=0.2, p_refuse_connect=0.25
        )
        url = proxy.url(pg.url)
        conn = None
        try:
            for _ in range(24):
                if conn is None:
                    try:
                        conn = connect(url, sslmode="disable")
                    except psycopg2.OperationalError:
                        log.append("refused")
                        continue
                    conn.autocommit = True
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT generate_series(1, 3)")
                        cur.fetchall()
                    log.append("ok")
                except psycopg2.OperationalError:
                    log.append("cut")
                    conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()
        log.append(f"faults={proxy.faults_fired} statements={proxy.stats.statements}")
    return log


@postgres
def test_same_seed_replays_the_same_fault_decisions(pg: PgTarget) -> None:
    """Two chaos runs with one seed make identical decisions; another seed differs."""
    skip_unless_tcp(pg)
    first = chaos_run(pg, seed=7)
    assert {"ok", "cut", "refused"} <= set(first)
    assert chaos_run(pg, seed=7) == first
    assert chaos_run(pg, seed=8) != first


@postgres
def test_clear_faults_disarms_everything(proxy: FlakyProxy, pg: PgTarget) -> None:
    """After clear_faults no armed or random fault fires and connections are accepted."""
    url = proxy.url(pg.url)
    proxy.set_latency(0.5)
    proxy.refuse_connections()
    proxy.cut_after_statements(1)
    proxy.cut_after_commit()
    proxy.cut_mid_result(0)
    proxy.set_random_faults(p_reset_per_statement=1.0, p_refuse_connect=1.0)
    proxy.clear_faults()
    started = time.monotonic()
    with contextlib.closing(connect(url)) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT generate_series(1, 5)")
            assert len(cur.fetchall()) == 5
        conn.commit()
    assert time.monotonic() - started < 0.5  # well under one second of removed latency
    assert proxy.faults_fired == 0
    assert not proxy.wait_for_fault(0)


# ---------------------------------------------------------------------- lifecycle


@postgres
def test_stop_resets_links_and_joins_its_thread(pg: PgTarget) -> None:
    """stop() breaks live links, closes the port and leaves no thread behind; it is idempotent."""
    skip_unless_tcp(pg)
    proxy = FlakyProxy(pg.host, pg.port).start()
    name = f"FlakyProxy-{proxy.port}"
    assert any(t.name == name for t in threading.enumerate())
    conn = connect(proxy.url(pg.url))
    try:
        conn.autocommit = True
        assert scalar(conn, "SELECT 1") == 1
        proxy.stop()
        assert not any(t.name == name for t in threading.enumerate())
        with pytest.raises(psycopg2.OperationalError):
            scalar(conn, "SELECT 1")
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection((proxy.host, proxy.port), 1),
        ):
            pass
        proxy.stop()
        with pytest.raises(RuntimeError):
            proxy.start()
    finally:
        conn.close()


def test_url_rewrites_only_host_and_port() -> None:
    """url() swaps the address and keeps user, password, database and query byte for byte."""
    with FlakyProxy("127.0.0.1", 5432) as proxy:
        where = f"{proxy.host}:{proxy.port}"
        original = (
            "postgresql://app%40x:p%2Fw%3A%40rd@db.example:6543/my%20db?sslmode=disable&x=%26"
        )
        assert proxy.url(original) == (
            f"postgresql://app%40x:p%2Fw%3A%40rd@{where}/my%20db?sslmode=disable&x=%26"
        )
        assert proxy.url("postgresql+psycopg2://u@h/d") == f"postgresql+psycopg2://u@{where}/d"
        assert proxy.url("postgresql:///d?host=/run/pg&port=1&a=b") == (
            f"postgresql://{where}/d?a=b"
        )
        with pytest.raises(ValueError, match="postgresql"):
            proxy.url("mysql://u@h/d")


def test_host_and_port_need_a_started_proxy() -> None:
    """Before start() there is no address to hand out."""
    proxy = FlakyProxy("127.0.0.1", 5432)
    with pytest.raises(RuntimeError):
        _ = proxy.port
    proxy.stop()  # stopping a proxy that never started is a no-op

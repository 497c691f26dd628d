"""PostgreSQL-aware fault-injection TCP proxy for resilience tests (stdlib only)."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import math
import random
import re
import selectors
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self

__all__ = ["FlakyProxy", "ProxyStats"]

# First-message request codes from the PostgreSQL protocol ("Message Formats").
_SSL_REQUEST: Final = 80877103
_GSSENC_REQUEST: Final = 80877104
_CANCEL_REQUEST: Final = 80877102
# The server rejects longer startup packets (MAX_STARTUP_PACKET_LENGTH), so anything
# longer is not PostgreSQL framing at all (for example a direct TLS ClientHello).
_MAX_STARTUP_LENGTH: Final = 10_000

_Q: Final = ord("Q")
_SYNC: Final = ord("S")
_DATA_ROW: Final = ord("D")
_READY: Final = ord("Z")
# Messages that open or close a row set, so the per-result DataRow count restarts.
_RESULT_BOUNDARY: Final = frozenset(b"TCEZsI")
_COMMIT_RE: Final = re.compile(rb"\s*(?:COMMIT|END)\b", re.IGNORECASE)

_RECV_SIZE: Final = 65536
# Stop reading a side once this much is waiting for the other side, so a slow
# (or latency-delayed) peer cannot make the proxy buffer without bound.
_HIGH_WATER: Final = 1 << 20
_LINGER_RST: Final = struct.pack("ii", 1, 0)
_JOIN_TIMEOUT: Final = 10.0
_COMMAND_TIMEOUT: Final = 10.0

# Parser modes for one direction of a link.
_UNTYPED: Final = 0  # int32 length + int32 code, no type byte (startup phase)
_TYPED: Final = 1  # type byte + int32 length
_ENC_REPLY: Final = 2  # server's one-byte answer to SSLRequest/GSSENCRequest
_ENC_WAIT: Final = 3  # client waits for that answer
_OPAQUE: Final = 4  # encrypted or unrecognised: count bytes, parse nothing

# Actions queued behind forwarded bytes.
_CUT: Final = "cut"
_EOF: Final = "eof"


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyStats:
    """Snapshot of a FlakyProxy's counters since start() or the last reset_stats()."""

    connections: int = 0
    """Client connections accepted and forwarded (refused ones count as faults)."""
    round_trips: int = 0
    """Client 'Q' (simple query) and 'S' (Sync) messages after authentication."""
    statements: int = 0
    """Client 'Q' messages after authentication (one per message, whatever its text)."""
    commits: int = 0
    """Statements whose text starts with COMMIT or END."""
    bytes_up: int = 0
    """Bytes delivered to the server."""
    bytes_down: int = 0
    """Bytes delivered to the clients."""
    faults: int = 0
    """Faults fired: links cut or reset, connections refused."""


def _new_counters() -> dict[str, int]:
    """Mutable counters with exactly ProxyStats' fields (snapshotted into one)."""
    return dict.fromkeys((f.name for f in dataclasses.fields(ProxyStats)), 0)


class _Parser:
    """Incremental framing state for one direction; survives any split of the stream."""

    __slots__ = ("capture", "discard", "head", "kind", "mode", "remaining", "rows")

    def __init__(self, mode: int) -> None:
        self.mode = mode
        self.head = bytearray()
        self.remaining = 0
        self.kind = 0
        self.capture: bytearray | None = None
        self.discard = False
        self.rows = 0


class _Pipe:
    """One direction of a link: parser, latency queue and unsent bytes."""

    __slots__ = ("action", "backlog", "done", "dst", "eof", "last_due", "out", "parser", "queue")

    def __init__(self, dst: socket.socket, mode: int) -> None:
        self.dst = dst
        self.parser = _Parser(mode)
        self.queue: collections.deque[tuple[float, bytes, str | None]] = collections.deque()
        self.out = bytearray()
        self.action: str | None = None
        self.backlog = 0
        self.last_due = 0.0
        self.eof = False
        self.done = False


class _Link:
    """A client connection and its upstream connection."""

    __slots__ = (
        "addr_index",
        "client",
        "closed",
        "connecting",
        "doomed",
        "down",
        "masks",
        "ready",
        "server",
        "swallowing",
        "up",
    )

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.up = _Pipe(server, _UNTYPED)
        self.down = _Pipe(client, _TYPED)
        self.masks: dict[socket.socket, int] = {}
        self.addr_index = 0
        self.connecting = True
        self.closed = False
        self.ready = False  # server sent its first ReadyForQuery: authentication is over
        self.doomed = False  # a cut is queued: forward nothing more
        self.swallowing = False  # a COMMIT is being cut: hide the server's reply

    def pipe_from(self, sock: socket.socket) -> _Pipe:
        return self.up if sock is self.client else self.down


class _Tag:
    """Selector payload naming what a readiness event is for."""

    __slots__ = ("link", "sock")

    def __init__(self, link: _Link | None, sock: socket.socket | None) -> None:
        self.link = link
        self.sock = sock


def _rst_close(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN: the peer
    # sees "connection reset", as when a compute vanishes rather than shuts down.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    sock.close()


def _check_probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return float(value)


def _check_seconds(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


class FlakyProxy:
    """TCP proxy in front of PostgreSQL that injects network faults on demand.

    Clients connect to ``(proxy.host, proxy.port)`` (or to ``proxy.url(url)``); every
    connection is relayed to the upstream server by one background thread that also
    parses the PostgreSQL wire protocol, so faults can fire at meaningful points:
    after the n-th statement, after a COMMIT reached the server, in the middle of a
    result set. Links that switch to TLS or GSS encryption become opaque: only
    latency, refusals and resets apply to them.

    All random decisions (random faults and latency jitter) derive from one
    ``random.Random(seed)``; jitter draws from a child generator seeded from it, so
    chunking of the byte stream cannot shift the fault decisions. Determinism holds
    for the sequence of decisions given the same sequence of messages and
    connections: replaying a failing chaos run with the same seed and the same
    workload makes the same choices at the same points.

    ``stop()`` closes every socket and joins the thread; the thread never prints an
    exception: if it fails, ``stop()`` raises.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        seed: int | None = None,
    ) -> None:
        if not 0 < upstream_port < 65536:
            raise ValueError(f"upstream_port out of range: {upstream_port!r}")
        if not 0 <= listen_port < 65536:
            raise ValueError(f"listen_port out of range: {listen_port!r}")
        self._upstream_host = upstream_host
        self._upstream_port = upstream_port
        self._listen_host = listen_host
        self._listen_port = listen_port

        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._jitter_rng = random.Random(self._rng.getrandbits(64))
        self._fault_event = threading.Event()
        self._counters = _new_counters()

        # Fault configuration, guarded by _lock.
        self._one_way = 0.0
        self._jitter = 0.0
        self._refusing = False
        self._refuse_until = 0.0
        self._statement_countdown: int | None = None
        self._reply_countdown: int | None = None
        self._p_lose_reply = 0.0
        self._commit_cuts = 0
        self._mid_result_rows: int | None = None
        self._p_reset_per_statement = 0.0
        self._p_cut_after_commit = 0.0
        self._p_cut_mid_result = 0.0
        self._p_refuse_connect = 0.0

        # Lifecycle, guarded by _lock.
        self._state = "new"
        self._thread: threading.Thread | None = None
        self._wake_w: socket.socket | None = None
        self._address: tuple[str, int] | None = None
        self._commands: collections.deque[tuple[Callable[[], None], threading.Event]] = (
            collections.deque()
        )

        # Owned by the loop thread once started.
        self._stopping = threading.Event()
        self._crash: BaseException | None = None
        self._sel: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._upstream: list[tuple[int, tuple[object, ...]]] = []
        self._links: set[_Link] = set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind the listening socket and start relaying; returns self."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError("a FlakyProxy can be started only once")
            self._state = "starting"
        listener: socket.socket | None = None
        sel: selectors.BaseSelector | None = None
        wake_r: socket.socket | None = None
        wake_w: socket.socket | None = None
        try:
            upstream = [
                (family, sockaddr)
                for family, _, _, _, sockaddr in socket.getaddrinfo(
                    self._upstream_host, self._upstream_port, type=socket.SOCK_STREAM
                )
            ]
            family, _, _, _, bind_addr = socket.getaddrinfo(
                self._listen_host,
                self._listen_port,
                type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE,
            )[0]
            listener = socket.socket(family, socket.SOCK_STREAM)
            # Lets a fixed listen_port be reused right after a previous proxy stopped.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(bind_addr)
            listener.listen(128)
            listener.setblocking(False)
            wake_r, wake_w = socket.socketpair()
            wake_r.setblocking(False)
            wake_w.setblocking(False)
            sel = selectors.DefaultSelector()
            sel.register(listener, selectors.EVENT_READ, _Tag(None, listener))
            sel.register(wake_r, selectors.EVENT_READ, _Tag(None, None))
            host, port = listener.getsockname()[:2]
            thread = threading.Thread(target=self._run, name=f"FlakyProxy-{port}", daemon=True)
            self._upstream = [(fam, tuple(addr)) for fam, addr in upstream]
            self._sel, self._listener, self._wake_r = sel, listener, wake_r
            thread.start()
        except BaseException:
            for closable in (sel, listener, wake_r, wake_w):
                if closable is not None:
                    closable.close()
            self._sel = self._listener = self._wake_r = None
            with self._lock:
                self._state = "stopped"
            raise
        with self._lock:
            self._thread = thread
            self._wake_w = wake_w
            self._address = (str(host), int(port))
            self._state = "running"
        return self

    def stop(self) -> None:
        """Reset every link, close all sockets and join the thread; idempotent."""
        with self._lock:
            if self._state in ("new", "stopped"):
                return
            thread = self._thread
            self._state = "stopping"
        self._stopping.set()
        self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError("FlakyProxy thread did not stop")
        with self._lock:
            if self._wake_w is not None:
                self._wake_w.close()
                self._wake_w = None
            self._state = "stopped"
            crash, self._crash = self._crash, None
        if crash is not None:
            raise RuntimeError("FlakyProxy relay thread failed") from crash

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ addressing

    @property
    def host(self) -> str:
        """Host clients connect to."""
        return self._bound()[0]

    @property
    def port(self) -> int:
        """Port clients connect to."""
        return self._bound()[1]

    def _bound(self) -> tuple[str, int]:
        address = self._address
        if address is None:
            raise RuntimeError("the proxy has no address until start() is called")
        return address

    def url(self, url: str) -> str:
        """Return ``url`` (postgresql://...) with its host and port replaced by the proxy's.

        User, password, database and query are kept byte for byte (percent-encoding
        included); ``host``, ``hostaddr`` and ``port`` query parameters are dropped
        because libpq would let them override the rewritten address.
        """
        parts = urllib.parse.urlsplit(url)
        if not parts.scheme.startswith("postgres"):
            raise ValueError(f"not a postgresql:// URL: scheme {parts.scheme!r}")
        userinfo, at, _ = parts.netloc.rpartition("@")
        host, port = self._bound()
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{userinfo}{at}{host}:{port}"
        kept = [
            item
            for item in parts.query.split("&")
            if item
            and urllib.parse.unquote(item.partition("=")[0]) not in ("host", "hostaddr", "port")
        ]
        return parts._replace(netloc=netloc, query="&".join(kept)).geturl()

    # ------------------------------------------------------------------ faults

    def set_latency(self, one_way: float, jitter: float = 0.0) -> None:
        """Delay every forwarded chunk by ``one_way`` + uniform(0, ``jitter``) seconds.

        Applies in both directions, so a round trip gains at least 2 x ``one_way``;
        order within a direction is preserved.
        """
        one_way = _check_seconds("one_way", one_way)
        jitter = _check_seconds("jitter", jitter)
        with self._lock:
            self._one_way, self._jitter = one_way, jitter

    def refuse_connections(self) -> None:
        """Reset new connections at once (compute down); live links are untouched."""
        with self._lock:
            self._refusing = True
            self._refuse_until = 0.0
            self._fault_event.clear()

    def accept_connections(self) -> None:
        """Stop refusing new connections."""
        with self._lock:
            self._refusing = False
            self._refuse_until = 0.0

    def refuse_for(self, seconds: float) -> None:
        """Refuse new connections now and accept them again after ``seconds``.

        Returns immediately: the deadline is checked by the relay thread on every
        connection attempt.
        """
        seconds = _check_seconds("seconds", seconds)
        with self._lock:
            self._refusing = False
            self._refuse_until = time.monotonic() + seconds
            self._fault_event.clear()

    def reset_all(self) -> None:
        """Reset every live link (RST to both sides), like a compute suspend.

        Synchronous: when it returns, every link that existed has been reset.
        """
        self._call(self._reset_links)

    def cut_after_statements(self, n: int) -> None:
        """Arm: cut the link that sends the n-th further statement, right after forwarding it.

        Statements are counted across all links from now on. The server may or may
        not have started executing it; the client never gets the reply.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        with self._lock:
            self._statement_countdown = n
            self._fault_event.clear()

    def cut_after_reply(self, n: int = 1) -> None:
        """Arm: the n-th further statement runs on the server; its reply is withheld.

        Like ``cut_after_commit`` but for any statement: the proxy waits for the server's
        ReadyForQuery, drops the reply and resets the link. For an autocommit write (one
        statement, its own transaction) this is a lost reply after the write committed.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        with self._lock:
            self._reply_countdown = n
            self._fault_event.clear()

    def cut_after_commit(self, times: int = 1) -> None:
        """Arm: the next ``times`` COMMITs reach the server, whose reply is then withheld.

        The proxy waits for the server's ReadyForQuery after the COMMIT, drops the
        reply and resets the link, so the server has committed and the client only
        sees a broken connection.
        """
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times!r}")
        with self._lock:
            self._commit_cuts = times
            self._fault_event.clear()

    def cut_mid_result(self, after_rows: int = 1) -> None:
        """Arm: in the next result with more than ``after_rows`` rows, forward that many and cut."""
        if after_rows < 0:
            raise ValueError(f"after_rows must be >= 0, got {after_rows!r}")
        with self._lock:
            self._mid_result_rows = after_rows
            self._fault_event.clear()

    def set_random_faults(
        self,
        *,
        p_reset_per_statement: float = 0.0,
        p_cut_after_commit: float = 0.0,
        p_cut_mid_result: float = 0.0,
        p_refuse_connect: float = 0.0,
        p_lose_reply: float = 0.0,
    ) -> None:
        """Seeded chaos: every statement, COMMIT, result and connection attempt rolls the RNG.

        A statement hit is cut like ``cut_after_statements``, a COMMIT hit like
        ``cut_after_commit``, a result hit is cut just before its first row, a connection
        hit is refused, and a lost-reply hit (any statement that is not COMMIT) is cut like
        ``cut_after_reply``. A probability of 0 draws nothing.
        """
        p_reply = _check_probability("p_lose_reply", p_lose_reply)
        p_stmt = _check_probability("p_reset_per_statement", p_reset_per_statement)
        p_commit = _check_probability("p_cut_after_commit", p_cut_after_commit)
        p_result = _check_probability("p_cut_mid_result", p_cut_mid_result)
        p_refuse = _check_probability("p_refuse_connect", p_refuse_connect)
        with self._lock:
            self._p_reset_per_statement = p_stmt
            self._p_cut_after_commit = p_commit
            self._p_cut_mid_result = p_result
            self._p_refuse_connect = p_refuse
            self._p_lose_reply = p_reply
            self._fault_event.clear()

    def clear_faults(self) -> None:
        """Disarm every fault, accept connections and remove latency."""
        with self._lock:
            self._one_way = self._jitter = 0.0
            self._refusing = False
            self._refuse_until = 0.0
            self._statement_countdown = None
            self._reply_countdown = None
            self._p_lose_reply = 0.0
            self._commit_cuts = 0
            self._mid_result_rows = None
            self._p_reset_per_statement = self._p_cut_after_commit = 0.0
            self._p_cut_mid_result = self._p_refuse_connect = 0.0
            self._fault_event.clear()

    @property
    def faults_fired(self) -> int:
        """Faults fired since start() or the last reset_stats() (same as ``stats.faults``)."""
        with self._lock:
            return self._counters["faults"]

    def wait_for_fault(self, timeout: float) -> bool:
        """Wait until a fault fires; True if one fired since the last arming call.

        Every arming method (and clear_faults) clears the signal, so this waits for
        the fault armed last, not an earlier one.
        """
        return self._fault_event.wait(timeout)

    @property
    def stats(self) -> ProxyStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return ProxyStats(**self._counters)

    def reset_stats(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._counters = _new_counters()

    # ------------------------------------------------------------------ thread plumbing

    def _wake(self) -> None:
        with self._lock:
            if self._wake_w is None:
                return
            # A full buffer already guarantees a pending wake-up.
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def _call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the relay thread and wait for it (sockets belong to that thread)."""
        with self._lock:
            thread = self._thread if self._state == "running" else None
            if thread is None:
                return
            done = threading.Event()
            self._commands.append((fn, done))
        self._wake()
        deadline = time.monotonic() + _COMMAND_TIMEOUT
        while not done.wait(0.05):
            if not thread.is_alive() or time.monotonic() > deadline:
                break
        crash = self._crash
        if crash is not None:
            raise RuntimeError("FlakyProxy relay thread failed") from crash
        if not done.is_set():
            raise RuntimeError("FlakyProxy relay thread did not answer")

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a thread must never print; stop() re-raises
            self._crash = exc
        finally:
            self._teardown()

    def _loop(self) -> None:
        sel = self._sel
        assert sel is not None
        while not self._stopping.is_set():
            for key, mask in sel.select(self._next_timeout()):
                tag: _Tag = key.data
                if tag.link is None:
                    if tag.sock is None:
                        self._drain_wake()
                    else:
                        self._accept()
                    continue
                link = tag.link
                if link.closed:
                    continue
                if link.connecting:
                    self._finish_connect(link)
                elif mask & selectors.EVENT_READ and tag.sock is not None:
                    self._read(link, tag.sock)
            self._run_commands()
            now = time.monotonic()
            for link in list(self._links):
                self._pump(link, now)
                if not link.closed:
                    self._update_interest(link)

    def _teardown(self) -> None:
        for link in list(self._links):
            self._close(link, abort=True)
        with self._lock:
            pending = list(self._commands)
            self._commands.clear()
        for _, done in pending:
            done.set()
        if self._sel is not None:
            self._sel.close()
        for sock in (self._listener, self._wake_r):
            if sock is not None:
                sock.close()
        self._sel = self._listener = self._wake_r = None

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._wake_r.recv(4096):
                pass

    def _run_commands(self) -> None:
        while True:
            with self._lock:
                if not self._commands:
                    return
                fn, done = self._commands.popleft()
            try:
                fn()
            finally:
                done.set()

    def _next_timeout(self) -> float | None:
        due = min(
            (
                pipe.queue[0][0]
                for link in self._links
                for pipe in (link.up, link.down)
                if pipe.queue and not pipe.out and pipe.action is None
            ),
            default=None,
        )
        return None if due is None else max(0.0, due - time.monotonic())

    # ------------------------------------------------------------------ connections

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError:
                # Out of descriptors or similar: leave the rest in the backlog for now.
                return
            client.setblocking(False)
            if self._should_refuse():
                _rst_close(client)
                self._fault_fired()
                continue
            with self._lock:
                self._counters["connections"] += 1
            # The client socket stands in for the upstream one until _connect_upstream
            # has created it; nothing uses link.server before then.
            self._connect_upstream(_Link(client, client), 0)

    def _should_refuse(self) -> bool:
        with self._lock:
            if self._refusing or time.monotonic() < self._refuse_until:
                return True
            p = self._p_refuse_connect
            return p > 0.0 and self._rng.random() < p

    def _connect_upstream(self, link: _Link, index: int) -> None:
        """Start a non-blocking connect to the index-th upstream address, or give up."""
        while index < len(self._upstream):
            family, addr = self._upstream[index]
            server = socket.socket(family, socket.SOCK_STREAM)
            server.setblocking(False)
            err = server.connect_ex(addr)
            if err in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                link.server = server
                link.up.dst = server
                link.addr_index = index
                link.connecting = True
                self._links.add(link)
                self._set_interest(link, server, selectors.EVENT_WRITE)
                return
            server.close()
            index += 1
        # Upstream unreachable: the client sees what it would see without a proxy.
        self._links.discard(link)
        _rst_close(link.client)
        link.closed = True

    def _finish_connect(self, link: _Link) -> None:
        err = link.server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._set_interest(link, link.server, 0)
            link.server.close()
            self._connect_upstream(link, link.addr_index + 1)
            return
        link.connecting = False
        for sock in (link.client, link.server):
            # Protocol messages are small; Nagle would add delays the test did not ask for.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._update_interest(link)

    def _set_interest(self, link: _Link, sock: socket.socket, want: int) -> None:
        assert self._sel is not None
        have = link.masks.get(sock, 0)
        if want == have:
            return
        if have == 0:
            self._sel.register(sock, want, _Tag(link, sock))
        elif want == 0:
            self._sel.unregister(sock)
        else:
            self._sel.modify(sock, want, _Tag(link, sock))
        if want:
            link.masks[sock] = want
        else:
            link.masks.pop(sock, None)

    def _update_interest(self, link: _Link) -> None:
        if link.connecting:
            return
        for sock, inbound, outbound in (
            (link.client, link.up, link.down),
            (link.server, link.down, link.up),
        ):
            want = 0
            if not inbound.eof and inbound.backlog < _HIGH_WATER:
                want |= selectors.EVENT_READ
            if outbound.out:
                want |= selectors.EVENT_WRITE
            self._set_interest(link, sock, want)

    def _close(self, link: _Link, *, abort: bool) -> None:
        if link.closed:
            return
        link.closed = True
        self._links.discard(link)
        for sock in (link.client, link.server):
            if sock in link.masks:
                self._set_interest(link, sock, 0)
            if abort:
                _rst_close(sock)
            else:
                sock.close()
        link.up.queue.clear()
        link.down.queue.clear()

    def _cut(self, link: _Link) -> None:
        self._close(link, abort=True)
        self._fault_fired()

    def _fault_fired(self) -> None:
        with self._lock:
            self._counters["faults"] += 1
        self._fault_event.set()

    def _reset_links(self) -> None:
        for link in list(self._links):
            self._cut(link)

    # ------------------------------------------------------------------ relaying

    def _read(self, link: _Link, sock: socket.socket) -> None:
        pipe = link.pipe_from(sock)
        try:
            data = sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # A reset on one side is passed on to the other, as a router would.
            self._close(link, abort=True)
            return
        if not data:
            pipe.eof = True
            self._enqueue(pipe, b"", _EOF)
            return
        if link.doomed:
            return
        forward, action = self._feed(link, pipe, data)
        if action == _CUT:
            link.doomed = True
        if forward or action is not None:
            self._enqueue(pipe, forward, action)

    def _enqueue(self, pipe: _Pipe, data: bytes, action: str | None) -> None:
        with self._lock:
            one_way, jitter = self._one_way, self._jitter
            if jitter > 0.0:
                one_way += self._jitter_rng.uniform(0.0, jitter)
        # Never schedule before the previous chunk: jitter must not reorder the stream.
        due = max(time.monotonic() + one_way, pipe.last_due)
        pipe.last_due = due
        pipe.queue.append((due, data, action))
        pipe.backlog += len(data)

    def _pump(self, link: _Link, now: float) -> None:
        for pipe, upstream in ((link.up, True), (link.down, False)):
            if link.closed or link.connecting:
                return
            self._flush(link, pipe, upstream, now)
        if not link.closed and link.up.done and link.down.done:
            self._close(link, abort=False)

    def _flush(self, link: _Link, pipe: _Pipe, upstream: bool, now: float) -> None:
        while True:
            if pipe.out:
                try:
                    sent = pipe.dst.send(pipe.out)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    self._close(link, abort=True)
                    return
                del pipe.out[:sent]
                pipe.backlog -= sent
                with self._lock:
                    if upstream:
                        self._counters["bytes_up"] += sent
                    else:
                        self._counters["bytes_down"] += sent
                if pipe.out:
                    return
            if pipe.action is not None:
                action, pipe.action = pipe.action, None
                if action == _CUT:
                    self._cut(link)
                    return
                # End of stream: pass the half-close on once everything before it is out.
                with contextlib.suppress(OSError):
                    pipe.dst.shutdown(socket.SHUT_WR)
                pipe.done = True
            if not pipe.queue or pipe.queue[0][0] > now:
                return
            _, data, pipe.action = pipe.queue.popleft()
            pipe.out += data

    # ------------------------------------------------------------------ protocol

    def _feed(self, link: _Link, pipe: _Pipe, data: bytes) -> tuple[bytes, str | None]:
        """Parse a received chunk; return the bytes to forward and what to do after them."""
        p = pipe.parser
        upstream = pipe is link.up
        out = bytearray()
        i, n = 0, len(data)
        while i < n:
            if upstream and link.swallowing:
                break  # the link is about to be cut after a COMMIT: nothing more goes up
            if p.mode == _OPAQUE:
                out += data[i:]
                break
            if p.remaining:
                take = min(p.remaining, n - i)
                piece = data[i : i + take]
                i += take
                p.remaining -= take
                if p.capture is not None:
                    p.capture += piece
                elif not p.discard:
                    out += piece
                if p.remaining == 0:
                    action = self._message_done(link, p, out)
                    if action is not None:
                        return bytes(out), action
                continue
            if p.mode == _ENC_REPLY:
                answer = data[i]
                if answer in b"SG":
                    # Encryption accepted: from here on the bytes are ciphertext.
                    out.append(answer)
                    i += 1
                    self._go_opaque(link)
                elif answer == ord("N"):
                    out.append(answer)
                    i += 1
                    link.up.parser.mode = _UNTYPED
                    p.mode = _TYPED
                else:
                    # Typically an ErrorResponse from a server that predates the
                    # request; parse it as a message, the server closes afterwards.
                    p.mode = _TYPED
                    link.up.parser.mode = _OPAQUE
                continue
            if p.mode == _ENC_WAIT:
                # The client did not wait for the answer: not a conversation we understand.
                self._go_opaque(link)
                continue
            need = 8 if p.mode == _UNTYPED else 5
            take = min(need - len(p.head), n - i)
            p.head += data[i : i + take]
            i += take
            if len(p.head) < need:
                break
            header = bytes(p.head)
            p.head.clear()
            action = (
                self._client_header(link, p, header, out)
                if upstream
                else self._server_header(link, p, header, out)
            )
            if action is not None:
                return bytes(out), action
        return bytes(out), None

    def _go_opaque(self, link: _Link) -> None:
        for pipe in (link.up, link.down):
            pipe.parser.mode = _OPAQUE
            pipe.parser.discard = False

    def _client_header(self, link: _Link, p: _Parser, header: bytes, out: bytearray) -> str | None:
        p.discard = False
        p.capture = None
        if p.mode == _UNTYPED:
            length, code = struct.unpack("!ii", header)
            out += header
            if not 8 <= length <= _MAX_STARTUP_LENGTH:
                self._go_opaque(link)
                return None
            p.kind = code
            p.remaining = length - 8
        else:
            (length,) = struct.unpack_from("!i", header, 1)
            if length < 4:
                out += header
                self._go_opaque(link)
                return None
            p.kind = header[0]
            p.remaining = length - 4
            if p.kind == _Q:
                # Held back until complete: COMMIT detection needs the text, and a
                # cut must come exactly after the whole message.
                p.capture = bytearray(header)
            else:
                out += header
        return self._message_done(link, p, out) if p.remaining == 0 else None

    def _server_header(self, link: _Link, p: _Parser, header: bytes, out: bytearray) -> str | None:
        (length,) = struct.unpack_from("!i", header, 1)
        if length < 4:
            out += header
            self._go_opaque(link)
            return None
        kind = header[0]
        p.kind = kind
        p.remaining = length - 4
        p.capture = None
        if link.swallowing:
            # The COMMIT's outcome is known once the server is ready again: cut now,
            # the client gets none of the reply.
            p.discard = True
            return _CUT if kind == _READY else None
        p.discard = False
        if kind == _DATA_ROW:
            p.rows += 1
            if self._cut_this_row(p.rows):
                return _CUT
        elif kind in _RESULT_BOUNDARY:
            p.rows = 0
        if kind == _READY:
            link.ready = True
        out += header
        return None

    def _cut_this_row(self, rows: int) -> bool:
        with self._lock:
            armed = self._mid_result_rows
            if armed is not None and rows > armed:
                self._mid_result_rows = None
                return True
            p = self._p_cut_mid_result
            return rows == 1 and p > 0.0 and self._rng.random() < p

    def _message_done(self, link: _Link, p: _Parser, out: bytearray) -> str | None:
        if p.mode == _UNTYPED:
            if p.kind in (_SSL_REQUEST, _GSSENC_REQUEST):
                p.mode = _ENC_WAIT
                link.down.parser.mode = _ENC_REPLY
            elif p.kind >> 16 == 3:  # StartupMessage, protocol 3.x
                p.mode = _TYPED
            else:  # CancelRequest or an unknown protocol: relay without looking
                p.mode = _OPAQUE
            return None
        if p is not link.up.parser:
            return None
        if p.kind == _Q and p.capture is not None:
            message, p.capture = bytes(p.capture), None
            out += message
            if link.ready:
                return self._statement(link, message[5:])
        elif p.kind == _SYNC and link.ready:
            with self._lock:
                self._counters["round_trips"] += 1
        return None

    def _statement(self, link: _Link, text: bytes) -> str | None:
        is_commit = _COMMIT_RE.match(text) is not None
        cut_commit = False
        with self._lock:
            c = self._counters
            c["round_trips"] += 1
            c["statements"] += 1
            if is_commit:
                c["commits"] += 1
            if self._statement_countdown is not None:
                self._statement_countdown -= 1
                if self._statement_countdown == 0:
                    self._statement_countdown = None
                    return _CUT
            if self._reply_countdown is not None:
                self._reply_countdown -= 1
                if self._reply_countdown == 0:
                    self._reply_countdown = None
                    cut_commit = True
            if cut_commit:
                pass
            elif is_commit and self._commit_cuts > 0:
                self._commit_cuts -= 1
                cut_commit = True
            elif self._p_reset_per_statement > 0.0 and (
                self._rng.random() < self._p_reset_per_statement
            ):
                return _CUT
            elif is_commit and self._p_cut_after_commit > 0.0:
                cut_commit = self._rng.random() < self._p_cut_after_commit
            elif not is_commit and self._p_lose_reply > 0.0:
                cut_commit = self._rng.random() < self._p_lose_reply
        if cut_commit:
            link.swallowing = True
        return None

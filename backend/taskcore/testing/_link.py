"""One proxied connection: reads, latency queues and forwarding, with the fault plan applied."""

from __future__ import annotations

import collections
import contextlib
import enum
import selectors
import socket
import struct
import time
from typing import Final

from taskcore.testing._faults import FaultPlan
from taskcore.testing._intercept import Interceptor

__all__ = ["Link", "rst_close"]

_RECV_SIZE: Final = 65536
# Stop reading a side once this much is waiting for the other side, so a slow
# (or latency-delayed) peer cannot make the proxy buffer without bound.
_HIGH_WATER: Final = 1 << 20
_LINGER_RST: Final = struct.pack("ii", 1, 0)


class _After(enum.Enum):
    """What to do once the bytes queued before it have been sent."""

    CUT = "cut"
    EOF = "eof"


def rst_close(sock: socket.socket) -> None:
    """Close so the peer sees "connection reset", as when a compute vanishes."""
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    sock.close()


class _Pipe:
    """One direction of a link: latency queue and unsent bytes."""

    __slots__ = ("after", "backlog", "done", "dst", "eof", "last_due", "out", "queue")

    def __init__(self, dst: socket.socket) -> None:
        self.dst = dst
        self.queue: collections.deque[tuple[float, bytes, _After | None]] = collections.deque()
        self.out = bytearray()
        self.after: _After | None = None
        self.backlog = 0
        self.last_due = 0.0
        self.eof = False
        self.done = False

    def due(self) -> float | None:
        """When the next queued chunk may go, if the pipe is waiting only on the clock."""
        if self.queue and not self.out and self.after is None:
            return self.queue[0][0]
        return None


class Link:
    """A client connection and its upstream connection; all methods run on the relay thread."""

    __slots__ = (
        "_plan",
        "_sel",
        "addr_index",
        "client",
        "closed",
        "connecting",
        "doomed",
        "down",
        "intercept",
        "masks",
        "server",
        "up",
    )

    def __init__(self, client: socket.socket, sel: selectors.BaseSelector, plan: FaultPlan) -> None:
        self.client = client
        # The client socket stands in for the upstream one until the relay has created
        # it (see attach); nothing uses it before then.
        self.server = client
        self.up = _Pipe(client)
        self.down = _Pipe(client)
        self.intercept = Interceptor(plan)
        self.masks: dict[socket.socket, int] = {}
        self.addr_index = 0
        self.connecting = True
        self.closed = False
        self.doomed = False  # a cut is queued: forward nothing more
        self._sel = sel
        self._plan = plan

    # ------------------------------------------------------------------ connecting

    def attach(self, server: socket.socket, index: int) -> None:
        """Take ``server``, connecting to the index-th upstream address, and wait for it."""
        self.server = self.up.dst = server
        self.addr_index = index
        self.connecting = True
        self.set_interest(server, selectors.EVENT_WRITE)

    def connected(self) -> None:
        self.connecting = False
        for sock in (self.client, self.server):
            # Protocol messages are small; Nagle would add delays the test did not ask for.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.update_interest()

    def give_up(self) -> None:
        """No upstream address answered: reset the client (nothing else was registered)."""
        rst_close(self.client)
        self.closed = True

    # ------------------------------------------------------------------ selector

    def set_interest(self, sock: socket.socket, want: int) -> None:
        have = self.masks.get(sock, 0)
        if want == have:
            return
        if have == 0:
            self._sel.register(sock, want, self)
        elif want == 0:
            self._sel.unregister(sock)
        else:
            self._sel.modify(sock, want, self)
        if want:
            self.masks[sock] = want
        else:
            self.masks.pop(sock, None)

    def update_interest(self) -> None:
        if self.connecting or self.closed:
            return
        for sock, inbound, outbound in (
            (self.client, self.up, self.down),
            (self.server, self.down, self.up),
        ):
            want = 0
            if not inbound.eof and inbound.backlog < _HIGH_WATER:
                want |= selectors.EVENT_READ
            if outbound.out:
                want |= selectors.EVENT_WRITE
            self.set_interest(sock, want)

    def close(self, *, abort: bool) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.client, self.server):
            if sock in self.masks:
                self.set_interest(sock, 0)
            if abort:
                rst_close(sock)
            else:
                sock.close()
        self.up.queue.clear()
        self.down.queue.clear()

    def cut(self) -> None:
        self.close(abort=True)
        self._plan.fault_fired()

    # ------------------------------------------------------------------ relaying

    def receive(self, sock: socket.socket) -> None:
        """Read what ``sock`` has and queue it, with any fault, for the other side."""
        pipe = self.up if sock is self.client else self.down
        try:
            data = sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # A reset on one side is passed on to the other, as a router would.
            self.close(abort=True)
            return
        if not data:
            pipe.eof = True
            self._enqueue(pipe, b"", _After.EOF)
            return
        if self.doomed:
            return
        if pipe is self.up:
            forward, cut = self.intercept.from_client(data)
        else:
            forward, cut = self.intercept.from_server(data)
        if cut:
            self.doomed = True
        if forward or cut:
            self._enqueue(pipe, forward, _After.CUT if cut else None)

    def _enqueue(self, pipe: _Pipe, data: bytes, after: _After | None) -> None:
        # Never schedule before the previous chunk: jitter must not reorder the stream.
        due = max(time.monotonic() + self._plan.delay(), pipe.last_due)
        pipe.last_due = due
        pipe.queue.append((due, data, after))
        pipe.backlog += len(data)

    def pump(self, now: float) -> None:
        """Send whatever is due in both directions; close once both sides have finished."""
        for pipe, upstream in ((self.up, True), (self.down, False)):
            if self.closed or self.connecting:
                return
            self._flush(pipe, upstream, now)
        if not self.closed and self.up.done and self.down.done:
            self.close(abort=False)

    def next_due(self) -> float | None:
        return min((d for d in (self.up.due(), self.down.due()) if d is not None), default=None)

    def _flush(self, pipe: _Pipe, upstream: bool, now: float) -> None:
        while True:
            if pipe.out:
                try:
                    sent = pipe.dst.send(pipe.out)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    self.close(abort=True)
                    return
                del pipe.out[:sent]
                pipe.backlog -= sent
                if upstream:
                    self._plan.counters.add(bytes_up=sent)
                else:
                    self._plan.counters.add(bytes_down=sent)
                if pipe.out:
                    return
            if pipe.after is not None:
                after, pipe.after = pipe.after, None
                if after is _After.CUT:
                    self.cut()
                    return
                # End of stream: pass the half-close on once everything before it is out.
                with contextlib.suppress(OSError):
                    pipe.dst.shutdown(socket.SHUT_WR)
                pipe.done = True
            if not pipe.queue or pipe.queue[0][0] > now:
                return
            _, data, pipe.after = pipe.queue.popleft()
            pipe.out += data

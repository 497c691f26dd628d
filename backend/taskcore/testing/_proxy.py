"""PostgreSQL-aware fault-injection TCP proxy for resilience tests (stdlib only)."""

from __future__ import annotations

import urllib.parse
from types import TracebackType
from typing import Self

from taskcore.testing._faults import FaultPlan
from taskcore.testing._loop import Loop
from taskcore.testing._relay import Relay
from taskcore.testing._stats import ProxyStats

__all__ = ["FlakyProxy", "ProxyStats"]


def _rewrite_url(url: str, host: str, port: int) -> str:
    """``url`` pointing at host:port; host/hostaddr/port query parameters would override it."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        raise ValueError(f"not a postgresql:// URL: scheme {parts.scheme!r}")
    userinfo, at, _ = parts.netloc.rpartition("@")
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{userinfo}{at}{host}:{port}"
    kept = [
        item
        for item in parts.query.split("&")
        if item and urllib.parse.unquote(item.partition("=")[0]) not in ("host", "hostaddr", "port")
    ]
    return parts._replace(netloc=netloc, query="&".join(kept)).geturl()


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
        self._plan = FaultPlan(seed)
        self._relay = Relay((upstream_host, upstream_port), (listen_host, listen_port), self._plan)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind the listening socket and start relaying; returns self."""
        self._relay.start()
        return self

    def stop(self) -> None:
        """Reset every link, close all sockets and join the thread; idempotent."""
        self._relay.stop()

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
        address = self._relay.address
        if address is None:
            raise RuntimeError("the proxy has no address until start() is called")
        return address

    def url(self, url: str) -> str:
        """Return ``url`` (postgresql://...) with its host and port replaced by the proxy's.

        User, password, database and query are kept byte for byte (percent-encoding
        included); ``host``, ``hostaddr`` and ``port`` query parameters are dropped
        because libpq would let them override the rewritten address.
        """
        return _rewrite_url(url, *self._bound())

    # ------------------------------------------------------------------ faults

    def set_latency(self, one_way: float, jitter: float = 0.0) -> None:
        """Delay every forwarded chunk by ``one_way`` + uniform(0, ``jitter``) seconds.

        Applies in both directions, so a round trip gains at least 2 x ``one_way``;
        order within a direction is preserved.
        """
        self._plan.set_latency(one_way, jitter)

    def refuse_connections(self) -> None:
        """Reset new connections at once (compute down); live links are untouched."""
        self._plan.refuse()

    def accept_connections(self) -> None:
        """Stop refusing new connections."""
        self._plan.accept()

    def refuse_for(self, seconds: float) -> None:
        """Refuse new connections now and accept them again after ``seconds``.

        Returns immediately: the deadline is checked by the relay thread on every
        connection attempt.
        """
        self._plan.refuse(seconds)

    def reset_all(self) -> None:
        """Reset every live link (RST to both sides), like a compute suspend.

        Synchronous: when it returns, every link that existed has been reset.
        """
        self._relay.call(Loop.reset_links)

    def cut_after_statements(self, n: int) -> None:
        """Arm: cut the link that sends the n-th further statement, right after forwarding it.

        Statements are counted across all links from now on. The server may or may
        not have started executing it; the client never gets the reply.
        """
        self._plan.cut_after_statements(n)

    def cut_after_reply(self, n: int = 1) -> None:
        """Arm: the n-th further statement runs on the server; its reply is withheld.

        Like ``cut_after_commit`` but for any statement: the proxy waits for the server's
        ReadyForQuery, drops the reply and resets the link. For an autocommit write (one
        statement, its own transaction) this is a lost reply after the write committed.
        """
        self._plan.cut_after_reply(n)

    def cut_after_commit(self, times: int = 1) -> None:
        """Arm: the next ``times`` COMMITs reach the server, whose reply is then withheld.

        The proxy waits for the server's ReadyForQuery after the COMMIT, drops the
        reply and resets the link, so the server has committed and the client only
        sees a broken connection.
        """
        self._plan.cut_after_commit(times)

    def cut_mid_result(self, after_rows: int = 1) -> None:
        """Arm: in the next result with more than ``after_rows`` rows, forward that many and cut."""
        self._plan.cut_mid_result(after_rows)

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
        self._plan.set_random(
            p_reset_per_statement=p_reset_per_statement,
            p_cut_after_commit=p_cut_after_commit,
            p_cut_mid_result=p_cut_mid_result,
            p_refuse_connect=p_refuse_connect,
            p_lose_reply=p_lose_reply,
        )

    def clear_faults(self) -> None:
        """Disarm every fault, accept connections and remove latency."""
        self._plan.clear()

    # ------------------------------------------------------------------ observing

    @property
    def faults_fired(self) -> int:
        """Faults fired since start() or the last reset_stats() (same as ``stats.faults``)."""
        return self._plan.counters.get("faults")

    def wait_for_fault(self, timeout: float) -> bool:
        """Wait until a fault fires; True if one fired since the last arming call.

        Every arming method (and clear_faults) clears the signal, so this waits for
        the fault armed last, not an earlier one.
        """
        return self._plan.fired.wait(timeout)

    @property
    def stats(self) -> ProxyStats:
        """A consistent snapshot of the counters."""
        return self._plan.counters.snapshot()

    def reset_stats(self) -> None:
        """Zero every counter."""
        self._plan.counters.reset()

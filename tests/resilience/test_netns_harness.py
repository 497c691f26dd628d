"""The kernel-level fault harness itself (tests/_netns.py), proven with plain psycopg2.

These tests do not involve taskcore: they show that a cut is really silent (an established
connection and a new connect hang with no error until their own timeouts), that heal() restores
service, that the unix-socket admin connection survives a cut, that cleanup leaves nothing
behind, and that the silent resolver makes getaddrinfo block until glibc gives up.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import psycopg2
import pytest

import _netns
from _netns import NetnsPg, SilentResolver

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

HANG_BOUND_S = 3.0  # how long a call on a cut link must stay blocked, with no result or error
RELEASE_BOUND_S = 10.0  # upper bound for a released or timed-out call to finish


@dataclass
class Outcome:
    """What a call run in a background thread did: still running, returned, or raised."""

    done: bool
    result: Any = None
    error: BaseException | None = None
    elapsed: float = 0.0


class Background:
    """Run a call in a daemon thread and observe it within a bound (never a sleep)."""

    def __init__(self, call: Callable[[], Any]) -> None:
        """Start `call` at once in a daemon thread (daemon: a hung call cannot hang the suite)."""
        self._call = call
        self._outcome = Outcome(done=False)
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Record the call's result or exception and how long it took."""
        try:
            self._outcome.result = self._call()
        except BaseException as exc:  # noqa: BLE001 - recorded for the test to assert on
            self._outcome.error = exc
        self._outcome.elapsed = time.monotonic() - self._started

    def join(self, bound: float) -> Outcome:
        """Wait at most `bound` seconds for the call; report what it did by then."""
        self._thread.join(bound)
        self._outcome.done = not self._thread.is_alive()
        return self._outcome


def query_one(conn: Any, sql: str) -> Any:
    """Run `sql` on `conn` and return the first column of its single row."""
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def app_connect(server: NetnsPg, timeout: int = 2) -> Any:
    """A plain psycopg2 app-role connection over the veth (password auth)."""
    return psycopg2.connect(server.url, connect_timeout=timeout)


def test_query_works_over_the_veth_with_password_auth(netns_pg: NetnsPg) -> None:
    """The app role reaches the namespaced server over the veth, and a wrong password is refused."""
    with closing(app_connect(netns_pg)) as conn:
        assert query_one(conn, "SELECT 41 + 1") == 42
        assert query_one(conn, "SELECT host(inet_client_addr())") == netns_pg.link.host_address
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(netns_pg.url.replace("Secr3t", "Wrong"), connect_timeout=2)


def test_cut_hangs_an_established_connection_silently(netns_pg: NetnsPg) -> None:
    """After cut(), a query on an established connection neither returns nor errors for 3 s."""
    conn = app_connect(netns_pg)
    try:
        assert query_one(conn, "SELECT 1") == 1
        dropped_before = netns_pg.link.dropped_packets()
        netns_pg.cut()
        call = Background(lambda: query_one(conn, "SELECT 2"))
        outcome = call.join(HANG_BOUND_S)
        assert not outcome.done, f"returned or failed during a silent cut: {outcome}"
        # The query really was sent and swallowed by the cut veth, not refused.
        assert netns_pg.link.dropped_packets() > dropped_before
        _netns.shutdown_socket(conn)  # release the blocked thread
        outcome = call.join(RELEASE_BOUND_S)
        assert outcome.done
        assert isinstance(outcome.error, psycopg2.OperationalError)
    finally:
        conn.close()


def test_new_connect_during_cut_fails_only_by_its_own_timeout(netns_pg: NetnsPg) -> None:
    """During a cut, connect_timeout=2 expires (no refusal, no unreachable error) after ~2 s."""
    netns_pg.cut()
    outcome = Background(lambda: app_connect(netns_pg, timeout=2)).join(RELEASE_BOUND_S)
    assert outcome.done
    assert isinstance(outcome.error, psycopg2.OperationalError)
    assert "timeout expired" in str(outcome.error)
    assert 1.9 <= outcome.elapsed < 3.5


def test_heal_restores_new_connections(netns_pg: NetnsPg) -> None:
    """After cut() then heal(), a new connection works at once (well inside 2 s)."""
    netns_pg.cut()
    failed = Background(lambda: app_connect(netns_pg, timeout=2)).join(RELEASE_BOUND_S)
    assert isinstance(failed.error, psycopg2.OperationalError)
    netns_pg.heal()
    started = time.monotonic()
    with closing(app_connect(netns_pg)) as conn:
        assert query_one(conn, "SELECT 3") == 3
    assert time.monotonic() - started < 2.0


def test_admin_connection_over_the_unix_socket_works_during_a_cut(netns_pg: NetnsPg) -> None:
    """While the veth is cut, admin_connect() still reaches the server and sees the app session."""
    app = app_connect(netns_pg)
    try:
        pid = app.get_backend_pid()
        netns_pg.cut()
        with closing(netns_pg.admin_connect()) as admin:
            assert query_one(admin, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}") == 1
            assert query_one(admin, "SELECT current_user") == "postgres"
    finally:
        app.close()


def test_cleanup_deletes_namespace_and_link_even_on_failure() -> None:
    """Leaving netns_postgres() by an exception deletes the namespace, veth and server."""
    reason = _netns.netns_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    names: dict[str, Any] = {}
    with (
        pytest.raises(RuntimeError, match="test body failed"),
        _netns.netns_postgres() as server,
    ):
        names.update(
            netns=server.link.netns, dev=server.link.host_dev, socket_dir=server.socket_dir
        )
        assert server.link.netns in _netns_list()
        server.cut()
        raise RuntimeError("test body failed")
    assert names["netns"] not in _netns_list()
    link = subprocess.run(
        ["ip", "link", "show", "dev", names["dev"]], capture_output=True, check=False
    )
    assert link.returncode != 0
    assert not names["socket_dir"].exists()


def _netns_list() -> list[str]:
    """The names `ip netns list` shows."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


_LOOKUP = """
import json, socket, sys, time
started = time.monotonic()
try:
    socket.getaddrinfo(sys.argv[1], 5432, proto=socket.IPPROTO_TCP)
    outcome = "resolved"
except socket.gaierror as exc:
    outcome = exc.errno
print(json.dumps({"outcome": outcome, "elapsed": time.monotonic() - started}))
"""


def test_silent_resolver_blocks_getaddrinfo_until_its_own_timeout(
    silent_resolver: SilentResolver,
) -> None:
    """getaddrinfo on a made-up name blocks for glibc's whole timeout, then fails (EAI_AGAIN)."""
    name = "db.taskcore-silent.example"
    proc = silent_resolver.run(_LOOKUP, name, timeout=20, options="timeout:2 attempts:1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["outcome"] == socket.EAI_AGAIN
    assert 2.0 <= result["elapsed"] < 6.0
    assert name in silent_resolver.queries  # the query reached the silent server


def test_silent_resolver_still_resolves_names_given_as_hosts(
    silent_resolver: SilentResolver,
) -> None:
    """A name passed in `hosts` resolves at once from the child's private /etc/hosts."""
    proc = silent_resolver.run(
        _LOOKUP, "db.in-hosts.example", timeout=20, hosts={"db.in-hosts.example": "192.0.2.77"}
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["outcome"] == "resolved"
    assert result["elapsed"] < 1.0
    assert "db.in-hosts.example" not in silent_resolver.queries

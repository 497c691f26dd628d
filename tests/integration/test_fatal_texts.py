"""The server FATALs that close a connection are classified from the text psycopg2 really gives.

psycopg2 raises these as OperationalError with no SQLSTATE; with a wait callback installed (as
taskcore installs one to bound every socket wait) libpq's message keeps the server's FATAL
line. These tests provoke each FATAL on a real server and classify the driver's own exception,
so the texts in the classification table are the ones a user meets, not copies of them.
"""

from __future__ import annotations

import secrets
import select
from collections.abc import Iterator
from contextlib import closing

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import pytest
from psycopg2.extensions import connection

from _pgserver import PgTarget
from taskcore._classify import Kind, Verdict, classify

pytestmark = pytest.mark.postgres

_SERVER_CLOSE_WAIT_S = 10.0  # a safety net only: each wait ends when the server closes


@pytest.fixture
def wait_callback() -> Iterator[None]:
    """psycopg2 in green mode (a wait callback), as under taskcore; the old callback after."""
    previous = psycopg2.extensions.get_wait_callback()
    psycopg2.extensions.set_wait_callback(psycopg2.extras.wait_select)
    try:
        yield
    finally:
        psycopg2.extensions.set_wait_callback(previous)


def _connect(pg: PgTarget) -> connection:
    """A fresh superuser connection to the test database."""
    return psycopg2.connect(pg.admin_dsn, connect_timeout=10)


def _closed_by_server(conn: connection) -> Verdict:
    """Wait until the server closes ``conn``, then classify the next statement's error."""
    readable, _, _ = select.select([conn], [], [], _SERVER_CLOSE_WAIT_S)
    assert readable, "the server did not close the connection"
    with pytest.raises(psycopg2.OperationalError) as caught:
        conn.cursor().execute("SELECT 1")
    return classify(caught.value.pgcode, str(caught.value), invalidated=bool(conn.closed))


@pytest.mark.usefixtures("wait_callback")
def test_idle_in_transaction_timeout_is_read_as_25p03_and_not_retried(pg: PgTarget) -> None:
    """A transaction left idle past its timeout: 25P03 from the text, permanent, setting named."""
    with closing(_connect(pg)) as conn:
        cur = conn.cursor()
        cur.execute("SET idle_in_transaction_session_timeout = '50ms'")
        cur.execute("SELECT 1")  # opens a transaction, then the connection sits idle in it
        verdict = _closed_by_server(conn)
    assert verdict.sqlstate == "25P03"
    assert verdict.kind is Kind.PERMANENT
    assert "idle_in_transaction_session_timeout" in verdict.reason


@pytest.mark.usefixtures("wait_callback")
def test_idle_session_timeout_is_read_as_57p05_and_retryable(pg: PgTarget) -> None:
    """A session left idle outside a transaction past its timeout: 57P05, safe to retry."""
    with closing(_connect(pg)) as conn:
        conn.autocommit = True
        conn.cursor().execute("SET idle_session_timeout = '50ms'")
        verdict = _closed_by_server(conn)
    assert verdict.sqlstate == "57P05"
    assert verdict.kind is Kind.DISCONNECT


@pytest.mark.usefixtures("wait_callback")
def test_a_terminated_backend_is_read_as_57p01(pg: PgTarget) -> None:
    """pg_terminate_backend (what a Neon suspend looks like): 57P01 from the text, retryable."""
    with closing(_connect(pg)) as victim, closing(_connect(pg)) as admin:
        admin.autocommit = True
        admin.cursor().execute("SELECT pg_terminate_backend(%s)", (victim.get_backend_pid(),))
        verdict = _closed_by_server(victim)
    assert verdict.sqlstate == "57P01"
    assert verdict.kind is Kind.DISCONNECT


@pytest.mark.usefixtures("wait_callback")
def test_lock_timeout_is_named(pg: PgTarget) -> None:
    """A statement that waited past lock_timeout: 55P03 with its own reason, not retried."""
    key = secrets.randbelow(2**62)
    with closing(_connect(pg)) as holder, closing(_connect(pg)) as waiter:
        holder.cursor().execute("SELECT pg_advisory_xact_lock(%s)", (key,))  # held until close
        cur = waiter.cursor()
        cur.execute("SET lock_timeout = '50ms'")
        with pytest.raises(psycopg2.errors.LockNotAvailable) as caught:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        verdict = classify(caught.value.pgcode, str(caught.value))
    assert verdict.sqlstate == "55P03"
    assert verdict.kind is Kind.PERMANENT
    assert verdict.reason.startswith("lock timeout:")

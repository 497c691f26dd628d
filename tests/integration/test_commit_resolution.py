"""Resolving a lost COMMIT reply with pg_xact_status, against real transactions."""

from __future__ import annotations

import psycopg2
import pytest
from psycopg2.extensions import connection

import taskcore
import taskcore.testing
from _db import PostgresDb
from _pgserver import PgTarget
from taskcore._deadline import Deadline
from taskcore._resolve import CommitTicket, Outcome, resolve_commit
from taskcore.retry import RetryPolicy

pytestmark = pytest.mark.postgres


def _resolve(ticket: CommitTicket) -> Outcome:
    """Resolve ``ticket`` through the default handle's pool within a 10 s deadline."""
    db = taskcore.default_database()
    return resolve_commit(db._open_link, ticket, Deadline(10), RetryPolicy(), db.events)


def _open_transaction(pg: PgTarget) -> tuple[connection, CommitTicket]:
    """A real app-role transaction that wrote a row, and its ticket (xid, backend pid)."""
    conn = psycopg2.connect(pg.url)
    cur = conn.cursor()
    cur.execute("INSERT INTO tasks (title, user_id) VALUES ('t', 'u')")
    cur.execute("SELECT pg_current_xact_id()::text, pg_backend_pid()")
    row = cur.fetchone()
    assert row is not None
    xid, pid = row
    return conn, CommitTicket(xid=xid, backend_pid=pid)


def test_committed_transaction_resolves_as_committed(pg: PgTarget, pg_db: PostgresDb) -> None:
    """A transaction that committed is reported committed."""
    conn, ticket = _open_transaction(pg)
    conn.commit()
    conn.close()
    assert _resolve(ticket) is Outcome.COMMITTED


def test_rolled_back_transaction_resolves_as_aborted(pg: PgTarget, pg_db: PostgresDb) -> None:
    """A transaction that rolled back is reported aborted."""
    conn, ticket = _open_transaction(pg)
    conn.rollback()
    conn.close()
    assert _resolve(ticket) is Outcome.ABORTED


def test_transaction_still_open_is_ended_and_resolves_as_aborted(
    pg: PgTarget, pg_db: PostgresDb
) -> None:
    """A backend still holding the transaction (dead client not yet noticed) is ended: aborted."""
    conn, ticket = _open_transaction(pg)
    try:
        with taskcore.testing.no_retry_waits():
            assert _resolve(ticket) is Outcome.ABORTED
        assert pg_db.scalar("SELECT count(*) FROM tasks") == 0
    finally:
        conn.close()


def test_unknown_transaction_status_is_unknown(pg_db: PostgresDb) -> None:
    """An xid whose status the server no longer (or never) knew is reported as unknown."""
    ticket = CommitTicket(xid=str(2**40), backend_pid=0)
    assert _resolve(ticket) is Outcome.UNKNOWN

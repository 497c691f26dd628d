"""Per-unit statement timeout: enforced by the server, scoped to the transaction (pooler-safe)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

import taskcore
from _db import Db
from taskcore import UnitOfWork


def test_statement_timeout_cancels_a_slow_statement_and_does_not_leak(db: Db) -> None:
    """A statement over the unit's timeout fails with 57014; the next unit has no timeout."""
    if db.kind == "sqlite":
        pytest.skip("SQLite has no server-side statement timeout")
    with pytest.raises(taskcore.DatabaseError) as info, UnitOfWork(statement_timeout=0.05) as uow:
        uow.run_statement(select(func.pg_sleep(2)), writes=False)
    assert info.value.sqlstate == "57014"
    assert not info.value.retryable
    # SET LOCAL ended with that transaction, even on a server connection PgBouncer reuses.
    for _ in range(3):
        with UnitOfWork() as uow:
            shown = uow.session.scalar(select(func.current_setting("statement_timeout")))
        assert shown == "0"


def test_bad_statement_timeout_is_a_usage_error(db: Db) -> None:
    """A zero or negative timeout is refused before anything runs."""
    with pytest.raises(taskcore.UsageError):
        UnitOfWork(statement_timeout=0)

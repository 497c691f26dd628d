"""Cold starts: the proxy refuses connections, as a suspended Neon compute does while waking."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

import taskcore
from _db import PostgresDb
from _pgserver import PgTarget
from taskcore import TaskCreate
from taskcore.testing import FlakyProxy

pytestmark = pytest.mark.postgres


@pytest.mark.real_waits
def test_call_during_a_3s_outage_succeeds_when_the_database_returns(
    proxy: FlakyProxy,
    pg_db: PostgresDb,
    caplog: pytest.LogCaptureFixture,
    taskcore_events: Callable[[str], list[logging.LogRecord]],
) -> None:
    """With connections refused for 3 s (a cold start), a one-shot call issued then succeeds."""
    taskcore.dispose()  # no pooled connection: the call must connect during the outage
    proxy.refuse_for(3.0)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "taskcore"):
        task = taskcore.create_task(TaskCreate(title="during outage"), user_id="u")
    elapsed = time.monotonic() - started
    assert elapsed >= 3.0  # it really waited the outage out
    assert taskcore_events("retry_scheduled")
    assert pg_db.query(f"SELECT title FROM tasks WHERE id = {task.id}") == [("during outage",)]


@pytest.mark.real_waits
def test_outage_longer_than_the_deadline_says_database_unavailable(
    proxy: FlakyProxy, pg: PgTarget
) -> None:
    """Connections refused past the retry deadline give DatabaseUnavailableError within it."""
    taskcore.configure(database_url=proxy.url(pg.url), deadline=2.0, retry_wait_max=0.5)
    proxy.refuse_connections()
    started = time.monotonic()
    with pytest.raises(taskcore.DatabaseUnavailableError) as info:
        taskcore.get_tasks()
    assert time.monotonic() - started < 2.0 + 1.0  # deadline plus one backoff step
    assert info.value.attempts > 1

"""Ctrl-C and SIGTERM while a statement is blocked (issue 9 point 7), on a real server.

A child process runs a unit of work whose statement blocks: on a row lock this test holds, or in
`pg_sleep` run through `uow.run_statement`. The test signals the child once the server shows the
statement waiting, then checks: the interrupt reaches the child's own code within 1 s (SIGINT as
KeyboardInterrupt; SIGTERM as SystemExit from the handler a worker installs for graceful
shutdown), the blocked statement is gone from pg_stat_activity within 1 s (taskcore's wait
callback asked the server to cancel it and dropped the connection), and nothing of the unit was
applied, checked through an independent connection after the lock is released.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from contextlib import closing
from typing import Any

import pytest

import taskcore
from taskcore import TaskCreate

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BOUND = 1.0  # the bar: control back in the child, and the query gone, within 1 s

_CHILD = """
import json, signal, sys, time
from sqlalchemy import func, select
import taskcore
from taskcore import TaskCreate, TaskUpdate

url, how, blocker, task_id, marker = sys.argv[1:6]
if how == "SIGTERM":
    def stop(signum, frame):  # the documented pattern for a worker's graceful shutdown
        raise SystemExit("terminated")
    signal.signal(signal.SIGTERM, stop)


def say(**fields):
    print(json.dumps(fields), flush=True)


db = taskcore.Database(url, deadline=120)  # far away: only the signal may end the wait
uow = db.unit()
try:
    with uow:
        uow.tasks.create(TaskCreate(title=marker), user_id="u")
        pid = uow.run_statement(select(func.pg_backend_pid()), writes=False)[0][0]
        say(event="blocking", pid=pid)
        if blocker == "row-lock":
            uow.tasks.update(int(task_id), TaskUpdate(title="changed by the child"))
        else:
            uow.run_statement(select(func.pg_sleep(120)), writes=False)
    say(event="finished")
except (KeyboardInterrupt, SystemExit) as exc:
    at = time.monotonic()
    say(event="interrupted", kind=type(exc).__name__, at=at, status=uow.status.value)
"""


def _read_event(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The child's next JSON line, waiting at most `timeout` s for it."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the child said nothing within {timeout}s; stderr:\n{err}")
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate()
        pytest.fail(f"the child exited with {proc.returncode}; stderr:\n{err}")
    event: dict[str, Any] = json.loads(line)
    return event


def _poll(admin: Any, sql: str, params: Any, until: float) -> bool:
    """Poll `sql` (one boolean) until true or until the monotonic time `until`."""
    with admin.cursor() as cur:
        while True:
            cur.execute(sql, params)
            row = cur.fetchone()
            if row is not None and row[0]:
                return True
            if time.monotonic() > until:
                return False
            time.sleep(0.005)  # poll interval only; the loop waits on the condition above


_WAITING = {
    # the child's backend (%(child)s) is blocked by the test's lock / sleeping in pg_sleep
    "row-lock": "SELECT %(holder)s = ANY(pg_blocking_pids(%(child)s))",
    "pg_sleep": "SELECT count(*) > 0 FROM pg_stat_activity"
    " WHERE pid = %(child)s AND wait_event = 'PgSleep'",
}


@pytest.mark.parametrize("blocker", ["row-lock", "pg_sleep"])
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_an_interrupt_ends_a_blocked_statement_within_a_second(
    pg_db: Any, how: str, blocker: str
) -> None:
    """SIGINT (KeyboardInterrupt) or SIGTERM (a handler raising SystemExit) while a unit's
    statement is blocked: the child's code gets the exception within 1 s, the server-side query
    is gone within 1 s, and nothing of the unit is applied."""
    locked = taskcore.create_task(TaskCreate(title="locked"), user_id="u")
    marker = f"marker-{uuid.uuid4()}"
    holder = pg_db.pg.admin_connect()
    proc: subprocess.Popen[str] | None = None
    try:
        with holder.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", (locked.id,))
            cur.execute("SELECT pg_backend_pid()")
            holder_pid = cur.fetchone()[0]
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, pg_db.url, how, blocker, str(locked.id), marker],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # a Ctrl-C at the terminal does not reach the child
        )
        blocking = _read_event(proc, timeout=60)
        assert blocking["event"] == "blocking"
        child_pid = blocking["pid"]
        with closing(pg_db.pg.admin_connect()) as admin:
            pids = {"holder": holder_pid, "child": child_pid}
            assert _poll(admin, _WAITING[blocker], pids, time.monotonic() + 30), (
                "the child's statement never blocked"
            )
            sent = time.monotonic()
            os.kill(proc.pid, getattr(signal, how))
            interrupted = _read_event(proc, timeout=10)
            assert _poll(
                admin,
                "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = %s AND state = 'active'",
                (child_pid,),
                sent + BOUND,
            ), "the blocked query was still running on the server 1 s after the signal"
            gone_after = time.monotonic() - sent
        print(f"{how}/{blocker}: in the child after {interrupted['at'] - sent:.3f}s, "
              f"query gone after <= {gone_after:.3f}s")  # fmt: skip
        assert interrupted["event"] == "interrupted"
        assert interrupted["kind"] == ("KeyboardInterrupt" if how == "SIGINT" else "SystemExit")
        assert interrupted["at"] - sent < BOUND
        assert interrupted["status"] == "rolled_back"
        assert proc.wait(timeout=30) == 0
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()  # reaps the child and closes its pipes
        with holder.cursor() as cur:
            cur.execute("ROLLBACK")  # autocommit connection: the BEGIN above was explicit
        holder.close()
    assert pg_db.scalar("SELECT count(*) FROM tasks WHERE title = %s", (marker,)) == 0
    assert pg_db.scalar("SELECT title FROM tasks WHERE id = %s", (locked.id,)) == "locked"

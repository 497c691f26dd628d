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


_POOL_CHILD = """
import dataclasses, json, sys, threading, time
import taskcore

db = taskcore.Database(sys.argv[1], pool_size=1, deadline=60)
holding, release = threading.Event(), threading.Event()


def hold():
    with db.unit() as uow:
        uow.tasks.get(1)  # the pool's only connection, taken at the first statement
        holding.set()
        release.wait(60)


def say(**fields):
    print(json.dumps(fields), flush=True)


def announce_when_queued():
    while db.stats().waiting < 1:
        time.sleep(0.001)  # poll interval only; waits on the pool's own counter
    say(event="waiting")


holder = threading.Thread(target=hold, daemon=True)
holder.start()
holding.wait(60)
threading.Thread(target=announce_when_queued, daemon=True).start()
try:
    db.get_task(1)  # queued behind the holder
    say(event="finished")
except KeyboardInterrupt:
    say(event="interrupted", at=time.monotonic(), waiting=db.stats().waiting)
release.set()
holder.join(60)
started = time.monotonic()
try:
    db.get_task(1, deadline=5)
    outcome = None
except taskcore.TaskcoreError as exc:
    outcome = type(exc).__name__
say(event="after", error=outcome, elapsed=time.monotonic() - started, stats=dataclasses.asdict(db.stats()))
"""


def test_an_interrupt_while_waiting_for_a_pooled_connection_leaves_no_slot_behind(
    pg_db: Any,
) -> None:
    """Ctrl-C while queued for the only pooled connection: KeyboardInterrupt within 1 s, the
    caller leaves the queue, and the connection given back later serves the next call at once
    (it is not handed to the interrupted caller and lost)."""
    with subprocess.Popen(
        [sys.executable, "-c", _POOL_CHILD, pg_db.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            assert _read_event(proc, timeout=60)["event"] == "waiting"
            sent = time.monotonic()
            os.kill(proc.pid, signal.SIGINT)
            interrupted = _read_event(proc, timeout=10)
            after = _read_event(proc, timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    print(f"interrupted after {interrupted['at'] - sent:.3f}s; next call {after}")
    assert interrupted["event"] == "interrupted"
    assert interrupted["at"] - sent < BOUND
    assert interrupted["waiting"] == 0
    assert after["error"] is None, after
    assert after["elapsed"] < 1.0, after

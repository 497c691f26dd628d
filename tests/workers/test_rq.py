"""RQ workers (Redis, a forked work horse per job) storing tasks through taskcore's integration:
connections across 500 forks, a database outage mid-run, warm shutdown; every effect checked
in PostgreSQL through an independent psycopg2 connection."""

from __future__ import annotations

import json
import re
import signal
import sys
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import _rq_jobs
import pytest
import redis
from _workers import HERE, REDIS_URL, WorkerDb, running, sessions, wait_until, worker_env
from rq import Queue
from rq.job import Job

from taskcore.testing import FlakyProxy

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

FORKED_JOBS = 500
_KEEP_IDLE = {"TASKCORE_POOL_IDLE_TIMEOUT": "3600", "TASKCORE_POOL_RECYCLE": "3600"}
RUN_TIMEOUT_S = 120.0


@dataclass
class Fleet:
    """An RQ queue of the test's own, the Redis namespace of its signals, the database."""

    ns: str
    db: WorkerDb
    redis: redis.Redis

    @property
    def queue(self) -> Queue:
        """The test's queue."""
        return Queue(self.ns, connection=self.redis)

    def start(self, url: str, *flags: str, **env: str) -> Any:
        """Start ``_rq_worker.py`` on the queue; a context manager."""
        args = [sys.executable, str(HERE / "_rq_worker.py"), self.ns, "--preload=_rq_jobs", *flags]
        environment = worker_env(url, WORKERS_NS=self.ns, WORKERS_REDIS_URL=REDIS_URL, **env)
        return running(args, environment, HERE, ready="worker starting")

    def enqueue(self, owner: str, n: int, pause: str | None = None) -> Job:
        """Enqueue one ``record`` job (its id in the test's namespace)."""
        return self.queue.enqueue(_rq_jobs.record, owner, n, pause, job_id=f"{self.ns}-{owner}-{n}")

    def arrival(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next job (or worker) announcing it reached its pause point."""
        item = self.redis.blpop([f"{self.ns}:arrived"], timeout=timeout)
        assert item is not None, "nothing reached its pause point in time"
        found: dict[str, Any] = json.loads(item[1])
        return found

    def release(self, n: int = 1) -> None:
        """Let ``n`` paused jobs go on."""
        self.redis.rpush(f"{self.ns}:release", *(["go"] * n))

    def failed(self) -> int:
        """Jobs in the queue's failed registry."""
        return int(self.queue.failed_job_registry.count)

    def finished(self) -> int:
        """Jobs in the queue's finished registry."""
        return int(self.queue.finished_job_registry.count)


@pytest.fixture
def fleet(worker_db: WorkerDb, ns: str, rclient: redis.Redis) -> Fleet:
    """A fleet on a fresh queue (``ns`` deletes its jobs, registries and signals afterwards)."""
    return Fleet(ns=ns, db=worker_db, redis=rclient)


def _errors(output: str) -> list[str]:
    """Lines of a worker's output that report a failed job or a database error."""
    return [
        line
        for line in output.splitlines()
        if re.search(r"ERROR|Traceback|taskcore\.errors|psycopg2|stale", line, re.IGNORECASE)
    ]


def test_500_forked_jobs_open_one_connection_each_and_never_touch_the_parents(
    fleet: Fleet,
) -> None:
    """500 jobs, each in a work horse forked from a parent whose pool holds a live connection:
    none fails (no stale or shared connection), each horse opens exactly one server connection
    of its own, and the parent's connection stays the same, open and usable after the forks."""
    owner = "forked"
    fleet.queue.enqueue(_rq_jobs.gate, "gate", job_id=f"{fleet.ns}-gate")
    for n in range(FORKED_JOBS):
        fleet.enqueue(owner, n)
    with (
        closing(fleet.db.connect()) as observer,
        # The parent's connection must outlive the run idle: no idle timeout or recycling.
        fleet.start(fleet.db.url, "--burst", "--hold-pool", **_KEEP_IDLE) as worker,
    ):
        assert fleet.arrival()["point"] == "gate"  # the first horse waits; no job ran yet
        parent = _backends(observer, fleet.db.name)
        assert len(parent) == 1  # the parent's pooled connection, inherited by every horse
        before = sessions(observer, fleet.db.name)
        fleet.release()
        assert fleet.arrival(timeout=RUN_TIMEOUT_S)["point"] == "after_burst"
        assert _backends(observer, fleet.db.name) == parent  # same backend, never closed
        fleet.release()
        assert worker.proc.wait(timeout=30) == 0, worker.output()
        wait_until(lambda: fleet.db.app_backends(observer) == 0, 30, "the backends to end")
        opened = wait_until(
            lambda: (n := sessions(observer, fleet.db.name) - before) >= FORKED_JOBS and n,
            30,
            "the server's session statistics",
        )
    assert fleet.finished() == FORKED_JOBS + 1 and fleet.failed() == 0
    assert _errors(worker.output()) == []
    assert fleet.db.titles(owner) == sorted(f"job {n}" for n in range(FORKED_JOBS))
    assert opened == FORKED_JOBS  # one per horse; the parent's pool opened none
    print(f"\n[rq fork] {FORKED_JOBS} jobs: {opened} server connections opened (1.00 per job)")


def test_simple_worker_reuses_one_pooled_connection_for_every_job(fleet: Fleet) -> None:
    """The same jobs on RQ's SimpleWorker (no fork): 100 jobs open one server connection."""
    owner = "simple"
    for n in range(100):
        fleet.enqueue(owner, n)
    with closing(fleet.db.connect()) as observer:
        before = sessions(observer, fleet.db.name)
        with fleet.start(fleet.db.url, "--burst", "--simple") as worker:
            assert worker.proc.wait(timeout=RUN_TIMEOUT_S) == 0, worker.output()
        wait_until(lambda: fleet.db.app_backends(observer) == 0, 30, "the backend to end")
        opened = wait_until(
            lambda: sessions(observer, fleet.db.name) - before, 30, "the session statistics"
        )
    assert fleet.finished() == 100 and fleet.failed() == 0
    assert fleet.db.titles(owner) == sorted(f"job {n}" for n in range(100))
    assert opened == 1


def test_database_outage_mid_run_jobs_retried_by_rq_land_once(fleet: Fleet, pg: Any) -> None:
    """The database refuses every connection mid-run: taskcore gives up, the jobs hand
    themselves back to RQ (same job id, same key), and once the database is back every job is
    stored exactly once."""
    owner = "outage"
    jobs = [fleet.enqueue(owner, n) for n in range(20)]
    settings = {"TASKCORE_RETRY_ATTEMPTS": "2", "TASKCORE_DEADLINE": "2"}
    with (
        FlakyProxy(pg.host, pg.port, seed=5) as proxy,
        fleet.start(proxy.url(fleet.db.url), "--burst", **settings) as worker,
    ):
        wait_until(lambda: fleet.finished() >= 5, 60, "5 jobs to finish")
        proxy.refuse_connections()
        proxy.reset_all()
        wait_until(lambda: _retries(jobs, fleet.redis) >= 10, 60, "RQ to re-run 10 jobs")
        proxy.accept_connections()
        assert worker.proc.wait(timeout=RUN_TIMEOUT_S) == 0, worker.output()
    retries = _retries(jobs, fleet.redis)
    print(f"\n[rq outage] {retries} RQ re-runs of 20 jobs")
    assert fleet.finished() == 20 and fleet.failed() == 0
    assert fleet.db.titles(owner) == sorted(f"job {n}" for n in range(20))


def test_warm_shutdown_finishes_the_job_in_flight(fleet: Fleet) -> None:
    """SIGTERM while a horse's unit is in flight: RQ lets the horse finish, the unit commits
    once, the worker exits 0 and no connection is left open."""
    owner = "shutdown"
    fleet.enqueue(owner, 0, "before_commit")
    fleet.enqueue(owner, 1)  # never started: the worker stops after the job in flight
    with fleet.start(fleet.db.url) as worker:
        assert fleet.arrival()["point"] == "before_commit"
        worker.proc.send_signal(signal.SIGTERM)
        worker.wait_for_line("warm shut down requested")
        fleet.release()
        assert worker.proc.wait(timeout=30) == 0, worker.output()
    assert fleet.db.titles(owner) == ["job 0"]
    assert fleet.db.app_backends() == 0
    assert fleet.queue.count == 1


def _backends(conn: Any, dbname: str) -> list[tuple[Any, ...]]:
    """(pid, backend_start) of every app backend connected to ``dbname``."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE datname = %s"
            " AND usename <> 'postgres' ORDER BY pid",
            (dbname,),
        )
        return [tuple(row) for row in cur.fetchall()]


def _retries(jobs: list[Job], connection: redis.Redis) -> int:
    """RQ re-runs of ``jobs`` so far (each one a Retry a job handed back)."""
    return sum(Job.fetch(job.id, connection=connection).number_of_retries or 0 for job in jobs)

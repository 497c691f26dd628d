"""Celery workers (RabbitMQ, prefork, 4 processes, acks_late) storing tasks through taskcore's
integration: processes SIGKILLed mid-job, a database outage mid-run, warm shutdown; every
effect checked in PostgreSQL through an independent psycopg2 connection."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import _celery_jobs
import pytest
import redis
from _workers import HERE, REDIS_URL, Process, WorkerDb, running, wait_until, worker_env
from kombu.connection import Connection

from taskcore.testing import FlakyProxy

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

JOBS = 50
RESULT_TIMEOUT_S = 120.0


@dataclass
class Fleet:
    """A running Celery worker, its queue and Redis namespace, and the database it writes."""

    ns: str
    db: WorkerDb
    redis: redis.Redis
    amqp_url: str
    worker: Process | None = None

    def start(self, url: str, **env: str) -> Any:
        """Start a worker with 4 prefork processes on this fleet's queue; a context manager."""
        args = [
            sys.executable, "-m", "celery", "-A", "_celery_jobs", "worker",
            "--pool", "prefork", "--concurrency", "4", "--queues", self.ns,
            "--hostname", f"{self.ns}@%h", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-O", "fair",
        ]  # fmt: skip
        environment = worker_env(
            url,
            WORKERS_NS=self.ns,
            WORKERS_AMQP_URL=self.amqp_url,
            WORKERS_REDIS_URL=REDIS_URL,
            TASKCORE_POOL_SIZE="2",
            **env,
        )
        return running(args, environment, HERE, ready="ready.")

    def send(self, owner: str, n: int, pause: str | None = None) -> Any:
        """Send one ``record`` job to this fleet's queue; its result handle."""
        return _celery_jobs.record.apply_async(
            (owner, n, pause), queue=self.ns, task_id=f"{self.ns}-{owner}-{n}"
        )

    def arrival(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next job announcing it reached its pause point."""
        item = self.redis.blpop([f"{self.ns}:arrived"], timeout=timeout)
        assert item is not None, "no job reached its pause point in time"
        found: dict[str, Any] = json.loads(item[1])
        return found

    def release(self, n: int) -> None:
        """Let ``n`` paused jobs go on."""
        self.redis.rpush(f"{self.ns}:release", *(["go"] * n))

    def counts(self) -> dict[str, int]:
        """Counters the jobs' processes kept (Celery retries by cause)."""
        raw = self.redis.hgetall(f"{self.ns}:counts")
        return {_text(k): int(v) for k, v in raw.items()}

    def queue_depth(self) -> int:
        """Messages ready in the fleet's queue (unacknowledged ones are not counted)."""
        with Connection(self.amqp_url) as conn:  # type: ignore[no-untyped-call]
            _, depth, _ = conn.default_channel.queue_declare(self.ns, passive=True)
            return int(depth)

    def delete_queue(self) -> None:
        """Delete the fleet's queue from the broker."""
        with Connection(self.amqp_url) as conn:  # type: ignore[no-untyped-call]
            conn.default_channel.queue_delete(self.ns)


def _text(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value


@pytest.fixture
def fleet(amqp_url: str, worker_db: WorkerDb, ns: str, rclient: redis.Redis) -> Iterator[Fleet]:
    """A fleet on a fresh queue; the queue is deleted afterwards."""
    fleet = Fleet(ns=ns, db=worker_db, redis=rclient, amqp_url=amqp_url)
    try:
        yield fleet
    finally:
        fleet.delete_queue()


@pytest.fixture(scope="module")
def proxy(request: pytest.FixtureRequest) -> Iterator[FlakyProxy]:
    """A fault-injection proxy in front of the suite's PostgreSQL, for this module's workers."""
    pg = request.getfixturevalue("pg")
    with FlakyProxy(pg.host, pg.port, seed=11) as flaky:
        yield flaky


def _kill_at_first_delivery(fleet: Fleet, owner: str, pause: str) -> list[Any]:
    """Send JOBS jobs pausing at ``pause``; SIGKILL the process of each one's first delivery;
    return every job's result once its redelivery finished."""
    with fleet.start(fleet.db.url) as worker:
        results = [fleet.send(owner, n, pause) for n in range(JOBS)]
        killed: set[str] = set()
        while len(killed) < JOBS:
            arrived = fleet.arrival()
            assert arrived["point"] == pause and arrived["job"] not in killed
            os.kill(arrived["pid"], signal.SIGKILL)
            killed.add(arrived["job"])
        values = [result.get(timeout=RESULT_TIMEOUT_S) for result in results]
        assert worker.terminate(grace=30) == 0, worker.output()
    # Celery reports each kill (WorkerLostError); no job met a database error.
    assert not re.search(r"taskcore\.errors|psycopg2", worker.output()), worker.output()
    assert fleet.queue_depth() == 0
    return values


def test_jobs_killed_before_commit_are_redelivered_and_land_once(fleet: Fleet) -> None:
    """50 jobs whose worker process is SIGKILLed inside the unit, before COMMIT: each is
    redelivered, re-runs its unit in full and is stored exactly once."""
    values = _kill_at_first_delivery(fleet, "before-commit", "before_commit")
    assert values == list(range(JOBS))  # every redelivery ran the job's body
    assert fleet.db.titles("before-commit") == sorted(f"job {n}" for n in range(JOBS))


def test_jobs_killed_between_commit_and_ack_are_redelivered_and_not_applied_twice(
    fleet: Fleet,
) -> None:
    """50 jobs whose worker process is SIGKILLed after COMMIT but before the broker's ack: each
    is redelivered, finds its first delivery's claim and stores nothing more."""
    values = _kill_at_first_delivery(fleet, "after-commit", "after_commit")
    assert values == [None] * JOBS  # every redelivery found its key claimed and skipped
    assert fleet.db.titles("after-commit") == sorted(f"job {n}" for n in range(JOBS))


def test_database_outage_mid_run_jobs_retried_by_celery_land_once(
    fleet: Fleet, proxy: FlakyProxy
) -> None:
    """Mid-run, a COMMIT's reply is lost and the database then refuses every connection:
    taskcore gives up, Celery retries the jobs with the same task id, and once the database
    is back every job is stored exactly once (the lost-reply job finds its own commit)."""
    owner = "outage"
    proxy.clear_faults()
    settings = {"TASKCORE_RETRY_ATTEMPTS": "3", "TASKCORE_DEADLINE": "3"}
    with fleet.start(proxy.url(fleet.db.url), **settings) as worker:
        warm = [fleet.send(owner, n) for n in range(8)]
        assert [r.get(timeout=RESULT_TIMEOUT_S) for r in warm] == list(range(8))
        proxy.refuse_connections()
        proxy.cut_after_commit(1)
        results = [fleet.send(owner, n) for n in range(8, JOBS)]
        assert proxy.wait_for_fault(timeout=60), "no COMMIT reply was cut"
        proxy.reset_all()  # every live connection dies too, as in a compute restart
        wait_until(
            lambda: (
                fleet.counts().get("retry:CommitOutcomeUnknownError", 0) >= 1
                and sum(fleet.counts().values()) >= 8
            ),
            60,
            "Celery retries of an unknown outcome and of the outage",
        )
        proxy.clear_faults()
        values = [r.get(timeout=RESULT_TIMEOUT_S) for r in results]
        assert worker.terminate(grace=30) == 0, worker.output()
    counts = fleet.counts()
    print(f"\n[celery outage] Celery retries by cause: {counts}")
    assert fleet.db.titles(owner) == sorted(f"job {n}" for n in range(JOBS))
    assert None in values  # the lost-reply job's retry found its first COMMIT
    assert fleet.queue_depth() == 0


def test_warm_shutdown_finishes_in_flight_units_and_a_killed_one_rolls_back(fleet: Fleet) -> None:
    """SIGTERM while 4 units are in flight: the worker finishes them and exits 0 with no
    connection left open; when the grace period runs out instead and the worker is killed,
    the server rolls the units back and their jobs land once on the next worker."""
    owner = "shutdown"
    with fleet.start(fleet.db.url) as worker:
        finished = [fleet.send(owner, n, "before_commit") for n in range(4)]
        for _ in range(4):
            fleet.arrival()
        worker.proc.send_signal(signal.SIGTERM)
        worker.wait_for_line("Warm shutdown")
        fleet.release(4)
        assert worker.proc.wait(timeout=30) == 0, worker.output()
    assert [r.get(timeout=RESULT_TIMEOUT_S) for r in finished] == list(range(4))
    assert fleet.db.titles(owner) == [f"job {n}" for n in range(4)]
    assert fleet.db.app_backends() == 0  # each process closed its pool on the way out

    with ExitStack() as stack:
        worker = stack.enter_context(fleet.start(fleet.db.url))
        held = [fleet.send(owner, n, "before_commit") for n in range(4, 8)]
        for _ in range(4):
            fleet.arrival()
        assert worker.terminate(grace=2.0) is None  # the units are still held: grace runs out
        worker.kill_group()  # what a supervisor does when the grace period is over
    wait_until(lambda: fleet.db.app_backends() == 0, 30, "the killed units' backends to end")
    assert fleet.db.titles(owner) == [f"job {n}" for n in range(4)]  # rolled back
    assert fleet.queue_depth() == 4  # unacknowledged: back in the queue

    with fleet.start(fleet.db.url) as worker:
        assert [r.get(timeout=RESULT_TIMEOUT_S) for r in held] == list(range(4, 8))
        assert worker.terminate(grace=30) == 0
    assert fleet.db.titles(owner) == [f"job {n}" for n in range(8)]

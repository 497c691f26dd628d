"""Worker-fleet benchmark (issue 11): jobs/s and server connections opened per 1,000 jobs.

    .venv/bin/python tests/workers/bench_workers.py [--jobs 1000] [--runs 3] [--json PATH]

Celery (RabbitMQ, 4 prefork processes) drains a backlog of insert jobs written three ways
(``_bench_jobs.py``: taskcore's ``unit_task``, the SQLModel tutorial's Session per job, a new
psycopg2 connection per job), ``--runs`` times each; RQ (Redis) drains the taskcore variant with
a forked work horse per job and with SimpleWorker; taskcore's variants run again through
PgBouncer in transaction mode when the binary is installed. jobs/s = (jobs - 1) / (last row's
created_at - first row's), so worker start-up is not counted. Connections are the server's own
count (``pg_stat_database.sessions``) read once every backend of the run has ended.

The database is a role and a database of the script's own on TEST_DATABASE_URL's server
(default: postgresql://postgres@127.0.0.1:5432/test), dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import psycopg2  # noqa: E402
from _workers import AMQP_URL, REDIS_URL, wait_until, worker_env  # noqa: E402
from psycopg2.extensions import connection  # noqa: E402

from _pgbouncer import find_pgbouncer, pgbouncer_in_front_of  # noqa: E402
from taskcore.testing._pgserver import PgTarget, app_target, external_server  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
ROLE = "taskcore_workers_bench"
RUN_TIMEOUT_S = 600.0


def _one(conn: connection, statement: str, *params: Any) -> Any:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        row = cur.fetchone()
        return row[0] if row else None


def _settled_sessions(observer: connection, dbname: str) -> int:
    """Sessions opened to ``dbname`` so far, once no other backend is connected to it."""
    wait_until(
        lambda: _one(
            observer,
            "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = %s"
            " AND pid <> pg_backend_pid()",
            dbname,
        ),
        60,
        "the run's backends to end",
    )
    _one(observer, "SELECT pg_stat_clear_snapshot()")
    return int(_one(observer, "SELECT sessions FROM pg_stat_database WHERE datname = %s", dbname))


class Bench:
    """One database, its observer connection, and the runs made on it."""

    def __init__(self, target: PgTarget, jobs: int) -> None:
        """Measure on ``target`` with ``jobs`` jobs per run."""
        self.target = target
        self.jobs = jobs
        self.observer = psycopg2.connect(target.admin_dsn)
        self.observer.autocommit = True
        self.results: list[dict[str, Any]] = []

    def run(self, framework: str, variant: str, bouncer: str | None, *flags: str) -> None:
        """Drain ``jobs`` jobs of ``variant`` on ``framework``, directly or through a PgBouncer
        (binary ``bouncer``) started for the run and stopped before counting; record the
        numbers."""
        via = "pgbouncer" if bouncer else "direct"
        owner = f"{framework}-{variant}-{via}-{uuid.uuid4().hex[:6]}"
        queue = f"taskcore-bench-{uuid.uuid4().hex[:12]}"
        before = _settled_sessions(self.observer, self.target.dbname)
        load_before = os.getloadavg()
        others = _busiest_processes()
        started = time.monotonic()
        with contextlib.ExitStack() as stack:
            url = self.target.url
            if bouncer:
                url = stack.enter_context(pgbouncer_in_front_of(self.target, bouncer)).url
            if framework == "celery":
                self._celery(variant, url, queue, owner)
            else:
                self._rq(variant, url, queue, owner, flags)
        elapsed = time.monotonic() - started
        opened = _settled_sessions(self.observer, self.target.dbname) - before
        first, last, count = self._span(owner)
        result = {
            "framework": framework + (" " + " ".join(flags) if flags else ""),
            "variant": variant,
            "via": via,
            "jobs": count,
            "jobs_per_s": round((count - 1) / (last - first), 1),
            "wall_s_with_startup": round(elapsed, 2),
            "connections_opened": opened,
            "connections_per_1000_jobs": round(opened * 1000 / count, 1),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "busiest_processes_before": others,
        }
        print(json.dumps(result), flush=True)
        self.results.append(result)

    def _span(self, owner: str) -> tuple[float, float, int]:
        with self.observer.cursor() as cur:
            cur.execute(
                "SELECT extract(epoch FROM min(created_at)), extract(epoch FROM max(created_at)),"
                " count(*) FROM tasks WHERE user_id = %s",
                (owner,),
            )
            first, last, count = cur.fetchone() or (0, 0, 0)
        if count != self.jobs:
            raise AssertionError(f"{owner}: {count} rows for {self.jobs} jobs")
        return float(first), float(last), int(count)

    def _wait_rows(self, owner: str, proc: subprocess.Popen[bytes] | None = None) -> None:
        def done() -> bool:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the worker exited ({proc.returncode}) before {owner} ended")
            rows = _one(self.observer, "SELECT count(*) FROM tasks WHERE user_id = %s", owner)
            return bool(rows >= self.jobs)

        wait_until(done, RUN_TIMEOUT_S, f"{self.jobs} rows of {owner}")

    def _celery(self, variant: str, url: str, queue: str, owner: str) -> None:
        os.environ["DATABASE_URL"] = url  # _bench_jobs reads it at import (the tutorial engine)
        os.environ["WORKERS_AMQP_URL"] = AMQP_URL
        import _bench_jobs
        from kombu.connection import Connection

        task = getattr(_bench_jobs, f"celery_{variant}")
        for n in range(self.jobs):
            task.apply_async((owner, n), queue=queue)
        args = [
            sys.executable, "-m", "celery", "-A", "_bench_jobs", "worker",
            "--pool", "prefork", "--concurrency", "4", "--queues", queue,
            "--hostname", f"{queue}@%h", "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-O", "fair",
        ]  # fmt: skip
        env = worker_env(url, WORKERS_AMQP_URL=AMQP_URL, WORKERS_QUEUE=queue)
        with _process(args, env) as proc:
            self._wait_rows(owner, proc)
        with Connection(AMQP_URL) as conn:  # type: ignore[no-untyped-call]
            conn.default_channel.queue_delete(queue)

    def _rq(self, variant: str, url: str, queue: str, owner: str, flags: tuple[str, ...]) -> None:
        import _bench_jobs
        from redis import Redis
        from rq import Queue

        redis = Redis.from_url(REDIS_URL)
        rq_queue = Queue(queue, connection=redis)
        job = getattr(_bench_jobs, f"rq_{variant}")
        for n in range(self.jobs):
            rq_queue.enqueue(job, owner, n, result_ttl=0, job_id=f"{queue}-{n}")
        args = [
            sys.executable, str(HERE / "_rq_worker.py"), queue, "--burst",
            "--preload=_bench_jobs", *flags,
        ]  # fmt: skip
        env = worker_env(url, WORKERS_NS=queue, WORKERS_REDIS_URL=REDIS_URL)
        with _process(args, env) as proc:
            proc.wait(timeout=RUN_TIMEOUT_S)
        self._wait_rows(owner)
        keys = list(redis.scan_iter(f"*{queue}*"))
        if keys:
            redis.delete(*keys)


def _busiest_processes() -> list[str]:
    """What else loads the machine: the 5 processes with the most CPU (ps's lifetime %CPU)."""
    out = subprocess.run(
        ["ps", "-eo", "pcpu=,args=", "--sort=-pcpu"], capture_output=True, text=True, check=False
    ).stdout
    return [" ".join(line.split())[:80] for line in out.splitlines()[:5]]


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run a worker for the block; a warm shutdown (SIGTERM) at the end."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            args, env=env, cwd=HERE, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        try:
            yield proc
        except BaseException:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-5000:])
            raise
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=60)


def _summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """min and median jobs/s and connections per 1,000 jobs, per (framework, variant, via)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["framework"], r["variant"], r["via"]), []).append(r)
    return [
        {
            "framework": framework,
            "variant": variant,
            "via": via,
            "runs": len(rows),
            "jobs_per_s_min": min(r["jobs_per_s"] for r in rows),
            "jobs_per_s_median": statistics.median(r["jobs_per_s"] for r in rows),
            "connections_per_1000_jobs": sorted({r["connections_per_1000_jobs"] for r in rows}),
        }
        for (framework, variant, via), rows in groups.items()
    ]


def main(argv: list[str] | None = None) -> int:
    """Run every scenario; print one JSON line per run and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write all numbers here")
    parser.add_argument(
        "--only",
        choices=("celery", "rq", "pgbouncer"),
        action="append",
        help="run only these groups of scenarios (repeatable; default: all)",
    )
    args = parser.parse_args(argv)

    server = external_server(os.environ.get("TEST_DATABASE_URL") or DEFAULT_ADMIN_URL)
    dbname = f"taskcore_workers_bench_{os.getpid()}"
    target = app_target(server, dbname=dbname, user=ROLE, password=secrets.token_urlsafe(18))
    subprocess.run(
        [sys.executable, "-c", "import taskcore; taskcore.init_db()"],
        env=worker_env(target.url),
        check=True,
        timeout=60,
    )
    bench = Bench(target, args.jobs)
    bouncer_binary = find_pgbouncer()
    only = set(args.only or ("celery", "rq", "pgbouncer"))
    try:
        for _ in range(args.runs if "celery" in only else 0):
            for variant in ("taskcore", "tutorial", "connect"):  # interleaved: same load
                bench.run("celery", variant, None)
        if "rq" in only:
            bench.run("rq", "taskcore", None)
            bench.run("rq", "taskcore", None, "--simple")
        if bouncer_binary and "pgbouncer" in only:
            bench.run("celery", "taskcore", bouncer_binary)
            bench.run("celery", "connect", bouncer_binary)
            bench.run("rq", "taskcore", bouncer_binary)
    finally:
        bench.observer.close()
        server.drop_database(dbname)
        with closing(server.admin_connect()) as conn, conn.cursor() as cur:
            cur.execute(f'DROP ROLE IF EXISTS "{ROLE}"')
    summary = _summary(bench.results)
    print(json.dumps({"summary": summary}, indent=2))
    if args.json:
        report = {"server": server.describe(), "pgbouncer": bouncer_binary, "runs": bench.results}
        args.json.write_text(json.dumps(report | {"summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

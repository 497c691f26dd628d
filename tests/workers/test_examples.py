"""The copyable worker examples, src/examples/celery_app.py and rq_worker.py, run the way their
docstrings (and docs/worker-fleets.md) say, checked in PostgreSQL from outside."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _workers import REPO, WorkerDb, running, worker_env
from kombu.connection import Connection

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CELERY_APP = "src/examples/celery_app.py"
RQ_WORKER = "src/examples/rq_worker.py"
TIMEOUT_S = 90.0


def _run(args: list[str], env: dict[str, str]) -> str:
    """Run one example command from the repository's root, as the docs do; its standard output
    (it must exit 0)."""
    done = subprocess.run(
        args,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def test_celery_example_stores_and_toggles_a_task(
    amqp_url: str, worker_db: WorkerDb, ns: str
) -> None:
    """``celery -A celery_app worker`` runs the example's jobs: a task sent with ``create``
    is stored once, ``toggle`` completes it, and the worker stops cleanly on SIGTERM."""
    env = worker_env(worker_db.url, TASKS_QUEUE=ns, CELERY_BROKER_URL=amqp_url)
    _run([sys.executable, CELERY_APP, "init-db"], env)
    worker = [sys.executable, "-m", "celery", "--workdir", "src/examples", "-A", "celery_app",
              "worker", "--concurrency", "2",
              "--prefetch-multiplier", "1", "--loglevel", "INFO", "--without-gossip",
              "--without-mingle", "--without-heartbeat", "--hostname", f"{ns}@%h"]  # fmt: skip
    try:
        with running(worker, env, REPO, ready="ready.") as process:
            task_id = int(_run([sys.executable, CELERY_APP, "create", "u1", "Buy milk",
                                "--wait"], env))  # fmt: skip
            assert (
                _run([sys.executable, CELERY_APP, "toggle", str(task_id), "--wait"], env) == "True"
            )
            assert process.terminate(grace=30) == 0, process.output()
    finally:
        with Connection(amqp_url) as conn:  # type: ignore[no-untyped-call]
            conn.default_channel.queue_delete(ns)
    rows = worker_db.query("SELECT id, title, completed FROM tasks WHERE user_id = 'u1'")
    assert rows == [(task_id, "Buy milk", True)]


def test_rq_example_stores_and_toggles_a_task(redis_url: str, worker_db: WorkerDb, ns: str) -> None:
    """``python rq_worker.py work`` runs the example's jobs: a task enqueued with ``create``
    is stored once and ``toggle`` completes it."""
    env = worker_env(worker_db.url, TASKS_QUEUE=ns, REDIS_URL=redis_url)
    with running([sys.executable, RQ_WORKER, "work"], env, REPO, ready="Listening on"):
        task_id = int(_run([sys.executable, RQ_WORKER, "create", "u2", "Buy bread",
                            "--wait"], env))  # fmt: skip
        assert _run([sys.executable, RQ_WORKER, "toggle", str(task_id), "--wait"], env) == "True"
    rows = worker_db.query("SELECT id, title, completed FROM tasks WHERE user_id = 'u2'")
    assert rows == [(task_id, "Buy bread", True)]

"""RQ jobs that store tasks with taskcore, and a worker to run them (``taskcore[rq]``).

Run it where Redis and PostgreSQL answer; the database comes from ``DATABASE_URL`` (never the
command line, where other users could read it in the process list)::

    export DATABASE_URL=postgresql://...        # or Neon's pooled (-pooler) endpoint
    python src/examples/rq_worker.py work       # creates the tables, then works the queue
    # or RQ's own command line (after `python src/examples/rq_worker.py init-db` once):
    rq worker --with-scheduler --path src/examples taskcore

    python src/examples/rq_worker.py create u1 "Buy milk" --wait    # the new task's id
    python src/examples/rq_worker.py toggle 1 --wait                # completed now?

``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) and ``TASKS_QUEUE`` (default
``taskcore``) say where the jobs go.

What taskcore.integrations.rq adds (see docs/worker-fleets.md): each job body runs in one unit
of work that is re-run whole on a transient failure and first claims the RQ job id, so a job
run again under the same id (RQ's retries, a requeue from the failed registry) never applies
twice; when taskcore gives up (database unavailable, COMMIT outcome unknown) the job hands
itself back to RQ for a later retry (the scheduler, ``--with-scheduler``, runs the delayed
ones). RQ forks a work horse per job, so each job opens one server connection of its own:
cheap on loopback, costly on a remote or TLS server; ``work --simple`` runs the jobs in the
worker process (no fork, one pooled connection for all jobs), Neon's pooled endpoint makes
each new connection cheap for the server.
"""

from __future__ import annotations

import argparse
import os
import sys

from redis import Redis
from rq import Queue, SimpleWorker, Worker

import taskcore
from taskcore import TaskCreate, UnitOfWork
from taskcore.integrations.rq import unit_job

#: The handle the jobs use: DATABASE_URL / TASKCORE_* / .env, read now; nothing connects yet.
db = taskcore.Database.from_environment()

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("TASKS_QUEUE", "taskcore")


@unit_job(database=db)
def create_task(uow: UnitOfWork, user_id: str, title: str, description: str | None = None) -> int:
    """Store a new task; its id."""
    return uow.tasks.create(TaskCreate(title=title, description=description), user_id=user_id).id


@unit_job(database=db)
def toggle_task(uow: UnitOfWork, task_id: int, user_id: str | None = None) -> bool:
    """Flip a task's completed flag; the new value."""
    return uow.tasks.toggle_complete(task_id, user_id=user_id).completed


def main(argv: list[str] | None = None) -> int:
    """Command line: run a worker, create the tables, or enqueue a job (and wait for it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    work = commands.add_parser("work", help="create the tables, then run a worker")
    work.add_argument("--simple", action="store_true", help="run jobs in-process (no fork)")
    work.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    commands.add_parser("init-db", help="create the tables if missing")
    create = commands.add_parser("create", help="enqueue a create_task job")
    create.add_argument("user_id")
    create.add_argument("title")
    toggle = commands.add_parser("toggle", help="enqueue a toggle_task job")
    toggle.add_argument("task_id", type=int)
    for command in (create, toggle):
        command.add_argument("--wait", action="store_true", help="print the job's result")
    args = parser.parse_args(argv)

    connection = Redis.from_url(REDIS_URL)
    queue = Queue(QUEUE, connection=connection)
    if args.command in ("work", "init-db"):
        db.init_db()
        db.dispose()  # the worker process holds no connection while it waits for jobs
        if args.command == "work":
            worker_class = SimpleWorker if args.simple else Worker
            worker_class([queue], connection=connection).work(burst=args.burst, with_scheduler=True)
        return 0
    # By name: run as a script, this module is __main__, which a work horse cannot import.
    if args.command == "create":
        job = queue.enqueue("rq_worker.create_task", args.user_id, args.title)
    else:
        job = queue.enqueue("rq_worker.toggle_task", args.task_id)
    if not args.wait:
        print(job.id)
        return 0
    result = job.latest_result(timeout=60)
    if result is None or result.type != result.Type.SUCCESSFUL:
        print(f"job {job.id} did not succeed: {result.exc_string if result else 'no result'}")
        return 1
    print(result.return_value)
    return 0


if __name__ == "__main__":
    sys.exit(main())

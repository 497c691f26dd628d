"""A Celery app that stores tasks with taskcore. Copy it and adapt it (``taskcore[celery]``).

Run it where RabbitMQ and PostgreSQL answer; the database comes from ``DATABASE_URL`` (never
the command line, where other users could read it in the process list)::

    export DATABASE_URL=postgresql://...        # or Neon's pooled (-pooler) endpoint
    python src/examples/celery_app.py init-db   # create the tables (idempotent)
    celery --workdir src/examples -A celery_app worker --concurrency 4 --prefetch-multiplier 1

    python src/examples/celery_app.py create u1 "Buy milk" --wait   # the new task's id
    python src/examples/celery_app.py toggle 1 --wait               # completed now?

``CELERY_BROKER_URL`` (default ``amqp://guest@localhost//``) and ``CELERY_RESULT_BACKEND``
(default ``rpc://``, results sent back over the broker) are Celery's own variables;
``TASKS_QUEUE`` (default ``taskcore``) names the queue.

What taskcore.integrations.celery adds (see docs/worker-fleets.md): each job body runs in one
unit of work that is re-run whole on a transient failure and first claims the job's task id,
so a job redelivered after its worker died (after COMMIT, before the ack) changes nothing the
second time; ``acks_late`` and ``reject_on_worker_lost`` make Celery redeliver such a job;
when taskcore gives up (database unavailable, COMMIT outcome unknown) Celery retries the job
with the same task id; each prefork process uses its own pool. Size the fleet so that
``worker processes x TASKCORE_POOL_SIZE`` stays under the server's ``max_connections`` (a
prefork process runs one job at a time and needs one connection: TASKCORE_POOL_SIZE=1 or 2).
"""

from __future__ import annotations

import argparse
import os
import sys

from celery import Celery  # type: ignore[import-untyped]

import taskcore
from taskcore import TaskCreate, UnitOfWork
from taskcore.integrations.celery import UnitTask, unit_task

#: The handle the tasks use: DATABASE_URL / TASKCORE_* / .env, read now; nothing connects yet.
db = taskcore.Database.from_environment()

app = Celery("celery_app")  # the module name: tasks sent by `python celery_app.py` match
app.conf.update(
    result_backend=os.environ.get("CELERY_RESULT_BACKEND", "rpc://"),
    task_default_queue=os.environ.get("TASKS_QUEUE", "taskcore"),
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,  # with acks_late: a process holds one unacked job at a time
    broker_connection_retry_on_startup=True,
)


@unit_task(app, database=db)
def create_task(uow: UnitOfWork, user_id: str, title: str, description: str | None = None) -> int:
    """Store a new task; its id."""
    return uow.tasks.create(TaskCreate(title=title, description=description), user_id=user_id).id


@unit_task(app, database=db)
def toggle_task(uow: UnitOfWork, task_id: int, user_id: str | None = None) -> bool:
    """Flip a task's completed flag; the new value."""
    return uow.tasks.toggle_complete(task_id, user_id=user_id).completed


@app.task(bind=True, base=UnitTask)  # type: ignore[untyped-decorator]  # Celery has no types
def import_task(self: UnitTask, user_id: str, title: str) -> int:
    """One write, no unit of work: the one-shot create carries the job's key instead."""
    task = db.create_task(TaskCreate(title=title), user_id, idempotency_key=self.delivery_key())
    return task.id


def main(argv: list[str] | None = None) -> int:
    """Command line: create the tables, or send a job (and wait for its result)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init-db", help="create the tables if missing")
    create = commands.add_parser("create", help="send a create_task job")
    create.add_argument("user_id")
    create.add_argument("title")
    toggle = commands.add_parser("toggle", help="send a toggle_task job")
    toggle.add_argument("task_id", type=int)
    for command in (create, toggle):
        command.add_argument("--wait", action="store_true", help="print the job's result")
    args = parser.parse_args(argv)
    if args.command == "init-db":
        db.init_db()
        return 0
    if args.command == "create":
        result = create_task.delay(args.user_id, args.title)
    else:
        result = toggle_task.delay(args.task_id)
    print(result.get(timeout=60) if args.wait else result.id)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The jobs bench_workers.py measures: the same insert three ways, on Celery and on RQ.

* ``taskcore``: :func:`taskcore.integrations.celery.unit_task` / ``rq.unit_job`` (a unit of work
  that claims the job's key, then inserts; a pool per worker process).
* ``tutorial``: the SQLModel tutorial pattern: a module-level ``create_engine(url,
  pool_pre_ping=True)`` and a ``Session`` per job (add, commit, refresh).
* ``connect``: a new psycopg2 connection per job (connect, INSERT, COMMIT, close).

Celery options are the same for all three (acks_late, prefetch 1, results ignored), so the
differences are the database code's.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg2
from celery import Celery  # type: ignore[import-untyped]
from sqlmodel import Session, create_engine

from taskcore import TaskCreate, UnitOfWork
from taskcore.integrations.celery import unit_task
from taskcore.integrations.rq import unit_job
from taskcore.models import Task

URL = os.environ.get("DATABASE_URL", "")
INSERT = "INSERT INTO tasks (title, user_id) VALUES (%s, %s)"

app = Celery("_bench_jobs", broker=os.environ.get("WORKERS_AMQP_URL"))
app.conf.update(
    task_default_queue=os.environ.get("WORKERS_QUEUE", "taskcore-bench"),
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

# The tutorial's engine: built at import (it connects on first use, in each worker process).
# (SQLAlchemy 2.1 maps postgresql:// to psycopg 3; the tutorial's driver is psycopg2.)
engine = create_engine(
    URL.replace("postgresql://", "postgresql+psycopg2://", 1) or "postgresql+psycopg2://",
    pool_pre_ping=True,
)


def _unit_insert(uow: UnitOfWork, owner: str, n: int) -> None:
    uow.tasks.create(TaskCreate(title=f"job {n}"), user_id=owner)


def _tutorial_insert(owner: str, n: int) -> None:
    with Session(engine) as session:
        fields: dict[str, Any] = {"title": f"job {n}", "user_id": owner}
        task = Task(**fields)  # table models skip validation (the tutorial's way)
        session.add(task)
        session.commit()
        session.refresh(task)


def _connect_insert(owner: str, n: int) -> None:
    conn = psycopg2.connect(URL)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(INSERT, (f"job {n}", owner))
    finally:
        conn.close()


celery_taskcore = unit_task(app, name="bench.taskcore")(_unit_insert)
celery_tutorial = app.task(name="bench.tutorial")(_tutorial_insert)
celery_connect = app.task(name="bench.connect")(_connect_insert)


# RQ finds a job by module and name: the decorated function must be the module's attribute.
@unit_job
def rq_taskcore(uow: UnitOfWork, owner: str, n: int) -> None:
    """The taskcore variant on RQ."""
    _unit_insert(uow, owner, n)


rq_tutorial = _tutorial_insert
rq_connect = _connect_insert
